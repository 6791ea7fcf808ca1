package orchestrator_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetsaga/jetsaga/events"
	"github.com/jetsaga/jetsaga/internal/testenv"
	"github.com/jetsaga/jetsaga/orchestrator"
)

// publishOutcome publishes what participant would answer to cmd.
func (b *bundle) publishOutcome(participant string, cmd events.Command, status events.Status) {
	b.t.Helper()
	o := events.Outcome{V: 1, SagaID: cmd.SagaID, Participant: participant, Step: cmd.Step, Op: cmd.Op,
		Attempt: cmd.Attempt, Status: status}
	data, err := o.Encode()
	if err != nil {
		b.t.Fatal(err)
	}
	msg := nats.NewMsg(events.Default().Event(participant, cmd.SagaID))
	msg.Data = data
	msg.Header.Set(events.HeaderMsgID, events.OutcomeMsgID(&o, 0))
	if _, err := b.js.PublishMsg(context.Background(), msg); err != nil {
		b.t.Fatal(err)
	}
}

// coordinatorConsumer is the coordinators' durable consumer, as a zombie
// coordinator (stopped, its pull request still open) holds it.
func (b *bundle) coordinatorConsumer() jetstream.Consumer {
	b.t.Helper()
	var cons jetstream.Consumer
	testenv.CheckFor(b.t, 10*time.Second, 20*time.Millisecond, func() (err error) {
		cons, err = b.js.Consumer(context.Background(), events.Default().SagasStream(), events.Default().CoordinatorConsumer())
		return err
	})
	return cons
}

// TestInputsAppliedInStreamOrder is the black-box run's reproduction: a
// coordinator stops (SIGSTOP) with its pull request open; the credit
// commits and its success is stored, then the credit's timer ticks (fired
// by another coordinator); the
// stopped coordinator holds the success, so the next coordinator is
// delivered the tick first. Applied in delivery order, the tick would time
// the credit out and compensate a transfer whose credit committed (and
// replay, which folds in stream order, would say committed). Applied in
// stream order, the saga commits, and live equals replay.
func TestInputsAppliedInStreamOrder(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ackWait := func(c *orchestrator.Config) { c.AckWait = 20 * time.Second }
	stopA, _ := b.runCoordinator(b.js, ackWait)
	b.respond("bank-a", ok)
	ctx := context.Background()
	if _, err := b.client.Start(ctx, transferPlan("zombie", orchestrator.Timeout(2*time.Second))); err != nil {
		t.Fatal(err)
	}
	// The credit's command, which bank-b (down so far) would read.
	cmds, err := b.js.CreateOrUpdateConsumer(ctx, events.Default().CommandsStream(), jetstream.ConsumerConfig{
		Durable: "test_bank-b", FilterSubject: events.Default().CommandFilter("bank-b"), AckPolicy: jetstream.AckExplicitPolicy,
	})
	if err != nil {
		t.Fatal(err)
	}
	credit, err := cmds.Next(jetstream.FetchMaxWait(10 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	cmd, err := events.DecodeCommand(credit.Data())
	if err != nil {
		t.Fatal(err)
	}
	stopA()
	// The zombie: a pull that takes the next input and never answers.
	held := make(chan jetstream.Msg, 1)
	zombie := b.coordinatorConsumer()
	go func() {
		m, err := zombie.Next(jetstream.FetchMaxWait(10 * time.Second))
		if err != nil {
			t.Errorf("zombie pull: %v", err)
			close(held)
			return
		}
		held <- m
	}()
	time.Sleep(100 * time.Millisecond) // the zombie's pull request reaches the server first
	b.publishOutcome("bank-b", cmd, events.Succeeded)
	m, ok := <-held
	if !ok {
		return
	}
	if m.Subject() != events.Default().Event("bank-b", "zombie") {
		t.Fatalf("the zombie holds %s, want the credit's outcome", m.Subject())
	}
	// The credit's timer falls due and another coordinator (as this one
	// would) fires it: the tick is stored after the outcome.
	st, rev, _ := b.storedState("zombie")
	if st.TimerMS == 0 {
		t.Fatal("state before the tick: no timer")
	}
	time.Sleep(time.Until(time.UnixMilli(st.TimerMS)))
	tick, err := events.Default().TickMsg("zombie", st.TimerMS, rev)
	if err != nil {
		t.Fatal(err)
	}
	ack, err := b.js.PublishMsg(ctx, tick)
	if err != nil {
		t.Fatal(err)
	}
	tickSeq := ack.Sequence
	outcomeMeta, _ := m.Metadata()
	if tickSeq < outcomeMeta.Sequence.Stream {
		t.Fatalf("the tick (%d) was stored before the outcome (%d)", tickSeq, outcomeMeta.Sequence.Stream)
	}
	b.runCoordinator(b.js, ackWait)
	st = b.wait("zombie", orchestrator.Committed)
	if st.Steps[1].Status != orchestrator.StepSucceeded {
		t.Fatalf("credit is %s (%s), want succeeded", st.Steps[1].Status, st.Steps[1].Reason)
	}
	assertLiveEqualsReplay(t, b.js)
}

// assertLiveEqualsReplay rebuilds every state from the sagas stream into a
// scratch bucket and compares it with the live bucket, key by key.
func assertLiveEqualsReplay(t *testing.T, js jetstream.JetStream) {
	t.Helper()
	// The harness's coordinators run without a default step timeout
	// (startCoordinator): replay must be given the same.
	rep, err := orchestrator.Replay(context.Background(), js, events.Default(), "rebuilt", orchestrator.ReplayOptions{Compare: true, StepTimeout: -1})
	if err != nil {
		t.Fatal(err)
	}
	if c := rep.Compared; c.Differ != 0 || c.Live != rep.Rebuilt {
		t.Fatalf("%d sagas live, %d rebuilt: %d differ (changed %v, missing in live %v, missing in replay %v)",
			c.Live, rep.Rebuilt, c.Differ, c.Changed, c.MissingLive, c.MissingReplay)
	}
}

// TestRedeliveryOrdersProperty runs sagas under two coordinators while a
// chaos puller, sharing their consumer, takes random inputs and holds them
// (redelivered after the ack wait) or naks them with a random delay, and
// participants answer late or not at all, racing the steps' timers: whatever
// order the inputs are applied in, every saga ends, and the live states
// equal the fold of the stream, key by key.
func TestRedeliveryOrdersProperty(t *testing.T) {
	t.Parallel()
	for _, seed := range []uint64{1, 2, 3} {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			t.Parallel()
			redeliveryProperty(t, seed)
		})
	}
}

func redeliveryProperty(t *testing.T, seed uint64) {
	const sagas = 40
	b := setup(t)
	fast := func(c *orchestrator.Config) { c.AckWait = time.Second }
	b.runCoordinator(b.js, fast)
	b.runCoordinator(b.js, fast)
	var mu sync.Mutex
	rng := rand.New(rand.NewPCG(seed, 0))
	intn := func(n int) int {
		mu.Lock()
		defer mu.Unlock()
		return rng.IntN(n)
	}
	// Participants answer after a random delay around the step timeout, or
	// fail, or not at all (then the timer decides).
	answer := func() func(events.Command) decision {
		return func(c events.Command) decision {
			switch r := intn(10); {
			case r == 0 && c.Op == events.OpDo:
				return decision{drop: true}
			case r == 1 && c.Op == events.OpDo:
				return decision{status: events.Failed, reason: "no"}
			default:
				return decision{delay: time.Duration(intn(1500)) * time.Millisecond}
			}
		}
	}
	b.respond("bank-a", answer())
	b.respond("bank-b", answer())
	// The chaos puller.
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		cons := b.coordinatorConsumer()
		for ctx.Err() == nil {
			batch, err := cons.Fetch(4, jetstream.FetchMaxWait(200*time.Millisecond))
			if err != nil {
				continue
			}
			for m := range batch.Messages() {
				if intn(2) == 0 {
					_ = m.NakWithDelay(time.Duration(intn(1000)) * time.Millisecond)
				} // else held: redelivered after the ack wait
			}
		}
	}()
	defer func() { cancel(); wg.Wait() }()
	ids := make([]string, sagas)
	for i := range ids {
		ids[i] = fmt.Sprintf("prop-%d-%d", seed, i)
		timeout := time.Duration(500+intn(1000)) * time.Millisecond
		plan := orchestrator.NewPlan("transfer").ID(ids[i]).
			Step("debit", "bank-a", "TransOut", "TransOutCompensate", map[string]any{"amount": 1}, orchestrator.Timeout(timeout)).
			Step("credit", "bank-b", "TransIn", "TransInCompensate", map[string]any{"amount": 1}, orchestrator.Timeout(timeout))
		if _, err := b.client.Start(context.Background(), plan); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range ids {
		wctx, wcancel := context.WithTimeout(context.Background(), 90*time.Second)
		st, err := b.client.Wait(wctx, id)
		wcancel()
		if err != nil {
			t.Fatalf("wait %s: %v (state %+v)", id, err, st)
		}
		if st.Status == orchestrator.Parked {
			t.Logf("saga %s parked: %s", id, st.Reason) // a compensation dropped past its retries
		}
	}
	cancel()
	wg.Wait()
	// Inputs still held or nak'd come back (and may resume a parked saga).
	cons := b.coordinatorConsumer()
	testenv.CheckFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		info, err := cons.Info(context.Background())
		if err != nil {
			return err
		}
		if info.NumPending != 0 || info.NumAckPending != 0 || info.NumRedelivered != 0 {
			return fmt.Errorf("coordinators not done: %d pending, %d unacknowledged", info.NumPending, info.NumAckPending)
		}
		return nil
	})
	assertLiveEqualsReplay(t, b.js)
}
