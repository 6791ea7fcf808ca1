package bench

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetsaga/jetsaga/examples/bank"
	"github.com/jetsaga/jetsaga/orchestrator"
)

// hopSample is how many committed sagas the hop breakdown reads back.
const hopSample = 200

// Hop is the median time between two consecutive points of a committed
// saga's life: the client's Start call, each message of the saga as
// JetStream stored it (its timestamp), the terminal state's write, and
// Wait's return.
type Hop struct {
	From     string  `json:"from"`
	To       string  `json:"to"`
	MedianMs float64 `json:"median_ms"`
}

// hopPoint is one point of a committed transfer: a message read back by
// subject (the last one, where a step was retried), or the state's write.
type hopPoint struct {
	label   string
	stream  func(*env) string
	subject func(*env, string) string
}

var hopPoints = []hopPoint{
	{"start stored", (*env).sagasStream, func(e *env, id string) string { return e.ns.Start(id) }},
	{"command to " + bank.BankA + " stored", (*env).commandsStream, func(e *env, id string) string { return e.ns.Command(bank.BankA, id) }},
	{"outcome of " + bank.BankA + " stored", (*env).sagasStream, func(e *env, id string) string { return e.ns.Event(bank.BankA, id) }},
	{"command to " + bank.BankB + " stored", (*env).commandsStream, func(e *env, id string) string { return e.ns.Command(bank.BankB, id) }},
	{"outcome of " + bank.BankB + " stored", (*env).sagasStream, func(e *env, id string) string { return e.ns.Event(bank.BankB, id) }},
}

func (e *env) sagasStream() string    { return e.ns.SagasStream() }
func (e *env) commandsStream() string { return e.ns.CommandsStream() }

// hops reads back up to hopSample committed sagas, spread over the run, by
// direct gets (cheap whatever the streams hold), and returns the median of
// each hop. Sagas that expired (a run longer than the streams' max age) are
// left out.
func (e *env) hops(ctx context.Context, ts []*transfer) ([]Hop, error) {
	var committed []*transfer
	for _, t := range ts {
		if t.err == nil && t.status == orchestrator.Committed {
			committed = append(committed, t)
		}
	}
	if len(committed) == 0 {
		return nil, nil
	}
	streams := map[string]jetstream.Stream{}
	for _, name := range []string{e.sagasStream(), e.commandsStream()} {
		s, err := e.js.Stream(ctx, name)
		if err != nil {
			return nil, err
		}
		streams[name] = s
	}
	bucket, err := e.js.KeyValue(ctx, e.ns.StateBucket())
	if err != nil {
		return nil, err
	}
	labels := []string{"Start called"}
	for _, p := range hopPoints {
		labels = append(labels, p.label)
	}
	labels = append(labels, "terminal state written", "Wait returned")
	var samples [][]time.Duration
	step := max(1, len(committed)/hopSample)
sample:
	for i := 0; i < len(committed); i += step {
		t := committed[i]
		points := []time.Time{t.begin}
		for _, p := range hopPoints {
			m, err := streams[p.stream(e)].GetLastMsgForSubject(ctx, p.subject(e, t.id))
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				continue sample // expired
			}
			if err != nil {
				return nil, fmt.Errorf("saga %s: %w", t.id, err)
			}
			points = append(points, m.Time)
		}
		entry, err := bucket.Get(ctx, t.id)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // expired
		}
		if err != nil {
			return nil, fmt.Errorf("state of saga %s: %w", t.id, err)
		}
		points = append(points, entry.Created(), t.begin.Add(t.latency))
		d := make([]time.Duration, len(points)-1)
		for k := range d {
			d[k] = points[k+1].Sub(points[k])
		}
		samples = append(samples, d)
	}
	if len(samples) == 0 {
		return nil, nil
	}
	out := make([]Hop, len(labels)-1)
	col := make([]time.Duration, len(samples))
	for k := range out {
		for i, d := range samples {
			col[i] = d[k]
		}
		sort.Slice(col, func(a, b int) bool { return col[a] < col[b] })
		out[k] = Hop{From: labels[k], To: labels[k+1], MedianMs: percentile(col, 0.5)}
	}
	return out, nil
}
