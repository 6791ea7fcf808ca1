package orchestrator

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

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
// not dropped a saga's early messages. It returns every saga in memory;
// Replay, which writes them into a bucket, holds only those in flight.
//
// Starts record the default step timeout in a saga's state: give the
// coordinators' Config.StepTimeout as opts.StepTimeout.
func Fold(ctx context.Context, js jetstream.JetStream, ns events.Namespace, opts ReplayOptions) (map[string]*State, error) {
	states := map[string]*State{}
	err := foldInputs(ctx, js, ns, opts, func(in Input) error {
		if r := Next(states[in.SagaID], in); r.Changed {
			states[in.SagaID] = r.State
		}
		return nil
	})
	return states, err
}

// foldInputs calls apply with every input of the sagas stream, in stream
// order, as a coordinator with opts.StepTimeout decodes it.
func foldInputs(ctx context.Context, js jetstream.JetStream, ns events.Namespace, opts ReplayOptions, apply func(Input) error) error {
	cfg := Config{StepTimeout: opts.StepTimeout}
	if cfg.StepTimeout == 0 {
		cfg.StepTimeout = DefaultStepTimeout
	}
	stepTimeout := cfg.stepTimeoutMS()
	return scan(ctx, js, ns.SagasStream(), ns.CoordinatorFilters(), func(m jetstream.Msg) error {
		meta, err := m.Metadata()
		if err != nil {
			return err
		}
		in, ok := decodeInput(ns, m.Subject(), m.Headers(), m.Data(), meta.Sequence.Stream, meta.Timestamp)
		if !ok {
			return nil
		}
		in.StepTimeoutMS = stepTimeout
		return apply(in)
	})
}

// Replay folds the sagas stream and writes every saga's state into bucket
// (created like the state bucket if it does not exist; a finished saga's
// state gets its TTL, as the coordinator writes it), then, with
// opts.Compare, compares them with the live bucket. Into the live bucket
// (ns.StateBucket()) it repairs a lost or damaged bucket: stop the
// coordinators first. Into another bucket it lets an operator compare.
//
// Its memory follows the sagas in flight at each point of the stream, not
// the whole stream: a saga's state is written as soon as it is finished
// and dropped (read back from the bucket if a later input changes it — a
// rejection is recorded even in a finished saga), and the comparison reads
// both buckets key by key. What it keeps of every saga is its id.
func Replay(ctx context.Context, js jetstream.JetStream, ns events.Namespace, bucket string, opts ReplayOptions) (ReplayReport, error) {
	rep := ReplayReport{Bucket: bucket}
	cfg := ns.StateBucketConfig(opts.Streams)
	cfg.Bucket = bucket
	kv, err := openOrCreateBucket(ctx, js, cfg)
	if err != nil {
		return rep, fmt.Errorf("bucket %s: %w", bucket, err)
	}
	sink, err := newStateSink(ctx, js, ns, kv)
	if err != nil {
		return rep, err
	}
	defer sink.close()
	inFlight := map[string]*State{}
	written := map[string]struct{}{}
	err = foldInputs(ctx, js, ns, opts, func(in Input) error {
		prev, ok := inFlight[in.SagaID]
		if _, done := written[in.SagaID]; !ok && done {
			if leavesFinished(in) {
				return nil // every finished saga's late timer
			}
			if prev, err = sink.readBack(ctx, in.SagaID); err != nil {
				return err
			}
		}
		r := Next(prev, in)
		switch {
		case !r.Changed:
			return nil
		case r.State.Status.Terminal():
			delete(inFlight, in.SagaID)
			written[in.SagaID] = struct{}{}
			return sink.put(ctx, in.SagaID, r.State)
		default:
			inFlight[in.SagaID] = r.State
			return nil
		}
	})
	if err != nil {
		return rep, fmt.Errorf("replay %s: %w", ns.SagasStream(), err)
	}
	for id, st := range inFlight {
		written[id] = struct{}{}
		if err := sink.put(ctx, id, st); err != nil {
			return rep, err
		}
	}
	if err := sink.flush(ctx); err != nil {
		return rep, err
	}
	rep.Rebuilt = len(written)
	if opts.Compare {
		if rep.Compared, err = compareLive(ctx, js, ns, kv, written); err != nil {
			return rep, err
		}
	}
	return rep, nil
}

// replayBatchMin: a replay writes hundreds of states at once, which atomic
// batches store with a few syncs each.
const replayBatchMin = 32

// stateSink writes states into a bucket whatever its keys hold, many at
// once (so that they are committed in batches). A finished saga's state
// gets its TTL (FinishedStateTTL of the sagas stream's max age), as the
// coordinator writes it.
type stateSink struct {
	kv     jetstream.KeyValue
	pub    *groupcommit.Publisher
	w      *stateWriter
	reader *stateReader
	window []pendingWrite
}

type pendingWrite struct {
	id   string
	call *groupcommit.Call
}

// sinkWindow is the most writes in flight at once.
const sinkWindow = 512

func newStateSink(ctx context.Context, js jetstream.JetStream, ns events.Namespace, kv jetstream.KeyValue) (*stateSink, error) {
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
	return &stateSink{kv: kv, pub: pub, w: newStateWriter(kv, pub, sagas.CachedInfo().Config.MaxAge, true),
		reader: newStateReader(js, kv, cfg.Replicas)}, nil
}

func (s *stateSink) close() { s.pub.Close() }

// put writes st as saga id's state (flushing when the window is full).
func (s *stateSink) put(ctx context.Context, id string, st *State) error {
	data, err := encodeState(st)
	if err != nil {
		return fmt.Errorf("encode saga %s: %w", id, err)
	}
	call, err := s.pub.Submit(ctx, s.w.message(id, data, s.w.ttlOf(st), nil))
	if err != nil {
		return fmt.Errorf("write saga %s into %s: %w", id, s.kv.Bucket(), err)
	}
	s.window = append(s.window, pendingWrite{id, call})
	if len(s.window) == sinkWindow {
		return s.flush(ctx)
	}
	return nil
}

// flush waits for every write in flight.
func (s *stateSink) flush(ctx context.Context) error {
	for _, p := range s.window {
		if _, err := p.call.Wait(ctx); err != nil {
			return fmt.Errorf("write saga %s into %s: %w", p.id, s.kv.Bucket(), err)
		}
	}
	s.window = s.window[:0]
	return nil
}

// readBack returns the state written for saga id.
func (s *stateSink) readBack(ctx context.Context, id string) (*State, error) {
	if err := s.flush(ctx); err != nil {
		return nil, err
	}
	// From the leader, when replicated: a follower may not have the write
	// yet (a KV get on a 3-node cluster answered "key not found" so).
	value, err := s.reader.value(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("read saga %s back from %s: %w", id, s.kv.Bucket(), err)
	}
	return decodeState(value)
}

// compareLive compares the states rebuilt into rebuiltKV (the sagas in
// rebuilt) with the live ones, key by key, compareWorkers keys at a time.
// A saga whose start no coordinator has applied yet has no live state: it is
// compared with what Client.Get shows for it (the fold of its first start).
func compareLive(ctx context.Context, js jetstream.JetStream, ns events.Namespace, rebuiltKV jetstream.KeyValue, rebuilt map[string]struct{}) (*Comparison, error) {
	kv, err := js.KeyValue(ctx, ns.StateBucket())
	if err != nil {
		return nil, fmt.Errorf("live bucket %s: %w", ns.StateBucket(), err)
	}
	// The keys first, read as fast as they come: a listing read slowly
	// buffers every entry in the client.
	keys, err := listKeys(ctx, kv)
	if err != nil {
		return nil, err
	}
	// Both buckets are read from their leaders when replicated.
	liveReader, err := newBucketReader(ctx, js, kv)
	if err != nil {
		return nil, err
	}
	rebuiltReader, err := newBucketReader(ctx, js, rebuiltKV)
	if err != nil {
		return nil, err
	}
	client := NewClient(js, ns)
	defer client.Close()
	c := &Comparison{MissingLive: []string{}, MissingReplay: []string{}, Changed: []string{}}
	var mu sync.Mutex
	record := func(list *[]string, id string) {
		mu.Lock()
		*list = append(*list, id)
		mu.Unlock()
	}
	// compare checks one saga: live is its live state, nil if it has none.
	compare := func(id string, live []byte) error {
		if _, ok := rebuilt[id]; !ok {
			record(&c.MissingReplay, id)
			return nil
		}
		value, err := rebuiltReader.value(ctx, id)
		if err != nil {
			return fmt.Errorf("read %s from %s: %w", id, rebuiltKV.Bucket(), err)
		}
		if !bytes.Equal(value, live) {
			record(&c.Changed, id)
		}
		return nil
	}
	live := 0
	err = inParallel(ctx, keys, func(key string) error {
		value, _, found, err := liveReader.get(ctx, key)
		if err != nil {
			return fmt.Errorf("read %s from %s: %w", key, ns.StateBucket(), err)
		}
		if !found {
			return nil
		}
		mu.Lock()
		live++
		mu.Unlock()
		return compare(key, value)
	})
	if err != nil {
		return nil, err
	}
	seen := make(map[string]struct{}, len(keys))
	for _, k := range keys {
		seen[k] = struct{}{}
	}
	var unseen []string
	for id := range rebuilt {
		if _, ok := seen[id]; !ok {
			unseen = append(unseen, id)
		}
	}
	err = inParallel(ctx, unseen, func(id string) error {
		st, err := client.Get(ctx, id)
		if errors.Is(err, ErrNotFound) {
			record(&c.MissingLive, id)
			return nil
		}
		if err != nil {
			return fmt.Errorf("read saga %s: %w", id, err)
		}
		data, err := encodeState(st)
		if err != nil {
			return err
		}
		mu.Lock()
		live++
		mu.Unlock()
		return compare(id, data)
	})
	if err != nil {
		return nil, err
	}
	c.Live = live
	slices.Sort(c.Changed)
	slices.Sort(c.MissingLive)
	slices.Sort(c.MissingReplay)
	c.Differ = len(c.Changed) + len(c.MissingLive) + len(c.MissingReplay)
	return c, nil
}

// listKeys returns every key of kv.
func listKeys(ctx context.Context, kv jetstream.KeyValue) ([]string, error) {
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("list bucket %s: %w", kv.Bucket(), err)
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return keys, nil
}

// compareWorkers is how many sagas a comparison reads at once.
const compareWorkers = 16

// inParallel runs f for every id, compareWorkers at a time, and returns the
// first error (no id is started after it).
func inParallel(ctx context.Context, ids []string, f func(string) error) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(compareWorkers)
	for _, id := range ids {
		if gctx.Err() != nil {
			break
		}
		g.Go(func() error { return f(id) })
	}
	if err := g.Wait(); err != nil {
		return err
	}
	return ctx.Err()
}
