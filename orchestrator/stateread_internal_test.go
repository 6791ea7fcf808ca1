package orchestrator

import (
	"fmt"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

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
	ctx := t.Context()
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
			if _, err := kv.Put(ctx, k, []byte(k+"-value")); err != nil {
				t.Fatal(err)
			}
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
