package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/jetsaga/jetsaga/internal/bankstack"
	"github.com/jetsaga/jetsaga/orchestrator"
	"github.com/jetsaga/jetsaga/participants"
)

// banks are the participants of the example, with their database names.
var banks = []struct{ name, db string }{{"bank-a", "bank_a"}, {"bank-b", "bank_b"}}

// stackConfig configures the local environment of demo and dev.
type stackConfig struct {
	// natsPort is the NATS client port; 0 picks a free one.
	natsPort int
	// storeDir keeps JetStream's data; "" is a temporary directory
	// removed at close.
	storeDir string
	// databaseURL is an existing PostgreSQL server (its database is used
	// to create the banks' databases); "" starts a throwaway cluster.
	databaseURL string
	// throwawayDBs gives the banks' databases a random suffix on an
	// existing server and drops them at close (demo); otherwise bank_a and
	// bank_b are created if missing and kept (dev).
	throwawayDBs bool
	// syncAlways makes JetStream fsync every write.
	syncAlways bool
	// log receives the components' logs.
	log *slog.Logger
	// connectTimeout bounds reaching an existing PostgreSQL server.
	connectTimeout time.Duration
	// registry, if set, receives the metrics of the coordinator (the first
	// one started) and of the banks.
	registry *prometheus.Registry
	// tracer, if set, records the components' spans.
	tracer trace.TracerProvider
}

// stack is a whole jetsaga deployment in this process (bankstack: an
// embedded NATS server, PostgreSQL, the coordinator and the two banks), with
// what demo and dev add: a client, metrics, traces, one coordinator that
// can be stopped and started again.
type stack struct {
	*bankstack.Stack
	cfg    stackConfig
	client *orchestrator.Client

	metrics *participants.Metrics // the banks' metrics, with cfg.registry

	mu          sync.Mutex
	registered  bool // a coordinator's metrics are in cfg.registry
	coordinator *bankstack.Service
}

// startStack starts NATS and PostgreSQL, creates and migrates the banks'
// databases and seeds them, and connects. It does not start the coordinator
// or the participants. On error it cleans up what it started.
func startStack(ctx context.Context, cfg stackConfig) (_ *stack, err error) {
	procsForEmbeddedNATS()
	dbs := bankstack.KeepDatabases
	if cfg.throwawayDBs {
		dbs = bankstack.ThrowawayDatabases
	}
	names := map[string]string{}
	for _, b := range banks {
		names[b.name] = b.db
	}
	bs, err := bankstack.Start(ctx, bankstack.Config{NATSPort: cfg.natsPort, StoreDir: cfg.storeDir,
		SyncAlways: cfg.syncAlways, ServerName: "jetsaga-dev", NATSOptions: []nats.Option{nats.Name("jetsaga local")},
		DatabaseURL: cfg.databaseURL, Databases: dbs, DatabaseNames: names, ConnectTimeout: cfg.connectTimeout,
		Seed: func(ctx context.Context, bank string, pool *pgxpool.Pool) error {
			_, err := seedBank(ctx, pool, bank)
			return err
		}})
	var urlErr *bankstack.DatabaseURLError
	var dbErr *bankstack.CreateDatabaseError
	switch {
	case errors.As(err, &urlErr):
		return nil, usagef("--database-url: %v", urlErr.Err)
	case errors.As(err, &dbErr):
		return nil, fmt.Errorf("create database %s on %s: %w", dbErr.Name, redactURL(dbErr.URL), dbErr.Err)
	case errors.Is(err, bankstack.ErrStartPostgres):
		return nil, fmt.Errorf("%w (or set --database-url/DATABASE_URL to a server where you may create databases)", err)
	case err != nil:
		return nil, err
	}
	s := &stack{Stack: bs, cfg: cfg, client: orchestrator.NewClient(bs.JS, bs.NS)}
	if cfg.registry != nil {
		if s.metrics, err = participants.NewMetrics(cfg.registry); err != nil {
			_ = s.close()
			return nil, err
		}
	}
	return s, nil
}

// startCoordinator starts a coordinator in this process.
func (s *stack) startCoordinator() (*orchestrator.Coordinator, error) {
	cfg := orchestrator.Config{JetStream: s.JS, Namespace: s.NS, Workers: 16,
		Logger: s.cfg.log.With("component", "coordinator"), TracerProvider: s.cfg.tracer}
	s.mu.Lock()
	if s.cfg.registry != nil && !s.registered {
		cfg.Registerer, s.registered = s.cfg.registry, true
	}
	s.mu.Unlock()
	c, err := orchestrator.NewCoordinator(cfg)
	if err != nil {
		return nil, err
	}
	svc := s.Go("coordinator", c.Run)
	s.mu.Lock()
	s.coordinator = svc
	s.mu.Unlock()
	return c, nil
}

// stopCoordinator stops the running coordinator (it finishes the messages
// it holds).
func (s *stack) stopCoordinator() error {
	s.mu.Lock()
	svc := s.coordinator
	s.coordinator = nil
	s.mu.Unlock()
	if svc == nil {
		return nil
	}
	return svc.Stop()
}

// startParticipants starts both banks in this process.
func (s *stack) startParticipants() error {
	for _, b := range banks {
		p, err := participants.New(participants.Config{Name: b.name, Pool: s.Pools[b.name], JetStream: s.JS, Namespace: s.NS,
			Logger: s.cfg.log.With("component", b.name), Metrics: s.metrics, TracerProvider: s.cfg.tracer})
		if err != nil {
			return err
		}
		if err := registerBank(p); err != nil {
			return err
		}
		s.Go(b.name, p.Run)
	}
	return nil
}

// close stops everything, last started first, and removes what was created
// for this run. It reports the first error.
func (s *stack) close() error {
	s.client.Close()
	return s.Stack.Close()
}

// pgHost returns the host:port of a postgres:// URL.
func pgHost(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "?"
	}
	return u.Host
}
