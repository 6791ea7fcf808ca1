package orchestrator_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"

	"github.com/jetsaga/jetsaga/events"
	"github.com/jetsaga/jetsaga/internal/testenv"
	"github.com/jetsaga/jetsaga/orchestrator"
	"github.com/jetsaga/jetsaga/outbox"
)

// TestWaitAcrossNATSRestart: NATS restarts while a client waits; the saga
// ends after the restart. The shared watch is made anew on reconnect and
// the key read again, so Wait returns with the saga's end, not when a
// heartbeat finally notices the watch is gone.
func TestWaitAcrossNATSRestart(t *testing.T) {
	t.Parallel()
	b := setup(t)
	srv, js, client, ctx := b.srv, b.js, b.client, context.Background()
	b.runCoordinator(js)
	b.respond("bank-a", ok)
	b.respond("bank-b", func(events.Command) decision { return decision{delay: 2500 * time.Millisecond} })
	id, err := client.Start(ctx, transferPlan("restart"))
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		st  *orchestrator.State
		err error
		at  time.Time
	}
	done := make(chan result, 1)
	go func() {
		wctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		st, err := client.Wait(wctx, id)
		done <- result{st, err, time.Now()}
	}()
	// The credit is in flight (its answer comes 2.5 s after its command):
	// NATS goes down for a while.
	testenv.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		st, err := client.Get(ctx, id)
		if err != nil {
			return err
		}
		if st.Steps[1].Status != orchestrator.StepRunning {
			return fmt.Errorf("credit is %s", st.Steps[1].Status)
		}
		return nil
	})
	srv.Shutdown()
	time.Sleep(500 * time.Millisecond)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil {
		t.Fatalf("wait: %v (state %+v)", r.err, r.st)
	}
	if r.st.Status != orchestrator.Committed {
		t.Fatalf("saga is %s (%s), want committed", r.st.Status, r.st.Reason)
	}
	// The bound is generous; without re-watching, Wait learnt of the end
	// only when the watch's heartbeats gave up on the old consumer.
	if late := r.at.Sub(time.UnixMilli(r.st.UpdatedMS)); late > 3*time.Second {
		t.Fatalf("Wait returned %v after the saga ended", late)
	}
}

// TestCoordinatorWaitsForClusterQuorum: a coordinator started while its
// cluster has no quorum (two nodes of three down) waits, logging, instead of
// returning an error, and runs sagas once the nodes are back. (The fault
// suite's cluster-node-loss once failed so: its coordinator exited at start
// on "no suitable peers for placement, peer offline".)
func TestCoordinatorWaitsForClusterQuorum(t *testing.T) {
	t.Parallel()
	cluster := testenv.Cluster(t, 3)
	nc, js := testenv.Connect(t, cluster.URLs())
	b := &bundle{t: t, nc: nc, js: js, client: orchestrator.NewClient(js, events.Default())}
	t.Cleanup(b.client.Close)
	down := cluster.Servers[1:]
	for _, s := range down {
		s.Shutdown()
	}
	logs := newLogRecorder()
	b.runCoordinator(js, func(c *orchestrator.Config) {
		c.Logger = slog.New(logs)
		c.Streams.Replicas = 3
	})
	testenv.CheckFor(t, time.Minute, 50*time.Millisecond, func() error {
		if len(logs.find(slog.LevelWarn, "JetStream not ready")) == 0 {
			return fmt.Errorf("no warning yet")
		}
		return nil
	})
	for _, s := range down {
		if err := s.Start(); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if err := cluster.WaitJetStreamReady(ctx); err != nil {
		t.Fatal(err)
	}
	// The coordinator is running once its consumer exists.
	testenv.CheckFor(t, time.Minute, 50*time.Millisecond, func() error {
		ctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		_, err := js.Consumer(ctx, events.Default().SagasStream(), events.Default().CoordinatorConsumer())
		return err
	})
	b.respond("bank-a", ok)
	b.respond("bank-b", ok)
	if _, err := b.client.Start(ctx, transferPlan("after-quorum")); err != nil {
		t.Fatal(err)
	}
	st, err := b.client.Wait(ctx, "after-quorum")
	if err != nil || st.Status != orchestrator.Committed {
		t.Fatalf("saga after the cluster came back: %v, %v", st, err)
	}
}

// TestFirstStartRuns: two starts with different plans are published for one
// id while no coordinator runs (by a client that sets other message ids).
// Get shows the first one's plan, the one the coordinator runs; the second
// is recorded as rejected.
func TestFirstStartRuns(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	publish := func(msgID string, plan *orchestrator.Plan) {
		start, err := plan.Build()
		if err != nil {
			t.Fatal(err)
		}
		data, err := start.Encode()
		if err != nil {
			t.Fatal(err)
		}
		m := nats.NewMsg(events.Default().Start(start.SagaID))
		m.Data = data
		m.Header.Set(events.HeaderMsgID, msgID)
		if _, err := b.js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	first := transferPlan("twice")
	second := orchestrator.NewPlan("other").ID("twice").Step("only", "bank-a", "TransOut", "TransOutCompensate", nil)
	publish("A", first)
	publish("B", second)
	st, err := b.client.Get(ctx, "twice")
	if err != nil {
		t.Fatal(err)
	}
	if st.Name != "transfer" || len(st.Steps) != 2 {
		t.Fatalf("Get shows plan %q with %d steps, want the first start's", st.Name, len(st.Steps))
	}
	if err := b.client.StartMessage(ctx, mustBuild(t, first)); err != nil {
		t.Fatalf("starting the first plan again: %v", err)
	}
	b.runCoordinator(b.js)
	b.respond("bank-a", ok)
	b.respond("bank-b", ok)
	st = b.wait("twice", orchestrator.Committed)
	if st.Name != "transfer" || len(st.Rejections) != 1 || !strings.Contains(st.Rejections[0].Reason, "different plan") {
		t.Fatalf("saga ran %q with rejections %+v, want the first plan and the second start rejected", st.Name, st.Rejections)
	}
}

func mustBuild(t *testing.T, p *orchestrator.Plan) events.Start {
	t.Helper()
	s, err := p.Build()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestNoSilentSagas: a step for a participant that has no consumer (a typo)
// is listed from the start, logged and counted by the coordinator, and
// times out by the default step timeout; a step with timeout_ms -1 has none.
func TestNoSilentSagas(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var logs testenv.SyncBuffer
	_, c := b.runCoordinator(b.js, func(c *orchestrator.Config) {
		c.StepTimeout = 1500 * time.Millisecond
		c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	})
	b.respond("bank-a", ok)
	ctx := context.Background()
	typo := orchestrator.NewPlan("transfer").ID("typo").
		Step("debit", "bank-a", "TransOut", "TransOutCompensate", nil).
		Step("credit", "bank-z", "TransIn", "TransInCompensate", nil, orchestrator.Retry(2, 10*time.Millisecond, 10*time.Millisecond))
	if _, err := b.client.Start(ctx, typo); err != nil {
		t.Fatal(err)
	}
	forever := orchestrator.NewPlan("transfer").ID("forever").
		Step("credit", "bank-y", "TransIn", "TransInCompensate", nil, orchestrator.Timeout(orchestrator.NoTimeout))
	if _, err := b.client.Start(ctx, forever); err != nil {
		t.Fatal(err)
	}
	testenv.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		list, err := b.client.List(ctx, orchestrator.ListFilter{Status: orchestrator.Running})
		if err != nil {
			return err
		}
		seen := map[string]bool{}
		for _, st := range list {
			seen[st.SagaID] = true
		}
		if !seen["forever"] {
			return fmt.Errorf("running sagas listed: %v", seen)
		}
		return nil
	})
	// The credit times out, and so does its compensation (bank-z is no
	// more there for it): the saga parks, for an operator to see.
	st := b.wait("typo", orchestrator.Parked)
	if credit := st.Steps[1]; !strings.Contains(credit.Reason, "timed out after 1500 ms") || st.StepTimeoutMS != 1500 ||
		!strings.Contains(st.Reason, `compensation of step "credit" timed out 2 times`) {
		t.Fatalf("saga parked for %q, credit %q (step timeout %d ms), want the default step timeout", st.Reason, credit.Reason, st.StepTimeoutMS)
	}
	testenv.CheckFor(t, 15*time.Second, 50*time.Millisecond, func() error {
		if n := c.Stats().Unconsumed; n < 2 {
			return fmt.Errorf("%d unconsumed commands counted, want 2 or more", n)
		}
		for _, p := range []string{"participant=bank-z", "participant=bank-y"} {
			if !strings.Contains(logs.String(), p) {
				return fmt.Errorf("no log line for %s in %q", p, logs.String())
			}
		}
		return nil
	})
	st, err := b.client.Get(ctx, "forever")
	if err != nil {
		t.Fatal(err)
	}
	if st.Status != orchestrator.Running || st.Steps[0].DueMS != 0 || st.TimerMS != 0 {
		t.Fatalf("a step without timeout is %s, due %d, timer %d", st.Status, st.Steps[0].DueMS, st.TimerMS)
	}
}

// TestStartReusedPlan: a plan without an id started in a loop starts a new
// saga each time.
func TestStartReusedPlan(t *testing.T) {
	t.Parallel()
	b := setup(t)
	plan := orchestrator.NewPlan("transfer").Step("debit", "bank-a", "TransOut", "TransOutCompensate", nil)
	seen := map[string]bool{}
	for range 3 {
		id, err := b.client.Start(context.Background(), plan)
		if err != nil {
			t.Fatal(err)
		}
		if seen[id] {
			t.Fatalf("id %s returned twice", id)
		}
		seen[id] = true
	}
}

// TestStartTxReusedPlan: the same for StartTx.
func TestStartTxReusedPlan(t *testing.T) {
	t.Parallel()
	pool := testenv.Postgres(t)
	ctx := context.Background()
	if err := outbox.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	plan := orchestrator.NewPlan("transfer").Step("debit", "bank-a", "TransOut", "TransOutCompensate", nil)
	seen := map[string]bool{}
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		for range 3 {
			id, err := orchestrator.StartTx(ctx, tx, plan, orchestrator.StartTxOptions{})
			if err != nil {
				return err
			}
			if seen[id] {
				return fmt.Errorf("id %s returned twice", id)
			}
			seen[id] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestReadsTrustOnlyTheServersHeaders: a message that carries the headers a
// direct get adds (copied from an earlier read, or forged) does not fool the
// reads that order a saga's inputs, Get or Timeline: the server appends its
// own values after the message's.
func TestReadsTrustOnlyTheServersHeaders(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.runCoordinator(b.js)
	b.respond("bank-a", ok)
	b.respond("bank-b", ok)
	ctx := context.Background()
	start := mustBuild(t, transferPlan("forged"))
	data, err := start.Encode()
	if err != nil {
		t.Fatal(err)
	}
	m := nats.NewMsg(events.Default().Start("forged"))
	m.Data = data
	m.Header.Set(events.HeaderMsgID, "forged/start")
	m.Header.Set("Nats-Sequence", "999")
	m.Header.Set("Nats-Subject", events.Default().Start("other"))
	m.Header.Set("Nats-Time-Stamp", "2001-01-01T00:00:00Z")
	ack, err := b.js.PublishMsg(ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	st := b.wait("forged", orchestrator.Committed)
	if st.StartedMS < time.Now().Add(-time.Hour).UnixMilli() {
		t.Fatalf("started at %d: the forged time stamp was believed", st.StartedMS)
	}
	tl, err := b.client.Timeline(ctx, "forged")
	if err != nil {
		t.Fatal(err)
	}
	if len(tl) != 5 || tl[0].Seq != ack.Sequence || tl[0].Subject != events.Default().Start("forged") || tl[0].Time.Year() < 2020 {
		t.Fatalf("timeline %+v, want the start at seq %d first and 5 entries", tl, ack.Sequence)
	}
	assertLiveEqualsReplay(t, b.js)
}

// TestCoordinatorWaitsForJetStream: a coordinator started while its server
// is down (a cluster electing leaders, a server still starting) waits for
// JetStream instead of exiting, then runs sagas.
func TestCoordinatorWaitsForJetStream(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.srv.Shutdown()
	stopErr, _ := b.startCoordinator(b.js)
	time.Sleep(1500 * time.Millisecond) // its first attempts to ensure the streams fail
	if err := b.srv.Start(); err != nil {
		t.Fatal(err)
	}
	b.respond("bank-a", ok)
	b.respond("bank-b", ok)
	if _, err := b.client.Start(context.Background(), transferPlan("late-server")); err != nil {
		t.Fatal(err)
	}
	b.wait("late-server", orchestrator.Committed)
	if err := stopErr(); err != nil {
		t.Fatalf("coordinator: %v", err)
	}
}

// TestCoordinatorKeepsConsumingAcrossAPartition: a coordinator whose server
// is cut off from the rest of its cluster while sagas are started on the
// other side goes on once the cut heals, and Run has not returned. What the
// consumer's leader delivers during the cut is lost on the way, and the
// client, still counting it as pending, pulls again only once it misses
// heartbeats: the coordinator used to return from Run on that error (the
// fault suite's cluster-partition scenario found it: a coordinator exiting
// 30 s after a cut, nats.go's default heartbeat check). On that code the
// sagas started during the cut were still running a minute later; now
// they end within seconds of the heal.
func TestCoordinatorKeepsConsumingAcrossAPartition(t *testing.T) {
	t.Parallel()
	c := testenv.NewPartitionCluster(t, 3)
	ctx := testenv.ClusterContext(t)
	// The coordinator talks to node 1 alone; the client and the banks to
	// node 2.
	_, cjs := testenv.Connect(t, c.Servers[0].ClientURL())
	nc, js := testenv.Connect(t, c.Servers[1].ClientURL())
	b := &bundle{t: t, nc: nc, js: js, client: orchestrator.NewClient(js, events.Default())}
	t.Cleanup(b.client.Close)
	// Pulls of 4 messages: the leader's deliveries during the cut use the
	// pull up, so it is gone when the cut heals (with larger pulls the
	// same happens under load, as in the fault suite).
	stop, _ := b.startCoordinator(cjs, func(cfg *orchestrator.Config) { cfg.Streams.Replicas = 3; cfg.MaxAckPending = 4 })
	testenv.CheckFor(t, time.Minute, 50*time.Millisecond, func() error {
		_, err := js.Consumer(ctx, events.Default().SagasStream(), events.Default().CoordinatorConsumer())
		return err
	})
	b.respond("bank-a", ok)
	b.respond("bank-b", ok)
	start := func(id string) {
		t.Helper()
		testenv.CheckFor(t, time.Minute, 50*time.Millisecond, func() error {
			_, err := b.client.Start(ctx, transferPlan(id))
			return err
		})
	}
	wait := func(id string) {
		t.Helper()
		wctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
		defer cancel()
		if st, err := b.client.Wait(wctx, id); err != nil || st.Status != orchestrator.Committed {
			t.Fatalf("saga %s: %v, %v", id, st, err)
		}
	}
	start("before-the-cut")
	wait("before-the-cut")
	c.Isolate(0)
	var during []string
	for i := range 20 {
		id := fmt.Sprintf("during-the-cut-%d", i)
		start(id)
		during = append(during, id)
		time.Sleep(100 * time.Millisecond)
	}
	c.Heal(0)
	if err := c.WaitJetStreamReady(ctx); err != nil {
		t.Fatal(err)
	}
	for _, id := range during {
		wait(id)
	}
	if err := stop(); err != nil {
		t.Fatalf("the coordinator stopped by itself: %v", err)
	}
}
