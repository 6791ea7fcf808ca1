// Package telemetry holds what the instrumented packages of jetsaga share:
// the W3C trace context carried in NATS headers, bounded label values, the
// histogram buckets, and the JetStream consumer gauges. It keeps no global
// state: every metric is registered in the registry its caller passes, and
// every tracer comes from the provider its caller passes.
//
// Conventions (Prometheus): every name starts with "jetsaga_", counters end
// in "_total", durations are in seconds ("_seconds"), and no label carries a
// saga id, a payload or any other unbounded value; labels that come from
// plans (saga names, participants, actions) go through a [Limiter].
package telemetry

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Namespace is the prefix of every metric name.
const Namespace = "jetsaga"

// Other is the label value that stands for every value past a Limiter's
// bound.
const Other = "other"

// DefaultMaxLabelValues bounds the distinct values of one label that comes
// from plans.
const DefaultMaxLabelValues = 256

// DurationBuckets are the buckets of the step and saga duration histograms,
// in seconds: 1 ms to 10 min.
var DurationBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}

// Limiter bounds the distinct values of a label: the first max values are
// kept, every later one becomes [Other]. It is safe for concurrent use, and
// a value already seen costs one map read.
type Limiter struct {
	max  int64
	n    atomic.Int64
	seen sync.Map // string → struct{}
	mu   sync.Mutex
}

// NewLimiter returns a limiter of max values (DefaultMaxLabelValues if max
// <= 0).
func NewLimiter(max int) *Limiter {
	if max <= 0 {
		max = DefaultMaxLabelValues
	}
	return &Limiter{max: int64(max)}
}

// Value returns v, or Other once max other values were seen.
func (l *Limiter) Value(v string) string {
	if _, ok := l.seen.Load(v); ok {
		return v
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.seen.Load(v); ok {
		return v
	}
	if l.n.Load() >= l.max {
		return Other
	}
	l.seen.Store(v, struct{}{})
	l.n.Add(1)
	return v
}

// propagator is the W3C trace context format (traceparent, tracestate),
// the one jetsaga's messages carry.
var propagator propagation.TraceContext

// HeaderCarrier adapts NATS headers to OpenTelemetry's TextMapCarrier.
type HeaderCarrier nats.Header

// Get returns the first value of key.
func (h HeaderCarrier) Get(key string) string { return nats.Header(h).Get(key) }

// Set replaces the values of key.
func (h HeaderCarrier) Set(key, value string) { nats.Header(h).Set(key, value) }

// Keys lists the keys present.
func (h HeaderCarrier) Keys() []string {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	return keys
}

// Inject writes the span context of ctx into h (traceparent, tracestate).
func Inject(ctx context.Context, h nats.Header) {
	propagator.Inject(ctx, HeaderCarrier(h))
}

// Extract returns ctx with the remote span context that h carries, if any.
func Extract(ctx context.Context, h nats.Header) context.Context {
	if h == nil {
		return ctx
	}
	return propagator.Extract(ctx, HeaderCarrier(h))
}

// ExtractParent returns ctx with the remote span context of a traceparent
// (and tracestate) value, if it is valid.
func ExtractParent(ctx context.Context, traceparent, tracestate string) context.Context {
	if traceparent == "" {
		return ctx
	}
	h := nats.Header{}
	h.Set("traceparent", traceparent)
	if tracestate != "" {
		h.Set("tracestate", tracestate)
	}
	return propagator.Extract(ctx, HeaderCarrier(h))
}

// Traceparent returns the traceparent and tracestate values of the span in
// ctx ("" if it has none).
func Traceparent(ctx context.Context) (parent, state string) {
	h := nats.Header{}
	propagator.Inject(ctx, HeaderCarrier(h))
	return h.Get("traceparent"), h.Get("tracestate")
}

// Tracer returns the tracer named name of tp, or nil when tp is nil: the
// instrumented packages then skip tracing altogether (no span, no context,
// no allocation).
func Tracer(tp trace.TracerProvider, name string) trace.Tracer {
	if tp == nil {
		return nil
	}
	return tp.Tracer(name)
}
