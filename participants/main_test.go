package participants

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetsaga/jetsaga/devenv"
	"github.com/jetsaga/jetsaga/events"
	"github.com/jetsaga/jetsaga/internal/testenv"
	"github.com/jetsaga/jetsaga/outbox"
	"github.com/jetsaga/jetsaga/participants/participanttest"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// Generous bounds for eventual conditions; never asserted as performance.
const (
	waitTotal = 60 * time.Second
	waitStep  = 10 * time.Millisecond
	testName  = "ledger"
)

// fastRetry keeps retry delays short in tests.
var fastRetry = events.RetryPolicy{MaxAttempts: 10, InitialBackoffMS: 5, MaxBackoffMS: 50}

// bundle is one test's environment: a fresh database with the barrier, the
// outbox and a small ledger, an embedded NATS server with the streams, and a
// connection to it.
type bundle struct {
	url  string
	pool *pgxpool.Pool
	srv  *devenv.NATSServer
	nc   *nats.Conn
	js   jetstream.JetStream
	ns   events.Namespace
	l    *ledger
}

func setup(t testing.TB, natsOpts ...testenv.NATSOption) *bundle {
	t.Helper()
	b := &bundle{url: testenv.PostgresURL(t), ns: events.Default()}
	b.pool = openPool(t, b.url, 80)
	b.srv = testenv.NATS(t, natsOpts...)
	b.nc, b.js = testenv.Connect(t, b.srv.URL())
	if err := participanttest.CreateStreams(t.Context(), b.js, b.ns, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := Migrate(t.Context(), b.pool); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	b.l = newLedger(t, b.pool)
	return b
}

func openPool(t testing.TB, url string, maxConns int32) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = maxConns
	pool, err := pgxpool.NewWithConfig(t.Context(), cfg)
	if err != nil {
		t.Fatalf("open pool: %v", err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// testLogger writes to t.Log when verbose, and nowhere otherwise.
func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(b), "\n"))
	return len(b), nil
}

// newParticipant returns a participant with the ledger's steps registered,
// connected through js (b.js when nil).
func (b *bundle) newParticipant(t testing.TB, js jetstream.JetStream, mutate func(*Config)) *Participant {
	t.Helper()
	if js == nil {
		js = b.js
	}
	ob, err := outbox.New(outbox.Config{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Name: testName, Pool: b.pool, JetStream: js, Outbox: ob, Logger: testLogger(t),
		Relay: outbox.RelayConfig{PollInterval: 50 * time.Millisecond, DisableListen: true}}
	if mutate != nil {
		mutate(&cfg)
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	b.l.register(p)
	return p
}

// start runs p until the test ends (or stop is called); stop returns Run's
// error.
func start(t testing.TB, p *Participant) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	var stopped atomic.Bool
	var res error
	stop = func() error {
		if stopped.Swap(true) {
			return res
		}
		cancel()
		select {
		case res = <-done:
		case <-time.After(waitTotal):
			res = fmt.Errorf("Run did not return within %s of its context's cancellation", waitTotal)
		}
		return res
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return stop
}

// cmd builds a ledger command.
func cmd(saga, step string, op events.Op, action, account string, amount int64) events.Command {
	return events.Command{V: events.Version, SagaID: saga, Participant: testName, Step: step, Op: op, Attempt: 1,
		Action: action, Payload: []byte(fmt.Sprintf(`{"account":%q,"amount":%d}`, account, amount)), Retry: fastRetry}
}

func (b *bundle) send(t testing.TB, c events.Command, opts ...participanttest.SendOption) {
	t.Helper()
	if _, err := participanttest.Send(t.Context(), b.js, b.ns, c, opts...); err != nil {
		t.Fatal(err)
	}
}

func (b *bundle) wait(t testing.TB, c events.Command) participanttest.Outcome {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), waitTotal)
	defer cancel()
	o, err := participanttest.WaitOutcome(ctx, b.js, b.ns, c)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// outcomes returns the outcomes published about saga.
func (b *bundle) outcomes(t testing.TB, saga string) []participanttest.Outcome {
	t.Helper()
	os, err := participanttest.Outcomes(t.Context(), b.js, b.ns, testName, saga)
	if err != nil {
		t.Fatal(err)
	}
	return os
}

// consumerInfo reads the state of p's durable consumer.
func (b *bundle) consumerInfo(ctx context.Context, p *Participant) (*jetstream.ConsumerInfo, error) {
	c, err := b.js.Consumer(ctx, b.ns.CommandsStream(), p.ConsumerConfig().Durable)
	if err != nil {
		return nil, err
	}
	return c.Info(ctx)
}

// settled waits until the participant's consumer has nothing pending or
// unacknowledged.
func (b *bundle) settled(t testing.TB, p *Participant) {
	t.Helper()
	testenv.CheckFor(t, waitTotal, waitStep, func() error {
		info, err := b.consumerInfo(t.Context(), p)
		if err != nil {
			return err
		}
		if info.NumPending != 0 || info.NumAckPending != 0 || info.NumRedelivered != 0 {
			return fmt.Errorf("consumer: %d pending, %d unacked, %d redelivered", info.NumPending, info.NumAckPending, info.NumRedelivered)
		}
		return nil
	})
}

// barrierRow reads a barrier row; ok is false when there is none.
func (b *bundle) barrierRow(t testing.TB, saga, step string, op events.Op) (r row, ok bool) {
	t.Helper()
	err := b.pool.QueryRow(t.Context(), `SELECT status, reason, result FROM jetsaga_barrier WHERE saga_id = $1 AND step = $2 AND op = $3`,
		saga, step, op).Scan(&r.status, &r.reason, &r.result)
	if errors.Is(err, pgx.ErrNoRows) {
		return r, false
	}
	if err != nil {
		t.Fatal(err)
	}
	return r, true
}

// ledger is the business of the test participant: accounts with a
// non-negative balance, and handlers that count their calls.
type ledger struct {
	pool *pgxpool.Pool
	// calls counts handler runs per action name.
	calls map[string]*atomic.Int64
	// hook, when set, runs in every handler after its business write; its
	// error is the handler's.
	hook atomic.Pointer[func(ctx context.Context, info StepInfo) error]
}

// move is the ledger's payload.
type move struct {
	Account string `json:"account"`
	Amount  int64  `json:"amount"`
}

func (m move) Validate() error {
	if m.Account == "" {
		return errors.New("account: missing")
	}
	if m.Amount <= 0 {
		return fmt.Errorf("amount: is %d, must be > 0", m.Amount)
	}
	return nil
}

func newLedger(t testing.TB, pool *pgxpool.Pool) *ledger {
	t.Helper()
	if _, err := pool.Exec(t.Context(), `CREATE TABLE ledger (account text PRIMARY KEY, balance bigint NOT NULL CHECK (balance >= 0))`); err != nil {
		t.Fatal(err)
	}
	l := &ledger{pool: pool, calls: map[string]*atomic.Int64{}}
	for _, a := range []string{"Withdraw", "WithdrawCompensate", "Deposit", "DepositCompensate"} {
		l.calls[a] = new(atomic.Int64)
	}
	return l
}

func (l *ledger) setHook(f func(ctx context.Context, info StepInfo) error) { l.hook.Store(&f) }

func (l *ledger) seed(t testing.TB, balances map[string]int64) {
	t.Helper()
	for a, v := range balances {
		if _, err := l.pool.Exec(t.Context(), `INSERT INTO ledger VALUES ($1, $2)`, a, v); err != nil {
			t.Fatal(err)
		}
	}
}

func (l *ledger) balance(t testing.TB, account string) int64 {
	t.Helper()
	var v int64
	if err := l.pool.QueryRow(t.Context(), `SELECT balance FROM ledger WHERE account = $1`, account).Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

func (l *ledger) register(p *Participant) {
	Register(p, "Withdraw", Step[move]{Do: l.handler(debit), Undo: l.handler(credit)})
	Register(p, "Deposit", Step[move]{Do: l.handler(credit), Undo: l.handler(debit)})
}

func (l *ledger) handler(f func(ctx context.Context, tx pgx.Tx, m move) error) Handler[move] {
	return func(ctx context.Context, tx pgx.Tx, info StepInfo, m move) (any, error) {
		l.calls[info.Action].Add(1)
		if err := f(ctx, tx, m); err != nil {
			return nil, err
		}
		if h := l.hook.Load(); h != nil && *h != nil {
			if err := (*h)(ctx, info); err != nil {
				return nil, err
			}
		}
		return map[string]any{"account": m.Account, "moved": m.Amount}, nil
	}
}

func debit(ctx context.Context, tx pgx.Tx, m move) error {
	tag, err := tx.Exec(ctx, `UPDATE ledger SET balance = balance - $2 WHERE account = $1 AND balance >= $2`, m.Account, m.Amount)
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return Failf("account %s: insufficient balance or unknown account", m.Account)
	}
	return nil
}

func credit(ctx context.Context, tx pgx.Tx, m move) error {
	tag, err := tx.Exec(ctx, `UPDATE ledger SET balance = balance + $2 WHERE account = $1`, m.Account, m.Amount)
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return Failf("account %s: unknown account", m.Account)
	}
	return nil
}
