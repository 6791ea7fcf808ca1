package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// Tracing is configured by OpenTelemetry's standard environment variables
// and is off unless they ask for it:
//
//   - OTEL_TRACES_EXPORTER: "otlp" turns it on, "none" (or unset) leaves it
//     off — unless OTEL_EXPORTER_OTLP_ENDPOINT or
//     OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set, which turns it on too;
//     OTEL_SDK_DISABLED=true turns it off whatever the rest says.
//   - OTEL_EXPORTER_OTLP_TRACES_PROTOCOL / OTEL_EXPORTER_OTLP_PROTOCOL:
//     "http/protobuf" (default) or "grpc".
//   - the exporter's own: OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT, _HEADERS,
//     _TIMEOUT, _INSECURE, _CERTIFICATE, _COMPRESSION; the sampler's
//     (OTEL_TRACES_SAMPLER, _ARG), the batch processor's (OTEL_BSP_*), and
//     the resource's (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES).
//
// Off, the components are given no tracer provider at all: they create no
// span and no context, so tracing costs nothing.

// tracingEnabled says whether the environment asks for traces.
func tracingEnabled(getenv func(string) string) (bool, error) {
	if strings.EqualFold(strings.TrimSpace(getenv("OTEL_SDK_DISABLED")), "true") {
		return false, nil
	}
	switch exp := strings.ToLower(strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER"))); exp {
	case "otlp":
		return true, nil
	case "none":
		return false, nil
	case "":
		return getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "", nil
	default:
		return false, fmt.Errorf("OTEL_TRACES_EXPORTER=%q: jetsaga exports traces with otlp only (or none)", exp)
	}
}

// tracesProtocol is the OTLP protocol the environment asks for.
func tracesProtocol(getenv func(string) string) (string, error) {
	p := getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
	if p == "" {
		p = getenv("OTEL_EXPORTER_OTLP_PROTOCOL")
	}
	switch p = strings.ToLower(strings.TrimSpace(p)); p {
	case "", "http/protobuf":
		return "http/protobuf", nil
	case "grpc":
		return "grpc", nil
	default:
		return "", fmt.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL=%q: want http/protobuf or grpc", p)
	}
}

// setupTracing returns the tracer provider the environment asks for, or nil
// when tracing is off; shutdown flushes the spans still buffered.
func setupTracing(ctx context.Context, service string, log *slog.Logger) (tp trace.TracerProvider, shutdown func(), err error) {
	on, err := tracingEnabled(os.Getenv)
	if err != nil || !on {
		return nil, func() {}, err
	}
	proto, err := tracesProtocol(os.Getenv)
	if err != nil {
		return nil, nil, err
	}
	var exp sdktrace.SpanExporter
	if proto == "grpc" {
		exp, err = otlptracegrpc.New(ctx)
	} else {
		exp, err = otlptracehttp.New(ctx)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("OpenTelemetry exporter: %w", err)
	}
	res, err := resource.Merge(resource.NewSchemaless(attribute.String("service.name", service)), resource.Environment())
	if err != nil {
		return nil, nil, fmt.Errorf("OpenTelemetry resource: %w", err)
	}
	sdk := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	log.Info("exporting traces", "protocol", proto)
	return sdk, func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := sdk.Shutdown(sctx); err != nil {
			log.Warn("flushing traces", "err", err)
		}
	}, nil
}
