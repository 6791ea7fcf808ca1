package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/jetsaga/jetsaga/participants"
)

// streamWaitInterval is how often bank looks for the commands stream that a
// coordinator creates.
const streamWaitInterval = time.Second

func (a *app) bankCmd() *cobra.Command {
	var (
		nf          natsFlags
		db          dbFlags
		lf          logFlags
		name        string
		migrate     bool
		seed        bool
		concurrency int
		metricsAddr string
	)
	cmd := &cobra.Command{
		Use:   "bank --participant bank-a|bank-b --database-url URL",
		Short: "Run one bank of the example as a participant service",
		Long: `Run one bank of the bank-transfer example (examples/bank) as its own participant process
against an existing NATS deployment and the bank's own PostgreSQL database, until SIGINT or SIGTERM.

At start it migrates its tables (barrier, outbox, accounts; --migrate=false to skip), opens the
example's accounts in an empty bank with --seed, and waits for the commands stream (a coordinator
creates it). On SIGINT/SIGTERM it stops taking commands, lets those in flight commit and be
acknowledged, drains its NATS connection and exits 0. Kill it at any moment instead: the commands
it held are delivered again and its barrier makes that safe.

With --metrics-addr it serves Prometheus metrics on /metrics: step latency, outcomes, barrier
decisions, rejections, redeliveries, its consumer's pending counts, Go runtime and process. Traces
are exported when the OTEL_* environment asks for them (off by default).`,
		Example: `  jetsaga bank --participant bank-a --database-url postgres://bank:secret@db:5432/bank_a --seed`,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if name != "bank-a" && name != "bank-b" {
				return usagef("--participant must be bank-a or bank-b, got %q", name)
			}
			if concurrency < 1 {
				return usagef("--concurrency must be at least 1, got %d", concurrency)
			}
			log, ns, err := a.serviceSetup(&lf, &nf)
			if err != nil {
				return err
			}
			if err := nf.validate(); err != nil {
				return err
			}
			log = log.With("participant", name)
			slog.SetDefault(log)
			ctx, stop := signalContext(cmd.Context())
			defer stop()
			pool, err := openPool(ctx, db.url, int32(concurrency)+4, nf.connectTimeout)
			if err != nil {
				return err
			}
			defer pool.Close()
			nc, js, err := nf.connect(ctx, "jetsaga bank "+name, true, log)
			if err != nil {
				return err
			}
			defer drain(nc, drainTimeout)
			if migrate {
				if err := migrateBank(ctx, pool); err != nil {
					return fmt.Errorf("migrate %s: %w", redactURL(db.url), err)
				}
				log.Info("tables migrated", "database", redactURL(db.url))
			}
			if seed {
				seeded, err := seedBank(ctx, pool, name)
				if err != nil {
					return fmt.Errorf("seed %s: %w", redactURL(db.url), err)
				}
				if seeded {
					log.Info("example accounts opened")
				}
			}
			if err := waitStream(ctx, js, ns.CommandsStream(), log); err != nil {
				if ctx.Err() != nil {
					return nil // stopped while waiting
				}
				return err
			}
			tp, stopTracing, err := setupTracing(ctx, "jetsaga-"+name, log)
			if err != nil {
				return err
			}
			defer stopTracing()
			reg := newRegistry()
			var metrics *participants.Metrics
			if metricsAddr != "" { // no metrics are kept unless served
				if metrics, err = participants.NewMetrics(reg); err != nil {
					return err
				}
			}
			stopMetrics, err := serveMetrics(metricsAddr, reg, log)
			if err != nil {
				return err
			}
			defer stopMetrics()
			p, err := participants.New(participants.Config{Name: name, Pool: pool, JetStream: js, Namespace: ns,
				Concurrency: concurrency, Logger: log, Metrics: metrics, TracerProvider: tp})
			if err != nil {
				return err
			}
			if err := registerBank(p); err != nil {
				return err
			}
			log.Info("bank running", "nats", redactURL(nc.ConnectedUrl()), "prefix", ns.Prefix(),
				"consumer", ns.ParticipantConsumer(name), "concurrency", concurrency)
			if err := p.Run(ctx); err != nil {
				return fmt.Errorf("bank %s: %w", name, err)
			}
			log.Info("bank stopped")
			return nil
		},
	}
	fs := cmd.Flags()
	nf.register(fs)
	db.register(fs, "the bank's own database, a postgres:// URL (required)")
	lf.register(fs)
	fs.StringVar(&name, "participant", "", "which bank: bank-a or bank-b (required)")
	bindEnv(fs, "participant", "JETSAGA_PARTICIPANT")
	fs.BoolVar(&migrate, "migrate", true, "create or upgrade the tables at start")
	fs.BoolVar(&seed, "seed", false, "open the example's accounts if the bank has none")
	fs.IntVar(&concurrency, "concurrency", participants.DefaultConcurrency, "commands handled at once, each in its own transaction")
	metricsFlag(fs, &metricsAddr)
	return cmd
}

// waitStream waits until stream exists: a participant starts before or
// after the coordinator that creates it.
func waitStream(ctx context.Context, js jetstream.JetStream, stream string, log *slog.Logger) error {
	logged := false
	for {
		_, err := js.Stream(ctx, stream)
		if err == nil {
			return nil
		}
		if !errors.Is(err, jetstream.ErrStreamNotFound) {
			return fmt.Errorf("stream %s: %w", stream, err)
		}
		if !logged {
			log.Info("waiting for the commands stream; a coordinator creates it", "stream", stream)
			logged = true
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(streamWaitInterval):
		}
	}
}
