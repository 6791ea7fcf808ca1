package bench

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/jetsaga/jetsaga/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// TestSmoke runs a small load with failures and checks the invariants (not
// the speed).
func TestSmoke(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	r, err := Run(ctx, Options{Sagas: 200, Concurrency: 16, Accounts: 50, CeilingDuration: 200 * time.Millisecond,
		Progress: testWriter{t}, DatabaseURL: os.Getenv("DATABASE_URL")})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", r)
	if !r.InvariantsOK {
		t.Fatalf("invariants: %v", r.InvariantErrors)
	}
	if r.Sagas != 200 || r.Committed == 0 || r.Compensated == 0 {
		t.Fatalf("sagas %d (committed %d, compensated %d)", r.Sagas, r.Committed, r.Compensated)
	}
	if r.PGCeilingTPS <= 0 || r.JSCeilingPPS <= 0 || r.JSPublishesPerSaga <= 0 || r.PGCommitsPerSaga <= 0 {
		t.Fatalf("missing figures: %+v", r)
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }
