package orchestrator

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/jetsaga/jetsaga/events"
	"github.com/jetsaga/jetsaga/internal/telemetry"
)

// The coordinator's instrumentation: Prometheus metrics when
// Config.Registerer is set, OpenTelemetry spans when Config.TracerProvider
// is set, and the log lines about sagas. The coordinator calls an observer
// at a few points (a transition written, an input rejected, a command
// published); with neither set the observer does nothing but log.

// Rejection classes: the "reason" label of
// jetsaga_coordinator_rejections_total.
const (
	rejectMalformed   = "malformed"    // the message does not decode
	rejectSubject     = "subject"      // its subject names no saga
	rejectUnknownSaga = "unknown_saga" // an input for a saga that was never started
	rejectStart       = "start"        // an invalid plan, or a second start with another plan
	rejectOutcome     = "outcome"      // an outcome that does not fit the saga
	rejectControl     = "control"      // an operator action that does not fit the saga
	rejectOther       = "other"
)

// rejectClass classifies a rejected input (hadSaga: the saga existed).
func rejectClass(in *Input, hadSaga bool) string {
	switch {
	case in.Err != nil:
		return rejectMalformed
	case in.Kind == events.KindStart:
		return rejectStart
	case !hadSaga:
		return rejectUnknownSaga
	case in.Kind == events.KindEvent:
		return rejectOutcome
	case in.Kind == events.KindControl:
		return rejectControl
	default:
		return rejectOther
	}
}

// observer instruments one coordinator.
type observer struct {
	log    *slog.Logger
	m      *coordinatorMetrics // nil: no metrics
	tracer trace.Tracer        // nil: no spans
}

func newObserver(c *Coordinator) (*observer, error) {
	o := &observer{log: c.log, tracer: telemetry.Tracer(c.cfg.TracerProvider, tracerName)}
	if c.cfg.Registerer != nil {
		m, err := newCoordinatorMetrics(c)
		if err != nil {
			return nil, err
		}
		o.m = m
	}
	return o, nil
}

// tracerName names the tracer of this package's spans.
const tracerName = "github.com/jetsaga/jetsaga/orchestrator"

// coordinatorMetrics are the metrics of one coordinator.
type coordinatorMetrics struct {
	started      *prometheus.CounterVec
	finished     *prometheus.CounterVec
	parked       *prometheus.CounterVec
	duration     *prometheus.HistogramVec
	commands     *prometheus.CounterVec
	outcomes     *prometheus.CounterVec
	rejections   *prometheus.CounterVec
	redeliveries prometheus.Counter
	names        *telemetry.Limiter // saga names
	parts        *telemetry.Limiter // participants
	census       *census
}

func newCoordinatorMetrics(c *Coordinator) (*coordinatorMetrics, error) {
	m := newMetricSet(c.cfg.MaxLabelValues)
	m.census = newCensus(m.names)
	for _, coll := range []prometheus.Collector{m.started, m.finished, m.parked, m.duration, m.commands, m.outcomes,
		m.rejections, m.redeliveries, statsCollector{c}, m.census} {
		if err := c.cfg.Registerer.Register(coll); err != nil {
			return nil, fmt.Errorf("orchestrator: Config.Registerer: %w (one coordinator per registry: wrap it with prometheus.WrapRegistererWith for more)", err)
		}
	}
	js, ns := c.cfg.JetStream, c.ns
	err := telemetry.RegisterConsumers(c.cfg.Registerer, func(ctx context.Context) ([]*jetstream.ConsumerInfo, error) {
		return readConsumers(ctx, js, ns.SagasStream(), ns.CommandsStream())
	})
	if err != nil {
		return nil, fmt.Errorf("orchestrator: Config.Registerer: %w", err)
	}
	return m, nil
}

// newMetricSet returns the metrics, not registered, without census.
func newMetricSet(maxLabelValues int) *coordinatorMetrics {
	ns := telemetry.Namespace
	return &coordinatorMetrics{
		started: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "sagas_started_total",
			Help: "Sagas started (valid or not), by saga name."}, []string{"name"}),
		finished: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "sagas_finished_total",
			Help: "Sagas that reached a terminal status (committed, compensated, rejected), by saga name and status."}, []string{"name", "status"}),
		parked: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "sagas_parked_total",
			Help: "Times a saga was parked for an operator, by saga name."}, []string{"name"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Name: "saga_duration_seconds",
			Help:    "Time from a saga's start to its terminal status (stream timestamps), by saga name and status.",
			Buckets: telemetry.DurationBuckets}, []string{"name", "status"}),
		commands: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "coordinator_commands_published_total",
			Help: "Step commands published and stored by JetStream, by participant and op (do, undo)."}, []string{"participant", "op"}),
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "coordinator_outcomes_total",
			Help: "Participants' outcomes applied to their saga, by participant and status."}, []string{"participant", "status"}),
		rejections: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "coordinator_rejections_total",
			Help: "Inputs rejected, by reason class (malformed, subject, unknown_saga, start, outcome, control, other)."}, []string{"reason"}),
		redeliveries: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "coordinator_redeliveries_total",
			Help: "Messages of the sagas stream delivered to this instance more than once."}),
		names: telemetry.NewLimiter(maxLabelValues),
		parts: telemetry.NewLimiter(maxLabelValues),
	}
}

// readConsumers reads every consumer of the streams: the coordinators' and
// every participant's.
func readConsumers(ctx context.Context, js jetstream.JetStream, streams ...string) ([]*jetstream.ConsumerInfo, error) {
	var out []*jetstream.ConsumerInfo
	for _, name := range streams {
		s, err := js.Stream(ctx, name)
		if err != nil {
			return out, err
		}
		l := s.ListConsumers(ctx)
		for ci := range l.Info() {
			if ci.Config.Durable != "" { // ephemerals come and go (timelines, watches)
				out = append(out, ci)
			}
		}
		if err := l.Err(); err != nil {
			return out, err
		}
	}
	return out, nil
}

// statsCollector reports a coordinator's Stats as counters: read when
// scraped, so they cost the coordinator nothing more than the atomic adds it
// does anyway.
type statsCollector struct{ c *Coordinator }

var statsMetrics = []struct {
	desc  *prometheus.Desc
	value func(Stats) uint64
}{
	{statDesc("coordinator_messages_processed_total", "Messages of the sagas stream handled and acknowledged."), func(s Stats) uint64 { return s.Processed }},
	{statDesc("coordinator_messages_applied_total", "Messages that changed a saga's state."), func(s Stats) uint64 { return s.Applied }},
	{statDesc("coordinator_messages_ignored_total", "Duplicate and stale messages that changed nothing."), func(s Stats) uint64 { return s.Ignored }},
	{statDesc("coordinator_messages_rejected_total", "Invalid messages, recorded in their saga when it exists."), func(s Stats) uint64 { return s.Rejected }},
	{statDesc("coordinator_cas_conflicts_total", "Compare-and-set conflicts with another coordinator instance."), func(s Stats) uint64 { return s.Conflicts }},
	{statDesc("coordinator_timers_fired_total", "Timers that fell due: ticks this instance published (instances publish the same tick for a timer; JetStream keeps one)."), func(s Stats) uint64 { return s.Timers }},
	{statDesc("coordinator_errors_total", "Transient errors; the message is delivered again."), func(s Stats) uint64 { return s.Errors }},
	{statDesc("coordinator_unconsumed_commands_total", "Commands published for a participant that no consumer of the commands stream reads."), func(s Stats) uint64 { return s.Unconsumed }},
}

func statDesc(name, help string) *prometheus.Desc {
	return prometheus.NewDesc(telemetry.Namespace+"_"+name, help, nil, nil)
}

func (s statsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, m := range statsMetrics {
		ch <- m.desc
	}
}

func (s statsCollector) Collect(ch chan<- prometheus.Metric) {
	st := s.c.Stats()
	for _, m := range statsMetrics {
		ch <- prometheus.MustNewConstMetric(m.desc, prometheus.CounterValue, float64(m.value(st)))
	}
}

// input notes a delivered input: it counts redeliveries and, when tracing,
// takes the trace context the message carries (an outcome's is its
// participant's step), which parents the span of the transition it causes.
func (o *observer) input(in *Input, h nats.Header, numDelivered uint64) {
	if o.m != nil && numDelivered > 1 {
		o.m.redeliveries.Inc()
	}
	if o.tracer != nil && in.Trace.Parent == "" && h != nil {
		in.Trace = Trace{Parent: h.Get(events.HeaderTraceParent), State: h.Get(events.HeaderTraceState)}
	}
}

// rejected counts a rejected input (hadSaga: the saga existed).
func (o *observer) rejected(in *Input, hadSaga bool) {
	if o.m != nil {
		o.m.rejections.WithLabelValues(rejectClass(in, hadSaga)).Inc()
	}
}

// rejectedSubject counts a message whose subject names no saga.
func (o *observer) rejectedSubject() {
	if o.m != nil {
		o.m.rejections.WithLabelValues(rejectSubject).Inc()
	}
}

// transition starts the span of the transition from prev (nil: no saga) by
// in to next, which the worker is about to write; the returned function
// ends it once the transition is written and its output published (err:
// what failed). The transition's commands are published under ctx, so their
// spans are its children.
func (o *observer) transition(ctx context.Context, prev *State, in *Input, next *State) (context.Context, func(error)) {
	if o.tracer == nil {
		return ctx, endNothing
	}
	parent := in.Trace
	if parent.Parent == "" && next != nil {
		parent = next.Trace
	}
	pctx := telemetry.ExtractParent(ctx, parent.Parent, parent.State)
	from := Status("")
	if prev != nil {
		from = prev.Status
	}
	attrs := []attribute.KeyValue{
		attribute.String("jetsaga.saga.id", in.SagaID),
		attribute.String("jetsaga.input.kind", string(in.Kind)),
		attribute.Int64("jetsaga.input.seq", int64(in.Seq)),
		attribute.String("jetsaga.status.from", string(from)),
	}
	if next != nil {
		attrs = append(attrs, attribute.String("jetsaga.saga.name", next.Name), attribute.String("jetsaga.status.to", string(next.Status)))
	}
	if in.Outcome != nil {
		attrs = append(attrs, attribute.String("jetsaga.participant", in.Participant), attribute.String("jetsaga.step", in.Outcome.Step),
			attribute.String("jetsaga.op", string(in.Outcome.Op)), attribute.String("jetsaga.outcome", string(in.Outcome.Status)))
	}
	sctx, span := o.tracer.Start(pctx, "saga "+string(in.Kind), trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(attrs...))
	return sctx, func(err error) {
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
	}
}

func endNothing(error) {}

// written records a transition that was written: counters, the parking
// log line.
func (o *observer) written(prev *State, in *Input, next *State) {
	if next == nil {
		return
	}
	fresh := prev == nil || (prev.Status == Rejected && next.Status != Rejected)
	wasTerminal := prev != nil && prev.Status.Terminal() && !fresh
	wasParked := prev != nil && prev.Status == Parked
	if next.Status == Parked && !wasParked {
		attrs := []any{"saga", next.SagaID, "name", next.Name, "reason", next.Reason, "parked_from", next.ParkedFrom}
		for i := range next.Steps {
			if next.Steps[i].Stuck {
				attrs = append(attrs, "step", next.Steps[i].Name)
				if next.Plan != nil && i < len(next.Plan.Steps) {
					attrs = append(attrs, "participant", next.Plan.Steps[i].Participant)
				}
				break
			}
		}
		o.log.Warn("coordinator: saga parked; it waits for an operator (redrive, skip or resolve)", attrs...)
	}
	m := o.m
	if m == nil {
		return
	}
	name := m.names.Value(next.Name)
	if fresh {
		m.started.WithLabelValues(name).Inc()
	}
	if next.Status.Terminal() && !wasTerminal {
		status := string(next.Status)
		m.finished.WithLabelValues(name, status).Inc()
		m.duration.WithLabelValues(name, status).Observe(float64(next.UpdatedMS-next.StartedMS) / 1000)
	}
	if next.Status == Parked && !wasParked {
		m.parked.WithLabelValues(name).Inc()
	}
	if in.Outcome != nil && in.Err == nil {
		m.outcomes.WithLabelValues(m.parts.Value(in.Participant), string(in.Outcome.Status)).Inc()
	}
}

// command starts the span of a command about to be published under ctx and
// puts the span's context in the message's trace headers (instead of the
// saga's, which events.CommandMsg wrote). The returned function ends the
// span once JetStream stored the command. It returns nil when not tracing.
func (o *observer) command(ctx context.Context, h nats.Header, cmd *events.Command, tr Trace) func(error) {
	if o.tracer == nil {
		return nil
	}
	if !trace.SpanContextFromContext(ctx).IsValid() {
		ctx = telemetry.ExtractParent(ctx, tr.Parent, tr.State)
	}
	sctx, span := o.tracer.Start(ctx, "publish command "+cmd.Action, trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(
			attribute.String("jetsaga.saga.id", cmd.SagaID),
			attribute.String("jetsaga.step", cmd.Step),
			attribute.String("jetsaga.participant", cmd.Participant),
			attribute.String("jetsaga.action", cmd.Action),
			attribute.String("jetsaga.op", string(cmd.Op)),
			attribute.Int("jetsaga.attempt", cmd.Attempt),
		))
	telemetry.Inject(sctx, h)
	return func(err error) {
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
	}
}

// published counts the commands of a transition once JetStream stored them.
func (o *observer) published(p *Pending) {
	if o.m == nil {
		return
	}
	for i := range p.Commands {
		cmd := &p.Commands[i]
		o.m.commands.WithLabelValues(o.m.parts.Value(cmd.Participant), string(cmd.Op)).Inc()
	}
}

// census returns the saga gauges' follower of the state bucket, nil when
// metrics are off.
func (o *observer) census() stateFollower {
	if o.m == nil || o.m.census == nil {
		return nil
	}
	return o.m.census
}

// sinceMS converts a Unix millisecond time to a duration until now.
func sinceMS(ms int64) time.Duration { return time.Since(time.UnixMilli(ms)) }
