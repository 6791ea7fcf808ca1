package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/jetsaga/jetsaga/events"
	"github.com/jetsaga/jetsaga/internal/groupcommit"
	"github.com/jetsaga/jetsaga/internal/jsretry"
)

// Config configures a Coordinator. Only JetStream is required.
type Config struct {
	// JetStream is the connection the coordinator uses. Required.
	JetStream jetstream.JetStream
	// Namespace of the deployment. Default events.Default().
	Namespace events.Namespace
	// Streams are the options EnsureStreams applies at start. Default: one
	// replica, 7 days max age.
	Streams events.StreamOptions
	// SkipEnsureStreams leaves stream and bucket management to the operator
	// (the streams must exist). Default false: Run creates or updates them.
	SkipEnsureStreams bool
	// Workers is the number of sagas an instance works on at once. Messages
	// of one saga are handled in order by one worker. Default
	// DefaultWorkers.
	Workers int
	// AckWait is how long a message may stay unacknowledged before
	// JetStream redelivers it: the time a crashed instance's messages stay
	// out of reach. Default 5s (a message held longer behind others gets an
	// in-progress ack).
	AckWait time.Duration
	// StepTimeout is the timeout of steps whose plan gives none
	// (timeout_ms absent or 0); a step with timeout_ms -1 has none. It is
	// recorded in a saga's state when the saga starts, so changing it
	// affects new sagas only; replay must be given the same value. Default
	// DefaultStepTimeout; negative: no default timeout.
	StepTimeout time.Duration
	// MaxAckPending bounds the messages in flight per consumer (shared by all
	// instances). Default DefaultMaxAckPending.
	MaxAckPending int
	// AtomicBatchMin turns on group commit: when at least this many writes
	// to one stream (states, commands, timers) gather while the previous
	// ones are being stored, they are stored as one JetStream atomic batch.
	// Default 0: every write is published on its own (on one 2-core
	// machine batches cost more than they save; README › Performance).
	AtomicBatchMin int
	// CacheSize bounds the states kept in memory per instance. Default
	// DefaultCacheSize.
	CacheSize int
	// Logger receives rejections and errors. Default slog.Default().
	Logger *slog.Logger
	// Registerer, if set, receives the coordinator's Prometheus metrics
	// (see "Metrics and traces" in the package doc); one coordinator per
	// registry. Default nil: no metrics (Stats still counts).
	Registerer prometheus.Registerer
	// TracerProvider, if set, records a span for each transition and each
	// command published, in the trace of the saga's start. Default nil: no
	// spans, and no cost.
	TracerProvider trace.TracerProvider
	// MaxLabelValues bounds the distinct saga names and participants that
	// metric labels show; later ones are reported as "other". Default
	// DefaultMaxLabelValues.
	MaxLabelValues int
}

// ErrInvalidConfig matches every error NewCoordinator returns for a bad
// Config field; the error names the field.
var ErrInvalidConfig = errors.New("orchestrator: invalid configuration")

type configError struct{ field, problem string }

func (e *configError) Error() string {
	return fmt.Sprintf("orchestrator: Config.%s %s", e.field, e.problem)
}

func (e *configError) Is(target error) bool { return target == ErrInvalidConfig }

func (c *Config) validate() error {
	if c.JetStream == nil {
		return &configError{"JetStream", "is required"}
	}
	c.Namespace = c.Namespace.OrDefault()
	for _, f := range []struct {
		name  string
		value *int
		def   int
	}{{"Workers", &c.Workers, DefaultWorkers}, {"MaxAckPending", &c.MaxAckPending, DefaultMaxAckPending},
		{"CacheSize", &c.CacheSize, DefaultCacheSize}, {"MaxLabelValues", &c.MaxLabelValues, DefaultMaxLabelValues}} {
		if *f.value < 0 {
			return &configError{f.name, fmt.Sprintf("is %d, must be >= 0 (0 means %d)", *f.value, f.def)}
		}
		if *f.value == 0 {
			*f.value = f.def
		}
	}
	if c.AtomicBatchMin < 0 || c.AtomicBatchMin == 1 {
		return &configError{"AtomicBatchMin", fmt.Sprintf("is %d, must be 0 (no group commit) or at least 2", c.AtomicBatchMin)}
	}
	if c.AckWait < 0 {
		return &configError{"AckWait", fmt.Sprintf("is %v, must be >= 0 (0 means %v)", c.AckWait, DefaultAckWait)}
	}
	if c.AckWait == 0 {
		c.AckWait = DefaultAckWait
	}
	if c.StepTimeout == 0 {
		c.StepTimeout = DefaultStepTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// Defaults of Config.
const (
	DefaultWorkers        = 64
	DefaultAckWait        = 5 * time.Second
	DefaultStepTimeout    = time.Minute
	DefaultMaxAckPending  = 8192
	DefaultCacheSize      = 16384
	DefaultMaxLabelValues = 256
)

// stepTimeoutMS is the default step timeout recorded in new sagas.
func (c *Config) stepTimeoutMS() int64 {
	if c.StepTimeout < 0 {
		return 0
	}
	return c.StepTimeout.Milliseconds()
}

// Stats are counters of a coordinator instance since it started.
type Stats struct {
	Processed uint64 // messages handled and acked
	Applied   uint64 // messages that changed a saga
	Ignored   uint64 // duplicates and stale inputs
	Rejected  uint64 // invalid inputs (recorded in the saga when it exists)
	Conflicts uint64 // compare-and-set conflicts with another instance
	Commands  uint64 // commands published
	Timers    uint64 // timers fired: ticks published for timers that fell due
	Errors    uint64 // transient errors (the message is redelivered)
	// Batches counts the JetStream atomic batches committed (group commit,
	// Config.AtomicBatchMin), BatchRejects the batches the server refused
	// and that were published again message by message.
	Batches, BatchRejects uint64
	// Unconsumed counts commands published for a participant that no
	// consumer of the commands stream reads (each is also logged, once a
	// minute per participant).
	Unconsumed uint64
}

// Coordinator consumes the sagas stream and drives every saga. Any number of
// instances may run against one deployment; they share one durable consumer.
type Coordinator struct {
	cfg   Config
	ns    events.Namespace
	js    jetstream.JetStream
	log   *slog.Logger
	stats struct {
		processed, applied, ignored, rejected, conflicts, commands, timers, errors, unconsumed atomic.Uint64
	}
	check *consumerCheck          // set by Run
	out   atomic.Pointer[outputs] // set by Run; Stats reads it from anywhere
	obs   *observer
}

// outputs are the coordinator's publishers, one per stream it
// writes: states into the bucket, commands, ticks into the sagas stream.
type outputs struct {
	states, commands, ticks *groupcommit.Publisher
}

func (o *outputs) close() {
	o.states.Close()
	o.commands.Close()
	o.ticks.Close()
}

// NewCoordinator validates cfg and returns a coordinator; Run starts it.
func NewCoordinator(cfg Config) (*Coordinator, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	c := &Coordinator{cfg: cfg, ns: cfg.Namespace, js: cfg.JetStream, log: cfg.Logger}
	obs, err := newObserver(c)
	if err != nil {
		return nil, err
	}
	c.obs = obs
	return c, nil
}

// Stats returns the instance's counters.
func (c *Coordinator) Stats() Stats {
	s := &c.stats
	st := Stats{Processed: s.processed.Load(), Applied: s.applied.Load(), Ignored: s.ignored.Load(),
		Rejected: s.rejected.Load(), Conflicts: s.conflicts.Load(), Commands: s.commands.Load(),
		Timers: s.timers.Load(), Errors: s.errors.Load(), Unconsumed: s.unconsumed.Load()}
	if o := c.out.Load(); o != nil {
		for _, p := range []*groupcommit.Publisher{o.states, o.commands, o.ticks} {
			ps := p.Stats()
			st.Batches += ps.Batches
			st.BatchRejects += ps.Rejected
		}
	}
	return st
}

// Run consumes until ctx is done, then stops fetching, finishes the messages
// it holds and returns nil. Started while JetStream is not ready (a server
// still starting, a cluster electing leaders or missing a node), it waits,
// logging, and tries again. It returns an error if it cannot start or if
// fetching fails for good (its connection was closed); messages it held and
// did not finish are redelivered to another instance, or to the next Run.
func (c *Coordinator) Run(ctx context.Context) error {
	if err := c.run(ctx); err != nil && ctx.Err() == nil {
		return err
	}
	return nil
}

func (c *Coordinator) run(ctx context.Context) error {
	var h *jsHandles
	err := jsretry.Do(ctx, c.log, "coordinator: JetStream not ready, trying again", func(ctx context.Context) (err error) {
		h, err = c.open(ctx)
		return err
	})
	if err != nil {
		return err
	}
	kv, sagas, bucket, cmds, cons := h.kv, h.sagas, h.bucket, h.cmds, h.cons
	// Every write goes through the publisher of its stream.
	bm := c.cfg.AtomicBatchMin
	out := outputs{states: newPublisher(c.js, bucket, bm), commands: newPublisher(c.js, cmds.CachedInfo().Config, bm),
		ticks: newPublisher(c.js, sagas.CachedInfo().Config, bm)}
	defer out.close()
	c.out.Store(&out)
	// A finished saga's state lives a little longer than its messages.
	states := newStateWriter(kv, out.states, sagas.CachedInfo().Config.MaxAge, bucket.AllowMsgTTL)
	if !bucket.AllowMsgTTL {
		c.log.Warn("coordinator: the state bucket does not allow per-key TTLs, so finished sagas' states are kept forever; start a coordinator that ensures the streams (or run orchestrator.EnsureStreams) to update it",
			"bucket", c.ns.StateBucket())
	}
	it, err := cons.Messages(jsretry.PullOptions(min(c.cfg.MaxAckPending, 4*c.cfg.Workers+64))...)
	if err != nil {
		return fmt.Errorf("orchestrator: consume %s: %w", c.ns.SagasStream(), err)
	}
	inputs := newInputReader(c.js, c.ns, sagas.CachedInfo().Config.Replicas)
	reader := newStateReader(c.js, kv, bucket.Replicas)
	var background sync.WaitGroup
	defer background.Wait()
	c.check = newConsumerCheck(c.js, c.ns, c.log, &c.stats.unconsumed, &background)
	bgCtx, stopBackground := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBackground()
	// One watch of the state bucket feeds the timers and the saga gauges.
	timers := newTimerIndex(c)
	followers := stateFollowers{timers}
	if census := c.obs.census(); census != nil {
		followers = append(followers, census)
	}
	background.Add(2)
	go func() {
		defer background.Done()
		followStates(bgCtx, c.js, kv, c.log, followers)
	}()
	go func() {
		defer background.Done()
		timers.run(bgCtx, out.ticks)
	}()
	var wg sync.WaitGroup
	queues := make([]chan queued, c.cfg.Workers)
	perWorker := max(c.cfg.CacheSize/c.cfg.Workers, 16)
	for i := range queues {
		queues[i] = make(chan queued, 64)
		w := &worker{c: c, reader: reader, states: states, inputs: inputs, cache: newStateCache(perWorker), naked: map[string]uint64{}}
		wg.Add(1)
		go func(q <-chan queued) {
			defer wg.Done()
			for msg := range q {
				w.handle(msg)
			}
		}(queues[i])
	}
	stop := context.AfterFunc(ctx, it.Drain)
	defer stop()
	var (
		fetchErr   error
		deliveries chain
	)
	var lastErr error // the iterator's last error before it closed
	for {
		msg, err := it.Next()
		if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
			if ctx.Err() == nil {
				fetchErr = fmt.Errorf("orchestrator: fetching stopped: %w", errors.Join(lastErr, err))
			}
			break
		}
		if err != nil {
			// Missed heartbeats (the server this instance is connected to
			// was cut off from the consumer's leader, say): the iterator
			// pulls again at the next call. An error it cannot go on from
			// (the consumer deleted) closes it, and the next call says so.
			c.log.Warn("coordinator: fetching inputs; pulling again", "err", err)
			lastErr = err
			continue
		}
		q := queued{msg: msg, at: time.Now()}
		if meta, err := msg.Metadata(); err == nil {
			q.since = deliveries.observe(meta)
		}
		queues[shard(msg.Subject(), len(queues))] <- q
	}
	for _, q := range queues {
		close(q)
	}
	wg.Wait()
	return fetchErr
}

// jsHandles are what the coordinator works on: the state bucket and its
// stream's configuration, the sagas and commands streams, its consumer.
type jsHandles struct {
	kv          jetstream.KeyValue
	bucket      jetstream.StreamConfig
	sagas, cmds jetstream.Stream
	cons        jetstream.Consumer // the coordinators' durable consumer
}

// open ensures the streams (unless configured not to), opens them and
// creates or updates the coordinators' consumer.
func (c *Coordinator) open(ctx context.Context) (*jsHandles, error) {
	if !c.cfg.SkipEnsureStreams {
		if err := EnsureStreams(ctx, c.js, c.ns, c.cfg.Streams); err != nil {
			return nil, err
		}
	}
	var h jsHandles
	var err error
	if h.kv, err = c.js.KeyValue(ctx, c.ns.StateBucket()); err != nil {
		return nil, fmt.Errorf("orchestrator: state bucket %s: %w", c.ns.StateBucket(), err)
	}
	if h.sagas, err = c.js.Stream(ctx, c.ns.SagasStream()); err != nil {
		return nil, fmt.Errorf("orchestrator: stream %s: %w", c.ns.SagasStream(), err)
	}
	if h.bucket, err = bucketStream(ctx, h.kv); err != nil {
		return nil, fmt.Errorf("orchestrator: state bucket %s: %w", c.ns.StateBucket(), err)
	}
	if h.cmds, err = c.js.Stream(ctx, c.ns.CommandsStream()); err != nil {
		return nil, fmt.Errorf("orchestrator: stream %s: %w", c.ns.CommandsStream(), err)
	}
	h.cons, err = c.js.CreateOrUpdateConsumer(ctx, c.ns.SagasStream(), jetstream.ConsumerConfig{
		Durable:        c.ns.CoordinatorConsumer(),
		Description:    "jetsaga coordinators",
		FilterSubjects: c.ns.CoordinatorFilters(),
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        c.cfg.AckWait,
		MaxAckPending:  c.cfg.MaxAckPending,
		MaxDeliver:     -1,
		DeliverPolicy:  jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return nil, fmt.Errorf("orchestrator: consumer on %s: %w", c.ns.SagasStream(), err)
	}
	return &h, nil
}

// shard maps a message to the worker that owns its saga: the saga id is the
// last token of every input subject.
func shard(subject string, n int) int {
	i := len(subject) - 1
	for i >= 0 && subject[i] != '.' {
		i--
	}
	h := fnv.New32a()
	h.Write([]byte(subject[i+1:]))
	return int(h.Sum32() % uint32(n))
}

// worker handles the messages of the sagas it owns, one at a time.
type worker struct {
	c      *Coordinator
	reader *stateReader
	states *stateWriter
	inputs *inputReader
	cache  *stateCache
	// naked holds, per saga, the highest input this worker nak'd and has
	// not acknowledged since: the chain cannot vouch for its later inputs.
	naked map[string]uint64
}

const opTimeout = 10 * time.Second

// queued is a message waiting for its worker, with the time it was fetched
// and what the delivery chain vouches for (see chain).
type queued struct {
	msg jetstream.Msg
	at  time.Time
	// since, if not 0: every input from this stream sequence up to the
	// message was delivered to this instance, in stream order, before it.
	since uint64
}

// chain follows the consumer's deliveries to this instance. JetStream
// delivers a consumer's new messages in stream order, numbering every
// delivery (consumer sequence); while an instance receives consecutive
// numbers, no other instance received anything in between, so every input
// since the chain began came to this instance, in order. A worker then knows
// that a saga's earlier inputs since the chain began are ahead of the
// message in its own queue (or were nak'd by it, which it remembers), and
// needs no read of the stream to apply the message in stream order. A gap in
// the numbering (another instance, a redelivery elsewhere) starts a new
// chain; a redelivery is never vouched for.
type chain struct {
	valid       bool
	last, since uint64 // last consumer sequence; the chain's first stream sequence
}

// observe returns what the chain vouches for the delivery described by m
// (queued.since).
func (c *chain) observe(m *jetstream.MsgMetadata) uint64 {
	contiguous := c.valid && m.Sequence.Consumer == c.last+1
	c.last = m.Sequence.Consumer
	if m.NumDelivered > 1 {
		c.valid = contiguous
		return 0
	}
	if !contiguous {
		c.valid, c.since = true, m.Sequence.Stream
	}
	return c.since
}

func (w *worker) handle(q queued) {
	c, msg := w.c, q.msg
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	meta, err := msg.Metadata()
	if err != nil {
		c.log.Error("coordinator: message without metadata", "subject", msg.Subject(), "err", err)
		_ = msg.Term()
		return
	}
	if time.Since(q.at) > c.cfg.AckWait/2 {
		// Held behind other messages for long: keep it ours.
		_ = msg.InProgress()
	}
	in, ok := decodeInput(c.ns, msg.Subject(), msg.Headers(), msg.Data(), meta.Sequence.Stream, meta.Timestamp)
	if !ok {
		c.stats.rejected.Add(1)
		c.obs.rejectedSubject()
		c.log.Warn("coordinator: message on a subject that names no saga", "subject", msg.Subject(), "seq", meta.Sequence.Stream)
		_ = msg.Term()
		return
	}
	in.StepTimeoutMS = c.cfg.stepTimeoutMS()
	c.obs.input(&in, msg.Headers(), meta.NumDelivered)
	since := q.since
	if since != 0 && w.naked[in.SagaID] != 0 {
		since = 0 // an earlier input of the saga comes back later
	}
	if err := w.apply(ctx, in, since); err != nil {
		c.stats.errors.Add(1)
		c.log.Warn("coordinator: will retry", "saga", in.SagaID, "seq", in.Seq, "err", err)
		w.naked[in.SagaID] = max(w.naked[in.SagaID], in.Seq)
		_ = msg.NakWithDelay(backoff(meta.NumDelivered))
		return
	}
	if n, ok := w.naked[in.SagaID]; ok && in.Seq >= n {
		delete(w.naked, in.SagaID)
	}
	c.stats.processed.Add(1)
	_ = msg.Ack()
}

func backoff(delivered uint64) time.Duration {
	d := 50 * time.Millisecond << min(delivered, 7)
	return min(d, 5*time.Second)
}

// apply makes input in part of its saga's state, after every earlier input
// of the saga in the stream (see order.go): load the state (publishing what
// its last transition may have left unpublished); if it already includes in,
// there is nothing to do; else apply the saga's first input between the
// state and in — in itself when there is none — and go on until in is
// applied. The stream is not read for inputs from since (if not 0) on:
// the delivery chain vouches that they came to this worker before in.
func (w *worker) apply(ctx context.Context, in Input, since uint64) error {
	// The saga's inputs in (state.Seq, cursor) were applied to the state of
	// revision cursorRev and left it unchanged.
	var cursor, cursorRev uint64
	confirmed := false // the state was read from the bucket for in
	for conflicts := 0; ; {
		e, err := w.load(ctx, in.SagaID)
		if err != nil {
			return err
		}
		if err := w.flush(ctx, e); err != nil {
			return err
		}
		seq := e.seq()
		if in.Seq <= seq {
			w.c.stats.ignored.Add(1) // redelivered: already part of the state
			return nil
		}
		if e.rev != cursorRev || cursor <= seq {
			cursor, cursorRev = seq+1, e.rev
		}
		next := &in
		var gap *Input
		if since == 0 || cursor < since {
			if gap, err = w.inputs.first(ctx, in.SagaID, e.state, cursor, in.Seq); err != nil {
				return err
			}
		}
		if gap != nil {
			gap.StepTimeoutMS = in.StepTimeoutMS
			next = gap
		}
		res := Next(e.state, *next)
		if !res.Changed {
			if next == &in {
				// A cached state may be behind another instance's writes:
				// confirm with the bucket before dropping an input.
				if e.cached && !confirmed && (e.state == nil || !e.state.Status.Terminal()) {
					confirmed = true
					w.cache.drop(in.SagaID)
					continue
				}
				w.count(in, e.state != nil, res.Rejected)
				return nil
			}
			cursor = next.Seq + 1
			continue
		}
		tctx, end := w.c.obs.transition(ctx, e.state, next, res.State)
		err = w.transition(ctx, tctx, e, next, res)
		if errors.Is(err, errConflict) {
			end(err)
			if conflicts++; conflicts > 50 {
				return fmt.Errorf("state of saga %s: compare-and-set lost %d times", in.SagaID, conflicts)
			}
			continue
		}
		end(err)
		if err != nil {
			return err
		}
		if next == &in {
			return nil
		}
	}
}

// transition stores res.State, the state that follows e by in, counts it,
// then publishes its output (Pending). It returns errConflict if another
// instance wrote first; if the state is written but its output could not be
// published, the entry is left unflushed for the next input to flush.
//
// The output goes out only once the state that holds it is stored: a
// command is never published for a transition that is not the saga's. (A
// version that published both at once, on the ground that a transition's
// output is a function of the stream up to its input, created money in a long
// cluster node-loss run: a transition computed while the cluster changed
// leaders published its credit command, its write failed, and the saga's
// transition, computed again, timed the debit out instead.)
func (w *worker) transition(ctx, tctx context.Context, e *cacheEntry, in *Input, res Result) error {
	ne, err := w.write(ctx, in.SagaID, e.rev, res.State)
	if err != nil {
		return err
	}
	w.c.obs.written(e.state, in, res.State)
	w.count(*in, e.state != nil, res.Rejected)
	return w.flush(tctx, ne)
}

// count records the fate of an input that was applied or ignored (hadSaga:
// its saga existed).
func (w *worker) count(in Input, hadSaga bool, rejected string) {
	c := w.c
	switch {
	case rejected != "":
		c.stats.rejected.Add(1)
		c.obs.rejected(&in, hadSaga)
		attrs := []any{"saga", in.SagaID, "kind", in.Kind, "seq", in.Seq, "reason", rejected}
		if in.Participant != "" {
			attrs = append(attrs, "participant", in.Participant)
		}
		if in.Outcome != nil && in.Outcome.Step != "" {
			attrs = append(attrs, "step", in.Outcome.Step)
		}
		c.log.Warn("coordinator: input rejected", attrs...)
	default:
		c.stats.applied.Add(1)
	}
}

var errConflict = errors.New("compare-and-set conflict")

// write stores st as the saga's state over revision rev and caches it.
func (w *worker) write(ctx context.Context, id string, rev uint64, st *State) (*cacheEntry, error) {
	data, err := encodeState(st)
	if err != nil {
		return nil, err
	}
	nrev, err := w.states.put(ctx, id, st, data, rev)
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		w.c.stats.conflicts.Add(1)
		w.cache.drop(id)
		return nil, errConflict
	}
	if err != nil {
		w.cache.drop(id)
		return nil, fmt.Errorf("write state of saga %s: %w", id, err)
	}
	ne := &cacheEntry{state: st, rev: nrev}
	w.cache.put(id, ne)
	return ne, nil
}

// load returns the saga's state and revision, from the cache or the bucket.
func (w *worker) load(ctx context.Context, id string) (*cacheEntry, error) {
	if e := w.cache.get(id); e != nil {
		return e, nil
	}
	value, rev, found, err := w.reader.get(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("read state of saga %s: %w", id, err)
	}
	if !found {
		return &cacheEntry{flushed: true}, nil
	}
	st, err := decodeState(value)
	if err != nil {
		return nil, fmt.Errorf("decode state of saga %s: %w", id, err)
	}
	e := &cacheEntry{state: st, rev: rev}
	w.cache.put(id, e)
	e.cached = false
	return e, nil
}

// flush publishes the pending output of the state's last transition, unless
// this instance already did. Message ids make it idempotent.
func (w *worker) flush(ctx context.Context, e *cacheEntry) error {
	if e.flushed || e.state == nil || e.state.Pending == nil {
		e.flushed = true
		return nil
	}
	if err := w.c.send(ctx, e.state.Pending, e.state.Trace)(); err != nil {
		return err
	}
	e.flushed = true
	return nil
}

// send starts publishing the commands of one transition and returns the
// function that waits for their acknowledgements.
func (c *Coordinator) send(ctx context.Context, p *Pending, trace Trace) (wait func() error) {
	if p == nil {
		return func() error { return nil }
	}
	var ends []func(error) // the commands' spans, when tracing
	fail := func(err error) func() error {
		for _, end := range ends {
			end(err)
		}
		return func() error { return err }
	}
	msgs := make([]*nats.Msg, 0, len(p.Commands))
	for i := range p.Commands {
		cmd := &p.Commands[i]
		m, err := c.ns.CommandMsg(cmd, trace)
		if err != nil {
			return fail(fmt.Errorf("encode command: %w", err))
		}
		if end := c.obs.command(ctx, m.Header, cmd, trace); end != nil {
			ends = append(ends, end)
		}
		msgs = append(msgs, m)
	}
	out := c.out.Load()
	commands, err := out.commands.Submit(ctx, msgs...)
	if err != nil {
		return fail(fmt.Errorf("publish commands: %w", err))
	}
	return func() (err error) {
		defer func() {
			for _, end := range ends {
				end(err)
			}
		}()
		if _, err := commands.Wait(ctx); err != nil {
			return fmt.Errorf("publish commands: %w", err)
		}
		c.stats.commands.Add(uint64(len(p.Commands)))
		c.obs.published(p)
		for i := range p.Commands {
			c.check.sent(p.Commands[i].Participant)
		}
		return nil
	}
}

// stateCache is a worker's bounded cache of saga states. A worker owns its
// sagas, so the cache needs no lock.
type stateCache struct {
	max     int
	entries map[string]*cacheEntry
}

type cacheEntry struct {
	state   *State // nil: no saga
	rev     uint64 // 0: no key
	flushed bool   // this instance published state.Pending
	cached  bool   // served from the cache (may be behind another instance)
}

func newStateCache(max int) *stateCache {
	return &stateCache{max: max, entries: make(map[string]*cacheEntry, max)}
}

func (c *stateCache) get(id string) *cacheEntry {
	e := c.entries[id]
	if e != nil {
		e.cached = true
	}
	return e
}

func (c *stateCache) put(id string, e *cacheEntry) {
	if _, ok := c.entries[id]; !ok && len(c.entries) >= c.max {
		for k := range c.entries { // evict one arbitrary entry
			delete(c.entries, k)
			break
		}
	}
	c.entries[id] = e
}

func (c *stateCache) drop(id string) { delete(c.entries, id) }

// seq is the stream sequence of the last input in the entry's state.
func (e *cacheEntry) seq() uint64 {
	if e.state == nil {
		return 0
	}
	return e.state.Seq
}
