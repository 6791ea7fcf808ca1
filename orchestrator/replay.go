package orchestrator

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetsaga/jetsaga/events"
	"github.com/jetsaga/jetsaga/internal/groupcommit"
)

// ReplayOptions configure Fold and Replay.
type ReplayOptions struct {
	// Streams are the options a bucket that Replay creates gets.
	Streams events.StreamOptions
	// StepTimeout must be the coordinators' Config.StepTimeout (the default
	// step timeout that starts record in their sagas' states). Default
	// DefaultStepTimeout; negative: none.
	StepTimeout time.Duration
	// Compare, for Replay: also compare the rebuilt states with the live
	// bucket, key by key.
	Compare bool
}

// ReplayReport is what Replay did.
type ReplayReport struct {
	// Bucket the states were written into, and how many.
	Bucket  string `json:"bucket"`
	Rebuilt int    `json:"rebuilt"`
	// Compared is set when ReplayOptions.Compare asked for a comparison.
	Compared *Comparison `json:"compared,omitempty"`
}

// Comparison of rebuilt states with the live bucket.
type Comparison struct {
	// Live is the number of live sagas compared.
	Live int `json:"live"`
	// Differ counts the sagas below.
	Differ int `json:"differ"`
	// Changed: in both, with different states. MissingLive: rebuilt, but
	// no live state (a start no coordinator applied yet is compared with
	// what Client.Get shows). MissingReplay: live, but not in the stream.
	Changed       []string `json:"changed"`
	MissingLive   []string `json:"missing_in_live"`
	MissingReplay []string `json:"missing_in_replay"`
}

// Fold rebuilds every saga's state from the sagas stream: it feeds each
// input, in stream order, through Next. The stream holds every input of the
// state machine (starts, outcomes, timers, operator actions) and
// coordinators apply each saga's inputs in stream order, so the result
// equals what the coordinators wrote, as long as the stream's max age has
// not dropped a saga's early messages.
//
// Starts record the default step timeout in a saga's state: give the
// coordinators' Config.StepTimeout as opts.StepTimeout.
func Fold(ctx context.Context, js jetstream.JetStream, ns events.Namespace, opts ReplayOptions) (map[string]*State, error) {
	cfg := Config{StepTimeout: opts.StepTimeout}
	if cfg.StepTimeout == 0 {
		cfg.StepTimeout = DefaultStepTimeout
	}
	stepTimeout := cfg.stepTimeoutMS()
	states := map[string]*State{}
	err := scan(ctx, js, ns.SagasStream(), ns.CoordinatorFilters(), func(m jetstream.Msg) error {
		meta, err := m.Metadata()
		if err != nil {
			return err
		}
		in, ok := decodeInput(ns, m.Subject(), m.Headers(), m.Data(), meta.Sequence.Stream, meta.Timestamp)
		if !ok {
			return nil
		}
		in.StepTimeoutMS = stepTimeout
		if r := Next(states[in.SagaID], in); r.Changed {
			states[in.SagaID] = r.State
		}
		return nil
	})
	return states, err
}

// Replay folds the sagas stream and writes every saga's state into bucket
// (created like the state bucket if it does not exist; a finished saga's
// state gets its TTL, as the coordinator writes it), then, with
// opts.Compare, compares them with the live bucket. Into the live bucket
// (ns.StateBucket()) it repairs a lost or damaged bucket: stop the
// coordinators first. Into another bucket it lets an operator compare.
func Replay(ctx context.Context, js jetstream.JetStream, ns events.Namespace, bucket string, opts ReplayOptions) (ReplayReport, error) {
	rep := ReplayReport{Bucket: bucket}
	states, err := Fold(ctx, js, ns, opts)
	if err != nil {
		return rep, fmt.Errorf("replay %s: %w", ns.SagasStream(), err)
	}
	cfg := ns.StateBucketConfig(opts.Streams)
	cfg.Bucket = bucket
	kv, err := openOrCreateBucket(ctx, js, cfg)
	if err != nil {
		return rep, fmt.Errorf("bucket %s: %w", bucket, err)
	}
	encoded, err := writeStates(ctx, js, ns, kv, states)
	if err != nil {
		return rep, err
	}
	rep.Rebuilt = len(states)
	if opts.Compare {
		if rep.Compared, err = compareLive(ctx, js, ns, encoded); err != nil {
			return rep, err
		}
	}
	return rep, nil
}

// replayBatchMin: a replay writes hundreds of states at once, which atomic
// batches store with a few syncs each.
const replayBatchMin = 32

// writeStates writes states (as Fold returns them) into kv, whatever its
// keys hold, and returns them encoded. A finished saga's state gets its TTL
// (FinishedStateTTL of the sagas stream's max age), as the coordinator
// writes it.
func writeStates(ctx context.Context, js jetstream.JetStream, ns events.Namespace, kv jetstream.KeyValue, states map[string]*State) (map[string][]byte, error) {
	sagas, err := js.Stream(ctx, ns.SagasStream())
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", ns.SagasStream(), err)
	}
	if err := fitBucketStream(ctx, js, kv.Bucket(), nil); err != nil {
		return nil, fmt.Errorf("bucket %s: %w", kv.Bucket(), err)
	}
	cfg, err := bucketStream(ctx, kv)
	if err != nil {
		return nil, err
	}
	pub := newPublisher(js, cfg, replayBatchMin)
	defer pub.Close()
	w := newStateWriter(kv, pub, sagas.CachedInfo().Config.MaxAge, true)
	encoded := make(map[string][]byte, len(states))
	// Many writes in flight at once, so that they are committed in batches.
	type inFlight struct {
		id   string
		call *groupcommit.Call
	}
	var window []inFlight
	wait := func() error {
		for _, f := range window {
			if _, err := f.call.Wait(ctx); err != nil {
				return fmt.Errorf("write saga %s into %s: %w", f.id, kv.Bucket(), err)
			}
		}
		window = window[:0]
		return nil
	}
	for id, st := range states {
		data, err := encodeState(st)
		if err != nil {
			return nil, fmt.Errorf("encode saga %s: %w", id, err)
		}
		call, err := pub.Submit(ctx, w.message(id, data, w.ttlOf(st), nil))
		if err != nil {
			return nil, fmt.Errorf("write saga %s into %s: %w", id, kv.Bucket(), err)
		}
		window = append(window, inFlight{id, call})
		if len(window) == 512 {
			if err := wait(); err != nil {
				return nil, err
			}
		}
		encoded[id] = data
	}
	if err := wait(); err != nil {
		return nil, err
	}
	return encoded, nil
}

// compareLive compares rebuilt (encoded) states with the live ones. A saga
// whose start no coordinator has applied yet has no live state: it is
// compared with what Client.Get shows for it (the fold of its first start).
func compareLive(ctx context.Context, js jetstream.JetStream, ns events.Namespace, rebuilt map[string][]byte) (*Comparison, error) {
	kv, err := js.KeyValue(ctx, ns.StateBucket())
	if err != nil {
		return nil, fmt.Errorf("live bucket %s: %w", ns.StateBucket(), err)
	}
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("list live bucket %s: %w", ns.StateBucket(), err)
	}
	c := &Comparison{MissingLive: []string{}, MissingReplay: []string{}, Changed: []string{}}
	seen := map[string]bool{}
	for key := range lister.Keys() {
		e, err := kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			_ = lister.Stop()
			return nil, fmt.Errorf("read %s from %s: %w", key, ns.StateBucket(), err)
		}
		c.Live++
		seen[key] = true
		r, ok := rebuilt[key]
		switch {
		case !ok:
			c.MissingReplay = append(c.MissingReplay, key)
		case !bytes.Equal(r, e.Value()):
			c.Changed = append(c.Changed, key)
		}
	}
	client := NewClient(js, ns)
	defer client.Close()
	for id, r := range rebuilt {
		if seen[id] {
			continue
		}
		st, err := client.Get(ctx, id)
		if errors.Is(err, ErrNotFound) {
			c.MissingLive = append(c.MissingLive, id)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read saga %s: %w", id, err)
		}
		c.Live++
		live, err := encodeState(st)
		if err != nil {
			return nil, err
		}
		if !bytes.Equal(live, r) {
			c.Changed = append(c.Changed, id)
		}
	}
	slices.Sort(c.Changed)
	slices.Sort(c.MissingLive)
	slices.Sort(c.MissingReplay)
	c.Differ = len(c.Changed) + len(c.MissingLive) + len(c.MissingReplay)
	return c, nil
}
