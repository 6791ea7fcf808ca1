package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/jetsaga/jetsaga/devenv"
	"github.com/jetsaga/jetsaga/events"
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

// stack is a whole jetsaga deployment in this process: an embedded NATS
// server, PostgreSQL, the coordinator and the two banks.
type stack struct {
	cfg    stackConfig
	nats   *devenv.NATSServer
	pg     *devenv.Postgres
	nc     *nats.Conn
	js     jetstream.JetStream
	ns     events.Namespace
	client *orchestrator.Client

	dbNames map[string]string        // participant → database
	dbURLs  map[string]string        // participant → URL
	pools   map[string]*pgxpool.Pool // participant → pool
	created []string                 // databases to drop at close

	metrics *participants.Metrics // the banks' metrics, with cfg.registry

	mu           sync.Mutex
	registered   bool // a coordinator's metrics are in cfg.registry
	coordinator  *service
	participants []*service
}

// service is a component running on its own goroutine until stopped.
type service struct {
	name   string
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	err    error
}

func goService(name string, run func(context.Context) error) *service {
	ctx, cancel := context.WithCancel(context.Background())
	s := &service{name: name, cancel: cancel, done: make(chan error, 1)}
	go func() { s.done <- run(ctx) }()
	return s
}

// stop cancels the service and waits for it; it returns what it returned.
func (s *service) stop() error {
	s.once.Do(func() {
		s.cancel()
		if err := <-s.done; err != nil {
			s.err = fmt.Errorf("%s: %w", s.name, err)
		}
	})
	return s.err
}

// startStack starts NATS and PostgreSQL, creates and migrates the banks'
// databases and seeds them, and connects. It does not start the coordinator
// or the participants. On error it cleans up what it started.
func startStack(ctx context.Context, cfg stackConfig) (_ *stack, err error) {
	s := &stack{cfg: cfg, ns: events.Default(), dbNames: map[string]string{}, dbURLs: map[string]string{}, pools: map[string]*pgxpool.Pool{}}
	defer func() {
		if err != nil {
			_ = s.close()
		}
	}()
	procsForEmbeddedNATS()
	s.nats, err = devenv.StartNATS(devenv.NATSOptions{Port: cfg.natsPort, StoreDir: cfg.storeDir, SyncAlways: cfg.syncAlways, ServerName: "jetsaga-dev"})
	if err != nil {
		return nil, fmt.Errorf("start NATS: %w", err)
	}
	if cfg.databaseURL != "" {
		if s.pg, err = devenv.ExternalPostgres(cfg.databaseURL); err != nil {
			return nil, usagef("--database-url: %v", err)
		}
	} else if s.pg, err = devenv.StartPostgres(devenv.PGOptions{}); err != nil {
		return nil, fmt.Errorf("start PostgreSQL: %w (or set --database-url/DATABASE_URL to a server where you may create databases)", err)
	}
	suffix := ""
	if cfg.throwawayDBs && s.pg.External() {
		var b [4]byte
		_, _ = rand.Read(b[:])
		suffix = "_" + hex.EncodeToString(b[:])
	}
	for _, b := range banks {
		name := b.db + suffix
		if err := s.ensureDatabase(ctx, name); err != nil {
			return nil, err
		}
		url := s.pg.URL(name)
		pool, err := openPool(ctx, url, 32, cfg.connectTimeout)
		if err != nil {
			return nil, err
		}
		s.dbNames[b.name], s.dbURLs[b.name], s.pools[b.name] = name, url, pool
		if err := migrateBank(ctx, pool); err != nil {
			return nil, fmt.Errorf("migrate %s: %w", name, err)
		}
		if _, err := seedBank(ctx, pool, b.name); err != nil {
			return nil, fmt.Errorf("seed %s: %w", name, err)
		}
	}
	s.nc, err = nats.Connect(s.nats.URL(), nats.Name("jetsaga local"), nats.MaxReconnects(-1))
	if err != nil {
		return nil, fmt.Errorf("connect to the embedded NATS at %s: %w", s.nats.URL(), err)
	}
	if s.js, err = jetstream.New(s.nc); err != nil {
		return nil, err
	}
	if err := orchestrator.EnsureStreams(ctx, s.js, s.ns, events.StreamOptions{}); err != nil {
		return nil, err
	}
	s.client = orchestrator.NewClient(s.js, s.ns)
	if cfg.registry != nil {
		if s.metrics, err = participants.NewMetrics(cfg.registry); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// ensureDatabase creates database name; on an existing server it keeps an
// existing one unless the databases are throwaway.
func (s *stack) ensureDatabase(ctx context.Context, name string) error {
	err := s.pg.CreateDatabase(ctx, name)
	if err == nil {
		if s.pg.External() && s.cfg.throwawayDBs {
			s.created = append(s.created, name)
		}
		return nil
	}
	if s.pg.External() && !s.cfg.throwawayDBs && isDuplicateDatabase(err) {
		return nil // dev keeps its databases between runs
	}
	return fmt.Errorf("create database %s on %s: %w", name, redactURL(s.pg.URL(name)), err)
}

// startCoordinator starts a coordinator in this process.
func (s *stack) startCoordinator() (*orchestrator.Coordinator, error) {
	cfg := orchestrator.Config{JetStream: s.js, Namespace: s.ns, Workers: 16,
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
	svc := goService("coordinator", c.Run)
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
	return svc.stop()
}

// startParticipants starts both banks in this process.
func (s *stack) startParticipants() error {
	for _, b := range banks {
		p, err := participants.New(participants.Config{Name: b.name, Pool: s.pools[b.name], JetStream: s.js, Namespace: s.ns,
			Logger: s.cfg.log.With("component", b.name), Metrics: s.metrics, TracerProvider: s.cfg.tracer})
		if err != nil {
			return err
		}
		if err := registerBank(p); err != nil {
			return err
		}
		svc := goService(b.name, p.Run)
		s.mu.Lock()
		s.participants = append(s.participants, svc)
		s.mu.Unlock()
	}
	return nil
}

// close stops everything in reverse order of start and removes what was
// created for this run. It reports the first error.
func (s *stack) close() error {
	var errs []error
	s.mu.Lock()
	parts := s.participants
	s.participants = nil
	s.mu.Unlock()
	for _, p := range parts {
		errs = append(errs, p.stop())
	}
	errs = append(errs, s.stopCoordinator())
	if s.client != nil {
		s.client.Close()
	}
	if s.nc != nil {
		s.nc.Close()
	}
	for _, p := range s.pools {
		p.Close()
	}
	if s.pg != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		for _, name := range s.created {
			errs = append(errs, s.pg.DropDatabase(ctx, name))
		}
		cancel()
		errs = append(errs, s.pg.Stop())
	}
	if s.nats != nil {
		s.nats.Close()
	}
	return errors.Join(errs...)
}

// pgHost returns the host:port of a postgres:// URL.
func pgHost(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "?"
	}
	return u.Host
}
