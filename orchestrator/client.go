package orchestrator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	"github.com/jetsaga/jetsaga/events"
)

// Errors returned by the client.
var (
	// ErrClientClosed: the client was closed.
	ErrClientClosed = errors.New("orchestrator: client closed")
	// ErrNotFound: no saga has this id (or its start has not been processed yet).
	ErrNotFound = errors.New("saga not found")
	// ErrPlanConflict: the saga id was already started with a different plan.
	ErrPlanConflict = errors.New("saga id already started with a different plan")
	// ErrNotParked: an operator action needs a parked saga.
	ErrNotParked = errors.New("saga is not parked")
)

// Client starts sagas and reads their state. It is safe for concurrent use;
// all Waits of one client share one watch of the state bucket.
type Client struct {
	js jetstream.JetStream
	ns events.Namespace

	mu       sync.Mutex
	kv       jetstream.KeyValue
	states   *stateReader // kv's states, from its leader when replicated
	sagas    jetstream.Stream
	starts   *msgReader // the sagas stream, from its leader when replicated
	watcher  jetstream.KeyWatcher
	watching bool // the watch goroutine runs
	waiters  map[string]map[chan []byte]struct{}
	done     chan struct{}
	wg       sync.WaitGroup

	tracer trace.Tracer // nil: no spans (WithTracerProvider)
}

// NewClient returns a client for namespace ns (the zero Namespace means
// events.Default()). Close releases its watch.
func NewClient(js jetstream.JetStream, ns events.Namespace, opts ...ClientOption) *Client {
	ns = ns.OrDefault()
	c := &Client{js: js, ns: ns, waiters: map[string]map[chan []byte]struct{}{}, done: make(chan struct{})}
	for _, o := range opts {
		o(c)
	}
	return c
}

// Namespace returns the client's namespace.
func (c *Client) Namespace() events.Namespace { return c.ns }

// Close stops the client's shared watch.
func (c *Client) Close() {
	c.mu.Lock()
	select {
	case <-c.done:
	default:
		close(c.done)
	}
	w := c.watcher
	c.watcher = nil
	c.mu.Unlock()
	if w != nil {
		stopWatch(w)
	}
	c.wg.Wait()
}

func (c *Client) sagasStream(ctx context.Context) (jetstream.Stream, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sagas != nil {
		return c.sagas, nil
	}
	s, err := c.js.Stream(ctx, c.ns.SagasStream())
	if err != nil {
		return nil, fmt.Errorf("sagas stream %s: %w", c.ns.SagasStream(), err)
	}
	c.sagas, c.starts = s, newMsgReader(c.js, c.ns.SagasStream(), s.CachedInfo().Config.Replicas)
	return s, nil
}

func (c *Client) bucket(ctx context.Context) (jetstream.KeyValue, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.kv != nil {
		return c.kv, nil
	}
	kv, err := c.js.KeyValue(ctx, c.ns.StateBucket())
	if err == nil {
		var r *stateReader
		if r, err = newBucketReader(ctx, c.js, kv); err == nil {
			c.kv, c.states = kv, r
		}
	}
	if err != nil {
		return nil, fmt.Errorf("state bucket %s: %w", c.ns.StateBucket(), err)
	}
	return kv, nil
}

// stateReader returns the reader of the state bucket. Like the
// coordinator, the client reads a replicated bucket's states from its
// leader: any replica answers a KV get, and a follower that lags or is cut
// off answers with an older state (see stateReader).
func (c *Client) stateReader(ctx context.Context) (*stateReader, error) {
	if _, err := c.bucket(ctx); err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.states, nil
}

// Start validates the plan and publishes its start message; it returns the
// saga id. Starting an id again with the same plan does nothing and returns
// the id; with a different plan it returns ErrPlanConflict.
func (c *Client) Start(ctx context.Context, plan *Plan) (string, error) {
	start, generated, err := plan.build()
	if err != nil {
		return "", err
	}
	return start.SagaID, c.start(ctx, start, plan.trace, generated)
}

// StartMessage publishes a start message built elsewhere (for instance
// decoded from JSON), with the same checks as Start.
func (c *Client) StartMessage(ctx context.Context, start events.Start) error {
	return c.start(ctx, start, Trace{}, false)
}

func (c *Client) start(ctx context.Context, start events.Start, trace Trace, fresh bool) (err error) {
	if c.tracer != nil {
		var end func(error)
		ctx, trace, end = c.startSpan(ctx, &start, trace)
		defer func() { end(err) }()
	}
	start.V = events.Version
	data, err := start.Encode()
	if err != nil {
		return err
	}
	// A start published earlier than the duplicate window is only found by
	// looking; an id the plan generated (UUIDv7) cannot have been used.
	if !fresh {
		switch err := c.sameAsStored(ctx, start.SagaID, data); {
		case err == nil:
			return nil // already started with this plan
		case !errors.Is(err, ErrNotFound):
			return err
		}
	}
	m, err := c.ns.StartMsg(start, trace)
	if err != nil {
		return err
	}
	ack, err := c.js.PublishMsg(ctx, m)
	if err != nil {
		return fmt.Errorf("publish start of saga %s: %w", start.SagaID, err)
	}
	if ack.Duplicate { // a concurrent start of the same id won the race
		return c.sameAsStored(ctx, start.SagaID, data)
	}
	return nil
}

// sameAsStored compares a start message with the one stored for its saga:
// nil if equal, ErrPlanConflict if not, ErrNotFound if there is none.
func (c *Client) sameAsStored(ctx context.Context, id string, data []byte) error {
	raw, err := c.firstStart(ctx, id)
	if err != nil {
		return err
	}
	stored, err := events.DecodeStart(raw.Data)
	if err != nil {
		return fmt.Errorf("%w (the stored start is invalid: %v)", ErrPlanConflict, err)
	}
	want, _ := events.DecodeStart(data)
	h1, err1 := planHash(&stored)
	h2, err2 := planHash(&want)
	if err1 != nil || err2 != nil || h1 != h2 {
		return fmt.Errorf("%w: %s", ErrPlanConflict, id)
	}
	return nil
}

// Get returns the saga's current state, or ErrNotFound.
func (c *Client) Get(ctx context.Context, id string) (*State, error) {
	if err := events.ValidToken(id); err != nil {
		return nil, fmt.Errorf("saga id %q %v", id, err)
	}
	r, err := c.stateReader(ctx)
	if err != nil {
		return nil, err
	}
	value, _, found, err := r.get(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("read state of saga %s: %w", id, err)
	}
	if !found {
		// A saga whose start no coordinator has applied yet (none is
		// running, say) has no state in the bucket: its state is what its
		// first start makes of it, which is what a coordinator will write.
		raw, err := c.firstStart(ctx, id)
		if err != nil {
			return nil, err
		}
		in, ok := decodeInput(c.ns, raw.Subject, raw.Header, raw.Data, raw.Sequence, raw.Time)
		if !ok {
			return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
		}
		return Next(nil, in).State, nil
	}
	return decodeState(value)
}

// Wait returns the saga's state once it is terminal or parked (a parked saga
// needs an operator: waiting longer would wait for a person). It watches the
// state bucket — one watch shared by every Wait of this client — and does
// not poll; of the updates before the end it reads only the status. A saga
// that does not exist yet is waited for. When ctx ends (or the client is
// closed) first, it returns the newest state it saw with the error.
func (c *Client) Wait(ctx context.Context, id string) (*State, error) {
	if err := events.ValidToken(id); err != nil {
		return nil, fmt.Errorf("saga id %q %v", id, err)
	}
	ch, err := c.subscribe(id)
	if err != nil {
		return nil, err
	}
	defer c.unsubscribe(id, ch)
	c.wake(id) // read the key first
	var st *State
	// The newest state the watch carried while the saga ran: decoded only
	// if Wait returns before the end (an update's status is read from the
	// head of its JSON).
	var running []byte
	latest := func() *State {
		select {
		case value := <-ch: // delivered just as Wait gives up: newer still
			if value != nil {
				running = value
			}
		default:
		}
		if running != nil {
			if next, err := decodeState(running); err == nil {
				return next
			}
		}
		return st
	}
	for {
		select {
		case value := <-ch: // the watch carries the new state: no read needed
			if status, _, ok := stateHead(value); ok && !status.Terminal() && status != Parked {
				running = value
				continue
			}
			running = nil
			if value == nil {
				// Read the key: first, and whenever the watch was made anew
				// (after a reconnect what changed meanwhile was not seen).
				next, err := c.Get(ctx, id)
				switch {
				case err == nil:
					st = next
				case !errors.Is(err, ErrNotFound) && ctx.Err() == nil:
					c.wake(id) // NATS is not reachable yet: try again shortly
					select {
					case <-time.After(250 * time.Millisecond):
					case <-ctx.Done():
					}
				}
			} else if next, err := decodeState(value); err == nil {
				st = next
			}
			if st != nil && (st.Status.Terminal() || st.Status == Parked) {
				return st, nil
			}
		case <-ctx.Done():
			return latest(), ctx.Err()
		case <-c.done:
			return latest(), ErrClientClosed
		}
	}
}

// subscribe registers a Wait for id, and starts the shared watch if it is
// not running.
func (c *Client) subscribe(id string) (chan []byte, error) {
	ch := make(chan []byte, 1)
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-c.done:
		return nil, ErrClientClosed
	default:
	}
	if !c.watching {
		c.watching = true
		c.wg.Add(1)
		go c.watch()
	}
	set := c.waiters[id]
	if set == nil {
		set = map[chan []byte]struct{}{}
		c.waiters[id] = set
	}
	set[ch] = struct{}{}
	return ch, nil
}

func (c *Client) unsubscribe(id string, ch chan []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.waiters[id], ch)
	if len(c.waiters[id]) == 0 {
		delete(c.waiters, id)
	}
}

// watch keeps one watch of the state bucket for every Wait of the client:
// it makes it (retrying while NATS or JetStream is unreachable), then has
// every Wait read its key (updates before the watch existed were not seen),
// and makes it anew whenever the connection comes back, since the server
// may have restarted, taking the watch's consumer and the updates of the
// outage with it.
func (c *Client) watch() {
	defer c.wg.Done()
	nc := c.js.Conn()
	connected := nc.StatusChanged(nats.CONNECTED)
	defer nc.RemoveStatusListener(connected)
	for {
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			kv, err := c.bucket(ctx)
			var w jetstream.KeyWatcher
			if err == nil {
				w, err = kv.WatchAll(context.Background(), jetstream.UpdatesOnly(), jetstream.IgnoreDeletes())
			}
			cancel()
			if err == nil {
				if !c.swapWatcher(w) {
					return
				}
				break
			}
			select {
			case <-c.done:
				return
			case <-time.After(250 * time.Millisecond): // not reachable yet
			}
		}
		c.mu.Lock()
		ids := make([]string, 0, len(c.waiters))
		for id := range c.waiters {
			ids = append(ids, id)
		}
		c.mu.Unlock()
		for _, id := range ids {
			c.wake(id)
		}
		select {
		case <-c.done:
			return
		case <-connected:
		}
	}
}

// swapWatcher replaces the shared watch with w; false if the client closed.
func (c *Client) swapWatcher(w jetstream.KeyWatcher) bool {
	c.mu.Lock()
	select {
	case <-c.done:
		c.mu.Unlock()
		stopWatch(w)
		return false
	default:
	}
	old := c.watcher
	c.watcher = w
	c.wg.Add(1)
	go c.dispatch(w)
	c.mu.Unlock()
	if old != nil {
		stopWatch(old)
	}
	return true
}

// wake has every Wait for id read its key.
func (c *Client) wake(id string) { c.notify(id, nil) }

// notify hands value (nil: read the key) to every Wait for id, replacing an
// unread older one.
func (c *Client) notify(id string, value []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for ch := range c.waiters[id] {
		select {
		case <-ch:
		default:
		}
		ch <- value
	}
}

// dispatch wakes the waiters of every key the shared watch reports.
func (c *Client) dispatch(w jetstream.KeyWatcher) {
	defer c.wg.Done()
	for e := range w.Updates() {
		if e == nil || e.Operation() != jetstream.KeyValuePut {
			continue // the end of the initial values; a deleted or purged key
		}
		c.notify(e.Key(), e.Value())
	}
}

// ListFilter selects sagas for List.
type ListFilter struct {
	// Status keeps only sagas in this status ("" keeps all).
	Status Status
	// Limit bounds the result (0: no bound).
	Limit int
}

// List returns the sagas that pass the filter, newest first: every state in
// the bucket (a saga has one from its start; a finished one until its TTL),
// read with one watch rather than a read per key. To page through a large
// bucket again and again, keep an Index.
func (c *Client) List(ctx context.Context, f ListFilter) ([]*State, error) {
	kv, err := c.bucket(ctx)
	if err != nil {
		return nil, err
	}
	// One watch delivers every current value (an ordered consumer, last
	// value per key): no round trip per saga.
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, err
	}
	defer stopWatch(w)
	var out []*State
	for {
		var e jetstream.KeyValueEntry
		select {
		case e = <-w.Updates():
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if e == nil {
			break // the current values are all delivered
		}
		st, err := decodeState(e.Value())
		if err != nil {
			continue
		}
		if f.Status == "" || st.Status == f.Status {
			out = append(out, st)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].StartedMS != out[j].StartedMS {
			return out[i].StartedMS > out[j].StartedMS
		}
		return out[i].SagaID > out[j].SagaID
	})
	if f.Limit > 0 && len(out) > f.Limit {
		out = out[:f.Limit]
	}
	return out, nil
}

// Redrive resumes a parked saga: the step that parked it is sent again with
// a fresh retry budget.
func (c *Client) Redrive(ctx context.Context, id string) error {
	return c.control(ctx, events.Control{SagaID: id, Action: events.Redrive})
}

// Skip marks the step that parked a saga as done by hand and resumes it.
func (c *Client) Skip(ctx context.Context, id, step, note string) error {
	return c.control(ctx, events.Control{SagaID: id, Action: events.Skip, Step: step, Note: note})
}

// Resolve ends a parked saga with the operator's note.
func (c *Client) Resolve(ctx context.Context, id, note string) error {
	return c.control(ctx, events.Control{SagaID: id, Action: events.Resolve, Note: note})
}

func (c *Client) control(ctx context.Context, ctl events.Control) error {
	st, err := c.Get(ctx, ctl.SagaID)
	if err != nil {
		return err
	}
	if st.Status != Parked {
		return fmt.Errorf("%w: %s is %s", ErrNotParked, ctl.SagaID, st.Status)
	}
	ctl.V = events.Version
	ctl.ID = uuid.NewString()
	m, err := c.ns.ControlMsg(ctl)
	if err != nil {
		return err
	}
	_, err = c.js.PublishMsg(ctx, m)
	return err
}

// TimelineEntry is one message of a saga, from either stream.
type TimelineEntry struct {
	Stream  string          `json:"stream"`
	Seq     uint64          `json:"seq"`
	Time    time.Time       `json:"time"`
	Subject string          `json:"subject"`
	Kind    events.Kind     `json:"kind"`
	Summary string          `json:"summary"`
	Data    json.RawMessage `json:"data,omitempty"`
}

// Timeline returns the messages of a saga in both streams (start, commands,
// outcomes of its participants, timers, operator actions), in time order.
// It reads them by direct gets on the saga's literal subjects, so it costs
// what it returns whatever the streams hold; outcomes published by
// participants that have no step in the saga (which the coordinator
// ignores) are not shown.
func (c *Client) Timeline(ctx context.Context, id string) ([]TimelineEntry, error) {
	if err := events.ValidToken(id); err != nil {
		return nil, fmt.Errorf("saga id %q %v", id, err)
	}
	var participants []string
	if raw, err := c.firstStart(ctx, id); err == nil {
		if start, err := events.DecodeStart(raw.Data); err == nil {
			participants = (&State{Plan: &start}).participants()
		}
	} else if !errors.Is(err, ErrNotFound) {
		return nil, err
	}
	type source struct {
		stream  string
		subject string
	}
	sagas, cmds := c.ns.SagasStream(), c.ns.CommandsStream()
	sources := []source{{sagas, c.ns.Start(id)}, {sagas, c.ns.Tick(id)}, {sagas, c.ns.Control(id)}}
	for _, p := range participants {
		sources = append(sources, source{sagas, c.ns.Event(p, id)}, source{cmds, c.ns.Command(p, id)})
	}
	readers := map[string]*msgReader{sagas: newMsgReader(c.js, sagas, 1), cmds: newMsgReader(c.js, cmds, 1)}
	var out []TimelineEntry
	for _, src := range sources {
		for seq := uint64(1); ; {
			m, err := readers[src.stream].next(ctx, src.subject, seq)
			if err != nil {
				return nil, err
			}
			if m == nil {
				break
			}
			sub, _ := c.ns.Parse(m.Subject)
			out = append(out, TimelineEntry{Stream: src.stream, Seq: m.Sequence, Time: m.Time,
				Subject: m.Subject, Kind: sub.Kind, Summary: summarize(sub.Kind, m.Data), Data: jsonOrNil(m.Data)})
			seq = m.Sequence + 1
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		if !out[i].Time.Equal(out[j].Time) {
			return out[i].Time.Before(out[j].Time)
		}
		return out[i].Stream == out[j].Stream && out[i].Seq < out[j].Seq
	})
	return out, nil
}

func jsonOrNil(b []byte) json.RawMessage {
	if json.Valid(b) {
		return append(json.RawMessage(nil), b...)
	}
	return nil
}

// summarize renders one message as a short line for people.
func summarize(kind events.Kind, data []byte) string {
	switch kind {
	case events.KindStart:
		s, err := events.DecodeStart(data)
		if err != nil {
			return "invalid start: " + err.Error()
		}
		return fmt.Sprintf("start %s (%d steps)", s.Name, len(s.Steps))
	case events.KindCommand:
		cmd, err := events.DecodeCommand(data)
		if err != nil {
			return "invalid command: " + err.Error()
		}
		return fmt.Sprintf("command %s %s %s → %s (attempt %d)", cmd.Step, cmd.Op, cmd.Action, cmd.Participant, cmd.Attempt)
	case events.KindEvent:
		o, err := events.DecodeOutcome(data)
		if err != nil {
			return "invalid outcome: " + err.Error()
		}
		s := fmt.Sprintf("outcome %s %s %s from %s (attempt %d)", o.Step, o.Op, o.Status, o.Participant, o.Attempt)
		if o.Reason != "" {
			s += ": " + o.Reason
		}
		return s
	case events.KindTick:
		t, err := events.DecodeTick(data)
		if err != nil {
			return "invalid tick: " + err.Error()
		}
		return "timer due " + time.UnixMilli(t.DueMS).UTC().Format(time.RFC3339Nano)
	case events.KindControl:
		ctl, err := events.DecodeControl(data)
		if err != nil {
			return "invalid operator action: " + err.Error()
		}
		s := "operator " + string(ctl.Action)
		if ctl.Step != "" {
			s += " " + ctl.Step
		}
		if ctl.Note != "" {
			s += ": " + ctl.Note
		}
		return s
	}
	return string(kind)
}

// firstStart reads the first start message published for saga id: the one
// the coordinator runs (a later one, with another plan, is rejected), from
// the stream's leader when it is replicated (a follower may not have it
// yet). It returns ErrNotFound when there is none.
func (c *Client) firstStart(ctx context.Context, id string) (*jetstream.RawStreamMsg, error) {
	if _, err := c.sagasStream(ctx); err != nil {
		return nil, err
	}
	c.mu.Lock()
	r := c.starts
	c.mu.Unlock()
	raw, err := r.next(ctx, c.ns.Start(id), 1)
	if err != nil {
		return nil, fmt.Errorf("read start of saga %s: %w", id, err)
	}
	if raw == nil {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	return raw, nil
}
