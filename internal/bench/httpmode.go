package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/jetsaga/jetsaga/dtmgateway"
	"github.com/jetsaga/jetsaga/examples/bank"
	"github.com/jetsaga/jetsaga/httpparticipant"
	"github.com/jetsaga/jetsaga/orchestrator"
)

// Modes of a run.
const (
	// ModeNative: the banks are Go participants (package participants).
	ModeNative = "native"
	// ModeHTTP: the banks are HTTP services with DTM's barrier on
	// PostgreSQL, called by an HTTP participant; sagas are submitted to the
	// DTM-compatible gateway as DTM's Go client submits them.
	ModeHTTP = "http"
)

// dtmBarrierDDL is DTM's barrier table (dtmcli's PostgreSQL schema).
const dtmBarrierDDL = `CREATE SCHEMA IF NOT EXISTS dtm_barrier;
CREATE TABLE IF NOT EXISTS dtm_barrier.barrier (
    id bigserial PRIMARY KEY, trans_type varchar(45) DEFAULT '', gid varchar(128) DEFAULT '',
    branch_id varchar(128) DEFAULT '', op varchar(45) DEFAULT '', barrier_id varchar(45) DEFAULT '',
    reason varchar(45) DEFAULT '', create_time timestamptz DEFAULT now(), update_time timestamptz DEFAULT now(),
    CONSTRAINT uniq_barrier UNIQUE (gid, branch_id, op, barrier_id))`

const dtmBarrierInsert = `INSERT INTO dtm_barrier.barrier (trans_type, gid, branch_id, op, barrier_id, reason)
VALUES ($1, $2, $3, $4, '01', $5) ON CONFLICT ON CONSTRAINT uniq_barrier DO NOTHING`

// httpMode is what a run in ModeHTTP starts.
type httpMode struct {
	gateway string // the DTM API's URL
	bank    string // the banks' base URL
	client  *http.Client
}

func (e *env) migrateHTTP(ctx context.Context) error {
	for _, pool := range []*pgxpool.Pool{e.poolA, e.poolB} {
		if _, err := pool.Exec(ctx, dtmBarrierDDL); err != nil {
			return fmt.Errorf("DTM barrier table: %w", err)
		}
	}
	return nil
}

// serve serves h on a loopback port until the run ends.
func (e *env) serve(h http.Handler) (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	e.closers = append(e.closers, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	return "http://" + ln.Addr().String(), nil
}

// startHTTP starts the banks' HTTP services, an HTTP participant and the
// gateway, each on its own connection as separate processes would have.
func (e *env) startHTTP(spawn func(string, func(context.Context) error)) (*httpMode, error) {
	o := e.o
	bankURL, err := e.serve(e.bankHandler())
	if err != nil {
		return nil, err
	}
	allow := httpparticipant.MustAllow(bankURL + "/")
	_, js, err := e.Connect()
	if err != nil {
		return nil, err
	}
	p, err := httpparticipant.New(httpparticipant.Config{JetStream: js, Namespace: e.NS, Allow: allow,
		Concurrency: 2 * o.ParticipantConcurrency, Logger: o.Logger})
	if err != nil {
		return nil, err
	}
	spawn("http participant", p.Run)
	_, gjs, err := e.Connect()
	if err != nil {
		return nil, err
	}
	g, err := dtmgateway.New(dtmgateway.Config{JetStream: gjs, Namespace: e.NS, Allow: allow, Logger: o.Logger})
	if err != nil {
		return nil, err
	}
	gwURL, err := e.serve(g.Handler())
	if err != nil {
		g.Close()
		return nil, err
	}
	e.closers = append(e.closers, g.Close)
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = o.Concurrency
	client := &http.Client{Transport: t, Timeout: time.Minute}
	e.closers = append(e.closers, client.CloseIdleConnections)
	return &httpMode{gateway: gwURL + "/api/dtmsvr", bank: bankURL, client: client}, nil
}

// submitHTTP submits t's saga to the gateway as DTM's Go client does and
// returns its gid.
func (h *httpMode) submit(ctx context.Context, t *transfer) (string, error) {
	id, err := uuid.NewV7()
	if err != nil {
		return "", err
	}
	gid := strings.ReplaceAll(id.String(), "-", "")
	out, _ := json.Marshal(bank.TransferReq{UserID: t.from, Amount: t.amount})
	in, _ := json.Marshal(bank.TransferReq{UserID: t.to, Amount: t.amount})
	body, err := json.Marshal(map[string]any{"gid": gid, "trans_type": "saga", "concurrent": false, "protocol": "",
		"steps": []map[string]string{
			{"action": h.bank + "/a/TransOut", "compensate": h.bank + "/a/TransOutCompensate"},
			{"action": h.bank + "/b/TransIn", "compensate": h.bank + "/b/TransInCompensate"}},
		"payloads": []string{string(out), string(in)}})
	if err != nil {
		return "", err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.gateway+"/submit", bytes.NewReader(body))
	if err != nil {
		return gid, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := h.client.Do(req)
	if err != nil {
		return gid, err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return gid, fmt.Errorf("submit: %d %s", resp.StatusCode, data)
	}
	return gid, nil
}

// errFailure is a business failure: the handler answers 409 FAILURE.
type errFailure struct{ msg string }

func (e *errFailure) Error() string { return e.msg }

// bankHandler serves the banks' four actions as DTM services: /a/… on bank
// A's database, /b/… on bank B's, each in DTM's barrier.
func (e *env) bankHandler() http.Handler {
	mux := http.NewServeMux()
	type action struct {
		pool *pgxpool.Pool
		run  func(ctx context.Context, tx pgx.Tx, r bank.TransferReq) error
	}
	actions := map[string]action{
		"/a/TransOut":           {e.poolA, httpTransOut},
		"/a/TransOutCompensate": {e.poolA, httpCredit},
		"/b/TransIn":            {e.poolB, httpTransIn},
		"/b/TransInCompensate":  {e.poolB, httpDebitBack},
	}
	for path, a := range actions {
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			var req bank.TransferReq
			if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			q := r.URL.Query()
			err := dtmBarrier(r.Context(), a.pool, q.Get("trans_type"), q.Get("gid"), q.Get("branch_id"), q.Get("op"),
				func(tx pgx.Tx) error { return a.run(r.Context(), tx, req) })
			var fail *errFailure
			switch {
			case err == nil:
				_, _ = io.WriteString(w, `{"dtm_result":"SUCCESS"}`)
			case errors.As(err, &fail):
				w.WriteHeader(http.StatusConflict)
				_, _ = fmt.Fprintf(w, `{"dtm_result":"FAILURE","message":%q}`, fail.msg)
			default:
				http.Error(w, err.Error(), http.StatusInternalServerError)
			}
		})
	}
	return mux
}

// dtmBarrier is dtmcli's sub-transaction barrier for PostgreSQL: the origin
// and current rows, then the business code, in one transaction.
func dtmBarrier(ctx context.Context, pool *pgxpool.Pool, transType, gid, branch, op string, busi func(pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		var origin pgconn.CommandTag
		var err error
		if op == httpparticipant.CompensateName {
			if origin, err = tx.Exec(ctx, dtmBarrierInsert, transType, gid, branch, httpparticipant.ActionName, op); err != nil {
				return err
			}
		}
		current, err := tx.Exec(ctx, dtmBarrierInsert, transType, gid, branch, op, op)
		if err != nil {
			return err
		}
		if origin.RowsAffected() > 0 || current.RowsAffected() == 0 {
			return nil // null compensation, duplicate or hanging call
		}
		return busi(tx)
	})
}

func httpTransOut(ctx context.Context, tx pgx.Tx, r bank.TransferReq) error {
	tag, err := tx.Exec(ctx, `UPDATE accounts SET balance = balance - $2::numeric, updated = now() WHERE user_id = $1 AND balance >= $2::numeric`,
		r.UserID, r.Amount.String())
	if err == nil && tag.RowsAffected() == 0 {
		err = &errFailure{fmt.Sprintf("account %d: insufficient balance or unknown", r.UserID)}
	}
	return err
}

func httpCredit(ctx context.Context, tx pgx.Tx, r bank.TransferReq) error {
	_, err := tx.Exec(ctx, `UPDATE accounts SET balance = balance + $2::numeric, updated = now() WHERE user_id = $1`, r.UserID, r.Amount.String())
	return err
}

func httpTransIn(ctx context.Context, tx pgx.Tx, r bank.TransferReq) error {
	tag, err := tx.Exec(ctx, `UPDATE accounts SET balance = balance + $2::numeric, updated = now() WHERE user_id = $1 AND NOT abnormal`,
		r.UserID, r.Amount.String())
	if err == nil && tag.RowsAffected() == 0 {
		err = &errFailure{fmt.Sprintf("account %d: abnormal or unknown", r.UserID)}
	}
	return err
}

func httpDebitBack(ctx context.Context, tx pgx.Tx, r bank.TransferReq) error {
	tag, err := tx.Exec(ctx, `UPDATE accounts SET balance = balance - $2::numeric, updated = now() WHERE user_id = $1 AND balance >= $2::numeric`,
		r.UserID, r.Amount.String())
	if err == nil && tag.RowsAffected() == 0 {
		err = fmt.Errorf("account %d: cannot debit %s back", r.UserID, r.Amount)
	}
	return err
}

// httpStepTx counts the step transactions of the HTTP banks: one current
// barrier row (op = reason) each.
func httpStepTx(ctx context.Context, pool *pgxpool.Pool) (int64, error) {
	var n int64
	err := pool.QueryRow(ctx, `SELECT count(*) FROM dtm_barrier.barrier WHERE op = reason`).Scan(&n)
	return n, err
}

// checkHTTP checks a run in ModeHTTP: every saga committed or compensated,
// every balance exactly as the committed transfers say (so no action or
// compensation applied twice or lost), none negative.
func (e *env) checkHTTP(ctx context.Context, ts []*transfer) []string {
	var errs []string
	add := func(s string) {
		if len(errs) <= maxReported {
			errs = append(errs, s)
		}
	}
	want := [2]map[int64]bank.Cents{{}, {}}
	for id := int64(1); id <= int64(e.o.Accounts); id++ {
		want[0][id], want[1][id] = initialBalance, initialBalance
	}
	for _, t := range ts {
		switch {
		case t.err != nil:
			add(fmt.Sprintf("saga %s: %v", t.id, t.err))
		case t.status == orchestrator.Committed:
			want[0][t.from] -= t.amount
			want[1][t.to] += t.amount
		case t.status != orchestrator.Compensated:
			add(fmt.Sprintf("saga %s ended %s", t.id, t.status))
		}
	}
	for i, pool := range []*pgxpool.Pool{e.poolA, e.poolB} {
		rows, err := pool.Query(ctx, `SELECT user_id, balance::text FROM accounts`)
		if err != nil {
			return append(errs, err.Error())
		}
		for rows.Next() {
			var id int64
			var s string
			if err := rows.Scan(&id, &s); err != nil {
				rows.Close()
				return append(errs, err.Error())
			}
			got, err := bank.ParseCents(s)
			if err != nil || got != want[i][id] {
				add(fmt.Sprintf("bank %c account %d: balance %s, want %s", 'a'+i, id, s, want[i][id]))
			}
		}
		rows.Close()
	}
	return errs
}
