package main

import (
	"testing"

	"github.com/jetsaga/jetsaga/internal/bench"
	"github.com/jetsaga/jetsaga/internal/testenv"
)

// TestBenchSmoke runs `jetsaga bench --sagas 200` and checks what it
// reports and its invariants — not its speed.
func TestBenchSmoke(t *testing.T) {
	t.Parallel()
	pgURL := testenv.PostgresURL(t) // a server to work on; the bench makes its own databases
	r := cli(t, nil, "", "bench", "--sagas", "200", "--concurrency", "16", "--accounts", "50",
		"--ceiling-duration", "300ms", "--database-url", pgURL, "--json")
	wantExit(t, r, 0)
	var rep bench.Report
	decodeJSON(t, r, &rep)
	if !rep.InvariantsOK || rep.Sagas != 200 || rep.Committed == 0 || rep.Compensated == 0 || rep.Errors != 0 {
		t.Fatalf("report: %+v", rep)
	}
	if rep.PGCeilingTPS <= 0 || rep.JSCeilingPPS <= 0 || rep.JSPublishesPerSaga <= 0 || rep.PGCommitsPerSaga <= 0 ||
		rep.P99ms <= 0 || rep.PeakRSSBytes <= 0 || rep.Settings.JSSync != "always" {
		t.Fatalf("missing figures: %+v", rep)
	}
}

func TestBenchUsageErrors(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"bench", "--concurrency", "0"},
		{"bench", "--js-sync", "sometimes"},
		{"bench", "--fail-share", "0.8", "--insufficient-share", "0.5"},
		{"bench", "--accounts", "3"},
	} {
		wantExit(t, cli(t, nil, "", args...), exitUsage)
	}
}
