package orchestrator_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/jetsaga/jetsaga/events"
	"github.com/jetsaga/jetsaga/internal/telemetry/telemetrytest"
	"github.com/jetsaga/jetsaga/internal/testenv"
	"github.com/jetsaga/jetsaga/orchestrator"
)

// logRecorder keeps the records logged through it.
type logRecorder struct {
	mu      *sync.Mutex
	records *[]slog.Record
	attrs   []slog.Attr
}

func newLogRecorder() *logRecorder {
	return &logRecorder{mu: &sync.Mutex{}, records: &[]slog.Record{}}
}

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	rec = rec.Clone()
	rec.AddAttrs(r.attrs...)
	r.mu.Lock()
	*r.records = append(*r.records, rec)
	r.mu.Unlock()
	return nil
}
func (r *logRecorder) WithAttrs(as []slog.Attr) slog.Handler {
	return &logRecorder{mu: r.mu, records: r.records, attrs: append(slices.Clone(r.attrs), as...)}
}
func (r *logRecorder) WithGroup(string) slog.Handler { return r }

// find returns the records at level whose message contains msg, each as a
// map of its attributes.
func (r *logRecorder) find(level slog.Level, msg string) []map[string]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []map[string]string
	for _, rec := range *r.records {
		if rec.Level != level || !strings.Contains(rec.Message, msg) {
			continue
		}
		m := map[string]string{}
		rec.Attrs(func(a slog.Attr) bool {
			m[a.Key] = a.Value.String()
			return true
		})
		out = append(out, m)
	}
	return out
}

// metricsBundle runs a coordinator with metrics in reg and two scripted
// banks: bank-b fails the credit of every saga whose id does not start
// with "ok", and bank-a answers "exhausted" to the compensation of every
// saga whose id starts with "park", which parks it.
func metricsBundle(t *testing.T) (*bundle, *prometheus.Registry, *logRecorder) {
	b := setup(t)
	reg := prometheus.NewRegistry()
	logs := newLogRecorder()
	b.runCoordinator(b.js, func(c *orchestrator.Config) {
		c.Registerer = reg
		c.Logger = slog.New(logs)
	})
	b.respond("bank-a", func(c events.Command) decision {
		if c.Op == events.OpUndo && strings.HasPrefix(c.SagaID, "park") {
			return decision{status: events.Exhausted, reason: "database unreachable"}
		}
		return decision{}
	})
	b.respond("bank-b", func(c events.Command) decision {
		if c.Op == events.OpDo && !strings.HasPrefix(c.SagaID, "ok") {
			return decision{status: events.Failed, reason: "abnormal account"}
		}
		return decision{}
	})
	return b, reg, logs
}

// runSagas starts every saga of ids and waits until each is committed
// (prefix "ok"), compensated ("comp") or parked ("park").
func (b *bundle) runSagas(ids []string) {
	b.t.Helper()
	g, ctx := errgroup.WithContext(context.Background())
	g.SetLimit(64)
	for _, id := range ids {
		g.Go(func() error {
			if _, err := b.client.Start(ctx, transferPlan(id)); err != nil {
				return err
			}
			wctx, cancel := context.WithTimeout(ctx, time.Minute)
			defer cancel()
			st, err := b.client.Wait(wctx, id)
			if err != nil {
				return fmt.Errorf("wait %s: %w", id, err)
			}
			want := orchestrator.Committed
			switch {
			case strings.HasPrefix(id, "comp"):
				want = orchestrator.Compensated
			case strings.HasPrefix(id, "park"):
				want = orchestrator.Parked
			}
			if st.Status != want {
				return fmt.Errorf("saga %s is %s (%s), want %s", id, st.Status, st.Reason, want)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		b.t.Fatal(err)
	}
}

// TestCoordinatorMetrics: after 3 committed, 1 compensated and 1 parked
// saga, the metrics scraped over HTTP and read with Prometheus' parser say
// exactly that; the parked saga is logged once at WARN with its reason,
// step and participant.
func TestCoordinatorMetrics(t *testing.T) {
	t.Parallel()
	b, reg, logs := metricsBundle(t)
	b.runSagas([]string{"ok-1", "ok-2", "ok-3", "comp-1", "park-1"})

	// The census follows the bucket's watch and the counters follow the
	// writes (a client can see a saga finished a moment before its
	// coordinator counts it): scrape until they show.
	var f telemetrytest.Families
	testenv.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		var err error
		if f, err = telemetrytest.ScrapeRegistry(reg); err != nil {
			return err
		}
		return f.Check([]telemetrytest.Want{
			{Name: "jetsaga_sagas", Labels: []string{"name=transfer", "status=parked"}, Value: 1},
			{Name: "jetsaga_sagas", Labels: []string{"name=transfer", "status=running"}, Value: 0},
			{Name: "jetsaga_sagas", Labels: []string{"name=transfer", "status=compensating"}, Value: 0},
			{Name: "jetsaga_sagas_started_total", Labels: []string{"name=transfer"}, Value: 5},
			{Name: "jetsaga_sagas_finished_total", Labels: []string{"name=transfer", "status=committed"}, Value: 3},
			{Name: "jetsaga_sagas_finished_total", Labels: []string{"name=transfer", "status=compensated"}, Value: 1},
			{Name: "jetsaga_sagas_parked_total", Labels: []string{"name=transfer"}, Value: 1},
			{Name: "jetsaga_saga_duration_seconds", Labels: []string{"name=transfer", "status=committed"}, Value: 3},
			{Name: "jetsaga_saga_duration_seconds", Labels: []string{"name=transfer", "status=compensated"}, Value: 1},
			{Name: "jetsaga_coordinator_commands_published_total", Labels: []string{"participant=bank-a", "op=do"}, Value: 5},
			{Name: "jetsaga_coordinator_commands_published_total", Labels: []string{"participant=bank-b", "op=do"}, Value: 5},
			{Name: "jetsaga_coordinator_commands_published_total", Labels: []string{"participant=bank-a", "op=undo"}, Value: 2},
			{Name: "jetsaga_coordinator_outcomes_total", Labels: []string{"participant=bank-a", "status=succeeded"}, Value: 5},
			{Name: "jetsaga_coordinator_outcomes_total", Labels: []string{"participant=bank-b", "status=succeeded"}, Value: 3},
			{Name: "jetsaga_coordinator_outcomes_total", Labels: []string{"participant=bank-b", "status=failed"}, Value: 2},
			{Name: "jetsaga_coordinator_outcomes_total", Labels: []string{"participant=bank-a", "status=compensated"}, Value: 1},
			{Name: "jetsaga_coordinator_outcomes_total", Labels: []string{"participant=bank-a", "status=exhausted"}, Value: 1},
			{Name: "jetsaga_coordinator_messages_applied_total", Value: 17}, // 5 starts, 12 outcomes
			{Name: "jetsaga_coordinator_messages_rejected_total", Value: 0},
			{Name: "jetsaga_coordinator_errors_total", Value: 0},
			{Name: "jetsaga_coordinator_census_ready", Value: 1},
		}...)
	})
	if n := f.Sum("jetsaga_sagas_finished_total"); n != 4 {
		t.Errorf("sagas finished: %v, want 4", n)
	}
	if age, ok := f.Value("jetsaga_saga_oldest_age_seconds", "status=parked"); !ok || age <= 0 {
		t.Errorf("oldest parked saga's age = %v (present %v), want > 0", age, ok)
	}
	// The consumers, read from JetStream: the coordinators' and both banks'.
	for _, consumer := range []string{events.Default().CoordinatorConsumer(), "test_bank-a", "test_bank-b"} {
		if _, ok := f.Value("jetsaga_consumer_ack_pending_messages", "consumer="+consumer); !ok {
			t.Errorf("no ack-pending count for consumer %s", consumer)
		}
	}
	if got, _ := f.Value("jetsaga_consumer_pending_messages", "consumer="+events.Default().CoordinatorConsumer()); got != 0 {
		t.Errorf("coordinator consumer pending %v, want 0", got)
	}
	// No label holds a saga id.
	for _, s := range f.Series("jetsaga_") {
		for _, id := range []string{"ok-1", "comp-1", "park-1"} {
			if strings.Contains(s, `"`+id+`"`) {
				t.Errorf("series %s names saga %s", s, id)
			}
		}
	}

	parked := logs.find(slog.LevelWarn, "saga parked")
	if len(parked) != 1 {
		t.Fatalf("%d WARN lines about a parked saga, want 1: %v", len(parked), parked)
	}
	p := parked[0]
	if p["saga"] != "park-1" || p["step"] != "debit" || p["participant"] != "bank-a" || !strings.Contains(p["reason"], "exhausted") {
		t.Fatalf("parked saga's log line %v: want saga park-1, step debit, participant bank-a and the reason", p)
	}
}

// TestMetricsCardinality: a thousand more sagas of every kind add no series
// (no label carries a saga id).
func TestMetricsCardinality(t *testing.T) {
	t.Parallel()
	b, reg, _ := metricsBundle(t)
	b.runSagas([]string{"ok-warm", "comp-warm", "park-warm"})
	// series waits until the metrics count every saga run so far (the
	// counters follow the stored state: a client can see a saga finished a
	// moment before its coordinator counts it), then lists the series.
	// applied, the inputs applied, is the last count of a transition.
	series := func(committed, compensated, parked, applied float64) []string {
		t.Helper()
		var f telemetrytest.Families
		testenv.CheckFor(t, time.Minute, 50*time.Millisecond, func() error {
			var err error
			if f, err = telemetrytest.ScrapeRegistry(reg); err != nil {
				return err
			}
			for st, want := range map[string]float64{"parked": parked, "running": 0, "compensating": 0} {
				if v, _ := f.Value("jetsaga_sagas", "status="+st); v != want {
					return fmt.Errorf("jetsaga_sagas{status=%s} = %v, want %v", st, v, want)
				}
			}
			for st, want := range map[string]float64{"committed": committed, "compensated": compensated} {
				if v := f.Sum("jetsaga_sagas_finished_total", "status="+st); v != want {
					return fmt.Errorf("jetsaga_sagas_finished_total{status=%s} = %v, want %v", st, v, want)
				}
			}
			if v := f.Sum("jetsaga_coordinator_messages_applied_total"); v != applied {
				return fmt.Errorf("jetsaga_coordinator_messages_applied_total = %v, want %v", v, applied)
			}
			return nil
		})
		return f.Series("jetsaga_")
	}
	// Inputs applied: a start each, and the outcomes: 2 for a committed
	// transfer, 3 for a compensated or parked one (debit, credit failed,
	// compensation).
	applied := func(ok, comp, park float64) float64 { return ok*3 + comp*4 + park*4 }
	before := series(1, 1, 1, applied(1, 1, 1))

	const n = 1000
	ids := make([]string, 0, n)
	for i := range n {
		prefix := "ok"
		switch i % 10 {
		case 7, 8:
			prefix = "comp"
		case 9:
			prefix = "park"
		}
		ids = append(ids, fmt.Sprintf("%s-%04d", prefix, i))
	}
	b.runSagas(ids)
	after := series(1+n*7/10, 1+n*2/10, 1+n/10, applied(1+n*7/10, 1+n*2/10, 1+n/10))
	if !slices.Equal(before, after) {
		t.Fatalf("series changed after %d sagas: %d before, %d after\nonly before: %v\nonly after: %v",
			n, len(before), len(after), diff(before, after), diff(after, before))
	}
	t.Logf("%d series before and after %d sagas", len(before), n)
}

// diff returns the elements of a that b lacks.
func diff(a, b []string) []string {
	var out []string
	for _, s := range a {
		if !slices.Contains(b, s) {
			out = append(out, s)
		}
	}
	return out
}
