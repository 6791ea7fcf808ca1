package main

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/jetsaga/jetsaga/events"
	"github.com/jetsaga/jetsaga/orchestrator"
)

// drainTimeout bounds the NATS drain of a stopping service.
const drainTimeout = 30 * time.Second

func (a *app) coordinatorCmd() *cobra.Command {
	var (
		nf          natsFlags
		lf          logFlags
		replicas    int
		maxAge      time.Duration
		workers     int
		batchMin    int
		stepTimeout time.Duration
		metricsAddr string
		serveAPI    bool
	)
	cmd := &cobra.Command{
		Use:   "coordinator",
		Short: "Run a coordinator: the service that drives every saga",
		Long: `Run a coordinator against an existing NATS deployment until SIGINT or SIGTERM.

At start it creates or updates the sagas and commands streams and the saga state bucket with
--replicas and --max-age, then consumes the sagas stream. Run as many instances as you like: they
share one durable consumer. On SIGINT/SIGTERM it stops fetching, finishes the messages it holds,
drains its NATS connection and exits 0.

It serves the saga API as a NATS micro service (service "jetsaga", subjects <prefix>.api.get, list,
timeline, start, redrive, skip, resolve; "nats micro ls" finds it) unless --service=false.

With --metrics-addr it serves Prometheus metrics on /metrics (and "ok" on /healthz): sagas started
and finished, durations, unfinished sagas by status, commands, outcomes, rejections, consumers'
pending counts, Go runtime and process. Traces are exported when the OTEL_* environment asks for
them (OTEL_TRACES_EXPORTER=otlp or OTEL_EXPORTER_OTLP_ENDPOINT; off by default).`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if replicas < 1 || replicas > 5 {
				return usagef("--replicas must be between 1 and 5, got %d", replicas)
			}
			if maxAge <= 0 {
				return usagef("--max-age must be positive, got %s", maxAge)
			}
			if workers < 1 {
				return usagef("--workers must be at least 1, got %d", workers)
			}
			log, ns, err := a.serviceSetup(&lf, &nf)
			if err != nil {
				return err
			}
			slog.SetDefault(log)
			ctx, stop := signalContext(cmd.Context())
			defer stop()
			nc, js, err := nf.connect(ctx, "jetsaga coordinator", true, log)
			if err != nil {
				return err
			}
			defer drain(nc, drainTimeout)
			tp, stopTracing, err := setupTracing(ctx, "jetsaga-coordinator", log)
			if err != nil {
				return err
			}
			defer stopTracing()
			reg := newRegistry()
			var registerer prometheus.Registerer
			if metricsAddr != "" { // no metrics are kept unless served
				registerer = reg
			}
			c, err := orchestrator.NewCoordinator(orchestrator.Config{
				JetStream:      js,
				Namespace:      ns,
				Streams:        events.StreamOptions{Replicas: replicas, MaxAge: maxAge},
				Workers:        workers,
				AtomicBatchMin: batchMin,
				StepTimeout:    stepTimeout,
				Logger:         log,
				Registerer:     registerer,
				TracerProvider: tp,
			})
			if err != nil {
				return err
			}
			stopMetrics, err := serveMetrics(metricsAddr, reg, log)
			if err != nil {
				return err
			}
			defer stopMetrics()
			if serveAPI {
				stopAPI, err := startAPI(nc, js, ns, tp, log)
				if err != nil {
					return err
				}
				defer stopAPI()
			}
			log.Info("coordinator running", "nats", redactURL(nc.ConnectedUrl()), "prefix", ns.Prefix(),
				"streams", ns.SagasStream()+","+ns.CommandsStream(), "bucket", ns.StateBucket(),
				"replicas", replicas, "max_age", maxAge.String(), "workers", workers)
			if err := c.Run(ctx); err != nil {
				return fmt.Errorf("coordinator: %w", err)
			}
			st := c.Stats()
			log.Info("coordinator stopped", "processed", st.Processed, "applied", st.Applied,
				"commands", st.Commands, "errors", st.Errors)
			return nil
		},
	}
	fs := cmd.Flags()
	nf.register(fs)
	lf.register(fs)
	fs.IntVar(&replicas, "replicas", 1, "replicas of the streams and the state bucket (1 for one server, 3 for a cluster)")
	bindEnv(fs, "replicas", "JETSAGA_REPLICAS")
	fs.DurationVar(&maxAge, "max-age", events.DefaultMaxAge, "how long the streams keep messages (and the bucket a finished saga's state, a minute more); bounds replay, timelines and status, keep it longer than any saga lives")
	bindEnv(fs, "max-age", "JETSAGA_MAX_AGE")
	fs.IntVar(&workers, "workers", 64, "sagas this instance works on at once")
	bindEnv(fs, "workers", "JETSAGA_WORKERS")
	fs.IntVar(&batchMin, "atomic-batch-min", 0, "group commit: store at least this many writes that gather per stream as one JetStream atomic batch (0: each write on its own)")
	bindEnv(fs, "atomic-batch-min", "JETSAGA_ATOMIC_BATCH_MIN")
	fs.DurationVar(&stepTimeout, "step-timeout", orchestrator.DefaultStepTimeout, "timeout of the steps whose plan gives none (timeout_ms absent or 0), recorded in each saga when it starts; -1s for none (a step with timeout_ms -1 never times out); give replay the same value")
	bindEnv(fs, "step-timeout", "JETSAGA_STEP_TIMEOUT")
	metricsFlag(fs, &metricsAddr)
	fs.BoolVar(&serveAPI, "service", true, "serve the saga API as a NATS micro service (<prefix>.api.*)")
	bindEnv(fs, "service", "JETSAGA_SERVICE")
	return cmd
}
