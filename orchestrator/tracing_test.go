package orchestrator_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/jetsaga/jetsaga/examples/bank"
	"github.com/jetsaga/jetsaga/internal/testenv"
	"github.com/jetsaga/jetsaga/orchestrator"
	"github.com/jetsaga/jetsaga/participants"
)

// attr returns a span's attribute as a string ("" if absent).
func attr(s tracetest.SpanStub, key string) string {
	for _, kv := range s.Attributes {
		if string(kv.Key) == key {
			return kv.Value.Emit()
		}
	}
	return ""
}

// TestOneTracePerSaga: with a tracer provider given to the client, the
// coordinator and both banks, each saga is one trace: the client's span of
// Start is its root, every coordinator transition and command published and
// every participant step is a span in it, and each span's parent is the one
// that caused it (start → transition → command → step → transition …).
func TestOneTracePerSaga(t *testing.T) {
	t.Parallel()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })

	b := setup(t)
	b.runCoordinator(b.js, func(c *orchestrator.Config) { c.TracerProvider = tp })
	client := orchestrator.NewClient(b.js, b.client.Namespace(), orchestrator.WithTracerProvider(tp))
	t.Cleanup(client.Close)
	ctx := context.Background()
	runTracedBank(t, b, bank.BankA, tp)
	kb := runTracedBank(t, b, bank.BankB, tp)
	if err := bank.SetAbnormal(ctx, kb, 3, true); err != nil {
		t.Fatal(err)
	}
	sagas := map[string]struct {
		to     int64
		status orchestrator.Status
		spans  int // client 1, transitions, commands, steps
	}{
		"traced-ok":   {2, orchestrator.Committed, 1 + 3 + 2 + 2},
		"traced-comp": {3, orchestrator.Compensated, 1 + 4 + 3 + 3},
	}
	for id, s := range sagas {
		if _, err := client.Start(ctx, bank.TransferPlan(id, 1, s.to, 10_00)); err != nil {
			t.Fatal(err)
		}
	}
	for id, s := range sagas {
		b.wait(id, s.status)
	}

	bySaga := func() map[string][]tracetest.SpanStub {
		out := map[string][]tracetest.SpanStub{}
		for _, s := range exp.GetSpans() {
			out[attr(s, "jetsaga.saga.id")] = append(out[attr(s, "jetsaga.saga.id")], s)
		}
		return out
	}
	// The last spans end just after the state that Wait saw is written.
	testenv.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		got := bySaga()
		for id, s := range sagas {
			if len(got[id]) < s.spans {
				return fmt.Errorf("saga %s: %d spans, want %d", id, len(got[id]), s.spans)
			}
		}
		return nil
	})
	traces := map[trace.TraceID]string{}
	for id, spans := range bySaga() {
		if id == "" {
			for _, s := range spans {
				t.Errorf("span %q names no saga", s.Name)
			}
			continue
		}
		byID := map[trace.SpanID]tracetest.SpanStub{}
		for _, s := range spans {
			byID[s.SpanContext.SpanID()] = s
		}
		var roots []string
		participantsSeen := map[string]bool{}
		for _, s := range spans {
			if other, ok := traces[s.SpanContext.TraceID()]; ok && other != id {
				t.Errorf("sagas %s and %s share trace %s", id, other, s.SpanContext.TraceID())
			}
			traces[s.SpanContext.TraceID()] = id
			if s.SpanContext.TraceID() != spans[0].SpanContext.TraceID() {
				t.Errorf("saga %s: span %q in trace %s, another in %s", id, s.Name, s.SpanContext.TraceID(), spans[0].SpanContext.TraceID())
			}
			parent, hasParent := byID[s.Parent.SpanID()]
			switch {
			case !s.Parent.IsValid():
				roots = append(roots, s.Name)
			case !hasParent:
				t.Errorf("saga %s: the parent of span %q is not in the saga's trace", id, s.Name)
			case strings.HasPrefix(s.Name, "saga step "):
				participantsSeen[attr(s, "jetsaga.participant")] = true
				if !strings.HasPrefix(parent.Name, "publish command ") || attr(parent, "jetsaga.step") != attr(s, "jetsaga.step") {
					t.Errorf("saga %s: step span %q has parent %q, want the command of its step", id, s.Name, parent.Name)
				}
				if attr(s, "jetsaga.barrier") != "ran" {
					t.Errorf("saga %s: step span %q: barrier %q, want ran", id, s.Name, attr(s, "jetsaga.barrier"))
				}
			case strings.HasPrefix(s.Name, "publish command "):
				if !strings.HasPrefix(parent.Name, "saga ") || s.SpanKind != trace.SpanKindProducer {
					t.Errorf("saga %s: command span %q has parent %q, want a transition", id, s.Name, parent.Name)
				}
			case s.Name == "saga evt":
				if !strings.HasPrefix(parent.Name, "saga step ") || attr(parent, "jetsaga.participant") != attr(s, "jetsaga.participant") {
					t.Errorf("saga %s: transition on an outcome of %s has parent %q, want that participant's step", id, attr(s, "jetsaga.participant"), parent.Name)
				}
			case s.Name == "saga start":
				if parent.Name != "saga start transfer" {
					t.Errorf("saga %s: first transition has parent %q, want the client's span", id, parent.Name)
				}
			default:
				t.Errorf("saga %s: unexpected span %q (parent %q)", id, s.Name, parent.Name)
			}
		}
		if len(roots) != 1 || roots[0] != "saga start transfer" {
			t.Errorf("saga %s: roots %v, want the client's span of Start alone", id, roots)
		}
		if !participantsSeen[bank.BankA] || !participantsSeen[bank.BankB] {
			t.Errorf("saga %s: step spans from %v, want both banks", id, participantsSeen)
		}
	}
	if len(traces) != len(sagas) {
		t.Errorf("%d traces, want one per saga (%d)", len(traces), len(sagas))
	}
}

// runTracedBank runs one bank of the example with tracing, on a fresh
// database with accounts 1, 2 and 3 holding 100.00; it returns its pool.
func runTracedBank(t *testing.T, b *bundle, name string, tp trace.TracerProvider) *pgxpool.Pool {
	t.Helper()
	ctx := context.Background()
	pool := testenv.Postgres(t)
	if err := participants.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	if err := bank.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	if err := bank.Seed(ctx, pool, map[int64]bank.Cents{1: 100_00, 2: 100_00, 3: 100_00}); err != nil {
		t.Fatal(err)
	}
	p, err := participants.New(participants.Config{Name: name, Pool: pool, JetStream: b.js,
		Logger: slog.New(slog.DiscardHandler), TracerProvider: tp})
	if err != nil {
		t.Fatal(err)
	}
	bank.Register(p)
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- p.Run(rctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("%s: %v", name, err)
		}
	})
	return pool
}
