package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jetsaga/jetsaga/devenv"
	"github.com/jetsaga/jetsaga/internal/testenv"
)

// checkDemoOutput asserts the demo's expected outcomes in its output.
func checkDemoOutput(t *testing.T, r result) {
	t.Helper()
	wantExit(t, r, exitOK)
	out := r.stdout
	if strings.Contains(out, "UNEXPECTED") {
		t.Fatalf("the demo reported an unexpected outcome:\n%s", out)
	}
	for _, want := range []string{
		"== 1. A transfer that commits",
		"[ok] saga committed, expected committed",
		"[ok] alice@bank-a changed by -30.00, expected -30.00",
		"[ok] bob@bank-b changed by +30.00, expected +30.00",
		"outcome credit do failed from bank-b (attempt 1): account 1: user's account is abnormal",
		"command debit undo TransOutCompensate → bank-a",
		"[ok] saga compensated, expected compensated",
		"[ok] debit compensated, credit failed",
		"account 2: insufficient balance for 1000000.00",
		"[ok] debit failed, credit pending",
		"step=debit op=do status=succeeded attempt=1",
		"[ok] 1 barrier row for the debit, expected 1: the duplicate wrote none",
		"[ok] bank-a logged 1 skipped duplicate, expected 1",
		"coordinator 1 stopped",
		"[ok] saga running while no coordinator runs, expected running",
		"coordinator 2 started",
		"[ok] total of both banks: 3000.00 before, 3000.00 after",
		"[ok] no negative balance (0 found)",
		"all outcomes as expected",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("demo output lacks %q", want)
		}
	}
	// Five sagas, five timelines.
	if n := strings.Count(out, "  timeline\n"); n != 5 {
		t.Errorf("%d timelines, want 5", n)
	}
	if t.Failed() {
		t.Logf("demo output:\n%s", r)
	}
}

// TestDemo runs the demo in-process on databases of the test's PostgreSQL
// server; it must pass every check and drop the databases it created.
func TestDemo(t *testing.T) {
	t.Parallel()
	url := testenv.PostgresURL(t)
	r := cli(t, nil, "", "demo", "--database-url", url)
	checkDemoOutput(t, r)
	m := regexp.MustCompile(`bank-a: (bank_a_[0-9a-f]{8}), bank-b: (bank_b_[0-9a-f]{8})`).FindStringSubmatch(r.stdout)
	if m == nil {
		t.Fatalf("the demo did not name fresh databases on an existing server:\n%s", r.stdout)
	}
	p := pool(t, url)
	for _, db := range m[1:] {
		var n int
		if err := p.QueryRow(t.Context(), `SELECT count(*) FROM pg_database WHERE datname = $1`, db).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Errorf("database %s was left behind", db)
		}
	}
}

// TestDemoThrowaway runs the demo as a user would, with nothing but the
// PostgreSQL binaries: it starts its own cluster and removes it, and the
// JetStream directory, at the end.
func TestDemoThrowaway(t *testing.T) {
	t.Parallel()
	r := cli(t, nil, "", "demo")
	checkDemoOutput(t, r)
	m := regexp.MustCompile(`JetStream in (\S+)\)\n  PostgreSQL  throwaway cluster on \S+ \(in (\S+)\)`).FindStringSubmatch(r.stdout)
	if m == nil {
		t.Fatalf("the demo did not say where its NATS and PostgreSQL data are:\n%s", r.stdout)
	}
	for _, dir := range m[1:] {
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("%s was left behind (stat: %v)", dir, err)
		}
	}
}

// TestDemoNoPostgres: without a server the demo says how to get one.
func TestDemoNoPostgres(t *testing.T) {
	t.Parallel()
	dead := "postgres://u:pw@" + closedPort(t) + "/postgres"
	r := cli(t, nil, "", "demo", "--database-url", dead)
	wantOneLineError(t, r, exitError, "create database bank_a_", "postgres://u:xxxxx@")
}

// TestDev runs the dev environment in-process on a free port, starts a
// transfer against it with the CLI, and stops it as Ctrl-C would.
func TestDev(t *testing.T) {
	t.Parallel()
	port := strings.Split(closedPort(t), ":")[1]
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errb testenv.SyncBuffer
	done := make(chan int, 1)
	go func() {
		a := &app{stdin: strings.NewReader(""), stdout: &out, stderr: &errb, getenv: func(string) string { return "" }}
		done <- a.run(ctx, []string{"dev", "--port", port})
	}()
	testenv.CheckFor(t, waitTotal, waitStep, func() error {
		select {
		case code := <-done:
			t.Fatalf("dev exited with %d:\n%s\n%s", code, out.String(), errb.String())
		default:
		}
		// The last line of what dev prints once it is ready: the lines
		// before it are all there then.
		if !strings.Contains(out.String(), "Ctrl-C stops everything.") {
			return fmt.Errorf("not ready yet")
		}
		return nil
	})
	info := out.String()
	url := "nats://127.0.0.1:" + port
	for _, want := range []string{"  NATS         " + url, "/bank_a?sslmode=disable", "/bank_b?sslmode=disable",
		"jetsaga start --nats-url " + url + " --wait -f - <<'EOF'", "Ctrl-C stops everything."} {
		if !strings.Contains(info, want) {
			t.Fatalf("dev output lacks %q:\n%s", want, info)
		}
	}
	// The plan dev prints is the one a user pastes.
	plan := info[strings.Index(info, "<<'EOF'\n")+len("<<'EOF'\n") : strings.Index(info, "\nEOF\n")]
	r := cli(t, nil, plan, "start", "--nats-url", url, "--wait", "-f", "-")
	wantExit(t, r, exitOK)
	r = cli(t, nil, "", "list", "--nats-url", url)
	if wantExit(t, r, exitOK); !strings.Contains(r.stdout, "committed") {
		t.Fatalf("list after the transfer:\n%s", r)
	}
	// The web console, at the URL dev printed, lists it too.
	m := regexp.MustCompile(`  console\s+(http://127\.0\.0\.1:\d+/)\s`).FindStringSubmatch(info)
	if m == nil {
		t.Fatalf("dev output lacks the console's URL:\n%s", info)
	}
	// (Its list reads its index, which follows the bucket's watch.)
	testenv.CheckFor(t, waitTotal, 50*time.Millisecond, func() error {
		if body := httpGet(t, m[1]+"sagas?status=committed", http.StatusOK); !strings.Contains(body, `id="total" data-filter="committed">1 saga`) {
			return fmt.Errorf("the console does not list the committed transfer:\n%s", body)
		}
		return nil
	})
	cancel()
	select {
	case code := <-done:
		if code != exitOK {
			t.Fatalf("dev exited with %d after the interrupt:\n%s\n%s", code, out.String(), errb.String())
		}
	case <-time.After(waitTotal):
		t.Fatal("dev did not stop")
	}
	if !strings.HasSuffix(out.String(), "jetsaga dev: stopped\n") {
		t.Fatalf("dev did not report its stop:\n%s", out.String())
	}
	// Its port is free again: everything was stopped.
	srv, err := devenv.StartNATS(devenv.NATSOptions{Port: mustAtoi(t, port)})
	if err != nil {
		t.Fatalf("port %s still taken after dev stopped: %v", port, err)
	}
	srv.Close()
}

func mustAtoi(t *testing.T, s string) int {
	t.Helper()
	var n int
	if _, err := fmt.Sscan(s, &n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestLogRecorderConcurrentChildren logs from many goroutines through
// children (and grandchildren) of one recorder, as the demo's components
// do, while counting: every record lands in the one store, and -race finds
// no unguarded access.
func TestLogRecorderConcurrentChildren(t *testing.T) {
	t.Parallel()
	rec := newLogRecorder()
	root := slog.New(rec)
	const goroutines, each = 8, 200
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			comp := fmt.Sprintf("bank-%d", g%2)
			child := root.With("component", comp)
			grandchild := child.With("participant", comp)
			for i := range each {
				if i%2 == 0 {
					child.Info("duplicate action skipped")
				} else {
					grandchild.Info("duplicate compensation skipped")
				}
				root.Info("unrelated")
				_ = rec.count(comp, "duplicate")
			}
		}()
	}
	wg.Wait()
	for _, comp := range []string{"bank-0", "bank-1"} {
		if got, want := rec.count(comp, "duplicate"), goroutines/2*each; got != want {
			t.Errorf("%s: %d records counted, want %d", comp, got, want)
		}
	}
	if got, want := rec.count("", "unrelated"), goroutines*each; got != want {
		t.Errorf("%d records without a component, want %d", got, want)
	}
}
