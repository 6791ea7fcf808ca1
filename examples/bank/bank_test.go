package bank

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetsaga/jetsaga/events"
	"github.com/jetsaga/jetsaga/internal/testenv"
	"github.com/jetsaga/jetsaga/outbox"
	"github.com/jetsaga/jetsaga/participants"
	"github.com/jetsaga/jetsaga/participants/participanttest"
)

func TestMain(m *testing.M) { testenv.Main(m) }

const waitTotal = 60 * time.Second

var fastRetry = events.RetryPolicy{MaxAttempts: 5, InitialBackoffMS: 5, MaxBackoffMS: 20}

// world is two banks, each with its own database, on one NATS server.
type world struct {
	js     jetstream.JetStream
	ns     events.Namespace
	a, b   *pgxpool.Pool
	banks  map[string]*pgxpool.Pool
	before Cents
}

func setup(t *testing.T) *world {
	t.Helper()
	srv := testenv.NATS(t)
	_, js := testenv.Connect(t, srv.URL())
	w := &world{js: js, ns: events.Default(), a: testenv.Postgres(t), b: testenv.Postgres(t)}
	w.banks = map[string]*pgxpool.Pool{"bank-a": w.a, "bank-b": w.b}
	if err := participanttest.CreateStreams(t.Context(), js, w.ns, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	for name, pool := range w.banks {
		ctx := t.Context()
		if err := Migrate(ctx, pool); err != nil {
			t.Fatal(err)
		}
		if err := Migrate(ctx, pool); err != nil {
			t.Fatalf("second Migrate: %v", err)
		}
		ob, err := outbox.New(outbox.Config{})
		if err != nil {
			t.Fatal(err)
		}
		p, err := participants.New(participants.Config{Name: name, Pool: pool, JetStream: js, Outbox: ob,
			Relay: outbox.RelayConfig{DisableListen: true, PollInterval: 50 * time.Millisecond}})
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Migrate(ctx); err != nil {
			t.Fatal(err)
		}
		Register(p)
		runCtx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- p.Run(runCtx) }()
		t.Cleanup(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("%s: Run: %v", name, err)
			}
		})
	}
	must(t, Seed(t.Context(), w.a, map[int64]Cents{1: 100_00, 3: 5_00}))
	must(t, Seed(t.Context(), w.b, map[int64]Cents{2: 0, 4: 10_00}))
	w.before = w.total(t)
	return w
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func (w *world) total(t *testing.T) Cents {
	t.Helper()
	var sum Cents
	for _, pool := range w.banks {
		c, err := Total(t.Context(), pool)
		must(t, err)
		sum += c
	}
	return sum
}

func (w *world) balance(t *testing.T, pool *pgxpool.Pool, user int64) Cents {
	t.Helper()
	c, err := Balance(t.Context(), pool, user)
	must(t, err)
	return c
}

// run sends one command and returns its outcome.
func (w *world) run(t *testing.T, saga, bank, step string, op events.Op, action string, payload string) participanttest.Outcome {
	t.Helper()
	c := events.Command{SagaID: saga, Participant: bank, Step: step, Op: op, Attempt: 1, Action: action,
		Payload: json.RawMessage(payload), Retry: fastRetry}
	if _, err := participanttest.Send(t.Context(), w.js, w.ns, c); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), waitTotal)
	defer cancel()
	o, err := participanttest.WaitOutcome(ctx, w.js, w.ns, c)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func req(user int64, amount string) string {
	return fmt.Sprintf(`{"user_id":%d,"amount":%q}`, user, amount)
}

func TestTransfer(t *testing.T) {
	t.Parallel()
	w := setup(t)
	if o := w.run(t, "s1", "bank-a", "out", events.OpDo, TransOut, req(1, "30.00")); o.Status != events.Succeeded {
		t.Fatalf("TransOut: %+v", o.Outcome)
	}
	if o := w.run(t, "s1", "bank-b", "in", events.OpDo, TransIn, req(2, "30.00")); o.Status != events.Succeeded {
		t.Fatalf("TransIn: %+v", o.Outcome)
	}
	if a, b := w.balance(t, w.a, 1), w.balance(t, w.b, 2); a != 70_00 || b != 30_00 {
		t.Fatalf("balances %s and %s, want 70.00 and 30.00", a, b)
	}
	if got := w.total(t); got != w.before {
		t.Fatalf("total %s, want %s", got, w.before)
	}
}

func TestInsufficientBalance(t *testing.T) {
	t.Parallel()
	w := setup(t)
	o := w.run(t, "s1", "bank-a", "out", events.OpDo, TransOut, req(3, "5.01"))
	if o.Status != events.Failed || !strings.Contains(o.Reason, "account 3: insufficient balance for 5.01") {
		t.Fatalf("outcome %+v, want failed: insufficient balance", o.Outcome)
	}
	if got := w.balance(t, w.a, 3); got != 5_00 {
		t.Fatalf("balance %s, want 5.00", got)
	}
	// Exactly the balance is fine.
	if o := w.run(t, "s2", "bank-a", "out", events.OpDo, TransOut, req(3, "5.00")); o.Status != events.Succeeded {
		t.Fatalf("debit of the whole balance: %+v", o.Outcome)
	}
	if got := w.balance(t, w.a, 3); got != 0 {
		t.Fatalf("balance %s, want 0.00", got)
	}
}

// TestAbnormalAccount runs a transfer whose TransIn fails, then its
// compensation: the money comes back and the total is unchanged.
func TestAbnormalAccount(t *testing.T) {
	t.Parallel()
	w := setup(t)
	must(t, SetAbnormal(t.Context(), w.b, 2, true))
	if o := w.run(t, "s1", "bank-a", "out", events.OpDo, TransOut, req(1, "30.00")); o.Status != events.Succeeded {
		t.Fatalf("TransOut: %+v", o.Outcome)
	}
	o := w.run(t, "s1", "bank-b", "in", events.OpDo, TransIn, req(2, "30.00"))
	if o.Status != events.Failed || !strings.Contains(o.Reason, "user's account is abnormal") {
		t.Fatalf("TransIn: %+v, want failed: abnormal", o.Outcome)
	}
	// The coordinator compensates both steps (TransIn's is a null one).
	if o := w.run(t, "s1", "bank-b", "in", events.OpUndo, TransIn+participants.CompensationSuffix, req(2, "30.00")); o.Status != events.Compensated || !strings.Contains(o.Reason, "null compensation") {
		t.Fatalf("TransInCompensate: %+v, want a null compensation", o.Outcome)
	}
	if o := w.run(t, "s1", "bank-a", "out", events.OpUndo, TransOut+participants.CompensationSuffix, req(1, "30.00")); o.Status != events.Compensated || o.Reason != "" {
		t.Fatalf("TransOutCompensate: %+v, want compensated", o.Outcome)
	}
	if a, b := w.balance(t, w.a, 1), w.balance(t, w.b, 2); a != 100_00 || b != 0 {
		t.Fatalf("balances %s and %s, want 100.00 and 0.00", a, b)
	}
	if got := w.total(t); got != w.before {
		t.Fatalf("total %s, want %s", got, w.before)
	}
	must(t, SetAbnormal(t.Context(), w.b, 2, false))
	if o := w.run(t, "s2", "bank-b", "in", events.OpDo, TransIn, req(2, "1.00")); o.Status != events.Succeeded {
		t.Fatalf("TransIn after clearing the flag: %+v", o.Outcome)
	}
}

func TestUnknownAccount(t *testing.T) {
	t.Parallel()
	w := setup(t)
	if o := w.run(t, "s1", "bank-a", "out", events.OpDo, TransOut, req(99, "1.00")); o.Status != events.Failed || !strings.Contains(o.Reason, "account 99 does not exist") {
		t.Fatalf("TransOut: %+v", o.Outcome)
	}
	if o := w.run(t, "s2", "bank-b", "in", events.OpDo, TransIn, req(99, "1.00")); o.Status != events.Failed || !strings.Contains(o.Reason, "account 99 does not exist") {
		t.Fatalf("TransIn: %+v", o.Outcome)
	}
	if err := SetAbnormal(t.Context(), w.b, 99, true); err == nil {
		t.Fatal("SetAbnormal of an unknown account succeeded")
	}
	if got := w.total(t); got != w.before {
		t.Fatalf("total %s, want %s", got, w.before)
	}
}

// TestPoisonAmounts: amounts that no bank can act on are rejected through
// the bank's payload type, and nothing is applied.
func TestPoisonAmounts(t *testing.T) {
	t.Parallel()
	w := setup(t)
	for i, tc := range []struct{ payload, reason string }{
		{req(1, "-5.00"), "amount: is -5.00, must be > 0"},
		{req(1, "0.00"), "amount: is 0.00, must be > 0"},
		{`{"user_id":1,"amount":30.5}`, "not a JSON number"},
		{req(1, "30.001"), "at most 2 are allowed"},
		{`{"user_id":1,"amount":"1.00","memo":"x"}`, `unknown field "memo"`},
		{req(0, "1.00"), "user_id: is 0"},
	} {
		saga := fmt.Sprintf("s%d", i)
		o := w.run(t, saga, "bank-a", "out", events.OpDo, TransOut, tc.payload)
		if o.Status != events.Rejected || !strings.Contains(o.Reason, tc.reason) {
			t.Errorf("%s: outcome %s %q, want rejected containing %q", tc.payload, o.Status, o.Reason, tc.reason)
		}
	}
	if got := w.balance(t, w.a, 1); got != 100_00 {
		t.Fatalf("balance %s, want 100.00", got)
	}
}

// TestCompensationNeverGoesNegative: TransIn's compensation finds the money
// spent; it refuses to overdraw, retries, and ends exhausted (the saga would
// park), leaving the balance at zero.
func TestCompensationNeverGoesNegative(t *testing.T) {
	t.Parallel()
	w := setup(t)
	if o := w.run(t, "s1", "bank-b", "in", events.OpDo, TransIn, req(2, "30.00")); o.Status != events.Succeeded {
		t.Fatalf("TransIn: %+v", o.Outcome)
	}
	must(t, Seed(t.Context(), w.b, map[int64]Cents{2: 10_00})) // spent 20.00 since
	o := w.run(t, "s1", "bank-b", "in", events.OpUndo, TransIn+participants.CompensationSuffix, req(2, "30.00"))
	if o.Status != events.Exhausted || !strings.Contains(o.Reason, "balance would go negative") {
		t.Fatalf("outcome %+v, want exhausted naming the refusal", o.Outcome)
	}
	if got := w.balance(t, w.b, 2); got != 10_00 {
		t.Fatalf("balance %s, want 10.00", got)
	}
}
