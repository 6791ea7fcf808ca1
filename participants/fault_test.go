package participants

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetsaga/jetsaga/events"
	"github.com/jetsaga/jetsaga/internal/testenv"
	"github.com/jetsaga/jetsaga/participants/participanttest"
)

// TestCrashBetweenCommitAndAck closes the participant's NATS connection
// right after the step committed, before its outcome was published and the
// command acked: the command comes back to a second instance, which must not
// apply it again and sends the outcome its barrier row recorded, once.
func TestCrashBetweenCommitAndAck(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.l.seed(t, map[string]int64{"alice": 100})

	nc1, js1 := testenv.Connect(t, b.srv.URL())
	crashed := make(chan struct{})
	p1 := b.newParticipant(t, js1, func(c *Config) { c.AckWait = 500 * time.Millisecond })
	var once sync.Once
	p1.afterCommit = func(jetstream.Msg) {
		once.Do(func() {
			nc1.Close()
			close(crashed)
		})
	}
	done := make(chan error, 1)
	go func() { done <- p1.Run(context.Background()) }()

	c := cmd("s1", "debit", events.OpDo, "Withdraw", "alice", 30)
	b.send(t, c)
	<-crashed
	select {
	case err := <-done:
		if !errors.Is(err, nats.ErrConnectionClosed) && !strings.Contains(fmt.Sprint(err), "closed") {
			t.Fatalf("Run after its connection closed = %v, want a closed-connection error", err)
		}
	case <-time.After(waitTotal):
		t.Fatal("Run did not return after its connection closed")
	}
	if got := b.l.balance(t, "alice"); got != 70 {
		t.Fatalf("balance after the crash = %d, want 70 (committed)", got)
	}

	// The second instance gets the command again after AckWait.
	p2 := b.newParticipant(t, nil, func(c *Config) { c.AckWait = 500 * time.Millisecond })
	start(t, p2)
	o := b.wait(t, c)
	b.settled(t, p2)
	if o.Status != events.Succeeded {
		t.Fatalf("outcome = %+v, want succeeded", o.Outcome)
	}
	if got := b.l.calls["Withdraw"].Load(); got != 1 {
		t.Fatalf("Withdraw ran %d times, want 1", got)
	}
	if got := b.l.balance(t, "alice"); got != 70 {
		t.Fatalf("balance = %d, want 70", got)
	}
	if os := b.outcomes(t, "s1"); len(os) != 1 {
		t.Fatalf("%d outcome messages on %s, want 1", len(os), b.ns.Event(testName, "s1"))
	}
}

// TestOutcomeResentWhenThePublishFails: the step commits but its outcome
// cannot be stored (the sagas stream is gone). The command is not acked; it
// comes back, the barrier recognises it and the recorded outcome is sent
// again until it is stored; the handler runs once.
func TestOutcomeResentWhenThePublishFails(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.l.seed(t, map[string]int64{"alice": 100})
	p := b.newParticipant(t, nil, nil)
	b.l.setHook(func(ctx context.Context, info StepInfo) error {
		if info.Delivered == 1 {
			return b.js.DeleteStream(ctx, b.ns.SagasStream())
		}
		return nil
	})
	start(t, p)
	c := cmd("s1", "debit", events.OpDo, "Withdraw", "alice", 30)
	b.send(t, c)
	testenv.CheckFor(t, waitTotal, waitStep, func() error {
		info, err := b.consumerInfo(t.Context(), p)
		if err != nil {
			return err
		}
		if info.Delivered.Consumer < 3 {
			return fmt.Errorf("delivered %d times, want at least 3 (the outcome failed twice)", info.Delivered.Consumer)
		}
		return nil
	})
	if got := b.l.balance(t, "alice"); got != 70 {
		t.Fatalf("balance while the outcome cannot be sent = %d, want 70 (committed)", got)
	}
	if err := participanttest.CreateStreams(t.Context(), b.js, b.ns, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	if o := b.wait(t, c); o.Status != events.Succeeded {
		t.Fatalf("outcome = %+v, want succeeded", o.Outcome)
	}
	b.settled(t, p)
	if got := b.l.calls["Withdraw"].Load(); got != 1 {
		t.Fatalf("Withdraw ran %d times, want 1", got)
	}
	if got := b.l.balance(t, "alice"); got != 70 {
		t.Fatalf("balance = %d, want 70", got)
	}
}

// TestSpentBudgetResendsTheRecordedOutcome: a null compensation commits but
// its outcome cannot be stored until the command's budget is spent; the
// delivery past the budget sends the outcome the barrier row recorded, null
// compensation reason included, not "exhausted".
func TestSpentBudgetResendsTheRecordedOutcome(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.l.seed(t, map[string]int64{"alice": 100})
	p := b.newParticipant(t, nil, nil)
	if err := b.js.DeleteStream(t.Context(), b.ns.SagasStream()); err != nil {
		t.Fatal(err)
	}
	start(t, p)
	const attempts = 2
	c := cmd("s1", "debit", events.OpUndo, "WithdrawCompensate", "alice", 30)
	c.Retry = events.RetryPolicy{MaxAttempts: attempts, InitialBackoffMS: 5, MaxBackoffMS: 20}
	b.send(t, c)
	testenv.CheckFor(t, waitTotal, waitStep, func() error {
		info, err := b.consumerInfo(t.Context(), p)
		if err != nil {
			return err
		}
		if info.Delivered.Consumer < attempts+2 {
			return fmt.Errorf("delivered %d times, want at least %d (past the budget)", info.Delivered.Consumer, attempts+2)
		}
		return nil
	})
	if err := participanttest.CreateStreams(t.Context(), b.js, b.ns, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	o := b.wait(t, c)
	if o.Status != events.Compensated || o.Reason != reasonNullNeverRan {
		t.Fatalf("outcome = %+v, want compensated with %q", o.Outcome, reasonNullNeverRan)
	}
	b.settled(t, p)
	if got := b.l.calls["WithdrawCompensate"].Load(); got != 0 {
		t.Fatalf("the compensation handler ran %d times for an action that never ran", got)
	}
}

// TestTransientErrorsThenSuccess fails the handler five times, then lets it
// through: applied once, one outcome.
func TestTransientErrorsThenSuccess(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.l.seed(t, map[string]int64{"alice": 100})
	p := b.newParticipant(t, nil, nil)
	var tries atomic.Int64
	var deliveries []uint64
	var mu sync.Mutex
	b.l.setHook(func(ctx context.Context, info StepInfo) error {
		mu.Lock()
		deliveries = append(deliveries, info.Delivered)
		mu.Unlock()
		if tries.Add(1) <= 5 {
			return errors.New("database hiccup")
		}
		return nil
	})
	start(t, p)
	c := cmd("s1", "debit", events.OpDo, "Withdraw", "alice", 30)
	b.send(t, c)
	if o := b.wait(t, c); o.Status != events.Succeeded {
		t.Fatalf("outcome = %+v, want succeeded", o.Outcome)
	}
	b.settled(t, p)
	if got := tries.Load(); got != 6 {
		t.Fatalf("handler ran %d times, want 6", got)
	}
	mu.Lock()
	if fmt.Sprint(deliveries) != "[1 2 3 4 5 6]" {
		t.Errorf("deliveries seen by the handler = %v, want 1..6", deliveries)
	}
	mu.Unlock()
	if got := b.l.balance(t, "alice"); got != 70 {
		t.Fatalf("balance = %d, want 70", got)
	}
	if os := b.outcomes(t, "s1"); len(os) != 1 {
		t.Fatalf("%d outcomes, want 1", len(os))
	}
}

// TestRetryBudgetExhausted fails the handler every time: after MaxAttempts
// deliveries the command is terminated with an exhausted outcome and nothing
// is applied.
func TestRetryBudgetExhausted(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.l.seed(t, map[string]int64{"alice": 100})
	p := b.newParticipant(t, nil, nil)
	// The handler debits, then fails: the debit must not survive.
	b.l.setHook(func(ctx context.Context, info StepInfo) error { return errors.New("downstream unavailable") })
	start(t, p)
	c := cmd("s1", "debit", events.OpDo, "Withdraw", "alice", 30)
	c.Retry = events.RetryPolicy{MaxAttempts: 3, InitialBackoffMS: 5, MaxBackoffMS: 20}
	b.send(t, c)
	o := b.wait(t, c)
	if o.Status != events.Exhausted || !strings.Contains(o.Reason, "downstream unavailable") || !strings.Contains(o.Reason, "3 deliveries") {
		t.Fatalf("outcome = %+v, want exhausted after 3 deliveries naming the last error", o.Outcome)
	}
	b.settled(t, p)
	if got := b.l.calls["Withdraw"].Load(); got != 3 {
		t.Fatalf("handler ran %d times, want 3", got)
	}
	if got := b.l.balance(t, "alice"); got != 100 {
		t.Fatalf("balance = %d, want 100 (nothing applied)", got)
	}
	if _, ok := b.barrierRow(t, "s1", "debit", events.OpDo); ok {
		t.Fatal("a barrier row survived an exhausted action; a retry with a fresh budget would be refused")
	}
	if os := b.outcomes(t, "s1"); len(os) != 1 {
		t.Fatalf("%d outcomes, want 1", len(os))
	}
	// The compensation that follows is a null one.
	undo := cmd("s1", "debit", events.OpUndo, "WithdrawCompensate", "alice", 30)
	b.l.setHook(nil)
	b.send(t, undo)
	if o := b.wait(t, undo); o.Status != events.Compensated || o.Reason != reasonNullNeverRan {
		t.Fatalf("undo outcome = %+v, want a null compensation", o.Outcome)
	}
}

// TestPoisonCommands sends commands that can never succeed: each is
// terminated, answered with a rejected outcome, and applies nothing.
func TestPoisonCommands(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.l.seed(t, map[string]int64{"alice": 100})
	p := b.newParticipant(t, nil, nil)
	start(t, p)
	ctx := t.Context()

	// Bad JSON: anonymous rejection on the saga of the subject.
	if _, err := b.js.Publish(ctx, b.ns.Command(testName, "bad-json"), []byte(`{"v":1,"saga_id":`)); err != nil {
		t.Fatal(err)
	}
	// Unknown action.
	unknown := cmd("unknown-action", "x", events.OpDo, "Teleport", "alice", 1)
	b.send(t, unknown)
	// Negative amount: the payload's Validate refuses it.
	negative := cmd("negative", "debit", events.OpDo, "Withdraw", "alice", -5)
	b.send(t, negative)
	// Unknown field in the payload.
	extra := cmd("extra-field", "debit", events.OpDo, "Withdraw", "alice", 5)
	extra.Payload = []byte(`{"account":"alice","amount":5,"memo":"hi"}`)
	b.send(t, extra)
	// An action run with the wrong op.
	wrongOp := cmd("wrong-op", "debit", events.OpUndo, "Withdraw", "alice", 5)
	b.send(t, wrongOp)
	// A command for another participant on our subject.
	other := cmd("other", "debit", events.OpDo, "Withdraw", "alice", 5)
	other.Participant = "someone-else"
	data, err := other.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.js.Publish(ctx, b.ns.Command(testName, "other"), data); err != nil {
		t.Fatal(err)
	}

	testenv.CheckFor(t, waitTotal, waitStep, func() error {
		for _, saga := range []string{"bad-json", "unknown-action", "negative", "extra-field", "wrong-op", "other"} {
			if len(b.outcomes(t, saga)) == 0 {
				return fmt.Errorf("no outcome for %s yet", saga)
			}
		}
		return nil
	})
	b.settled(t, p)
	want := map[string]string{
		"bad-json":       "undecodable command",
		"unknown-action": `unknown action "Teleport"`,
		"negative":       "amount: is -5, must be > 0",
		"extra-field":    `unknown field "memo"`,
		"wrong-op":       `registered for op "do"`,
		"other":          `participant "someone-else"`,
	}
	for saga, reason := range want {
		os := b.outcomes(t, saga)
		if len(os) != 1 {
			t.Errorf("%s: %d outcomes, want 1", saga, len(os))
			continue
		}
		o := os[0]
		if o.Status != events.Rejected || !strings.Contains(o.Reason, reason) {
			t.Errorf("%s: outcome %s %q, want rejected containing %q", saga, o.Status, o.Reason, reason)
		}
		if saga == "bad-json" && (o.Step != "" || o.Attempt != 0) {
			t.Errorf("bad-json: outcome names step %q attempt %d, want an anonymous rejection", o.Step, o.Attempt)
		}
	}
	if got := b.l.balance(t, "alice"); got != 100 {
		t.Fatalf("balance = %d, want 100", got)
	}
	for a, n := range b.l.calls {
		if n.Load() != 0 {
			t.Errorf("%s ran %d times, want 0", a, n.Load())
		}
	}
	// A rejected action is recorded, so that its compensation is a null one
	// and a redelivery re-sends the rejection without running anything.
	if r, ok := b.barrierRow(t, "negative", "debit", events.OpDo); !ok || r.status != statusRejected {
		t.Fatalf("barrier row of the rejected action = %+v (found %v), want rejected", r, ok)
	}
	undo := cmd("negative", "debit", events.OpUndo, "WithdrawCompensate", "alice", -5)
	b.send(t, undo)
	if o := b.wait(t, undo); o.Status != events.Compensated || !strings.Contains(o.Reason, "null compensation") {
		t.Fatalf("undo of a rejected action = %+v, want a null compensation", o.Outcome)
	}
	again := negative
	again.Attempt = 2
	b.send(t, again)
	if o := b.wait(t, again); o.Status != events.Rejected {
		t.Fatalf("rejected action sent again = %+v, want rejected again", o.Outcome)
	}
	b.settled(t, p)
}

// TestUnreadableCommandBounded: an unreadable command whose rejection
// cannot be published (here the sagas stream is gone) is delivered 10 times,
// then terminated without an outcome and logged (PROTOCOL §7.5).
func TestUnreadableCommandBounded(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	if err := b.js.DeleteStream(ctx, b.ns.SagasStream()); err != nil {
		t.Fatal(err)
	}
	logs := &testenv.SyncBuffer{}
	p := b.newParticipant(t, nil, func(c *Config) { c.Logger = slog.New(slog.NewTextHandler(logs, nil)) })
	p.resendDelay = 10 * time.Millisecond
	start(t, p)
	if _, err := b.js.Publish(ctx, b.ns.Command(testName, "bad-json"), []byte(`{"v":1,"saga_id":`)); err != nil {
		t.Fatal(err)
	}
	var info *jetstream.ConsumerInfo
	testenv.CheckFor(t, waitTotal, waitStep, func() error {
		var err error
		if info, err = b.consumerInfo(ctx, p); err != nil {
			return err
		}
		// Delivered at least once first: right after the publish the
		// consumer may not count the command as pending yet.
		if info.Delivered.Consumer == 0 || info.NumPending != 0 || info.NumAckPending != 0 {
			return fmt.Errorf("the command is still pending (%d) or unacked (%d) after %d deliveries",
				info.NumPending, info.NumAckPending, info.Delivered.Consumer)
		}
		return nil
	})
	if info.Delivered.Consumer != 10 {
		t.Fatalf("the command was delivered %d times, want 10", info.Delivered.Consumer)
	}
	if got := logs.String(); !strings.Contains(got, "unreadable command terminated without an outcome") || !strings.Contains(got, "undecodable command") {
		t.Fatalf("no log line saying the command was terminated, and why; logs:\n%s", got)
	}
}

// TestRejectedCompensation: a compensation whose action ran but whose
// payload is poison cannot run; it is rejected and leaves no barrier row, so
// that a fixed compensation can still run later.
func TestRejectedCompensation(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.l.seed(t, map[string]int64{"alice": 100})
	p := b.newParticipant(t, nil, nil)
	start(t, p)
	do := cmd("s1", "debit", events.OpDo, "Withdraw", "alice", 30)
	b.send(t, do)
	b.wait(t, do)
	bad := cmd("s1", "debit", events.OpUndo, "WithdrawCompensate", "alice", 0)
	b.send(t, bad)
	if o := b.wait(t, bad); o.Status != events.Rejected {
		t.Fatalf("outcome = %+v, want rejected", o.Outcome)
	}
	if _, ok := b.barrierRow(t, "s1", "debit", events.OpUndo); ok {
		t.Fatal("a rejected compensation left an undo row")
	}
	good := cmd("s1", "debit", events.OpUndo, "WithdrawCompensate", "alice", 30)
	good.Attempt = 2
	b.send(t, good)
	if o := b.wait(t, good); o.Status != events.Compensated || o.Reason != "" {
		t.Fatalf("outcome = %+v, want a real compensation", o.Outcome)
	}
	b.settled(t, p)
	if got := b.l.balance(t, "alice"); got != 100 {
		t.Fatalf("balance = %d, want 100", got)
	}
}

// TestLongHandlerKeptAlive runs a handler three times longer than AckWait:
// progress acks keep JetStream from delivering the command again. Counting
// handler runs is not enough to show it: a redelivery blocks on the
// uncommitted barrier row and is then skipped as a duplicate, so the
// deliveries are counted too (the consumer's delivered sequence counts
// redeliveries).
func TestLongHandlerKeptAlive(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.l.seed(t, map[string]int64{"alice": 100})
	const ackWait = 2 * time.Second // progress every 667 ms: only a stall of over 1.3 s redelivers
	p := b.newParticipant(t, nil, func(c *Config) { c.AckWait = ackWait })
	b.l.setHook(func(ctx context.Context, info StepInfo) error {
		time.Sleep(3 * ackWait)
		return nil
	})
	start(t, p)
	c := cmd("s1", "debit", events.OpDo, "Withdraw", "alice", 30)
	b.send(t, c)
	if o := b.wait(t, c); o.Status != events.Succeeded {
		t.Fatalf("outcome = %+v", o.Outcome)
	}
	b.settled(t, p)
	if got := b.l.calls["Withdraw"].Load(); got != 1 {
		t.Fatalf("handler ran %d times, want 1: the command was delivered again while it ran", got)
	}
	info, err := b.consumerInfo(t.Context(), p)
	if err != nil {
		t.Fatal(err)
	}
	if info.Delivered.Consumer != 1 {
		t.Fatalf("the command was delivered %d times, want 1: it was delivered again while its handler ran", info.Delivered.Consumer)
	}
}

// TestHandlerPanic: a panic is a transient error, retried like any other.
func TestHandlerPanic(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.l.seed(t, map[string]int64{"alice": 100})
	p := b.newParticipant(t, nil, nil)
	var n atomic.Int64
	b.l.setHook(func(ctx context.Context, info StepInfo) error {
		if n.Add(1) == 1 {
			panic("boom")
		}
		return nil
	})
	start(t, p)
	c := cmd("s1", "debit", events.OpDo, "Withdraw", "alice", 30)
	b.send(t, c)
	if o := b.wait(t, c); o.Status != events.Succeeded {
		t.Fatalf("outcome = %+v", o.Outcome)
	}
	if got := b.l.balance(t, "alice"); got != 70 {
		t.Fatalf("balance = %d, want 70", got)
	}
}

// TestGracefulShutdown cancels Run while handlers are in flight: they all
// commit and are acked before Run returns.
func TestGracefulShutdown(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const n = 8
	accounts := map[string]int64{}
	for i := range n {
		accounts[fmt.Sprintf("a%d", i)] = 100
	}
	b.l.seed(t, accounts)
	p := b.newParticipant(t, nil, func(c *Config) { c.Concurrency = n })
	release := make(chan struct{})
	var releaseOnce sync.Once
	// Deferred calls run before the cleanup that stops Run: a failing test
	// does not leave handlers blocked.
	defer releaseOnce.Do(func() { close(release) })
	var entered atomic.Int64
	b.l.setHook(func(ctx context.Context, info StepInfo) error {
		entered.Add(1)
		<-release
		return nil
	})
	stop := start(t, p)
	for i := range n {
		b.send(t, cmd(fmt.Sprintf("s%d", i), "debit", events.OpDo, "Withdraw", fmt.Sprintf("a%d", i), 10))
	}
	testenv.CheckFor(t, waitTotal, waitStep, func() error {
		if got := entered.Load(); got != n {
			return fmt.Errorf("%d handlers running, want %d", got, n)
		}
		return nil
	})
	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	select {
	case err := <-stopped:
		t.Fatalf("Run returned (%v) while handlers were still running", err)
	case <-time.After(100 * time.Millisecond):
	}
	releaseOnce.Do(func() { close(release) })
	if err := <-stopped; err != nil {
		t.Fatalf("Run: %v", err)
	}
	for a := range accounts {
		if got := b.l.balance(t, a); got != 90 {
			t.Fatalf("balance of %s = %d, want 90: every handler in flight commits", a, got)
		}
	}
	info, err := b.consumerInfo(t.Context(), p)
	if err != nil {
		t.Fatal(err)
	}
	if info.NumAckPending != 0 || info.NumPending != 0 || info.AckFloor.Stream != uint64(n) {
		t.Fatalf("consumer after shutdown: %d unacked, %d pending, ack floor %d; want all %d acked",
			info.NumAckPending, info.NumPending, info.AckFloor.Stream, n)
	}
	// Every acked command's outcome was sent before its ack.
	all, err := participanttest.AllOutcomes(t.Context(), b.js, b.ns, testName)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != n {
		t.Fatalf("%d outcomes published, want %d", len(all), n)
	}
}

// TestShutdownTimeoutCancelsHandlers: a handler that outlives
// ShutdownTimeout sees its context cancelled, rolls back, and the command
// stays for the next run.
func TestShutdownTimeoutCancelsHandlers(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.l.seed(t, map[string]int64{"alice": 100})
	p := b.newParticipant(t, nil, func(c *Config) { c.ShutdownTimeout = 50 * time.Millisecond })
	var entered atomic.Bool
	b.l.setHook(func(ctx context.Context, info StepInfo) error {
		entered.Store(true)
		<-ctx.Done()
		return ctx.Err()
	})
	stop := start(t, p)
	c := cmd("s1", "debit", events.OpDo, "Withdraw", "alice", 30)
	b.send(t, c)
	testenv.CheckFor(t, waitTotal, waitStep, func() error {
		if !entered.Load() {
			return errors.New("handler not running yet")
		}
		return nil
	})
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if got := b.l.balance(t, "alice"); got != 100 {
		t.Fatalf("balance = %d, want 100", got)
	}
	if _, ok := b.barrierRow(t, "s1", "debit", events.OpDo); ok {
		t.Fatal("the interrupted step left a barrier row")
	}
	// The next instance runs it.
	b.l.setHook(nil)
	p2 := b.newParticipant(t, nil, nil)
	start(t, p2)
	if o := b.wait(t, c); o.Status != events.Succeeded {
		t.Fatalf("outcome = %+v", o.Outcome)
	}
}

// TestExhaustedOutcomeWaitsForTheSagasStream: when the exhausted outcome
// cannot be sent (the sagas stream is gone), the command is not dropped: it
// comes back (without running the handler again) until the outcome is
// stored, then it is terminated.
func TestExhaustedOutcomeWaitsForTheSagasStream(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.l.seed(t, map[string]int64{"alice": 100})
	p := b.newParticipant(t, nil, nil)
	const attempts = 3
	b.l.setHook(func(ctx context.Context, info StepInfo) error {
		if info.Delivered == attempts {
			// The sagas stream disappears: the exhausted outcome cannot be
			// stored.
			if err := b.js.DeleteStream(ctx, b.ns.SagasStream()); err != nil {
				return err
			}
		}
		return errors.New("still failing")
	})
	start(t, p)
	c := cmd("s1", "debit", events.OpDo, "Withdraw", "alice", 30)
	c.Retry = events.RetryPolicy{MaxAttempts: attempts, InitialBackoffMS: 5, MaxBackoffMS: 20}
	b.send(t, c)
	// It keeps coming back while the outcome cannot be sent.
	testenv.CheckFor(t, waitTotal, waitStep, func() error {
		info, err := b.consumerInfo(t.Context(), p)
		if err != nil {
			return err
		}
		if info.NumRedelivered == 0 || (info.NumAckPending == 0 && info.NumPending == 0) {
			return fmt.Errorf("command not held for a retry: %+v", info)
		}
		if got := b.l.calls["Withdraw"].Load(); got != attempts {
			return fmt.Errorf("handler ran %d times, want %d", got, attempts)
		}
		if info.Delivered.Consumer < attempts+2 {
			return fmt.Errorf("delivered %d times, want at least %d (the exhausted outcome failed twice)", info.Delivered.Consumer, attempts+2)
		}
		return nil
	})
	if err := participanttest.CreateStreams(t.Context(), b.js, b.ns, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	if o := b.wait(t, c); o.Status != events.Exhausted {
		t.Fatalf("outcome = %+v", o.Outcome)
	}
	testenv.CheckFor(t, waitTotal, waitStep, func() error {
		info, err := b.consumerInfo(t.Context(), p)
		if err != nil {
			return err
		}
		if info.NumPending != 0 || info.NumAckPending != 0 {
			return fmt.Errorf("command still pending (%d) or unacked (%d)", info.NumPending, info.NumAckPending)
		}
		return nil
	})
	if got := b.l.calls["Withdraw"].Load(); got != attempts {
		t.Fatalf("handler ran %d times, want %d", got, attempts)
	}
	if got := b.l.balance(t, "alice"); got != 100 {
		t.Fatalf("balance = %d, want 100", got)
	}
}

// TestHandlerTransaction: the handler cannot end the step's transaction, but
// may use nested transactions (savepoints) inside it.
func TestHandlerTransaction(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.l.seed(t, map[string]int64{"alice": 100, "bob": 0})
	p := b.newParticipant(t, nil, nil)
	var commitErr, rollbackErr error
	Register(p, "Nested", Step[move]{Do: func(ctx context.Context, tx pgx.Tx, info StepInfo, m move) (any, error) {
		commitErr, rollbackErr = tx.Commit(ctx), tx.Rollback(ctx)
		nested, err := tx.Begin(ctx)
		if err != nil {
			return nil, err
		}
		if err := credit(ctx, nested, move{Account: "bob", Amount: 1000}); err != nil {
			return nil, err
		}
		if err := nested.Rollback(ctx); err != nil { // undoes the 1000 only
			return nil, err
		}
		return nil, credit(ctx, tx, m)
	}})
	start(t, p)
	c := cmd("s1", "nested", events.OpDo, "Nested", "bob", 5)
	b.send(t, c)
	if o := b.wait(t, c); o.Status != events.Succeeded {
		t.Fatalf("outcome = %+v", o.Outcome)
	}
	if !errors.Is(commitErr, ErrTxOwned) || !errors.Is(rollbackErr, ErrTxOwned) {
		t.Fatalf("Commit = %v, Rollback = %v; want ErrTxOwned", commitErr, rollbackErr)
	}
	if got := b.l.balance(t, "bob"); got != 5 {
		t.Fatalf("bob's balance = %d, want 5", got)
	}
}
