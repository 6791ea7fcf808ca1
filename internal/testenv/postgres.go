package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	neturl "net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/jetsaga/jetsaga/devenv"
)

// dbTimeout bounds creating or dropping a test database.
const dbTimeout = time.Minute

var (
	sharedMu   sync.Mutex
	shared     *devenv.Postgres // the server every test database lives on
	sharedErr  error            // why it could not be had
	sharedDone bool             // shared/sharedErr are final
)

// server returns the shared PostgreSQL server: DATABASE_URL's, or a cluster
// started on first use. It fails the test if there is none.
func server(t testing.TB) *devenv.Postgres {
	t.Helper()
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if !sharedDone {
		if u := os.Getenv("DATABASE_URL"); u != "" {
			shared, sharedErr = devenv.ExternalPostgres(u)
		} else {
			if !mainUsed.Load() {
				// Not cached: a later test of a binary that does use Main
				// cannot exist, but the message should repeat per test.
				t.Fatal("testenv: a PostgreSQL cluster would be started for this test binary but nothing would stop it: " +
					"add `func TestMain(m *testing.M) { testenv.Main(m) }` to the package's tests (or set DATABASE_URL)")
			}
			shared, sharedErr = devenv.StartPostgres(devenv.PGOptions{})
		}
		sharedDone = true
	}
	if sharedErr != nil {
		t.Fatalf("testenv: no PostgreSQL server for the tests: %v", sharedErr)
	}
	return shared
}

// stopSharedPostgres stops a cluster started by this binary.
func stopSharedPostgres() error {
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if shared == nil {
		return nil
	}
	err := shared.Stop()
	shared, sharedErr, sharedDone = nil, nil, false
	return err
}

// PostgresURL creates a fresh database for this test and returns its
// postgres:// URL. The database is dropped when the test ends (after
// cleanups registered later, such as closing a pool on it, have run).
func PostgresURL(t testing.TB) string {
	t.Helper()
	srv := server(t)
	name := databaseName(t.Name())
	ctx, cancel := context.WithTimeout(context.Background(), dbTimeout)
	defer cancel()
	if err := srv.CreateDatabase(ctx, name); err != nil {
		if srv.External() {
			t.Fatalf("testenv: %v (on the server of DATABASE_URL=%s: check that it is up and its user may CREATE DATABASE, or unset DATABASE_URL to use a throwaway local cluster)",
				err, redact(os.Getenv("DATABASE_URL")))
		}
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), dbTimeout)
		defer cancel()
		if err := srv.DropDatabase(ctx, name); err != nil {
			t.Errorf("testenv: %v", err)
		}
	})
	return srv.URL(name)
}

// Postgres creates a fresh database for this test and returns a pool on
// it, closed when the test ends.
func Postgres(t testing.TB) *pgxpool.Pool {
	t.Helper()
	url := PostgresURL(t)
	ctx, cancel := context.WithTimeout(context.Background(), dbTimeout)
	defer cancel()
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatalf("testenv: open pool on %s: %v", redact(url), err)
	}
	t.Cleanup(pool.Close)
	if err := pool.Ping(ctx); err != nil {
		t.Fatalf("testenv: ping %s: %v", redact(url), err)
	}
	return pool
}

// databaseName turns a test name into a unique database name: "t_", up to
// 40 characters of the name in lower case, and 8 random hex digits.
func databaseName(testName string) string {
	var b strings.Builder
	b.WriteString("t_")
	for _, r := range strings.ToLower(testName) {
		if b.Len() >= 42 {
			break
		}
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	b.WriteByte('_')
	b.WriteString(hex.EncodeToString(rnd[:]))
	return b.String()
}

// redact hides the password of a URL for messages.
func redact(rawURL string) string {
	u, err := neturl.Parse(rawURL)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}
