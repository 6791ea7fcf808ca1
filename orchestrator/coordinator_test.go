package orchestrator_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetsaga/jetsaga/devenv"
	"github.com/jetsaga/jetsaga/events"
	"github.com/jetsaga/jetsaga/internal/testenv"
	"github.com/jetsaga/jetsaga/orchestrator"
)

// bundle is one test's NATS server, connection and client.
type bundle struct {
	t      *testing.T
	srv    *devenv.NATSServer
	nc     *nats.Conn
	js     jetstream.JetStream
	client *orchestrator.Client
}

func setup(t *testing.T) *bundle {
	t.Helper()
	srv := testenv.NATS(t)
	nc, js := testenv.Connect(t, srv.URL())
	ctx := context.Background()
	if err := orchestrator.EnsureStreams(ctx, js, events.Default(), events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	client := orchestrator.NewClient(js, events.Default())
	t.Cleanup(client.Close)
	return &bundle{t: t, srv: srv, nc: nc, js: js, client: client}
}

// runCoordinator runs a coordinator until the returned stop is called (or
// the test ends).
func (b *bundle) runCoordinator(js jetstream.JetStream, options ...func(*orchestrator.Config)) (stop func(), c *orchestrator.Coordinator) {
	b.t.Helper()
	stopErr, c := b.startCoordinator(js, options...)
	stop = func() {
		if err := stopErr(); err != nil {
			b.t.Errorf("coordinator: %v", err)
		}
	}
	b.t.Cleanup(stop)
	return stop, c
}

// startCoordinator runs a coordinator; stop returns what Run returned.
// Options, if any, change its configuration.
func (b *bundle) startCoordinator(js jetstream.JetStream, options ...func(*orchestrator.Config)) (stop func() error, c *orchestrator.Coordinator) {
	b.t.Helper()
	// No default step timeout: these tests give a step a timeout where
	// they test one, and a loaded CI machine (-race, packages side by side)
	// can keep a bank's backlog longer than a minute (TestNoSilentSagas
	// tests the default).
	cfg := orchestrator.Config{JetStream: js, Workers: 16, AckWait: 2 * time.Second, StepTimeout: -1, Logger: slog.New(slog.DiscardHandler)}
	for _, o := range options {
		o(&cfg)
	}
	c, err := orchestrator.NewCoordinator(cfg)
	if err != nil {
		b.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var once sync.Once
	var runErr error
	stop = func() error {
		once.Do(func() {
			cancel()
			runErr = <-done
		})
		return runErr
	}
	b.t.Cleanup(func() { _ = stop() })
	return stop, c
}

// decision is what a scripted participant answers to a command; drop means
// no answer at all.
type decision struct {
	status events.Status
	reason string
	drop   bool
	delay  time.Duration // answer this much later (the command is acked now)
}

// responder is a scripted participant speaking the wire protocol directly:
// it consumes its commands and publishes outcomes with the protocol's
// message ids. Tests of the coordinator alone use it; the bank participants
// are used in the end-to-end tests.
type responder struct {
	mu      sync.Mutex
	seen    []events.Command
	late    sync.WaitGroup // answers given later
	stopped bool           // no more late answers: the test's cleanup waits for them
}

func (b *bundle) respond(participant string, decide func(events.Command) decision) *responder {
	b.t.Helper()
	r := &responder{}
	ctx := context.Background()
	cons, err := b.js.CreateOrUpdateConsumer(ctx, events.Default().CommandsStream(), jetstream.ConsumerConfig{
		Durable: "test_" + participant, FilterSubject: events.Default().CommandFilter(participant),
		AckPolicy: jetstream.AckExplicitPolicy,
	})
	if err != nil {
		b.t.Fatal(err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		cmd, err := events.DecodeCommand(m.Data())
		if err != nil {
			b.t.Errorf("responder: %v", err)
			_ = m.Term()
			return
		}
		r.mu.Lock()
		r.seen = append(r.seen, cmd)
		r.mu.Unlock()
		d := decide(cmd)
		if d.drop {
			_ = m.Ack()
			return
		}
		if d.status == "" {
			d.status = events.Succeeded
			if cmd.Op == events.OpUndo {
				d.status = events.Compensated
			}
		}
		o := events.Outcome{V: 1, SagaID: cmd.SagaID, Participant: participant, Step: cmd.Step, Op: cmd.Op,
			Attempt: cmd.Attempt, Status: d.status, Reason: d.reason}
		data, _ := o.Encode()
		msg := nats.NewMsg(events.Default().Event(participant, cmd.SagaID))
		msg.Data = data
		msg.Header.Set(events.HeaderMsgID, events.OutcomeMsgID(&o, 0))
		if d.delay > 0 {
			r.mu.Lock()
			defer r.mu.Unlock()
			if r.stopped {
				return // the consumer is stopping: the command is redelivered elsewhere or never
			}
			_ = m.Ack()
			r.late.Add(1)
			time.AfterFunc(d.delay, func() {
				defer r.late.Done()
				_, _ = b.js.PublishMsg(ctx, msg)
			})
			return
		}
		if _, err := b.js.PublishMsg(ctx, msg); err != nil {
			_ = m.Nak()
			return
		}
		_ = m.Ack()
	})
	if err != nil {
		b.t.Fatal(err)
	}
	b.t.Cleanup(func() {
		// A handler may still run after Stop: none may add a late answer
		// once Wait has begun.
		r.mu.Lock()
		r.stopped = true
		r.mu.Unlock()
		cc.Stop()
		r.late.Wait()
	})
	return r
}

func (r *responder) commands() []events.Command {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]events.Command(nil), r.seen...)
}

func ok(events.Command) decision { return decision{} }

// failsDo fails the action of saga id's step ("account abnormal") and
// decides every other command with otherwise.
func failsDo(id string, otherwise func(events.Command) decision) func(events.Command) decision {
	return func(c events.Command) decision {
		if c.SagaID == id && c.Op == events.OpDo {
			return decision{status: events.Failed, reason: "account abnormal"}
		}
		return otherwise(c)
	}
}

// storedState reads saga id's state from the bucket, with its revision.
func (b *bundle) storedState(id string) (*orchestrator.State, uint64, jetstream.KeyValue) {
	b.t.Helper()
	ctx := context.Background()
	kv, err := b.js.KeyValue(ctx, events.Default().StateBucket())
	if err != nil {
		b.t.Fatal(err)
	}
	entry, err := kv.Get(ctx, id)
	if err != nil {
		b.t.Fatal(err)
	}
	st, err := decodeStateJSON(entry.Value())
	if err != nil {
		b.t.Fatal(err)
	}
	return st, entry.Revision(), kv
}

func (b *bundle) wait(id string, want orchestrator.Status) *orchestrator.State {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := b.client.Wait(ctx, id)
	if err != nil {
		b.t.Fatalf("wait %s: %v (state %+v)", id, err, st)
	}
	if st.Status != want {
		b.t.Fatalf("saga %s is %s (%s), want %s", id, st.Status, st.Reason, want)
	}
	return st
}

func transferPlan(id string, opts ...orchestrator.StepOption) *orchestrator.Plan {
	return orchestrator.NewPlan("transfer").ID(id).
		Step("debit", "bank-a", "TransOut", "TransOutCompensate", map[string]any{"user": 1, "amount": "30.00"}).
		Step("credit", "bank-b", "TransIn", "TransInCompensate", map[string]any{"user": 2, "amount": "30.00"}, opts...)
}

func TestCoordinatorCommitAndCompensate(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.runCoordinator(b.js)
	b.respond("bank-a", ok)
	b.respond("bank-b", failsDo("fails", ok))
	ctx := context.Background()
	for _, id := range []string{"works", "fails"} {
		if _, err := b.client.Start(ctx, transferPlan(id)); err != nil {
			t.Fatal(err)
		}
	}
	b.wait("works", orchestrator.Committed)
	st := b.wait("fails", orchestrator.Compensated)
	if st.Steps[0].Status != orchestrator.StepCompensated || st.Steps[1].Status != orchestrator.StepFailed {
		t.Fatalf("steps: %+v", st.Steps)
	}
	tl, err := b.client.Timeline(ctx, "fails")
	if err != nil {
		t.Fatal(err)
	}
	// start, debit do, debit ok, credit do, credit failed, debit undo, debit compensated
	if len(tl) != 7 {
		for _, e := range tl {
			t.Log(e.Stream, e.Summary)
		}
		t.Fatalf("timeline has %d entries, want 7", len(tl))
	}
}

// TestTimersCostNothingUntilTheyFire: a saga's timer is its state's
// timer_ms, fired by the coordinators when it falls due. A saga that
// finishes before its step timeouts writes no message for them (a schedule
// per saga, and its tick a step timeout later, cost two fsync'd writes per
// saga); one whose participant stays silent gets its tick, once.
func TestTimersCostNothingUntilTheyFire(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, c := b.runCoordinator(b.js, func(cfg *orchestrator.Config) { cfg.StepTimeout = time.Minute })
	b.respond("bank-a", ok)
	b.respond("bank-b", failsDo("fails", func(c events.Command) decision {
		return decision{drop: c.SagaID == "silent" && c.Op == events.OpDo}
	}))
	ctx := context.Background()
	for _, id := range []string{"works", "fails"} {
		if _, err := b.client.Start(ctx, transferPlan(id)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := b.client.Start(ctx, transferPlan("silent", orchestrator.Timeout(time.Second))); err != nil {
		t.Fatal(err)
	}
	b.wait("works", orchestrator.Committed)
	b.wait("fails", orchestrator.Compensated)
	st := b.wait("silent", orchestrator.Compensated)
	if !strings.Contains(st.Reason, "timed out") {
		t.Fatalf("silent saga compensated for %q", st.Reason)
	}
	sagas, err := b.js.Stream(ctx, events.Default().SagasStream())
	if err != nil {
		t.Fatal(err)
	}
	count := func(subject string) uint64 {
		info, err := sagas.Info(ctx, jetstream.WithSubjectFilter(subject))
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Subjects[subject]
	}
	for _, id := range []string{"works", "fails"} {
		if n := count(events.Default().Tick(id)) + count(events.Default().Schedule(id)); n != 0 {
			t.Errorf("saga %s, finished in time, has %d timer messages", id, n)
		}
	}
	// The silent saga's credit timed out: its tick (and any of the
	// compensation's on a slow machine), each published once.
	if count(events.Default().Tick("silent")) == 0 {
		t.Error("silent saga: no tick")
	}
	// The count follows the publish's ack, which the saga may outrun (and
	// a timer that fell due as the saga ended may still be published).
	testenv.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		ticks := count(events.Default().Tick("silent"))
		if n := c.Stats().Timers; n != ticks {
			return fmt.Errorf("coordinator fired %d timers, the stream holds %d ticks", n, ticks)
		}
		return nil
	})
}

func TestClientStartIdempotentAndConflict(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	if _, err := b.client.Start(ctx, transferPlan("dup")); err != nil {
		t.Fatal(err)
	}
	if _, err := b.client.Start(ctx, transferPlan("dup")); err != nil {
		t.Fatalf("same plan again: %v", err)
	}
	_, err := b.client.Start(ctx, transferPlan("dup", orchestrator.Timeout(time.Second)))
	if !errors.Is(err, orchestrator.ErrPlanConflict) {
		t.Fatalf("different plan: %v", err)
	}
	_, err = b.client.Start(ctx, orchestrator.NewPlan("x").Step("a", "p", "A", "", nil))
	var fe *events.FieldError
	if !errors.As(err, &fe) || fe.Field != "steps[0].compensation" {
		t.Fatalf("invalid plan: %v", err)
	}
	if _, err := b.client.Get(ctx, "nope"); !errors.Is(err, orchestrator.ErrNotFound) {
		t.Fatalf("Get unknown: %v", err)
	}
}

func TestCoordinatorParallelStepsOneFails(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.runCoordinator(b.js)
	ra := b.respond("a", ok)
	b.respond("b", func(c events.Command) decision {
		if c.Op == events.OpDo {
			time.Sleep(50 * time.Millisecond) // a answers first
			return decision{status: events.Failed, reason: "no stock"}
		}
		return decision{}
	})
	rc := b.respond("c", ok)
	plan := orchestrator.NewPlan("dag").ID("dag1").
		Step("a", "a", "A", "UA", nil, orchestrator.After()).
		Step("b", "b", "B", "UB", nil, orchestrator.After()).
		Step("c", "c", "C", "UC", nil, orchestrator.After("a", "b"))
	if _, err := b.client.Start(context.Background(), plan); err != nil {
		t.Fatal(err)
	}
	st := b.wait("dag1", orchestrator.Compensated)
	if st.Steps[0].Status != orchestrator.StepCompensated || st.Steps[1].Status != orchestrator.StepFailed || st.Steps[2].Status != orchestrator.StepPending {
		t.Fatalf("steps: %+v", st.Steps)
	}
	if len(rc.commands()) != 0 {
		t.Fatal("c ran")
	}
	if got := ra.commands(); len(got) != 2 || got[1].Op != events.OpUndo {
		t.Fatalf("a got %+v", got)
	}
}

// TestCoordinatorTimeoutWhileDown: a participant never answers; the step's
// timer falls due while no coordinator runs; the restarted coordinator
// fires it from the state bucket and compensates the step (and the one
// before it).
func TestCoordinatorTimeoutWhileDown(t *testing.T) {
	t.Parallel()
	b := setup(t)
	stop, _ := b.runCoordinator(b.js)
	b.respond("bank-a", ok)
	var undone atomic.Int32
	b.respond("bank-b", func(c events.Command) decision {
		if c.Op == events.OpDo {
			return decision{drop: true}
		}
		undone.Add(1)
		return decision{}
	})
	ctx := context.Background()
	if _, err := b.client.Start(ctx, transferPlan("slow", orchestrator.Timeout(time.Second))); err != nil {
		t.Fatal(err)
	}
	var due int64
	testenv.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		st, err := b.client.Get(ctx, "slow")
		if err != nil {
			return err
		}
		if st.Steps[1].Status != orchestrator.StepRunning || st.TimerMS == 0 {
			return fmt.Errorf("credit is %s, timer %d", st.Steps[1].Status, st.TimerMS)
		}
		due = st.TimerMS
		return nil
	})
	stop()
	// The timer falls due with no coordinator running.
	time.Sleep(time.Until(time.UnixMilli(due)) + 200*time.Millisecond)
	_, c := b.runCoordinator(b.js)
	st := b.wait("slow", orchestrator.Compensated)
	if st.Steps[1].Status != orchestrator.StepCompensated || undone.Load() == 0 {
		t.Fatalf("credit not compensated: %+v", st.Steps[1])
	}
	testenv.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if c.Stats().Timers == 0 {
			return errors.New("the restarted coordinator fired no timer")
		}
		return nil
	})
}

func TestCoordinatorRejectsBadInput(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, coord := b.runCoordinator(b.js)
	b.respond("bank-a", func(events.Command) decision { return decision{drop: true} })
	ctx := context.Background()
	publish := func(subject, id string, data []byte) {
		t.Helper()
		m := nats.NewMsg(subject)
		m.Data = data
		if id != "" {
			m.Header.Set(events.HeaderMsgID, id)
		}
		if _, err := b.js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	ns := events.Default()
	publish(ns.Start("bad1"), "", []byte(`{"v":1,"saga_id":"bad1"`))
	publish(ns.Start("bad2"), "", []byte(`{"v":9,"saga_id":"bad2"}`))
	publish(ns.Start("bad3"), "", []byte(`{"v":1,"saga_id":"bad3","name":"n","steps":[
		{"name":"a","participant":"p","action":"A","compensation":"B","after":["b"]},
		{"name":"b","participant":"p","action":"A","compensation":"B","after":["a"]}]}`))
	for _, id := range []string{"bad1", "bad2", "bad3"} {
		st := b.wait(id, orchestrator.Rejected)
		t.Logf("%s: %s", id, st.Reason)
	}
	if st, _ := b.client.Get(ctx, "bad3"); st == nil || !contains(st.Reason, "dependency cycle") {
		t.Fatalf("bad3: %+v", st)
	}
	// A running saga, then forged and stray outcomes.
	if _, err := b.client.Start(ctx, transferPlan("live")); err != nil {
		t.Fatal(err)
	}
	testenv.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		_, err := b.client.Get(ctx, "live")
		return err
	})
	forged := events.Outcome{V: 1, SagaID: "live", Participant: "bank-b", Step: "debit", Op: events.OpDo, Attempt: 1, Status: events.Succeeded}
	data, _ := forged.Encode()
	publish(ns.Event("bank-b", "live"), "f1", data)
	stray := events.Outcome{V: 1, SagaID: "ghost", Participant: "bank-b", Step: "debit", Op: events.OpDo, Attempt: 1, Status: events.Succeeded}
	data, _ = stray.Encode()
	publish(ns.Event("bank-b", "ghost"), "f2", data)
	publish(ns.Event("bank-a", "live"), "f3", []byte("not json"))
	// Same id, different plan, published directly (the client refuses it).
	other, _ := transferPlan("live", orchestrator.Timeout(time.Hour)).Build()
	data, _ = other.Encode()
	publish(ns.Start("live"), "f4", data)
	testenv.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		st, err := b.client.Get(ctx, "live")
		if err != nil {
			return err
		}
		if len(st.Rejections) != 3 {
			return fmt.Errorf("%d rejections recorded: %+v", len(st.Rejections), st.Rejections)
		}
		if st.Steps[0].Status != orchestrator.StepRunning || st.Status != orchestrator.Running {
			return fmt.Errorf("forged outcome applied: %+v", st)
		}
		return nil
	})
	testenv.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if s := coord.Stats(); s.Rejected < 4 { // ghost + 3 recorded in "live"
			return fmt.Errorf("stats %+v", s)
		}
		return nil
	})
	// And the coordinator still works.
	b.respond("bank-b", ok)
	if _, err := b.client.Start(ctx, orchestrator.NewPlan("one").ID("after").Step("x", "bank-b", "X", "UX", nil)); err != nil {
		t.Fatal(err)
	}
	b.wait("after", orchestrator.Committed)
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

// TestCoordinatorTimerRescheduledSameDue is a regression test: the saga
// deadline D is scheduled, replaced by an earlier step timeout, which fires
// with nothing due; D is scheduled again and must still fire (an id on
// schedules once made JetStream drop the second schedule of D).
func TestCoordinatorTimerRescheduledSameDue(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.runCoordinator(b.js)
	b.respond("bank-a", ok)
	b.respond("bank-b", ok)
	b.respond("audit", func(c events.Command) decision {
		if c.Op == events.OpDo {
			return decision{drop: true} // never answers
		}
		return decision{}
	})
	plan := transferPlan("resched", orchestrator.Timeout(1500*time.Millisecond)).
		Deadline(3*time.Second).
		Step("audit", "audit", "Audit", "Unaudit", nil)
	if _, err := b.client.Start(context.Background(), plan); err != nil {
		t.Fatal(err)
	}
	st := b.wait("resched", orchestrator.Compensated)
	if !strings.Contains(st.Reason, "deadline") {
		t.Fatalf("reason %q", st.Reason)
	}
}

// TestCoordinatorPassesTraceContext: the start's traceparent reaches every
// command.
func TestCoordinatorPassesTraceContext(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.runCoordinator(b.js)
	b.respond("bank-a", ok)
	b.respond("bank-b", ok)
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	if _, err := b.client.Start(context.Background(), transferPlan("traced").TraceContext(tp, "k=v")); err != nil {
		t.Fatal(err)
	}
	b.wait("traced", orchestrator.Committed)
	tl, err := b.client.Timeline(context.Background(), "traced")
	if err != nil {
		t.Fatal(err)
	}
	cmds := 0
	for _, e := range tl {
		if e.Kind != events.KindCommand {
			continue
		}
		cmds++
		m, err := b.js.Stream(context.Background(), events.Default().CommandsStream())
		if err != nil {
			t.Fatal(err)
		}
		raw, err := m.GetMsg(context.Background(), e.Seq)
		if err != nil {
			t.Fatal(err)
		}
		if raw.Header.Get(events.HeaderTraceParent) != tp || raw.Header.Get(events.HeaderTraceState) != "k=v" {
			t.Fatalf("command %s lacks the trace context: %v", e.Subject, raw.Header)
		}
	}
	if cmds != 2 {
		t.Fatalf("%d commands", cmds)
	}
}

// TestEnsureStreamsIsIdempotent: a second call changes nothing; a changed
// option updates the stream.
func TestEnsureStreamsIsIdempotent(t *testing.T) {
	t.Parallel()
	b := setup(t) // created them once
	ctx := context.Background()
	s, err := b.js.Stream(ctx, events.Default().SagasStream())
	if err != nil {
		t.Fatal(err)
	}
	created := s.CachedInfo().Created
	if err := orchestrator.EnsureStreams(ctx, b.js, events.Default(), events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := orchestrator.EnsureStreams(ctx, b.js, events.Default(), events.StreamOptions{MaxAge: time.Hour}); err != nil {
		t.Fatal(err)
	}
	s, err = b.js.Stream(ctx, events.Default().SagasStream())
	if err != nil {
		t.Fatal(err)
	}
	if got := s.CachedInfo(); got.Config.MaxAge != time.Hour || !got.Created.Equal(created) {
		t.Fatalf("max age %v, created %v (was %v)", got.Config.MaxAge, got.Created, created)
	}
}

// TestWaitReturnsTheNewestStateWhenItGivesUp: Wait reads a running saga's
// updates only for their status, and still returns the newest state it saw
// when its context ends.
func TestWaitReturnsTheNewestStateWhenItGivesUp(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.runCoordinator(b.js)
	b.respond("bank-a", ok)
	b.respond("bank-b", func(events.Command) decision { return decision{drop: true} })
	ctx := context.Background()
	if _, err := b.client.Start(ctx, transferPlan("stuck")); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		st  *orchestrator.State
		err error
	}
	done := make(chan result, 1)
	go func() {
		st, err := b.client.Wait(wctx, "stuck")
		done <- result{st, err}
	}()
	// The debit succeeds and the credit runs: the watch carries that state.
	testenv.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		st, err := b.client.Get(ctx, "stuck")
		if err != nil {
			return err
		}
		if st.Steps[1].Status != orchestrator.StepRunning {
			return fmt.Errorf("credit is %s", st.Steps[1].Status)
		}
		return nil
	})
	// The shared watch delivers in the bucket's order: once this client's
	// Wait has seen a saga started later end, the stuck saga's state is
	// delivered too.
	marker := orchestrator.NewPlan("marker").ID("marker").Step("debit", "bank-a", "TransOut", "TransOutCompensate", map[string]any{"amount": 1})
	if _, err := b.client.Start(ctx, marker); err != nil {
		t.Fatal(err)
	}
	if st, err := b.client.Wait(ctx, "marker"); err != nil || st.Status != orchestrator.Committed {
		t.Fatalf("marker saga: %v, %v", st, err)
	}
	cancel()
	r := <-done
	if !errors.Is(r.err, context.Canceled) {
		t.Fatalf("Wait: %v", r.err)
	}
	if r.st == nil || r.st.Status != orchestrator.Running || r.st.Steps[0].Status != orchestrator.StepSucceeded || r.st.Steps[1].Status != orchestrator.StepRunning {
		t.Fatalf("Wait gave up with %+v, want the state with the debit done and the credit running", r.st)
	}
}

// TestNoCommandWithoutItsState: a command goes out only once the state of
// the transition that holds it is stored. Here the coordinator computes the
// debit's success from its cached state while another writer has moved the
// saga on (its state now includes every input): the compare-and-set fails,
// and the credit command of the transition that did not happen must not
// reach bank-b. (Publishing with the write, a 5,000-saga cluster node-loss
// run created money: a credit went out for a transition whose write failed.)
func TestNoCommandWithoutItsState(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.runCoordinator(b.js)
	bankA := b.respond("bank-a", func(events.Command) decision { return decision{drop: true} })
	bankB := b.respond("bank-b", ok)
	ctx := context.Background()
	if _, err := b.client.Start(ctx, transferPlan("moved")); err != nil {
		t.Fatal(err)
	}
	var debit events.Command
	testenv.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		cmds := bankA.commands()
		if len(cmds) == 0 {
			return errors.New("no debit command yet")
		}
		debit = cmds[0]
		return nil
	})
	// Another writer moves the saga on: its state includes every input.
	st, rev, kv := b.storedState("moved")
	st.Seq = 1 << 40
	data, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Update(ctx, "moved", data, rev); err != nil {
		t.Fatal(err)
	}
	b.publishOutcome("bank-a", debit, events.Succeeded)
	time.Sleep(2 * time.Second)
	if cmds := bankB.commands(); len(cmds) != 0 {
		t.Fatalf("bank-b got %+v for a transition whose state was never stored", cmds)
	}
}
