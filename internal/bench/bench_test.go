package bench

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
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

func TestCountFsyncs(t *testing.T) {
	log := filepath.Join(t.TempDir(), "strace.log")
	lines := []string{
		`101 fsync(7</tmp/js/jetstream/$G/streams/SAGAS/msgs/1.blk>) = 0`,
		`102 fsync(9</tmp/js/jetstream/$G/streams/SAGA_CMDS/msgs/1.blk> <unfinished ...>`,
		`101 fsync(7</tmp/js/jetstream/$G/streams/SAGAS/msgs/1.blk>) = 0`,
		`102 <... fsync resumed>) = 0`,
		`300 fsync(4</var/lib/postgresql/base/1/2>) = 0`, // another file
		`101 fdatasync(7</tmp/js/jetstream/x>) = 0`,      // not traced, and not an fsync
	}
	if err := os.WriteFile(log, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if n, err := countFsyncs(log, "/tmp/js"); err != nil || n != 3 {
		t.Fatalf("countFsyncs = %d, %v; want 3", n, err)
	}
	if n, err := countFsyncs("", "/tmp/js"); err != nil || n != -1 {
		t.Fatalf("without a log: %d, %v; want -1 (not counted)", n, err)
	}
}

// fsyncChildLog and fsyncChildReport tell TestFsyncsCounted's child process
// (the test binary again, under strace) where the log is and where to write
// its report.
const (
	fsyncChildLog    = "JETSAGA_TEST_FSYNC_LOG"
	fsyncChildReport = "JETSAGA_TEST_FSYNC_REPORT"
)

// TestFsyncsCounted runs a small load in a child process under strace, as
// `jetsaga bench --count-fsyncs` does, and checks the fsyncs the report
// counts: with sync always, every JetStream write is synced at least once.
func TestFsyncsCounted(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if log := os.Getenv(fsyncChildLog); log != "" {
		r, err := Run(ctx, Options{Sagas: 100, Concurrency: 8, Accounts: 50, CeilingDuration: -1,
			FsyncLog: log, DatabaseURL: os.Getenv("DATABASE_URL")})
		if err != nil {
			t.Fatal(err)
		}
		data, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(os.Getenv(fsyncChildReport), data, 0o600); err != nil {
			t.Fatal(err)
		}
		return
	}
	strace, err := exec.LookPath("strace")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("strace is not installed; .ci/run installs it")
		}
		t.Skip("strace is not installed")
	}
	dir := t.TempDir()
	log, report := filepath.Join(dir, "strace.log"), filepath.Join(dir, "report.json")
	cmd := exec.CommandContext(ctx, strace, "-f", "--seccomp-bpf", "-qq", "-y", "-e", "trace=fsync", "-o", log, "--",
		os.Args[0], "-test.run=^TestFsyncsCounted$", "-test.count=1")
	cmd.Env = append(os.Environ(), fsyncChildLog+"="+log, fsyncChildReport+"="+report)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	data, err := os.ReadFile(report)
	if err != nil {
		t.Fatal(err)
	}
	var r Report
	if err := json.Unmarshal(data, &r); err != nil {
		t.Fatal(err)
	}
	t.Logf("%.2f writes, %.2f fsyncs per saga", r.JSPublishesPerSaga, r.JSFsyncsPerSaga)
	if !r.InvariantsOK || r.Sagas != 100 {
		t.Fatalf("report: %+v", r)
	}
	if r.JSFsyncsPerSaga < r.JSPublishesPerSaga || r.JSFsyncsPerSaga > 3*r.JSPublishesPerSaga {
		t.Fatalf("%.2f fsyncs per saga for %.2f writes: want at least one each, and not many more", r.JSFsyncsPerSaga, r.JSPublishesPerSaga)
	}
}
