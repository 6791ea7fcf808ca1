package orchestrator

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// stateWriter writes saga states into the state bucket with compare-and-set
// on the key's revision. A finished saga's state carries a TTL (see
// FinishedStateTTL) so that the bucket does not keep every saga that ever
// ran: it leaves shortly after the saga's messages left the streams.
type stateWriter struct {
	js     jetstream.JetStream
	kv     jetstream.KeyValue
	prefix string        // "$KV.<bucket>."
	ttl    time.Duration // 0: finished states never expire
}

// FinishedStateTTL is how long the state of a finished saga stays in the
// bucket, for streams that keep messages maxAge: maxAge plus a margin (a
// minute, or maxAge if shorter). The margin makes the saga's start message
// leave the sagas stream before its state leaves the bucket (both expire
// lazily, within a second or so), so that a late input never finds the start
// without the final state and restarts a finished saga.
func FinishedStateTTL(maxAge time.Duration) time.Duration {
	if maxAge <= 0 {
		return 0
	}
	return maxAge + min(maxAge, time.Minute)
}

// newStateWriter returns a writer for the bucket behind kv, for streams that
// keep messages maxAge. Finished states get FinishedStateTTL(maxAge) if
// ttlAllowed (the bucket's stream takes per-message TTLs).
func newStateWriter(js jetstream.JetStream, kv jetstream.KeyValue, maxAge time.Duration, ttlAllowed bool) *stateWriter {
	w := &stateWriter{js: js, kv: kv, prefix: "$KV." + kv.Bucket() + "."}
	if ttlAllowed {
		w.ttl = FinishedStateTTL(maxAge)
	}
	return w
}

// ttlOf is the TTL st is written with: none unless it is finished.
func (w *stateWriter) ttlOf(st *State) time.Duration {
	if st.Status.Terminal() {
		return w.ttl
	}
	return 0
}

// put writes data as the state of saga id, expecting revision rev (0: no
// key, or a deleted one). It returns the new revision, or
// jetstream.ErrKeyExists / jetstream.ErrKeyRevisionMismatch on a conflict.
func (w *stateWriter) put(ctx context.Context, id string, st *State, data []byte, rev uint64) (uint64, error) {
	ttl := w.ttlOf(st)
	if rev == 0 {
		// Create also takes the place of a deleted key.
		var opts []jetstream.KVCreateOpt
		if ttl > 0 {
			opts = append(opts, jetstream.KeyTTL(ttl))
		}
		return w.kv.Create(ctx, id, data, opts...)
	}
	// As KeyValue.Update does, which takes no TTL.
	seq, err := w.publish(ctx, id, data, ttl, jetstream.WithExpectLastSequencePerSubject(rev))
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
		return 0, jetstream.ErrKeyRevisionMismatch
	}
	return seq, err
}

// overwrite writes data as the state of saga id whatever the key holds (a
// replay rebuilding the bucket).
func (w *stateWriter) overwrite(ctx context.Context, id string, st *State, data []byte) error {
	_, err := w.publish(ctx, id, data, w.ttlOf(st))
	return err
}

// publish stores data under key id, with ttl if it is not 0, and returns
// its revision.
func (w *stateWriter) publish(ctx context.Context, id string, data []byte, ttl time.Duration, opts ...jetstream.PublishOpt) (uint64, error) {
	m := nats.NewMsg(w.prefix + id)
	m.Data = data
	if ttl > 0 {
		opts = append(opts, jetstream.WithMsgTTL(ttl))
	}
	ack, err := w.js.PublishMsg(ctx, m, opts...)
	if err != nil {
		return 0, err
	}
	return ack.Sequence, nil
}
