package orchestrator_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetsaga/jetsaga/events"
	"github.com/jetsaga/jetsaga/internal/testenv"
	"github.com/jetsaga/jetsaga/orchestrator"
)

// TestFinishedStateExpiresWithTheStreams: a finished saga's state is written
// with a TTL a little longer than the streams' max age and leaves the bucket
// after its messages; a running saga's state stays.
func TestFinishedStateExpiresWithTheStreams(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	streams := events.StreamOptions{MaxAge: 3 * time.Second, Duplicates: time.Second}
	// Updated here, not by the coordinator while the responders below
	// create their consumers: nats-server 2.15.2 races updating a stream's
	// file store against creating a consumer on it (the race detector
	// stopped this test once so).
	if err := orchestrator.EnsureStreams(ctx, b.js, events.Default(), streams); err != nil {
		t.Fatal(err)
	}
	b.runCoordinator(b.js, func(c *orchestrator.Config) { c.Streams = streams })
	b.respond("bank-a", ok)
	b.respond("bank-b", func(c events.Command) decision { return decision{drop: c.SagaID == "running"} })
	for _, id := range []string{"done", "running"} {
		if _, err := b.client.Start(ctx, transferPlan(id)); err != nil {
			t.Fatal(err)
		}
	}
	b.wait("done", orchestrator.Committed)
	kvStream, err := b.js.Stream(ctx, events.BucketStream(events.Default().StateBucket()))
	if err != nil {
		t.Fatal(err)
	}
	ttlOf := func(id string) (string, error) {
		m, err := kvStream.GetLastMsgForSubject(ctx, "$KV."+events.Default().StateBucket()+"."+id)
		if err != nil {
			return "", err
		}
		return m.Header.Get("Nats-TTL"), nil
	}
	want := orchestrator.FinishedStateTTL(streams.MaxAge)
	if ttl, err := ttlOf("done"); err != nil || ttl != want.String() {
		t.Fatalf("finished state: TTL %q (%v), want %s", ttl, err, want)
	}
	// The running saga's state (written with bank-a's outcome) has none.
	testenv.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		ttl, err := ttlOf("running")
		if err != nil {
			return err
		}
		if ttl != "" {
			return fmt.Errorf("running saga's state has TTL %q", ttl)
		}
		return nil
	})
	kv, err := b.js.KeyValue(ctx, events.Default().StateBucket())
	if err != nil {
		t.Fatal(err)
	}
	// The start leaves the stream before the state leaves the bucket: Get
	// never sees a finished saga as just started.
	sagas, err := b.js.Stream(ctx, events.Default().SagasStream())
	if err != nil {
		t.Fatal(err)
	}
	// (Get reads the state, then the start if there is none: until both
	// are gone it must say committed.)
	testenv.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		st, err := b.client.Get(ctx, "done")
		switch {
		case errors.Is(err, orchestrator.ErrNotFound):
			return nil
		case err != nil || st.Status != orchestrator.Committed:
			t.Fatalf("while its state is in the bucket, Get says %+v, %v", st, err)
		}
		return errors.New("finished state still there")
	})
	if _, err := kv.Get(ctx, "done"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("Get finds no saga, but the bucket has its state: %v", err)
	}
	if _, err := sagas.GetLastMsgForSubject(ctx, events.Default().Start("done")); !errors.Is(err, jetstream.ErrMsgNotFound) {
		t.Fatalf("the start message outlived the state: %v", err)
	}
	if _, err := b.client.Get(ctx, "done"); err == nil {
		t.Fatal("Get still finds the expired saga")
	}
	if e, err := kv.Get(ctx, "running"); err != nil {
		t.Fatalf("the running saga's state expired too: %v", err)
	} else if st, err := decodeStateJSON(e.Value()); err != nil || st.Status != orchestrator.Running {
		t.Fatalf("running saga: %+v, %v", st, err)
	}
}

// TestEnsureStreamsEnablesStateTTL: a state bucket created without per-key
// TTLs (as jetsaga did before it expired finished sagas) is updated to allow
// them, without delete markers.
func TestEnsureStreamsEnablesStateTTL(t *testing.T) {
	t.Parallel()
	srv := testenv.NATS(t)
	_, js := testenv.Connect(t, srv.URL())
	ctx := context.Background()
	old := events.Default().StateBucketConfig(events.StreamOptions{})
	if _, err := js.CreateKeyValue(ctx, old); err != nil {
		t.Fatal(err)
	}
	if err := orchestrator.EnsureStreams(ctx, js, events.Default(), events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, old.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	st, err := kv.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	bs := st.(*jetstream.KeyValueBucketStatus)
	if !bs.StreamInfo().Config.AllowMsgTTL || bs.LimitMarkerTTL() != 0 {
		t.Fatalf("bucket: AllowMsgTTL %v, marker TTL %v; want TTLs without markers", bs.StreamInfo().Config.AllowMsgTTL, bs.LimitMarkerTTL())
	}
	// Ensuring again changes nothing.
	if err := orchestrator.EnsureStreams(ctx, js, events.Default(), events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestReplayIntoTheLiveBucket: Replay repairs the live bucket, which allows
// per-key TTLs, and keeps them.
func TestReplayIntoTheLiveBucket(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	b.commitOne("done")
	rep, err := orchestrator.Replay(ctx, b.js, events.Default(), events.Default().StateBucket(), orchestrator.ReplayOptions{})
	if err != nil || rep.Rebuilt != 1 {
		t.Fatalf("Replay = %+v, %v; want 1 saga rebuilt", rep, err)
	}
	s, err := b.js.Stream(ctx, events.BucketStream(events.Default().StateBucket()))
	if err != nil {
		t.Fatal(err)
	}
	if !s.CachedInfo().Config.AllowMsgTTL {
		t.Fatal("the live bucket lost its per-key TTLs")
	}
	if st, err := b.client.Get(ctx, "done"); err != nil || st.Status != orchestrator.Committed {
		t.Fatalf("after replay: %+v, %v", st, err)
	}
}

// commitOne runs a coordinator and two participants that succeed, and one
// saga, id, to its commit.
func (b *bundle) commitOne(id string) {
	b.t.Helper()
	b.runCoordinator(b.js)
	b.respond("bank-a", ok)
	b.respond("bank-b", ok)
	if _, err := b.client.Start(context.Background(), transferPlan(id)); err != nil {
		b.t.Fatal(err)
	}
	b.wait(id, orchestrator.Committed)
}

func decodeStateJSON(data []byte) (*orchestrator.State, error) {
	var st orchestrator.State
	err := json.Unmarshal(data, &st)
	return &st, err
}

// TestReplayFinishedSagaChangedLater: Replay writes a finished saga's state
// and drops it; an input that changes the saga afterwards (a forged outcome,
// rejected and recorded) makes it read the state back, so the rebuilt state
// still equals the live one. A live key no input explains is reported as
// missing in the replay.
func TestReplayFinishedSagaChangedLater(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	b.commitOne("later")
	ns := events.Default()
	forged := &events.Outcome{V: events.Version, SagaID: "later", Participant: "bank-a", Step: "nosuch",
		Op: events.OpDo, Attempt: 1, Status: events.Succeeded}
	m, err := ns.OutcomeMsg(forged, 1<<30, orchestrator.Trace{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.js.PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
	testenv.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		st, err := b.client.Get(ctx, "later")
		if err != nil {
			return err
		}
		if len(st.Rejections) != 1 {
			return fmt.Errorf("%d rejections recorded", len(st.Rejections))
		}
		return nil
	})
	kv, err := b.js.KeyValue(ctx, ns.StateBucket())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "ghost", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	rep, err := orchestrator.Replay(ctx, b.js, ns, "rebuilt_later", orchestrator.ReplayOptions{Compare: true, StepTimeout: -1})
	if err != nil {
		t.Fatal(err)
	}
	c := rep.Compared
	if rep.Rebuilt != 1 || c.Live != 2 || len(c.Changed) != 0 || len(c.MissingLive) != 0 ||
		len(c.MissingReplay) != 1 || c.MissingReplay[0] != "ghost" || c.Differ != 1 {
		t.Fatalf("replay %+v, comparison %+v: want 1 rebuilt, equal to live, and ghost missing in the replay", rep, c)
	}
}
