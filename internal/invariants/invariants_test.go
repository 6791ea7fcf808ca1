package invariants_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetsaga/jetsaga/events"
	"github.com/jetsaga/jetsaga/examples/bank"
	"github.com/jetsaga/jetsaga/internal/invariants"
	"github.com/jetsaga/jetsaga/internal/testenv"
	"github.com/jetsaga/jetsaga/orchestrator"
	"github.com/jetsaga/jetsaga/participants"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// accounts per bank in the test bundle; account 1 of bank-b is abnormal.
const accounts = 8

// bundle is a whole transfer system in this process: NATS, a coordinator,
// both banks on their own databases, a client.
type bundle struct {
	t            *testing.T
	js           jetstream.JetStream
	client       *orchestrator.Client
	poolA, poolB *pgxpool.Pool
	initA        map[int64]bank.Cents
	initB        map[int64]bank.Cents
	stop         func() // stops the coordinator and the banks
}

func setup(t *testing.T) *bundle {
	t.Helper()
	ctx := context.Background()
	srv := testenv.NATS(t)
	_, js := testenv.Connect(t, srv.URL())
	if err := orchestrator.EnsureStreams(ctx, js, events.Default(), events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	b := &bundle{t: t, js: js, poolA: testenv.Postgres(t), poolB: testenv.Postgres(t),
		initA: map[int64]bank.Cents{}, initB: map[int64]bank.Cents{}}
	for id := int64(1); id <= accounts; id++ {
		b.initA[id] = bank.Cents(100_00 * id)
		b.initB[id] = bank.Cents(50_00 * id)
	}
	for _, x := range []struct {
		pool *pgxpool.Pool
		init map[int64]bank.Cents
	}{{b.poolA, b.initA}, {b.poolB, b.initB}} {
		if err := participants.Migrate(ctx, x.pool); err != nil {
			t.Fatal(err)
		}
		if err := bank.Migrate(ctx, x.pool); err != nil {
			t.Fatal(err)
		}
		if err := bank.Seed(ctx, x.pool, x.init); err != nil {
			t.Fatal(err)
		}
	}
	if err := bank.SetAbnormal(ctx, b.poolB, 1, true); err != nil {
		t.Fatal(err)
	}
	quiet := slog.New(slog.DiscardHandler)
	runCtx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	run := func(name string, f func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(runCtx); err != nil {
				t.Errorf("%s: %v", name, err)
			}
		}()
	}
	coord, err := orchestrator.NewCoordinator(orchestrator.Config{JetStream: js, SkipEnsureStreams: true, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	run("coordinator", coord.Run)
	for _, x := range []struct {
		name string
		pool *pgxpool.Pool
	}{{bank.BankA, b.poolA}, {bank.BankB, b.poolB}} {
		p, err := participants.New(participants.Config{Name: x.name, Pool: x.pool, JetStream: js, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		bank.Register(p)
		run(x.name, p.Run)
	}
	var once sync.Once
	b.stop = func() { once.Do(func() { cancel(); wg.Wait() }) }
	t.Cleanup(b.stop)
	b.client = orchestrator.NewClient(js, events.Default())
	t.Cleanup(b.client.Close)
	return b
}

// transfer runs one transfer saga to its end.
func (b *bundle) transfer(from, to int64, amount bank.Cents) invariants.Transfer {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tr := invariants.Transfer{ID: uuid.NewString(), From: from, To: to, Amount: amount}
	if _, err := b.client.Start(ctx, bank.TransferPlan(tr.ID, from, to, amount)); err != nil {
		b.t.Fatal(err)
	}
	if _, err := b.client.Wait(ctx, tr.ID); err != nil {
		b.t.Fatal(err)
	}
	return tr
}

func (b *bundle) config(ts []invariants.Transfer) invariants.Config {
	return invariants.Config{Client: b.client, BankA: b.poolA, BankB: b.poolB, InitialA: b.initA, InitialB: b.initB,
		Transfers: ts}
}

func (b *bundle) check(cfg invariants.Config) *invariants.Report {
	b.t.Helper()
	r, err := invariants.Check(context.Background(), cfg)
	if err != nil {
		b.t.Fatal(err)
	}
	return r
}

// exec runs SQL on a pool, failing the test on error.
func exec(t *testing.T, pool *pgxpool.Pool, sql string, args ...any) {
	t.Helper()
	if _, err := pool.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// wantViolation checks that r reports a violation containing every part.
func wantViolation(t *testing.T, r *invariants.Report, parts ...string) {
	t.Helper()
	if r.OK() {
		t.Fatalf("no violation reported, want one with %q", parts)
	}
	for _, v := range r.Violations {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(v, p)
		}
		if ok {
			return
		}
	}
	t.Fatalf("no violation contains %q:\n%v", parts, r.Err())
}

// TestCheck runs real transfers of every kind, checks that the invariants
// hold, then breaks each invariant in turn and checks that it is reported.
func TestCheck(t *testing.T) {
	b := setup(t)
	ok := b.transfer(2, 3, 12_34)         // committed
	abnormal := b.transfer(3, 1, 5_00)    // TransIn fails: debit compensated
	insufficient := b.transfer(1, 2, 1e9) // TransOut fails: nothing to compensate
	ok2 := b.transfer(4, 4, 100_00)       // committed
	lost := invariants.Transfer{ID: "never-started", From: 1, To: 1, Amount: 1, Unacked: true}
	ts := []invariants.Transfer{ok, abnormal, insufficient, ok2, lost}
	b.stop() // nothing moves from here on

	r := b.check(b.config(ts))
	if err := r.Err(); err != nil {
		t.Fatal(err)
	}
	if r.Committed != 2 || r.Compensated != 2 || r.NotStarted != 1 || r.Parked != 0 || r.Missing != 0 {
		t.Fatalf("counts: %+v", r)
	}
	if r.TotalAfter != r.TotalBefore || r.TotalBefore == 0 {
		t.Fatalf("totals: %+v", r)
	}
	ctx := context.Background()

	t.Run("balance", func(t *testing.T) {
		exec(t, b.poolB, `UPDATE accounts SET balance = balance + 0.01 WHERE user_id = 4`)
		defer exec(t, b.poolB, `UPDATE accounts SET balance = balance - 0.01 WHERE user_id = 4`)
		r := b.check(b.config(ts))
		wantViolation(t, r, "bank-b: account 4 holds", "off by 0.01")
		wantViolation(t, r, "money not conserved")
	})
	t.Run("negative", func(t *testing.T) {
		// Simulate a broken constraint: the check must still see it.
		exec(t, b.poolA, `ALTER TABLE accounts DROP CONSTRAINT accounts_balance_check`)
		defer exec(t, b.poolA, `ALTER TABLE accounts ADD CONSTRAINT accounts_balance_check CHECK (balance >= 0)`)
		exec(t, b.poolA, `UPDATE accounts SET balance = -balance WHERE user_id = 5`)
		defer exec(t, b.poolA, `UPDATE accounts SET balance = -balance WHERE user_id = 5`)
		wantViolation(t, b.check(b.config(ts)), "bank-a: account 5 is negative")
	})
	t.Run("committed action applied twice", func(t *testing.T) {
		// A credit applied a second time, as a barrier that let a duplicate
		// through would do.
		exec(t, b.poolB, `UPDATE accounts SET balance = balance + 12.34 WHERE user_id = 3`)
		defer exec(t, b.poolB, `UPDATE accounts SET balance = balance - 12.34 WHERE user_id = 3`)
		wantViolation(t, b.check(b.config(ts)), "bank-b: account 3 holds", "off by 12.34")
	})
	t.Run("committed barrier row", func(t *testing.T) {
		exec(t, b.poolA, `UPDATE jetsaga_barrier SET status = 'failed' WHERE saga_id = $1 AND step = 'debit'`, ok.ID)
		defer exec(t, b.poolA, `UPDATE jetsaga_barrier SET status = 'succeeded' WHERE saga_id = $1 AND step = 'debit'`, ok.ID)
		wantViolation(t, b.check(b.config(ts)), ok.ID, "is committed but bank-a's barrier rows for debit are do=failed")
	})
	t.Run("compensation missing", func(t *testing.T) {
		// The debit's compensation row gone: the barrier says the debit is
		// still in effect in a compensated saga.
		exec(t, b.poolA, `DELETE FROM jetsaga_barrier WHERE saga_id = $1 AND step = 'debit' AND op = 'undo'`, abnormal.ID)
		defer exec(t, b.poolA, `INSERT INTO jetsaga_barrier (saga_id, step, op, status, attempt) VALUES ($1, 'debit', 'undo', 'compensated', 2)`, abnormal.ID)
		wantViolation(t, b.check(b.config(ts)), abnormal.ID, "is compensated but at bank-a step debit is compensated while its barrier rows are do=succeeded undo=absent")
	})
	t.Run("failed step took effect", func(t *testing.T) {
		exec(t, b.poolA, `UPDATE jetsaga_barrier SET status = 'succeeded' WHERE saga_id = $1 AND step = 'debit'`, insufficient.ID)
		defer exec(t, b.poolA, `UPDATE jetsaga_barrier SET status = 'failed' WHERE saga_id = $1 AND step = 'debit'`, insufficient.ID)
		wantViolation(t, b.check(b.config(ts)), insufficient.ID, "step debit is failed (no compensation sent) while its barrier rows are do=succeeded")
	})
	t.Run("action after compensation", func(t *testing.T) {
		// The credit of the abnormal transfer was refused; a credit that ran
		// anyway would show as a balance effect.
		exec(t, b.poolB, `UPDATE accounts SET balance = balance + 5.00 WHERE user_id = 1`)
		defer exec(t, b.poolB, `UPDATE accounts SET balance = balance - 5.00 WHERE user_id = 1`)
		wantViolation(t, b.check(b.config(ts)), "bank-b: account 1 holds", "off by 5.00")
	})
	t.Run("voided", func(t *testing.T) {
		// A saga whose credit was voided by its compensation: counted, and
		// fine as long as nothing took effect.
		exec(t, b.poolB, `INSERT INTO jetsaga_barrier (saga_id, step, op, status, attempt) VALUES ($1, 'credit', 'do', 'voided', 3)`, insufficient.ID)
		defer exec(t, b.poolB, `DELETE FROM jetsaga_barrier WHERE saga_id = $1`, insufficient.ID)
		r := b.check(b.config(ts))
		// The credit step is pending in the state, yet a compensation voided
		// it: the barrier and the state disagree.
		wantViolation(t, r, insufficient.ID, "at bank-b step credit is pending (no compensation sent) while its barrier rows are do=voided")
		if r.VoidedActions != 1 {
			t.Fatalf("voided actions %d, want 1", r.VoidedActions)
		}
	})
	t.Run("missing saga", func(t *testing.T) {
		gone := invariants.Transfer{ID: "acked-but-lost", From: 1, To: 1, Amount: 1}
		r := b.check(b.config(append(ts[:len(ts):len(ts)], gone)))
		wantViolation(t, r, "acked-but-lost", "its start was acknowledged but no saga has this id")
		if r.Missing != 1 {
			t.Fatalf("missing %d, want 1", r.Missing)
		}
	})
	t.Run("unstarted saga left rows", func(t *testing.T) {
		exec(t, b.poolA, `INSERT INTO jetsaga_barrier (saga_id, step, op, status, attempt) VALUES ($1, 'debit', 'do', 'failed', 1)`, lost.ID)
		defer exec(t, b.poolA, `DELETE FROM jetsaga_barrier WHERE saga_id = $1`, lost.ID)
		wantViolation(t, b.check(b.config(ts)), "never-started", "never started (no saga has this id) yet the banks hold barrier rows")
	})
	t.Run("other plan", func(t *testing.T) {
		other := ts[:len(ts):len(ts)]
		other = append([]invariants.Transfer{}, other...)
		other[0].Amount++
		wantViolation(t, b.check(b.config(other)), ok.ID, "holds another plan", "moves 12.34 on account 2, want 12.35")
	})
	t.Run("foreign action", func(t *testing.T) {
		exec(t, b.poolB, `INSERT INTO jetsaga_barrier (saga_id, step, op, status, attempt) VALUES ('forged', 'credit', 'do', 'rejected', 1),
('forged2', 'credit', 'do', 'succeeded', 1)`)
		defer exec(t, b.poolB, `DELETE FROM jetsaga_barrier WHERE saga_id LIKE 'forged%'`)
		r := b.check(b.config(ts))
		wantViolation(t, r, "saga forged2 step credit", "an unplanned action took effect")
		if r.ForeignRows != 2 || r.ViolationCount != 1 {
			t.Fatalf("foreign rows %d, violations %d, want 2 and 1: %v", r.ForeignRows, r.ViolationCount, r.Err())
		}
	})
	t.Run("parked", func(t *testing.T) {
		// A saga parked half way: debited at bank-a, the credit neither
		// applied nor compensated. Written by hand, as only an exhausted
		// compensation parks a transfer.
		kv, err := b.js.KeyValue(ctx, events.Default().StateBucket())
		if err != nil {
			t.Fatal(err)
		}
		st, err := b.client.Get(ctx, ok.ID)
		if err != nil {
			t.Fatal(err)
		}
		parked := invariants.Transfer{ID: "parked-saga", From: 6, To: 6, Amount: 7_00}
		st.SagaID, st.Status, st.Reason = parked.ID, orchestrator.Parked, "compensation of step \"credit\" timed out 10 times"
		start, err := bank.TransferPlan(parked.ID, parked.From, parked.To, parked.Amount).Build()
		if err != nil {
			t.Fatal(err)
		}
		st.Plan = &start
		st.Steps[1].Status = orchestrator.StepCompensating
		data, err := json.Marshal(st)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := kv.Put(ctx, parked.ID, data); err != nil {
			t.Fatal(err)
		}
		exec(t, b.poolA, `INSERT INTO jetsaga_barrier (saga_id, step, op, status, attempt) VALUES ($1, 'debit', 'do', 'succeeded', 1)`, parked.ID)
		exec(t, b.poolA, `UPDATE accounts SET balance = balance - 7.00 WHERE user_id = 6`)
		all := append(ts[:len(ts):len(ts)], parked)

		wantViolation(t, b.check(b.config(all)), "parked-saga", "is parked (compensation of step \"credit\" timed out 10 times), which this run does not allow")
		cfg := b.config(all)
		cfg.AllowParked = true
		r := b.check(cfg)
		if err := r.Err(); err != nil {
			t.Fatal(err)
		}
		if r.Parked != 1 || r.InFlight != 7_00 || len(r.ParkedSagas) != 1 || r.ParkedSagas[0].ID != parked.ID {
			t.Fatalf("parked %d, in flight %s, parked sagas %v", r.Parked, r.InFlight, r.ParkedSagas)
		}
		// The same parked saga with its debit's money gone elsewhere.
		exec(t, b.poolA, `UPDATE accounts SET balance = balance - 1.00 WHERE user_id = 6`)
		wantViolation(t, b.check(cfg), "bank-a: account 6 holds", "off by -1.00")
	})
}

// TestConfig checks that bad input is refused with the field named.
func TestConfig(t *testing.T) {
	ctx := context.Background()
	client := orchestrator.NewClient(nil, events.Default())
	defer client.Close()
	pool := &pgxpool.Pool{} // never used: validation fails first
	init := map[int64]bank.Cents{1: 10_00}
	good := func() invariants.Config {
		return invariants.Config{Client: client, BankA: pool, BankB: pool, InitialA: init, InitialB: init,
			Transfers: []invariants.Transfer{{ID: "a", From: 1, To: 1, Amount: 1}}}
	}
	for _, c := range []struct {
		want string
		edit func(*invariants.Config)
	}{
		{"Config.Client is nil", func(c *invariants.Config) { c.Client = nil }},
		{"Config.BankA is nil", func(c *invariants.Config) { c.BankA = nil }},
		{"Config.BankB is nil", func(c *invariants.Config) { c.BankB = nil }},
		{"Config.InitialA is empty", func(c *invariants.Config) { c.InitialA = nil }},
		{"Config.InitialB is empty", func(c *invariants.Config) { c.InitialB = map[int64]bank.Cents{} }},
		{"Config.InitialB[1] is -0.01, a balance cannot be negative", func(c *invariants.Config) { c.InitialB = map[int64]bank.Cents{1: -1} }},
		{"Config.MaxViolations is -1", func(c *invariants.Config) { c.MaxViolations = -1 }},
		{"Config.Concurrency is -2", func(c *invariants.Config) { c.Concurrency = -2 }},
		{"Config.Transfers[0].ID: \"\" must not be empty", func(c *invariants.Config) { c.Transfers[0].ID = "" }},
		{"Config.Transfers[0].ID: \"a.b\" has", func(c *invariants.Config) { c.Transfers[0].ID = "a.b" }},
		{"Config.Transfers[1].ID: \"a\" is also Transfers[0].ID", func(c *invariants.Config) { c.Transfers = append(c.Transfers, c.Transfers[0]) }},
		{"Config.Transfers[0].From: account 2 is not in InitialA", func(c *invariants.Config) { c.Transfers[0].From = 2 }},
		{"Config.Transfers[0].To: account 0 is not in InitialB", func(c *invariants.Config) { c.Transfers[0].To = 0 }},
		{"Config.Transfers[0].Amount: is 0.00, must be > 0", func(c *invariants.Config) { c.Transfers[0].Amount = 0 }},
	} {
		cfg := good()
		c.edit(&cfg)
		_, err := invariants.Check(ctx, cfg)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("error %v, want one containing %q", err, c.want)
		}
	}
}

// TestReportErr checks the summary of a failed report.
func TestReportErr(t *testing.T) {
	r := &invariants.Report{}
	if r.Err() != nil || !r.OK() {
		t.Fatal("an empty report must be OK")
	}
	r = &invariants.Report{Violations: []string{"one", "two"}, ViolationCount: 5}
	err := r.Err()
	if err == nil || r.OK() {
		t.Fatal("a report with violations must not be OK")
	}
	want := "invariants: 5 violation(s):\n  one\n  two\n  … and 3 more"
	if err.Error() != want {
		t.Fatalf("got %q, want %q", err, want)
	}
	if errors.Unwrap(err) != nil {
		t.Fatal(fmt.Sprint("unexpected wrapped error: ", errors.Unwrap(err)))
	}
}

// TestCheckExpired: sagas whose messages and state expired are checked
// against the status the load saw and their barrier rows, when allowed.
func TestCheckExpired(t *testing.T) {
	b := setup(t)
	ok := b.transfer(2, 3, 12_34)      // committed
	abnormal := b.transfer(3, 1, 5_00) // compensated
	b.stop()
	ctx := context.Background()
	// Expire both as JetStream would: the start messages leave the stream,
	// the states the bucket.
	sagas, err := b.js.Stream(ctx, events.Default().SagasStream())
	if err != nil {
		t.Fatal(err)
	}
	kv, err := b.js.KeyValue(ctx, events.Default().StateBucket())
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{ok.ID, abnormal.ID} {
		if err := sagas.Purge(ctx, jetstream.WithPurgeSubject(events.Default().Start(id))); err != nil {
			t.Fatal(err)
		}
		if err := kv.Purge(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	ok.Final, abnormal.Final = orchestrator.Committed, orchestrator.Compensated
	ts := []invariants.Transfer{ok, abnormal}

	wantViolation(t, b.check(b.config(ts)), ok.ID, "no saga has this id")
	cfg := b.config(ts)
	cfg.AllowExpired = true
	r := b.check(cfg)
	if err := r.Err(); err != nil {
		t.Fatal(err)
	}
	if r.Expired != 2 || r.Missing != 0 {
		t.Fatalf("expired %d, missing %d", r.Expired, r.Missing)
	}
	// What the load saw disagrees with the barrier rows.
	ts[0].Final = orchestrator.Compensated
	cfg.Transfers = ts
	wantViolation(t, b.check(cfg), ok.ID, "ended compensated (its state has expired) but the barrier rows are")
}
