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
	if r.JSBoundSagasPerSecond <= 0 || r.PGXidsPerSaga < r.PGCommitsPerSaga {
		t.Fatalf("bound %.0f sagas/s, %.2f transaction ids per saga for %.2f step transactions", r.JSBoundSagasPerSecond, r.PGXidsPerSaga, r.PGCommitsPerSaga)
	}
	// The hops: from Start to Wait's return through the five stored
	// messages and the terminal state, each taking some time.
	if len(r.Hops) != 7 || r.Hops[0].From != "Start called" || r.Hops[6].To != "Wait returned" {
		t.Fatalf("hops: %+v", r.Hops)
	}
	for _, h := range r.Hops {
		if h.MedianMs < 0 {
			t.Fatalf("hop %s → %s took %.3f ms", h.From, h.To, h.MedianMs)
		}
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

// TestSmokeHTTP runs the same mix through the DTM gateway and the HTTP
// participant to HTTP banks with DTM's barrier, and checks the balances.
func TestSmokeHTTP(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	r, err := Run(ctx, Options{Mode: ModeHTTP, Sagas: 200, Concurrency: 16, Accounts: 50, CeilingDuration: -1,
		Progress: testWriter{t}, DatabaseURL: os.Getenv("DATABASE_URL")})
	if err != nil {
		t.Fatal(err)
	}
	if !r.InvariantsOK {
		t.Fatalf("invariants: %v", r.InvariantErrors)
	}
	if r.Settings.Mode != ModeHTTP || r.Sagas != 200 || r.Committed == 0 || r.Compensated == 0 || r.PGCommitsPerSaga <= 0 {
		t.Fatalf("report %+v", r)
	}
}
