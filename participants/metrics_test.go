package participants

import (
	"fmt"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/jetsaga/jetsaga/events"
	"github.com/jetsaga/jetsaga/internal/telemetry"
	"github.com/jetsaga/jetsaga/internal/telemetry/telemetrytest"
	"github.com/jetsaga/jetsaga/internal/testenv"
	"github.com/jetsaga/jetsaga/participants/participanttest"
)

// TestParticipantMetrics: the barrier's decisions, poison commands,
// redeliveries and outcomes are counted as they happened; the step latency
// is labelled by action, op and outcome, an unknown action as "unknown";
// the consumer's counts are read from JetStream.
func TestParticipantMetrics(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.l.seed(t, map[string]int64{"a": 100})
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	p := b.newParticipant(t, nil, func(c *Config) { c.Metrics = m })
	start(t, p)

	run := func(c events.Command, opts ...participanttest.SendOption) {
		t.Helper()
		b.send(t, c, opts...)
		b.wait(t, c)
	}
	ok := cmd("s-ok", "debit", events.OpDo, "Withdraw", "a", 10)
	run(ok)
	// The same command again, past the duplicate window: the barrier
	// re-sends its outcome.
	b.send(t, ok, participanttest.WithMsgID("again"))
	// A compensation whose action never ran, then the action: a null
	// compensation and a hanging action.
	run(cmd("s-late", "debit", events.OpUndo, "Withdraw"+CompensationSuffix, "a", 10))
	run(cmd("s-late", "debit", events.OpDo, "Withdraw", "a", 10))
	// A business failure, an unknown action and a payload that does not
	// decode.
	run(cmd("s-fail", "debit", events.OpDo, "Withdraw", "nobody", 10))
	run(cmd("s-unknown", "debit", events.OpDo, "Teleport", "a", 10))
	bad := cmd("s-bad", "debit", events.OpDo, "Withdraw", "a", 10)
	bad.Payload = []byte(`{"account":7}`)
	run(bad)
	b.settled(t, p)

	// The step's counts follow its ack (settled): scrape until they show.
	part := "participant=" + testName
	var f telemetrytest.Families
	testenv.CheckFor(t, waitTotal, waitStep, func() error {
		var err error
		if f, err = telemetrytest.ScrapeRegistry(reg); err != nil {
			return err
		}
		return f.Check([]telemetrytest.Want{
			{Name: "jetsaga_participant_barrier_decisions_total", Labels: []string{part, "decision=" + BarrierDuplicate}, Value: 1},
			{Name: "jetsaga_participant_barrier_decisions_total", Labels: []string{part, "decision=" + BarrierNullCompensation}, Value: 1},
			{Name: "jetsaga_participant_barrier_decisions_total", Labels: []string{part, "decision=" + BarrierHanging}, Value: 1},
			{Name: "jetsaga_participant_rejections_total", Labels: []string{part, "reason=" + RejectUnknownAction}, Value: 1},
			{Name: "jetsaga_participant_rejections_total", Labels: []string{part, "reason=" + RejectBadPayload}, Value: 1},
			{Name: "jetsaga_participant_outcomes_total", Labels: []string{part, "status=succeeded"}, Value: 2}, // s-ok and its duplicate
			{Name: "jetsaga_participant_outcomes_total", Labels: []string{part, "status=compensated"}, Value: 1},
			{Name: "jetsaga_participant_outcomes_total", Labels: []string{part, "status=failed"}, Value: 2}, // hanging, s-fail
			{Name: "jetsaga_participant_outcomes_total", Labels: []string{part, "status=rejected"}, Value: 2},
			{Name: "jetsaga_participant_step_duration_seconds", Labels: []string{part, "action=Withdraw", "op=do", "outcome=succeeded"}, Value: 2},
			{Name: "jetsaga_participant_step_duration_seconds", Labels: []string{part, "action=Withdraw" + CompensationSuffix, "op=undo", "outcome=compensated"}, Value: 1},
			{Name: "jetsaga_participant_step_duration_seconds", Labels: []string{part, "action=unknown", "op=do", "outcome=rejected"}, Value: 1},
		}...)
	})
	// A counter vector shows no series before its first count.
	if got, _ := f.Value("jetsaga_participant_redeliveries_total", part); got != 0 {
		t.Errorf("redeliveries %v, want 0", got)
	}
	// The consumer's counts, read from JetStream.
	durable := "consumer=" + p.ConsumerConfig().Durable
	if got, ok := f.Value("jetsaga_consumer_ack_pending_messages", durable); !ok || got != 0 {
		t.Errorf("consumer ack pending %v (present %v), want 0", got, ok)
	}
	if got, _ := f.Value("jetsaga_consumer_max_ack_pending_messages", durable); got != float64(p.ConsumerConfig().MaxAckPending) {
		t.Errorf("consumer max ack pending %v, want %d", got, p.ConsumerConfig().MaxAckPending)
	}
	for _, s := range f.Series("jetsaga_participant_") {
		if telemetrytest.ContainsAny(s, "s-ok", "s-late", "Teleport") {
			t.Errorf("series %s carries a saga id or an unregistered action", s)
		}
	}
}

// TestParticipantSpans: a command carrying a traceparent is handled in a
// span that is its child, with the barrier's decision as an attribute, and
// the outcome carries the span's context.
func TestParticipantSpans(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.l.seed(t, map[string]int64{"a": 100})
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	p := b.newParticipant(t, nil, func(c *Config) { c.TracerProvider = tp })
	start(t, p)

	const parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	c := cmd("s-traced", "debit", events.OpDo, "Withdraw", "a", 10)
	b.send(t, c, participanttest.WithHeader(events.HeaderTraceParent, parent))
	o := b.wait(t, c)
	// The duplicate, with the same parent.
	b.send(t, c, participanttest.WithMsgID("again"), participanttest.WithHeader(events.HeaderTraceParent, parent))
	b.settled(t, p)

	var spans tracetest.SpanStubs
	testenv.CheckFor(t, waitTotal, waitStep, func() error {
		if spans = exp.GetSpans(); len(spans) != 2 {
			return fmt.Errorf("%d spans, want 2", len(spans))
		}
		return nil
	})
	barriers := map[string]bool{}
	for _, s := range spans {
		if s.Name != "saga step Withdraw" || s.Parent.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" ||
			s.Parent.SpanID().String() != "00f067aa0ba902b7" || !s.Parent.IsRemote() {
			t.Errorf("span %q with parent %v, want saga step Withdraw, child of the command's traceparent", s.Name, s.Parent)
		}
		for _, kv := range s.Attributes {
			if kv.Key == "jetsaga.barrier" {
				barriers[kv.Value.AsString()] = true
			}
		}
	}
	if !barriers["ran"] || !barriers[BarrierDuplicate] {
		t.Errorf("barrier attributes %v, want ran and duplicate", barriers)
	}
	got, _ := telemetry.Traceparent(telemetry.Extract(t.Context(), o.Header))
	first := spans[0]
	if first.Parent.SpanID() == first.SpanContext.SpanID() {
		t.Fatal("span is its own parent")
	}
	found := false
	for _, s := range spans {
		if got == fmt.Sprintf("00-%s-%s-01", s.SpanContext.TraceID(), s.SpanContext.SpanID()) {
			found = true
		}
	}
	if !found {
		t.Errorf("outcome's traceparent %q is none of the step spans", got)
	}
}

// BenchmarkObserveStep is what metrics add to one command handled (the
// step's histogram, its outcome, the barrier's decision when there is one):
// compare with the CPU a step costs end to end.
func BenchmarkObserveStep(b *testing.B) {
	m, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	p := &Participant{cfg: Config{Name: "bank-a", Metrics: m}, actions: map[string]*action{"TransOut": {}}}
	c := cmd("s", "debit", events.OpDo, "TransOut", "a", 1)
	o := &events.Outcome{Status: events.Succeeded}
	v := verdict{kind: vCommitted, out: o}
	b.ReportAllocs()
	for b.Loop() {
		j := &job{cmd: &c, delivered: 1}
		_, done := p.observe(b.Context(), j)
		p.sent(o)
		done(v)
	}
}
