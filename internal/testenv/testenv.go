package testenv

import (
	"bytes"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// mainUsed records that Main runs the tests, so that a PostgreSQL cluster
// started by this binary is stopped at the end.
var mainUsed atomic.Bool

// Main runs the tests of a package (call it from TestMain), then stops the
// PostgreSQL cluster started for them, if any, and then, if the tests
// passed, checks that no goroutines leaked. It exits the process with the
// resulting code.
func Main(m *testing.M) {
	mainUsed.Store(true)
	code := m.Run()
	if err := stopSharedPostgres(); err != nil {
		fmt.Fprintf(os.Stderr, "testenv: stop PostgreSQL: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	if code == 0 {
		if err := goleak.Find(ignoreNATSAsyncResetter); err != nil {
			fmt.Fprintf(os.Stderr, "testenv: goroutines leaked by a passing run: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// ignoreNATSAsyncResetter: nats.go starts this goroutine with a JetStream
// context's first asynchronous publish, registering for its connection's
// CLOSED event after subscribing to the replies; a connection closed in
// between (tests close connections under a running coordinator) has sent
// that event already, and the goroutine waits forever. The race is in
// nats.go v1.55.0 (jetstream/publish.go, newAsyncReply); a connection left
// open would still show as leaked by its own goroutines.
var ignoreNATSAsyncResetter = goleak.IgnoreTopFunction("github.com/nats-io/nats.go/jetstream.(*jetStream).resetPendingAcksOnReconnect")

// CheckFor calls f every sleep until it returns nil, failing the test with
// f's last error if that does not happen within total.
func CheckFor(t testing.TB, total, sleep time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(total)
	var err error
	for {
		if err = f(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("testenv: still failing after %s: %v", total, err)
		}
		time.Sleep(sleep)
	}
}

// SyncBuffer is a bytes.Buffer that loggers and processes on several
// goroutines may write while a test reads it.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns what was written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
