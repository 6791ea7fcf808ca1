package orchestrator

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/jetsaga/jetsaga/events"
	"github.com/jetsaga/jetsaga/internal/telemetry"
)

// ClientOption configures a Client.
type ClientOption func(*Client)

// WithTracerProvider has the client record a span for every saga it starts:
// the root of the saga's trace (or a child of the span in Start's context, or
// of the plan's TraceContext), whose context the start message carries to
// the coordinator and, through it, to every participant. Default: no spans.
func WithTracerProvider(tp trace.TracerProvider) ClientOption {
	return func(c *Client) { c.tracer = telemetry.Tracer(tp, tracerName) }
}

// startSpan starts the span of a saga's start; it returns the trace context
// the start message carries.
func (c *Client) startSpan(ctx context.Context, start *events.Start, tr Trace) (context.Context, Trace, func(error)) {
	if tr.Parent != "" {
		ctx = telemetry.ExtractParent(ctx, tr.Parent, tr.State)
	}
	ctx, span := c.tracer.Start(ctx, "saga start "+start.Name, trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(
			attribute.String("jetsaga.saga.id", start.SagaID),
			attribute.String("jetsaga.saga.name", start.Name),
			attribute.Int("jetsaga.saga.steps", len(start.Steps)),
		))
	parent, state := telemetry.Traceparent(ctx)
	return ctx, Trace{Parent: parent, State: state}, func(err error) {
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
	}
}
