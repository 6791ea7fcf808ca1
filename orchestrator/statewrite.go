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
// keep messages maxAge. Finished states get FinishedStateTTL(maxAge) if the
// bucket allows per-key TTLs (ok false otherwise: a bucket created before
// jetsaga used them, until EnsureStreams updates it).
func newStateWriter(ctx context.Context, js jetstream.JetStream, kv jetstream.KeyValue, maxAge time.Duration) (w *stateWriter, ok bool, err error) {
	ttl := FinishedStateTTL(maxAge)
	w = &stateWriter{js: js, kv: kv, prefix: "$KV." + kv.Bucket() + "."}
	st, err := kv.Status(ctx)
	if err != nil {
		return nil, false, err
	}
	if bs, isBucket := st.(*jetstream.KeyValueBucketStatus); isBucket && bs.StreamInfo().Config.AllowMsgTTL {
		w.ttl = ttl
	}
	return w, w.ttl > 0 || ttl <= 0, nil
}

// put writes data as the state of saga id, expecting revision rev (0: no
// key, or a deleted one). It returns the new revision, or
// jetstream.ErrKeyExists / jetstream.ErrKeyRevisionMismatch on a conflict.
func (w *stateWriter) put(ctx context.Context, id string, st *State, data []byte, rev uint64) (uint64, error) {
	ttl := time.Duration(0)
	if st.Status.Terminal() {
		ttl = w.ttl
	}
	switch {
	case rev == 0 && ttl > 0:
		return w.kv.Create(ctx, id, data, jetstream.KeyTTL(ttl))
	case rev == 0:
		return w.kv.Create(ctx, id, data)
	case ttl == 0:
		return w.kv.Update(ctx, id, data, rev)
	}
	// KeyValue.Update takes no TTL: publish the revision as Update does.
	m := nats.NewMsg(w.prefix + id)
	m.Data = data
	ack, err := w.js.PublishMsg(ctx, m, jetstream.WithExpectLastSequencePerSubject(rev), jetstream.WithMsgTTL(ttl))
	if err != nil {
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
			return 0, jetstream.ErrKeyRevisionMismatch
		}
		return 0, err
	}
	return ack.Sequence, nil
}

// overwrite writes data as the state of saga id whatever the key holds (a
// replay rebuilding the bucket).
func (w *stateWriter) overwrite(ctx context.Context, id string, st *State, data []byte) error {
	if !st.Status.Terminal() || w.ttl == 0 {
		_, err := w.kv.Put(ctx, id, data)
		return err
	}
	m := nats.NewMsg(w.prefix + id)
	m.Data = data
	_, err := w.js.PublishMsg(ctx, m, jetstream.WithMsgTTL(w.ttl))
	return err
}
