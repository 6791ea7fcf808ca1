package orchestrator

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetsaga/jetsaga/internal/groupcommit"
)

// stateWriter writes saga states into the state bucket with compare-and-set
// on the key's revision. A finished saga's state carries a TTL (see
// FinishedStateTTL) so that the bucket does not keep every saga that ever
// ran: it leaves shortly after the saga's messages left the streams.
type stateWriter struct {
	kv     jetstream.KeyValue
	pub    *groupcommit.Publisher // into the bucket's stream
	prefix string                 // "$KV.<bucket>."
	ttl    time.Duration          // 0: finished states never expire
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

// newStateWriter returns a writer for the bucket behind kv that publishes
// through pub, for streams that keep messages maxAge. Finished states get
// FinishedStateTTL(maxAge) if ttlAllowed (the bucket's stream takes
// per-message TTLs).
func newStateWriter(kv jetstream.KeyValue, pub *groupcommit.Publisher, maxAge time.Duration, ttlAllowed bool) *stateWriter {
	w := &stateWriter{kv: kv, pub: pub, prefix: "$KV." + kv.Bucket() + "."}
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
// The write is committed with other sagas' writes (group commit); the
// compare-and-set is its own.
func (w *stateWriter) put(ctx context.Context, id string, st *State, data []byte, rev uint64) (uint64, error) {
	ttl := w.ttlOf(st)
	seq, err := w.publish(ctx, id, data, ttl, &rev)
	if !wrongLastSequence(err) {
		return seq, err
	}
	if rev != 0 {
		return 0, jetstream.ErrKeyRevisionMismatch
	}
	// Create also takes the place of a deleted key, and says whether the
	// key exists.
	var opts []jetstream.KVCreateOpt
	if ttl > 0 {
		opts = append(opts, jetstream.KeyTTL(ttl))
	}
	return w.kv.Create(ctx, id, data, opts...)
}

// wrongLastSequence reports whether err is a failed compare-and-set.
func wrongLastSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// publish stores data under key id, with ttl if it is not 0 and expecting
// revision *rev if rev is not nil, and returns its revision.
func (w *stateWriter) publish(ctx context.Context, id string, data []byte, ttl time.Duration, rev *uint64) (uint64, error) {
	return w.pub.Publish(ctx, w.message(id, data, ttl, rev))
}

// message is the write of data under key id, with ttl if it is not 0 and
// expecting revision *rev if rev is not nil.
func (w *stateWriter) message(id string, data []byte, ttl time.Duration, rev *uint64) *nats.Msg {
	m := nats.NewMsg(w.prefix + id)
	m.Data = data
	if ttl > 0 {
		m.Header.Set(jetstream.MsgTTLHeader, ttl.String())
	}
	if rev != nil {
		m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(*rev, 10))
	}
	return m
}
