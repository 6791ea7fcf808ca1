package dtmpython_test

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/jetsaga/jetsaga/dtmgateway"
	"github.com/jetsaga/jetsaga/events"
	"github.com/jetsaga/jetsaga/httpparticipant"
	"github.com/jetsaga/jetsaga/internal/testenv"
	"github.com/jetsaga/jetsaga/orchestrator"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// python is Debian's interpreter, where apt installs flask, psycopg2 and
// requests (a pyenv or venv python3 on PATH would not see them);
// JETSAGA_PYTHON names another.
var python = cmp.Or(os.Getenv("JETSAGA_PYTHON"), "/usr/bin/python3")

// needPython skips the test without python3's packages, or fails it under
// CI, where .ci/run installs them.
func needPython(t *testing.T) {
	t.Helper()
	out, err := exec.Command(python, "-c", "import flask, psycopg2, requests").CombinedOutput()
	if err == nil {
		return
	}
	msg := fmt.Sprintf("%s cannot import flask, psycopg2 and requests (apt-get install python3-flask python3-psycopg2 python3-requests): %v\n%s", python, err, out)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

type env struct {
	dtm, svc string // the gateway's API, the bank's API
	pool     *pgxpool.Pool
}

func setup(t *testing.T) *env {
	t.Helper()
	needPython(t)
	dbURL := testenv.PostgresURL(t)
	srv := testenv.NATS(t)
	_, js := testenv.Connect(t, srv.URL())
	quiet := slog.New(slog.DiscardHandler)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	if err := orchestrator.EnsureStreams(ctx, js, events.Default(), events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	coord, err := orchestrator.NewCoordinator(orchestrator.Config{JetStream: js, SkipEnsureStreams: true, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	allow := httpparticipant.MustAllow("127.0.0.1")
	p, err := httpparticipant.New(httpparticipant.Config{JetStream: js, Allow: allow, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	wg.Add(2)
	go func() { defer wg.Done(); _ = coord.Run(ctx) }()
	go func() { defer wg.Done(); _ = p.Run(ctx) }()
	g, err := dtmgateway.New(dtmgateway.Config{JetStream: js, Allow: allow, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	gw := httptest.NewServer(g.Handler())
	t.Cleanup(func() { gw.Close(); g.Close() })

	// The bank: the Flask app, stopped before its database is dropped.
	cmd := exec.Command(python, "app.py", "--database-url", dbURL, "--port", "0")
	cmd.Env = append(os.Environ(), "PYTHONDONTWRITEBYTECODE=1")
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "listening on ") {
				lines <- strings.TrimPrefix(sc.Text(), "listening on ")
			}
		}
	}()
	var bankURL string
	select {
	case bankURL = <-lines:
	case <-exited:
		t.Fatal("the Flask bank exited before it served")
	case <-time.After(30 * time.Second):
		t.Fatal("the Flask bank did not start within 30 s")
	}
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return &env{dtm: gw.URL + "/api/dtmsvr", svc: bankURL + "/api", pool: pool}
}

// client runs the tutorial's client and returns the saga's gid.
func (e *env) client(t *testing.T, transInResult string) string {
	t.Helper()
	cmd := exec.Command(python, "client.py", "--dtm", e.dtm, "--svc", e.svc, "--trans-in-result", transInResult)
	cmd.Env = append(os.Environ(), "PYTHONDONTWRITEBYTECODE=1")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("client.py: %v\n%s", err, out)
	}
	return strings.TrimSpace(string(out))
}

// wait polls the DTM API until the saga ends and returns its status.
func (e *env) wait(t *testing.T, gid string) string {
	t.Helper()
	var status string
	testenv.CheckFor(t, 60*time.Second, 20*time.Millisecond, func() error {
		resp, err := http.Get(e.dtm + "/query?gid=" + gid)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		var v struct {
			Transaction *struct{ Status string } `json:"transaction"`
		}
		data, _ := io.ReadAll(resp.Body)
		if err := json.Unmarshal(data, &v); err != nil || v.Transaction == nil {
			return fmt.Errorf("query: %s", data)
		}
		status = v.Transaction.Status
		if status != dtmgateway.StatusSucceed && status != dtmgateway.StatusFailed {
			return fmt.Errorf("saga %s is %s", gid, status)
		}
		return nil
	})
	return status
}

func (e *env) balances(t *testing.T) string {
	t.Helper()
	var a, b string
	err := e.pool.QueryRow(context.Background(),
		`SELECT (SELECT balance::text FROM dtm_busi.user_account WHERE user_id = 1), (SELECT balance::text FROM dtm_busi.user_account WHERE user_id = 2)`).Scan(&a, &b)
	if err != nil {
		t.Fatal(err)
	}
	return a + " " + b
}

func (e *env) barrierRows(t *testing.T, gid string) string {
	t.Helper()
	rows, err := e.pool.Query(context.Background(), `SELECT branch_id || ':' || op || ':' || reason FROM dtm_barrier.barrier WHERE gid = $1 ORDER BY id`, gid)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return strings.Join(out, " ")
}

// The tutorial's scenarios, one after the other on one bank (balances
// accumulate: 10000 each to start).
func TestTutorial(t *testing.T) {
	e := setup(t)
	if got := e.balances(t); got != "10000.00 10000.00" {
		t.Fatalf("initial balances %s", got)
	}

	// A committed transfer.
	gid := e.client(t, "SUCCESS")
	if s := e.wait(t, gid); s != dtmgateway.StatusSucceed {
		t.Fatalf("transfer %s", s)
	}
	if got := e.balances(t); got != "9970.00 10030.00" {
		t.Fatalf("after the transfer: %s", got)
	}

	// TransIn answers FAILURE before committing: rolled back. Its
	// compensation is a null one (the barrier's origin row is new).
	gid = e.client(t, "FAILURE")
	if s := e.wait(t, gid); s != dtmgateway.StatusFailed {
		t.Fatalf("TransIn FAILURE: %s", s)
	}
	if got := e.balances(t); got != "9970.00 10030.00" {
		t.Fatalf("after the rollback: %s", got)
	}
	if got := e.barrierRows(t, gid); got != "01:action:action 02:action:compensate 02:compensate:compensate 01:compensate:compensate" {
		t.Errorf("barrier rows of the rollback: %s", got)
	}

	// TransIn commits, then answers FAILURE: DTM compensates it too, once.
	gid = e.client(t, "FAILURE_AFTER_COMMIT")
	if s := e.wait(t, gid); s != dtmgateway.StatusFailed {
		t.Fatalf("TransIn FAILURE after commit: %s", s)
	}
	if got := e.balances(t); got != "9970.00 10030.00" {
		t.Fatalf("after compensating a committed TransIn: %s", got)
	}
	if got := e.barrierRows(t, gid); got != "01:action:action 02:action:action 02:compensate:compensate 01:compensate:compensate" {
		t.Errorf("barrier rows: %s", got)
	}

	// Repeated calls are absorbed by the barrier: the committed saga's
	// TransIn and TransOutCompensate called again change nothing, and a
	// compensation of a branch whose action never ran is a null one that
	// also refuses the late action.
	post := func(path, query, body string) string {
		resp, err := http.Post(e.svc+path+"?trans_type=saga&"+query, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		return fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(string(data)))
	}
	for i := 0; i < 3; i++ {
		if got := post("/TransInSaga", "gid="+gid+"&branch_id=02&op=action", `{"amount":30}`); !strings.HasPrefix(got, "200") {
			t.Fatalf("repeated TransIn: %s", got)
		}
		if got := post("/TransInCompensate", "gid="+gid+"&branch_id=02&op=compensate", `{"amount":30}`); !strings.HasPrefix(got, "200") {
			t.Fatalf("repeated TransInCompensate: %s", got)
		}
	}
	if got := post("/TransOutCompensate", "gid=never-ran&branch_id=01&op=compensate", `{"amount":30}`); !strings.HasPrefix(got, "200") {
		t.Fatalf("null compensation: %s", got)
	}
	if got := post("/TransOutSaga", "gid=never-ran&branch_id=01&op=action", `{"amount":30}`); !strings.HasPrefix(got, "200") {
		t.Fatalf("hanging action: %s", got)
	}
	if got := e.balances(t); got != "9970.00 10030.00" {
		t.Fatalf("after repeated calls: %s", got)
	}
}
