package main

import (
	"strings"
	"testing"
)

// TestTracingFromEnvironment: tracing is off unless the OTEL_* environment
// asks for it, follows the standard variables, and refuses what it cannot
// do with an error naming the variable.
func TestTracingFromEnvironment(t *testing.T) {
	for _, c := range []struct {
		env   map[string]string
		on    bool
		proto string
		err   string
	}{
		{env: nil, on: false},
		{env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, on: true, proto: "http/protobuf"},
		{env: map[string]string{"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318"}, on: false},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318"}, on: true, proto: "http/protobuf"},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://x:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, on: true, proto: "grpc"},
		{env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"}, on: true, proto: "http/protobuf"},
		{env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}, on: false},
		{env: map[string]string{"OTEL_TRACES_EXPORTER": "zipkin"}, err: "OTEL_TRACES_EXPORTER"},
		{env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, on: true, err: "OTEL_EXPORTER_OTLP_PROTOCOL"},
	} {
		getenv := func(k string) string { return c.env[k] }
		on, err := tracingEnabled(getenv)
		if err == nil && on {
			var proto string
			proto, err = tracesProtocol(getenv)
			if err == nil && proto != c.proto {
				t.Errorf("%v: protocol %q, want %q", c.env, proto, c.proto)
			}
		}
		switch {
		case c.err != "":
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%v: error %v, want one naming %s", c.env, err, c.err)
			}
		case err != nil:
			t.Errorf("%v: %v", c.env, err)
		case on != c.on:
			t.Errorf("%v: tracing %v, want %v", c.env, on, c.on)
		}
	}
}
