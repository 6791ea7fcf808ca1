package orchestrator

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetsaga/jetsaga/events"
)

// stateReader reads saga states from the state bucket for the coordinator.
//
// On a bucket of one replica a KV get (a direct get) is exact. On a
// replicated bucket every replica answers direct gets, and a follower may
// lag behind writes the leader acknowledged: nats-server lets a follower
// that comes back answer them once it is 90 % caught up. A coordinator
// reading its saga's state from such a follower gets an older state, and
// that is not only a compare-and-set lost later: an input the older state
// calls stale (an outcome of a step it has not commanded yet) would be
// acknowledged and dropped, and the saga would end differently from the
// fold of its stream. So on a replicated bucket the coordinator asks the
// stream's leader (STREAM.MSG.GET, the last message on the key's subject),
// which answers only once it has applied what earlier leaders committed —
// as it reads the sagas stream (msgReader).
type stateReader struct {
	kv     jetstream.KeyValue
	leader *msgReader // replicated buckets only
	prefix string     // "$KV.<bucket>."
}

func newStateReader(js jetstream.JetStream, kv jetstream.KeyValue, replicas int) *stateReader {
	r := &stateReader{kv: kv, prefix: "$KV." + kv.Bucket() + "."}
	if replicas > 1 {
		r.leader = newMsgReader(js, events.BucketStream(kv.Bucket()), replicas)
	}
	return r
}

// newBucketReader returns the state reader of bucket kv, replicated as its
// stream is.
func newBucketReader(ctx context.Context, js jetstream.JetStream, kv jetstream.KeyValue) (*stateReader, error) {
	cfg, err := bucketStream(ctx, kv)
	if err != nil {
		return nil, fmt.Errorf("bucket %s: %w", kv.Bucket(), err)
	}
	return newStateReader(js, kv, cfg.Replicas), nil
}

// value returns the value of saga id's state, jetstream.ErrKeyNotFound if
// the key has none.
func (r *stateReader) value(ctx context.Context, id string) ([]byte, error) {
	value, _, found, err := r.get(ctx, id)
	if err == nil && !found {
		err = jetstream.ErrKeyNotFound
	}
	return value, err
}

// KV operation header of a deleted or purged key's marker.
const (
	kvOperation = "KV-Operation"
	kvDelete    = "DEL"
	kvPurge     = "PURGE"
)

// get returns the value and revision of saga id's state; found is false when
// the key has none (never written, deleted, purged or expired).
func (r *stateReader) get(ctx context.Context, id string) (value []byte, rev uint64, found bool, err error) {
	if r.leader == nil {
		e, err := r.kv.Get(ctx, id)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil, 0, false, nil
		}
		if err != nil {
			return nil, 0, false, err
		}
		return e.Value(), e.Revision(), true, nil
	}
	m, err := r.leader.last(ctx, r.prefix+id)
	if err != nil || m == nil {
		return nil, 0, false, err
	}
	if op := m.Header.Get(kvOperation); op == kvDelete || op == kvPurge {
		return nil, 0, false, nil
	}
	return m.Data, m.Sequence, true, nil
}
