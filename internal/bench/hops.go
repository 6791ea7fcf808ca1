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
	for _, name := range []string{e.NS.SagasStream(), e.NS.CommandsStream()} {
		s, err := e.JS.Stream(ctx, name)
		if err != nil {
			return nil, err
		}
		streams[name] = s
	}
	bucket, err := e.JS.KeyValue(ctx, e.NS.StateBucket())
	if err != nil {
		return nil, err
	}
	// The stored messages of a committed transfer, in order: the last one
	// of each subject (a retried step's last attempt).
	points := []struct{ label, stream, subject string }{
		{"start stored", e.NS.SagasStream(), e.NS.Start("")},
		{"command to " + bank.BankA + " stored", e.NS.CommandsStream(), e.NS.Command(bank.BankA, "")},
		{"outcome of " + bank.BankA + " stored", e.NS.SagasStream(), e.NS.Event(bank.BankA, "")},
		{"command to " + bank.BankB + " stored", e.NS.CommandsStream(), e.NS.Command(bank.BankB, "")},
		{"outcome of " + bank.BankB + " stored", e.NS.SagasStream(), e.NS.Event(bank.BankB, "")},
	}
	labels := []string{"Start called"}
	for _, p := range points {
		labels = append(labels, p.label)
	}
	labels = append(labels, "terminal state written", "Wait returned")
	var samples [][]time.Duration
	step := max(1, len(committed)/hopSample)
sample:
	for i := 0; i < len(committed); i += step {
		t := committed[i]
		times := []time.Time{t.begin}
		for _, p := range points {
			m, err := streams[p.stream].GetLastMsgForSubject(ctx, p.subject+t.id)
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				continue sample // expired
			}
			if err != nil {
				return nil, fmt.Errorf("saga %s: %w", t.id, err)
			}
			times = append(times, m.Time)
		}
		entry, err := bucket.Get(ctx, t.id)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // expired
		}
		if err != nil {
			return nil, fmt.Errorf("state of saga %s: %w", t.id, err)
		}
		times = append(times, entry.Created(), t.begin.Add(t.latency))
		d := make([]time.Duration, len(times)-1)
		for k := range d {
			d[k] = times[k+1].Sub(times[k])
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
