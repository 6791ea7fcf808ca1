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

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/expfmt"
	"github.com/spf13/pflag"
)

// The services' /metrics endpoint: a registry of their own (no global
// state) with the Go runtime and process collectors and whatever the
// components register (orchestrator.Config.Registerer, participants.Metrics),
// served by client_golang's handler.

// newRegistry returns a registry with the Go runtime and process collectors.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// metricsFlag is the --metrics-addr flag of the long-running commands.
func metricsFlag(fs *pflag.FlagSet, addr *string) {
	fs.StringVar(addr, "metrics-addr", "", `serve Prometheus metrics on /metrics at this address, e.g. ":9090" (default: off)`)
	bindEnv(fs, "metrics-addr", "JETSAGA_METRICS_ADDR")
}

// metricsServer serves /metrics (and /healthz) until stopped.
type metricsServer struct {
	srv  *http.Server
	ln   net.Listener
	done chan error
}

// startMetrics listens on addr and serves reg in the background.
func startMetrics(addr string, reg *prometheus.Registry, log *slog.Logger) (*metricsServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics-addr %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		ErrorHandling:     promhttp.ContinueOnError,
		Registry:          reg, // promhttp_metric_handler_errors_total
		EnableOpenMetrics: true,
	}))
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

// serveMetrics starts the metrics server when addr is set; the returned
// function stops it (a no-op otherwise).
func serveMetrics(addr string, reg *prometheus.Registry, log *slog.Logger) (stop func(), err error) {
	if addr == "" {
		return func() {}, nil
	}
	m, err := startMetrics(addr, reg, log)
	if err != nil {
		return nil, err
	}
	return func() {
		if err := m.stop(); err != nil {
			log.Warn("metrics server", "err", err)
		}
	}, nil
}

// benchScrapeInterval is how often bench --metrics scrapes, a third of
// Prometheus' usual 15 s: a pessimistic scraper.
const benchScrapeInterval = 5 * time.Second

// scrapeEvery gathers reg and encodes it in the text format every interval,
// as a Prometheus server would, until stop is called.
func scrapeEvery(reg *prometheus.Registry, interval time.Duration) (stop func()) {
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				mfs, err := reg.Gather()
				if err != nil {
					continue
				}
				enc := expfmt.NewEncoder(io.Discard, expfmt.NewFormat(expfmt.TypeTextPlain))
				for _, mf := range mfs {
					_ = enc.Encode(mf)
				}
			}
		}
	}()
	return func() {
		close(done)
		<-stopped
	}
}
