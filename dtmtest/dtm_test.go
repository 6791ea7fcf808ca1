package dtmtest_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dtm-labs/client/dtmcli"
	"github.com/dtm-labs/client/dtmcli/dtmimp"
	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/jetsaga/jetsaga/dtmgateway"
	"github.com/jetsaga/jetsaga/events"
	"github.com/jetsaga/jetsaga/httpparticipant"
	"github.com/jetsaga/jetsaga/internal/testenv"
	"github.com/jetsaga/jetsaga/orchestrator"
)

func TestMain(m *testing.M) {
	dtmcli.SetCurrentDBType("postgres")
	testenv.Main(m)
}

const schema = `
CREATE SCHEMA IF NOT EXISTS busi;
CREATE TABLE busi.account (user_id int PRIMARY KEY, balance int NOT NULL CHECK (balance >= 0));
INSERT INTO busi.account VALUES (1, 1000), (2, 1000), (3, 1000);
CREATE SCHEMA IF NOT EXISTS dtm_barrier;
CREATE TABLE dtm_barrier.barrier (
    id bigserial PRIMARY KEY, trans_type varchar(45) DEFAULT '', gid varchar(128) DEFAULT '',
    branch_id varchar(128) DEFAULT '', op varchar(45) DEFAULT '', barrier_id varchar(45) DEFAULT '',
    reason varchar(45) DEFAULT '', create_time timestamptz DEFAULT now(), update_time timestamptz DEFAULT now(),
    CONSTRAINT uniq_barrier UNIQUE (gid, branch_id, op, barrier_id));`

// busi is the participants' service: /api/<Action> moves money on account
// user_id inside dtmcli's barrier; a test scripts the answers of a path
// (errors are returned from inside the barrier, so they roll back).
type busi struct {
	*httptest.Server
	db      *sql.DB
	mu      sync.Mutex
	script  map[string][]error // path → errors to return, in turn; nil: success
	calls   []string           // "<path> <branch_id> <op>"
	headers map[string]http.Header
}

type req struct {
	UserID int `json:"user_id"`
	Amount int `json:"amount"`
}

var sign = map[string]int{"/api/TransOut": -1, "/api/TransOutCompensate": 1, "/api/TransIn": 1, "/api/TransInCompensate": -1}

func newBusi(t *testing.T, db *sql.DB) *busi {
	b := &busi{db: db, script: map[string][]error{}, headers: map[string]http.Header{}}
	b.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body req
		data, _ := io.ReadAll(r.Body)
		_ = json.Unmarshal(data, &body)
		b.mu.Lock()
		b.calls = append(b.calls, r.URL.Path+" "+r.URL.Query().Get("branch_id")+" "+r.URL.Query().Get("op"))
		b.headers[r.URL.Path] = r.Header.Clone()
		var scripted error
		if s := b.script[r.URL.Path]; len(s) > 0 {
			scripted = s[0]
			if len(s) > 1 {
				b.script[r.URL.Path] = s[1:]
			}
		}
		b.mu.Unlock()
		bb, err := dtmcli.BarrierFromQuery(r.URL.Query())
		if err == nil {
			err = bb.CallWithDB(b.db, func(tx *sql.Tx) error {
				if scripted != nil {
					return scripted
				}
				_, err := tx.Exec(`UPDATE busi.account SET balance = balance + $1 WHERE user_id = $2`, sign[r.URL.Path]*body.Amount, body.UserID)
				return err
			})
		}
		code, res := dtmcli.Result2HttpJSON(err)
		if err == nil {
			res = dtmcli.MapSuccess
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(res)
	}))
	t.Cleanup(b.Close)
	return b
}

func (b *busi) set(path string, errs ...error) {
	b.mu.Lock()
	b.script[path] = errs
	b.mu.Unlock()
}

func (b *busi) count(path string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, c := range b.calls {
		if strings.HasPrefix(c, path+" ") {
			n++
		}
	}
	return n
}

func (b *busi) balances(t *testing.T) string {
	t.Helper()
	rows, err := b.db.Query(`SELECT balance FROM busi.account ORDER BY user_id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var n int
		_ = rows.Scan(&n)
		out = append(out, fmt.Sprint(n))
	}
	return strings.Join(out, " ")
}

type env struct {
	dtm  string
	busi *busi
}

func setup(t *testing.T) *env {
	t.Helper()
	db, err := sql.Open("pgx", testenv.PostgresURL(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	if _, err := db.Exec(schema); err != nil {
		t.Fatal(err)
	}
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
	g, err := dtmgateway.New(dtmgateway.Config{JetStream: js, Allow: allow, WaitTimeout: 30 * time.Second, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	gw := httptest.NewServer(g.Handler())
	t.Cleanup(func() {
		for _, d := range []time.Duration{0, 30 * time.Second} {
			dtmimp.GetRestyClient2(d).GetClient().CloseIdleConnections()
		}
		gw.Close()
		g.Close()
	})
	return &env{dtm: gw.URL + "/api/dtmsvr", busi: newBusi(t, db)}
}

// saga is the transfer of amount from account 1 to account 2.
func (e *env) saga(amount int) *dtmcli.Saga {
	s := dtmcli.NewSaga(e.dtm, dtmcli.MustGenGid(e.dtm)).
		Add(e.busi.URL+"/api/TransOut", e.busi.URL+"/api/TransOutCompensate", &req{1, amount}).
		Add(e.busi.URL+"/api/TransIn", e.busi.URL+"/api/TransInCompensate", &req{2, amount})
	s.RetryInterval = 1
	return s
}

// status polls /query (through DTM's own query shape) until the saga ends.
func (e *env) status(t *testing.T, gid string) string {
	t.Helper()
	var status string
	testenv.CheckFor(t, 60*time.Second, 20*time.Millisecond, func() error {
		resp, err := dtmimp.GetRestyClient2(0).R().SetQueryParam("gid", gid).Get(e.dtm + "/query")
		if err != nil {
			return err
		}
		var v struct {
			Transaction *struct {
				Status string `json:"status"`
			} `json:"transaction"`
		}
		if err := json.Unmarshal(resp.Body(), &v); err != nil || v.Transaction == nil {
			return fmt.Errorf("query: %s", resp.Body())
		}
		status = v.Transaction.Status
		if status != "succeed" && status != "failed" {
			return fmt.Errorf("saga is %s", status)
		}
		return nil
	})
	return status
}

func TestNormalSaga(t *testing.T) {
	e := setup(t)
	s := e.saga(30)
	if err := s.Submit(); err != nil {
		t.Fatal(err)
	}
	if st := e.status(t, s.Gid); st != "succeed" {
		t.Fatalf("saga %s", st)
	}
	if got := e.busi.balances(t); got != "970 1030 1000" {
		t.Fatalf("balances %s", got)
	}
}

func TestRollback(t *testing.T) {
	e := setup(t)
	e.busi.set("/api/TransIn", dtmcli.ErrFailure)
	s := e.saga(30)
	s.WaitResult = true
	err := s.Submit()
	if err == nil || !strings.Contains(err.Error(), "FAILURE") {
		t.Fatalf("submit with wait_result of a failing saga: %v", err)
	}
	if st := e.status(t, s.Gid); st != "failed" {
		t.Fatalf("saga %s", st)
	}
	if got := e.busi.balances(t); got != "1000 1000 1000" {
		t.Fatalf("balances %s", got)
	}
	if e.busi.count("/api/TransInCompensate") != 1 || e.busi.count("/api/TransOutCompensate") != 1 {
		t.Fatalf("calls %v", e.busi.calls)
	}
}

func TestOngoingThenSuccess(t *testing.T) {
	e := setup(t)
	e.busi.set("/api/TransIn", dtmcli.ErrOngoing, dtmcli.ErrOngoing, nil)
	s := e.saga(30)
	s.RetryLimit = 1 // ONGOING does not spend it
	if err := s.Submit(); err != nil {
		t.Fatal(err)
	}
	if st := e.status(t, s.Gid); st != "succeed" {
		t.Fatalf("saga %s", st)
	}
	if n := e.busi.count("/api/TransIn"); n != 3 {
		t.Fatalf("TransIn called %d times, want 3", n)
	}
	if got := e.busi.balances(t); got != "970 1030 1000" {
		t.Fatalf("balances %s", got)
	}
}

func TestCompensationErrorsAndIsRetried(t *testing.T) {
	e := setup(t)
	e.busi.set("/api/TransIn", dtmcli.ErrFailure)
	e.busi.set("/api/TransOutCompensate", errors.New("database busy"), dtmcli.ErrFailure, nil)
	s := e.saga(30)
	if err := s.Submit(); err != nil {
		t.Fatal(err)
	}
	if st := e.status(t, s.Gid); st != "failed" {
		t.Fatalf("saga %s", st)
	}
	if n := e.busi.count("/api/TransOutCompensate"); n != 3 {
		t.Fatalf("TransOutCompensate called %d times, want 3", n)
	}
	if got := e.busi.balances(t); got != "1000 1000 1000" {
		t.Fatalf("balances %s", got)
	}
}

func TestConcurrentWithOrdersAndBranchHeaders(t *testing.T) {
	e := setup(t)
	s := dtmcli.NewSaga(e.dtm, dtmcli.MustGenGid(e.dtm)).
		Add(e.busi.URL+"/api/TransOut", e.busi.URL+"/api/TransOutCompensate", &req{1, 10}).
		Add(e.busi.URL+"/api/TransOut", e.busi.URL+"/api/TransOutCompensate", &req{3, 10}).
		Add(e.busi.URL+"/api/TransIn", e.busi.URL+"/api/TransInCompensate", &req{2, 20}).
		SetConcurrent().AddBranchOrder(2, []int{0, 1})
	s.BranchHeaders = map[string]string{"X-Tenant": "acme"}
	s.WaitResult = true
	if err := s.Submit(); err != nil {
		t.Fatal(err)
	}
	e.busi.mu.Lock()
	calls := append([]string(nil), e.busi.calls...)
	h := e.busi.headers["/api/TransIn"]
	e.busi.mu.Unlock()
	if len(calls) != 3 || calls[2] != "/api/TransIn 03 action" {
		t.Fatalf("calls %v: branch 03 must come after 01 and 02", calls)
	}
	if h.Get("X-Tenant") != "acme" {
		t.Fatalf("branch headers did not reach the branch: %v", h)
	}
	if got := e.busi.balances(t); got != "990 1020 990" {
		t.Fatalf("balances %s", got)
	}
}

func TestTimeoutToFail(t *testing.T) {
	e := setup(t)
	e.busi.set("/api/TransIn", dtmcli.ErrOngoing)
	s := e.saga(30)
	s.TimeoutToFail = 2
	if err := s.Submit(); err != nil {
		t.Fatal(err)
	}
	if st := e.status(t, s.Gid); st != "failed" {
		t.Fatalf("saga %s", st)
	}
	if got := e.busi.balances(t); got != "1000 1000 1000" {
		t.Fatalf("balances %s", got)
	}
}

func TestRetryLimit(t *testing.T) {
	e := setup(t)
	e.busi.set("/api/TransIn", errors.New("down"))
	s := e.saga(30)
	s.RetryLimit = 2
	if err := s.Submit(); err != nil {
		t.Fatal(err)
	}
	if st := e.status(t, s.Gid); st != "failed" {
		t.Fatalf("saga %s", st)
	}
	if n := e.busi.count("/api/TransIn"); n != 2 {
		t.Fatalf("TransIn called %d times, want retry_limit 2", n)
	}
	if got := e.busi.balances(t); got != "1000 1000 1000" {
		t.Fatalf("balances %s", got)
	}
}

func TestResubmit(t *testing.T) {
	e := setup(t)
	e.busi.set("/api/TransIn", dtmcli.ErrOngoing, nil)
	s := e.saga(30)
	if err := s.Submit(); err != nil {
		t.Fatal(err)
	}
	if err := s.Submit(); err != nil { // running: accepted again
		t.Fatalf("resubmit of a running saga: %v", err)
	}
	if st := e.status(t, s.Gid); st != "succeed" {
		t.Fatalf("saga %s", st)
	}
	err := s.Submit() // finished: refused
	if err == nil || !strings.Contains(err.Error(), "FAILURE") {
		t.Fatalf("resubmit of a finished saga: %v", err)
	}
	if got := e.busi.balances(t); got != "970 1030 1000" {
		t.Fatalf("balances %s", got)
	}
}
