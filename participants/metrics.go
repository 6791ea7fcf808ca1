package participants

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/jetsaga/jetsaga/events"
	"github.com/jetsaga/jetsaga/internal/telemetry"
	"github.com/jetsaga/jetsaga/outbox"
)

// Barrier decisions: the "decision" label of
// jetsaga_participant_barrier_decisions_total.
const (
	// BarrierDuplicate: the step already ran; its recorded outcome is sent
	// again.
	BarrierDuplicate = "duplicate"
	// BarrierNullCompensation: a compensation whose action never ran (or
	// failed): nothing to undo.
	BarrierNullCompensation = "null_compensation"
	// BarrierHanging: an action that arrived after its compensation:
	// refused.
	BarrierHanging = "hanging"
)

// Step outcomes besides the outcome statuses: the "outcome" label of
// jetsaga_participant_step_duration_seconds.
const (
	// OutcomeError: nothing committed (a transient error); the command is
	// retried, or reported exhausted once its budget is spent.
	OutcomeError = "error"
	// OutcomeLost: the command could not be read nor attributed to a saga;
	// it was terminated without an outcome.
	OutcomeLost = "lost"
)

// Rejection classes: the "reason" label of
// jetsaga_participant_rejections_total.
const (
	RejectUndecodable      = "undecodable"       // the command does not decode
	RejectWrongSubject     = "wrong_subject"     // it arrived on another saga's or participant's subject
	RejectWrongParticipant = "wrong_participant" // it names another participant
	RejectUnknownAction    = "unknown_action"    // no handler is registered under its action
	RejectWrongOp          = "wrong_op"          // its action is registered for the other op
	RejectBadPayload       = "bad_payload"       // its payload does not decode or validate
	RejectOther            = "other"
)

// unknownAction is the action label of a command whose action has no
// handler: actions come from plans, and only registered ones are labels.
const unknownAction = "unknown"

// Metrics is the Prometheus metric set of participant runtimes: one per
// registry, shared by every participant of the process (Config.Metrics).
// Its methods are what a participant runtime reports, exported so that
// other runtimes (an HTTP participant) report the same series:
//
//	jetsaga_participant_step_duration_seconds{participant,action,op,outcome}
//	jetsaga_participant_outcomes_total{participant,status}
//	jetsaga_participant_redeliveries_total{participant}
//	jetsaga_participant_barrier_decisions_total{participant,decision}
//	jetsaga_participant_rejections_total{participant,reason}
//	jetsaga_consumer_pending_messages{stream,consumer} (and ack-pending, max ack pending, redelivered)
//	jetsaga_outbox_backlog_rows{table}, jetsaga_outbox_oldest_row_age_seconds{table}
//
// Labels are bounded: participant and action names are a deployment's own
// (an action that has no handler is "unknown"), the others are fixed sets.
type Metrics struct {
	reg          prometheus.Registerer
	steps        *prometheus.HistogramVec
	outcomes     *prometheus.CounterVec
	redeliveries *prometheus.CounterVec
	barrier      *prometheus.CounterVec
	rejections   *prometheus.CounterVec
	outboxes     *outboxCollector
}

// NewMetrics registers the participants' metrics in reg and returns them,
// to set as Config.Metrics of every participant of the process.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	if reg == nil {
		return nil, errors.New("participants: NewMetrics: the registerer is nil")
	}
	ns := telemetry.Namespace
	m := &Metrics{
		reg: reg,
		steps: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Name: "participant_step_duration_seconds",
			Help:    "Time to handle one delivery of a command, from its receipt to its ack (transaction, outcome published), by participant, action, op and outcome (succeeded, failed, compensated, rejected, error, lost).",
			Buckets: telemetry.DurationBuckets}, []string{"participant", "action", "op", "outcome"}),
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "participant_outcomes_total",
			Help: "Outcomes published and stored by JetStream, by participant and status."}, []string{"participant", "status"}),
		redeliveries: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "participant_redeliveries_total",
			Help: "Commands delivered more than once, by participant."}, []string{"participant"}),
		barrier: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "participant_barrier_decisions_total",
			Help: "Commands the barrier did not run as they came, by participant and decision (duplicate, null_compensation, hanging)."}, []string{"participant", "decision"}),
		rejections: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "participant_rejections_total",
			Help: "Poison commands rejected, by participant and reason class."}, []string{"participant", "reason"}),
		outboxes: &outboxCollector{},
	}
	for _, c := range []prometheus.Collector{m.steps, m.outcomes, m.redeliveries, m.barrier, m.rejections, m.outboxes} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("participants: NewMetrics: %w (one Metrics per registry, shared by the participants)", err)
		}
	}
	return m, nil
}

// ObserveStep records one delivery handled in d.
func (m *Metrics) ObserveStep(participant, action string, op events.Op, outcome string, d time.Duration) {
	m.steps.WithLabelValues(participant, action, string(op), outcome).Observe(d.Seconds())
}

// CountOutcome counts an outcome published.
func (m *Metrics) CountOutcome(participant string, status events.Status) {
	m.outcomes.WithLabelValues(participant, string(status)).Inc()
}

// CountRedelivery counts a command delivered more than once.
func (m *Metrics) CountRedelivery(participant string) {
	m.redeliveries.WithLabelValues(participant).Inc()
}

// CountBarrier counts a barrier decision (BarrierDuplicate,
// BarrierNullCompensation, BarrierHanging).
func (m *Metrics) CountBarrier(participant, decision string) {
	m.barrier.WithLabelValues(participant, decision).Inc()
}

// CountRejection counts a poison command (a Reject* class).
func (m *Metrics) CountRejection(participant, reason string) {
	m.rejections.WithLabelValues(participant, reason).Inc()
}

// WatchConsumer has the metrics report a durable consumer's pending and
// ack-pending counts, read from JetStream when scraped.
func (m *Metrics) WatchConsumer(js jetstream.JetStream, stream, consumer string) error {
	return telemetry.RegisterConsumers(m.reg, func(ctx context.Context) ([]*jetstream.ConsumerInfo, error) {
		c, err := js.Consumer(ctx, stream, consumer)
		if err != nil {
			return nil, err
		}
		return []*jetstream.ConsumerInfo{c.CachedInfo()}, nil
	})
}

// WatchOutbox has the metrics report the backlog of an outbox table (rows
// not relayed yet, and the age of the oldest), read with q when scraped.
func (m *Metrics) WatchOutbox(q outbox.Querier, o *outbox.Outbox) {
	m.outboxes.add(q, o)
}

var (
	outboxBacklogDesc = prometheus.NewDesc(telemetry.Namespace+"_outbox_backlog_rows",
		"Rows of the outbox table not relayed yet.", []string{"table"}, nil)
	outboxOldestDesc = prometheus.NewDesc(telemetry.Namespace+"_outbox_oldest_row_age_seconds",
		"Age of the oldest row of the outbox table (from its transaction's start); 0 when empty.", []string{"table"}, nil)
	outboxErrorsDesc = prometheus.NewDesc(telemetry.Namespace+"_outbox_read_errors_total",
		"Scrapes that could not read an outbox table's backlog.", nil, nil)
)

// outboxCollector reads the outbox tables' backlog when scraped.
type outboxCollector struct {
	mu      sync.Mutex
	sources []outboxSource
	errors  uint64
}

type outboxSource struct {
	q     outbox.Querier
	table string
	query string
}

func (c *outboxCollector) add(q outbox.Querier, o *outbox.Outbox) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range c.sources {
		if s.table == o.Table() {
			return
		}
	}
	c.sources = append(c.sources, outboxSource{q: q, table: o.Table(),
		query: `SELECT count(*), COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0)::float8 FROM ` + o.Table()})
}

func (c *outboxCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- outboxBacklogDesc
	ch <- outboxOldestDesc
	ch <- outboxErrorsDesc
}

func (c *outboxCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range c.sources {
		ctx, cancel := context.WithTimeout(context.Background(), telemetry.ConsumerReadTimeout)
		var n int64
		var age float64
		err := s.q.QueryRow(ctx, s.query).Scan(&n, &age)
		cancel()
		if err != nil {
			c.errors++
			continue
		}
		ch <- prometheus.MustNewConstMetric(outboxBacklogDesc, prometheus.GaugeValue, float64(n), s.table)
		ch <- prometheus.MustNewConstMetric(outboxOldestDesc, prometheus.GaugeValue, max(age, 0), s.table)
	}
	ch <- prometheus.MustNewConstMetric(outboxErrorsDesc, prometheus.CounterValue, float64(c.errors))
}

// tracerName names the tracer of this package's spans.
const tracerName = "github.com/jetsaga/jetsaga/participants"

// rejectClass classifies a poison command's reason (the formats of
// process.go).
func rejectClass(reason string) string {
	switch {
	case strings.HasPrefix(reason, "undecodable command"):
		return RejectUndecodable
	case strings.HasPrefix(reason, "command for saga"):
		return RejectWrongSubject
	case strings.HasPrefix(reason, "command for participant"):
		return RejectWrongParticipant
	case strings.HasPrefix(reason, "unknown action"):
		return RejectUnknownAction
	case strings.HasPrefix(reason, "action ") && strings.Contains(reason, " is registered for op "):
		return RejectWrongOp
	case strings.HasPrefix(reason, "action "):
		return RejectBadPayload
	default:
		return RejectOther
	}
}

// observe instruments the handling of one delivery: it starts its span
// (when tracing), whose context the outcome carries, and returns the
// function that records it once settled.
func (p *Participant) observe(ctx context.Context, j *job) (context.Context, func(verdict)) {
	m, tracer := p.cfg.Metrics, p.tracer
	if m == nil && tracer == nil {
		return ctx, func(verdict) {}
	}
	start := time.Now()
	var span trace.Span
	if tracer != nil {
		ctx, span = tracer.Start(telemetry.Extract(ctx, j.header), "saga step", trace.WithSpanKind(trace.SpanKindConsumer),
			trace.WithAttributes(attribute.String("jetsaga.participant", p.cfg.Name), attribute.Int64("jetsaga.delivered", int64(j.delivered))))
		h := nats.Header{}
		for k, v := range j.header {
			h[k] = v
		}
		telemetry.Inject(ctx, h) // the outcome's trace context: this span
		j.header = h
	}
	return ctx, func(v verdict) {
		action, op, outcome := unknownAction, events.Op(""), outcomeOf(v)
		if j.cmd != nil {
			op = j.cmd.Op
			p.mu.Lock()
			if p.actions[j.cmd.Action] != nil {
				action = j.cmd.Action
			}
			p.mu.Unlock()
		}
		rejected := j.barrier == "" && (v.kind == vPoisoned || v.kind == vLost || (v.out != nil && v.out.Status == events.Rejected))
		if m != nil {
			m.ObserveStep(p.cfg.Name, action, op, outcome, time.Since(start))
			if j.delivered > 1 {
				m.CountRedelivery(p.cfg.Name)
			}
			if j.barrier != "" {
				m.CountBarrier(p.cfg.Name, j.barrier)
			}
			if rejected {
				m.CountRejection(p.cfg.Name, rejectClass(v.reason))
			}
		}
		if span == nil {
			return
		}
		if j.cmd != nil {
			span.SetName("saga step " + j.cmd.Action)
			span.SetAttributes(attribute.String("jetsaga.saga.id", j.cmd.SagaID), attribute.String("jetsaga.step", j.cmd.Step),
				attribute.String("jetsaga.action", j.cmd.Action), attribute.String("jetsaga.op", string(j.cmd.Op)),
				attribute.Int("jetsaga.attempt", j.cmd.Attempt))
		} else if j.sagaID != "" {
			span.SetAttributes(attribute.String("jetsaga.saga.id", j.sagaID))
		}
		barrier := j.barrier
		if barrier == "" {
			barrier = "ran"
		}
		span.SetAttributes(attribute.String("jetsaga.barrier", barrier), attribute.String("jetsaga.outcome", outcome))
		switch {
		case v.kind == vTransient && v.err != nil:
			span.RecordError(v.err)
			span.SetStatus(codes.Error, v.err.Error())
		case v.kind == vPoisoned || v.kind == vLost:
			span.SetStatus(codes.Error, v.reason)
		}
		span.End()
	}
}

// outcomeOf is the outcome label of a verdict.
func outcomeOf(v verdict) string {
	switch {
	case v.kind == vTransient:
		return OutcomeError
	case v.kind == vLost:
		return OutcomeLost
	case v.out != nil:
		return string(v.out.Status)
	default:
		return OutcomeError
	}
}

// sent counts an outcome JetStream stored.
func (p *Participant) sent(o *events.Outcome) {
	if m := p.cfg.Metrics; m != nil {
		m.CountOutcome(p.cfg.Name, o.Status)
	}
}
