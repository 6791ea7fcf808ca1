package orchestrator

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetsaga/jetsaga/events"
)

// ReplayOptions configure Fold and Replay.
type ReplayOptions struct {
	// Streams are the options a bucket that Replay creates gets.
	Streams events.StreamOptions
	// StepTimeout must be the coordinators' Config.StepTimeout (the default
	// step timeout that starts record in their sagas' states). Default
	// DefaultStepTimeout; negative: none.
	StepTimeout time.Duration
}

// Fold rebuilds every saga's state from the sagas stream: it feeds each
// input, in stream order, through Next. The stream holds every input of the
// state machine (starts, outcomes, timers, operator actions), so the result
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
		in, ok := DecodeInput(ns, m.Subject(), m.Headers(), m.Data(), meta.Sequence.Stream, meta.Timestamp)
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
// (created like the state bucket if it does not exist). Into the live bucket
// (ns.StateBucket()) it repairs a lost or damaged bucket: stop the
// coordinators first. Into another bucket it lets an operator compare.
// It returns the number of sagas written.
func Replay(ctx context.Context, js jetstream.JetStream, ns events.Namespace, bucket string, opts ReplayOptions) (int, error) {
	states, err := Fold(ctx, js, ns, opts)
	if err != nil {
		return 0, err
	}
	cfg := ns.StateBucketConfig(opts.Streams)
	cfg.Bucket = bucket
	kv, err := openOrCreateBucket(ctx, js, cfg)
	if err != nil {
		return 0, fmt.Errorf("bucket %s: %w", bucket, err)
	}
	if _, err := WriteStates(ctx, js, ns, kv, states); err != nil {
		return 0, err
	}
	return len(states), nil
}

// WriteStates writes states (as Fold returns them) into kv, whatever its
// keys hold, and returns them encoded. A finished saga's state gets its TTL
// (FinishedStateTTL of the sagas stream's max age), as the coordinator
// writes it.
func WriteStates(ctx context.Context, js jetstream.JetStream, ns events.Namespace, kv jetstream.KeyValue, states map[string]*State) (map[string][]byte, error) {
	sagas, err := js.Stream(ctx, ns.SagasStream())
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", ns.SagasStream(), err)
	}
	if err := fitBucketStream(ctx, js, kv.Bucket(), nil); err != nil {
		return nil, fmt.Errorf("bucket %s: %w", kv.Bucket(), err)
	}
	w := newStateWriter(js, kv, sagas.CachedInfo().Config.MaxAge, true)
	encoded := make(map[string][]byte, len(states))
	for id, st := range states {
		data, err := EncodeState(st)
		if err != nil {
			return nil, fmt.Errorf("encode saga %s: %w", id, err)
		}
		if err := w.overwrite(ctx, id, st, data); err != nil {
			return nil, fmt.Errorf("write saga %s into %s: %w", id, kv.Bucket(), err)
		}
		encoded[id] = data
	}
	return encoded, nil
}
