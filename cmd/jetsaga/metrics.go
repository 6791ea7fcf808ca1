package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/jetsaga/jetsaga/orchestrator"
)

// The /metrics endpoint is written by hand in the Prometheus text
// exposition format (version 0.0.4): a handful of counters do not earn the
// client_golang dependency tree.

// metric is one counter of the coordinator's Stats.
type metric struct {
	name, help string
	value      func(orchestrator.Stats) uint64
}

var coordinatorMetrics = []metric{
	{"jetsaga_coordinator_messages_processed_total", "Messages of the sagas stream handled and acknowledged.", func(s orchestrator.Stats) uint64 { return s.Processed }},
	{"jetsaga_coordinator_messages_applied_total", "Messages that changed a saga's state.", func(s orchestrator.Stats) uint64 { return s.Applied }},
	{"jetsaga_coordinator_messages_ignored_total", "Duplicate and stale messages that changed nothing.", func(s orchestrator.Stats) uint64 { return s.Ignored }},
	{"jetsaga_coordinator_messages_rejected_total", "Invalid messages, recorded in their saga when it exists.", func(s orchestrator.Stats) uint64 { return s.Rejected }},
	{"jetsaga_coordinator_cas_conflicts_total", "Compare-and-set conflicts with another coordinator instance.", func(s orchestrator.Stats) uint64 { return s.Conflicts }},
	{"jetsaga_coordinator_commands_published_total", "Step commands published to participants.", func(s orchestrator.Stats) uint64 { return s.Commands }},
	{"jetsaga_coordinator_timers_scheduled_total", "Durable timers scheduled.", func(s orchestrator.Stats) uint64 { return s.Timers }},
	{"jetsaga_coordinator_errors_total", "Transient errors; the message is delivered again.", func(s orchestrator.Stats) uint64 { return s.Errors }},
}

// writeMetrics writes the stats in the Prometheus text format.
func writeMetrics(w io.Writer, s orchestrator.Stats) error {
	for _, m := range coordinatorMetrics {
		if _, err := fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s counter\n%s %d\n", m.name, m.help, m.name, m.name, m.value(s)); err != nil {
			return err
		}
	}
	return nil
}

// metricsServer serves /metrics (and /healthz) on addr until ctx is done.
type metricsServer struct {
	srv  *http.Server
	ln   net.Listener
	done chan error
}

// startMetrics listens on addr and serves stats in the background.
func startMetrics(addr string, stats func() orchestrator.Stats, log *slog.Logger) (*metricsServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics-addr %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		_ = writeMetrics(w, stats())
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok\n")
	})
	m := &metricsServer{srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}, ln: ln, done: make(chan error, 1)}
	go func() {
		err := m.srv.Serve(ln)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		m.done <- err
	}()
	log.Info("serving metrics", "addr", ln.Addr().String(), "path", "/metrics")
	return m, nil
}

// Addr returns the address the server listens on.
func (m *metricsServer) Addr() string { return m.ln.Addr().String() }

// stop shuts the server down.
func (m *metricsServer) stop() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := m.srv.Shutdown(ctx)
	if serveErr := <-m.done; err == nil {
		err = serveErr
	}
	return err
}
