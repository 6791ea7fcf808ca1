package bench

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/jetsaga/jetsaga/events"
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

// hops reads back the timelines of up to hopSample committed sagas, spread
// over the run, and returns the median of each hop. Sagas whose timeline
// differs from the most common committed shape (retries, redeliveries) are
// left out.
func (e *env) hops(ctx context.Context, client *orchestrator.Client, ts []*transfer) ([]Hop, error) {
	var committed []*transfer
	for _, t := range ts {
		if t.err == nil && t.status == orchestrator.Committed {
			committed = append(committed, t)
		}
	}
	if len(committed) == 0 {
		return nil, nil
	}
	step := max(1, len(committed)/hopSample)
	bucket, err := e.js.KeyValue(ctx, e.ns.StateBucket())
	if err != nil {
		return nil, err
	}
	byShape := map[string][][]time.Duration{}
	var labelsOf = map[string][]string{}
	for i := 0; i < len(committed); i += step {
		t := committed[i]
		tl, err := client.Timeline(ctx, t.id)
		if err != nil {
			return nil, fmt.Errorf("timeline of saga %s: %w", t.id, err)
		}
		entry, err := bucket.Get(ctx, t.id)
		if err != nil {
			return nil, fmt.Errorf("state of saga %s: %w", t.id, err)
		}
		labels := []string{"Start called"}
		points := []time.Time{t.begin}
		for _, m := range tl {
			labels = append(labels, pointLabel(e.ns, m))
			points = append(points, m.Time)
		}
		labels = append(labels, "terminal state written", "Wait returned")
		points = append(points, entry.Created(), t.begin.Add(t.latency))
		shape := strings.Join(labels, "|")
		d := make([]time.Duration, len(points)-1)
		for k := range d {
			d[k] = points[k+1].Sub(points[k])
		}
		byShape[shape] = append(byShape[shape], d)
		labelsOf[shape] = labels
	}
	var best string
	for shape, ds := range byShape {
		if len(ds) > len(byShape[best]) || (len(ds) == len(byShape[best]) && shape < best) {
			best = shape
		}
	}
	labels, ds := labelsOf[best], byShape[best]
	out := make([]Hop, len(labels)-1)
	col := make([]time.Duration, len(ds))
	for k := range out {
		for i, d := range ds {
			col[i] = d[k]
		}
		sort.Slice(col, func(a, b int) bool { return col[a] < col[b] })
		out[k] = Hop{From: labels[k], To: labels[k+1], MedianMs: percentile(col, 0.5)}
	}
	return out, nil
}

// pointLabel names a timeline message: its kind, and for commands and
// outcomes the participant and the op.
func pointLabel(ns events.Namespace, m orchestrator.TimelineEntry) string {
	sub, _ := ns.Parse(m.Subject)
	switch m.Kind {
	case events.KindCommand:
		return fmt.Sprintf("command to %s stored", sub.Participant)
	case events.KindEvent:
		return fmt.Sprintf("outcome of %s stored", sub.Participant)
	default:
		return fmt.Sprintf("%s stored", m.Kind)
	}
}
