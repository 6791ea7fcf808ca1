package orchestrator

import (
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetsaga/jetsaga/events"
	"github.com/jetsaga/jetsaga/internal/testenv"
)

// TestStateReaderAsksTheLeader: on a replicated bucket the coordinator's
// state reads go to the stream's leader (never a direct get, which any
// follower answers) and give what a KV get gives: the value and revision
// of the last write, nothing for a key never written, deleted or purged.
// On a bucket of one replica they are KV gets.
func TestStateReaderAsksTheLeader(t *testing.T) {
	t.Parallel()
	c := testenv.Cluster(t, 3)
	_, js := testenv.Connect(t, c.URLs())
	ctx := testenv.ClusterContext(t)
	for _, replicas := range []int{1, 3} {
		kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: fmt.Sprintf("r%d", replicas), Replicas: replicas})
		if err != nil {
			t.Fatal(err)
		}
		r := newStateReader(js, kv, replicas)
		if (r.leader != nil) != (replicas > 1) || (r.leader != nil && r.leader.direct) {
			t.Fatalf("replicas %d: reader %+v, want a leader read exactly when replicated", replicas, r.leader)
		}
		for _, k := range []string{"a", "b", "a", "gone", "purged"} {
			putWhenReady(t, kv, k, []byte(k+"-value"))
		}
		if err := kv.Delete(ctx, "gone"); err != nil {
			t.Fatal(err)
		}
		if err := kv.Purge(ctx, "purged"); err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"a", "b"} {
			want, err := kv.Get(ctx, k)
			if err != nil {
				t.Fatal(err)
			}
			value, rev, found, err := r.get(ctx, k)
			if err != nil || !found || string(value) != string(want.Value()) || rev != want.Revision() {
				t.Errorf("replicas %d, key %s: %q rev %d found %t err %v; want %q rev %d", replicas, k, value, rev, found, err,
					want.Value(), want.Revision())
			}
		}
		for _, k := range []string{"never", "gone", "purged"} {
			if value, rev, found, err := r.get(ctx, k); err != nil || found {
				t.Errorf("replicas %d, key %s: %q rev %d found %t err %v; want none", replicas, k, value, rev, found, err)
			}
		}
	}
}

// TestStateReadsSkipStaleFollowers: a follower cut off from its cluster
// keeps answering KV gets (direct gets) with what it had, while the key has
// a newer value; the coordinator's state read through the same server never
// returns that older value — it asks the leader, which the follower cannot
// reach, and fails (the input is then retried). A coordinator reading with
// KV gets, as it did before, would compute on the older state.
func TestStateReadsSkipStaleFollowers(t *testing.T) {
	t.Parallel()
	c := testenv.NewPartitionCluster(t, 3)
	_, js := testenv.Connect(t, c.URLs())
	ctx := testenv.ClusterContext(t)
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "states", Replicas: 3})
	if err != nil {
		t.Fatal(err)
	}
	putWhenReady(t, kv, "saga", []byte("older"))
	follower, other := followers(t, c, kv)
	// A client of the follower alone (its bucket handle opened while the
	// follower can still reach the leader).
	_, fjs := testenv.Connect(t, c.Servers[follower].ClientURL())
	fkv, err := fjs.KeyValue(ctx, "states")
	if err != nil {
		t.Fatal(err)
	}
	c.Isolate(follower)
	_, ojs := testenv.Connect(t, c.Servers[other].ClientURL())
	okv, err := ojs.KeyValue(ctx, "states")
	if err != nil {
		t.Fatal(err)
	}
	testenv.CheckFor(t, time.Minute, 50*time.Millisecond, func() error {
		_, err := okv.Put(t.Context(), "saga", []byte("newer")) // each try 5 s at most
		return err
	})

	// The premise: the cut-off follower answers KV gets, with the older
	// value (it starts answering direct gets a moment after the stream is
	// created).
	testenv.CheckFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		e, err := fkv.Get(t.Context(), "saga")
		if err != nil {
			return err
		}
		if string(e.Value()) != "older" {
			t.Fatalf("the cut-off follower answered %q: the test cannot show a stale read", e.Value())
		}
		return nil
	})
	r := newStateReader(fjs, fkv, 3)
	for range 3 {
		value, _, found, err := r.get(ctx, "saga")
		if err == nil || found {
			t.Fatalf("state read through the cut-off follower: %q (found %t), %v; want an error, never the older state", value, found, err)
		}
	}
}

// TestClientReadsSkipStaleFollowers: Client.Get — behind `jetsaga status`,
// the console's saga page, the HTTP API and the parked check of an
// operator's action — reads a replicated bucket through its leader, as the
// coordinator does: a client of a follower cut off from its cluster gets an
// error, never the state the follower still holds (a KV get there returns
// it).
func TestClientReadsSkipStaleFollowers(t *testing.T) {
	t.Parallel()
	c := testenv.NewPartitionCluster(t, 3)
	_, js := testenv.Connect(t, c.URLs())
	ctx := testenv.ClusterContext(t)
	ns := events.Default()
	if err := EnsureStreams(ctx, js, ns, events.StreamOptions{Replicas: 3}); err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, ns.StateBucket())
	if err != nil {
		t.Fatal(err)
	}
	put := func(kv jetstream.KeyValue, status Status) error {
		data, err := encodeState(&State{SagaID: "s", Status: status})
		if err == nil {
			_, err = kv.Put(t.Context(), "s", data)
		}
		return err
	}
	testenv.CheckFor(t, time.Minute, 50*time.Millisecond, func() error { return put(kv, Running) })
	cfg, err := bucketStream(ctx, kv)
	if err != nil || cfg.Replicas != 3 {
		t.Fatalf("bucket replicas %d, %v; want 3", cfg.Replicas, err)
	}
	follower, other := followers(t, c, kv)
	_, fjs := testenv.Connect(t, c.Servers[follower].ClientURL())
	client := NewClient(fjs, ns)
	t.Cleanup(client.Close)
	if st, err := client.Get(ctx, "s"); err != nil || st.Status != Running {
		t.Fatalf("before the cut: %+v, %v; want running", st, err)
	}
	fkv, err := fjs.KeyValue(ctx, ns.StateBucket())
	if err != nil {
		t.Fatal(err)
	}

	c.Isolate(follower)
	_, ojs := testenv.Connect(t, c.Servers[other].ClientURL())
	okv, err := ojs.KeyValue(ctx, ns.StateBucket())
	if err != nil {
		t.Fatal(err)
	}
	testenv.CheckFor(t, time.Minute, 50*time.Millisecond, func() error { return put(okv, Committed) })
	testenv.CheckFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		e, err := fkv.Get(t.Context(), "s")
		if err != nil {
			return err
		}
		if st, _ := decodeState(e.Value()); st == nil || st.Status != Running {
			t.Fatalf("the cut-off follower answered %q: the test cannot show a stale read", e.Value())
		}
		return nil
	})
	if st, err := client.Get(t.Context(), "s"); err == nil && st.Status != Committed {
		t.Fatalf("Get through the cut-off follower: %s; want an error or committed, never the older state", st.Status)
	}
}

// putWhenReady puts value under key, trying again while the bucket's
// stream, just created on a cluster, has no leader to answer yet ("no
// response from stream").
func putWhenReady(t *testing.T, kv jetstream.KeyValue, key string, value []byte) {
	t.Helper()
	testenv.CheckFor(t, time.Minute, 50*time.Millisecond, func() error {
		_, err := kv.Put(t.Context(), key, value)
		return err
	})
}

// followers returns the indexes of the two nodes that do not lead kv's
// stream.
func followers(t *testing.T, c *testenv.PartitionCluster, kv jetstream.KeyValue) (int, int) {
	t.Helper()
	info, err := kv.Status(testenv.ClusterContext(t))
	if err != nil {
		t.Fatal(err)
	}
	leader := c.Index(info.(*jetstream.KeyValueBucketStatus).StreamInfo().Cluster.Leader)
	return (leader + 1) % 3, (leader + 2) % 3
}
