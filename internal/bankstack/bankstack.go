// Package bankstack runs the bank example as one deployment in this
// process, for jetsaga's demo, dev and bench commands: NATS (embedded, or a
// server given by URL), PostgreSQL (a throwaway cluster, or a server given
// by URL) with one database per bank, migrated and seeded, the streams and
// the state bucket, and the components (coordinators, banks) as goroutines
// that stop with it.
//
// Two users of the same components assemble them otherwise, on purpose: the
// fault suite runs them as processes of the jetsaga binary (it kills them),
// and the packages' examples wire them by hand on devenv, since showing that
// wiring is what they are for.
package bankstack

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetsaga/jetsaga/devenv"
	"github.com/jetsaga/jetsaga/events"
	"github.com/jetsaga/jetsaga/examples/bank"
	"github.com/jetsaga/jetsaga/orchestrator"
	"github.com/jetsaga/jetsaga/participants"
)

// Banks are the example's participants, in the order they are set up.
var Banks = []string{bank.BankA, bank.BankB}

// Databases says what Start does with the banks' databases on an existing
// server (a throwaway cluster is removed whole at Close anyway).
type Databases int

const (
	// KeepDatabases creates the databases if missing and keeps them (dev).
	KeepDatabases Databases = iota
	// ThrowawayDatabases gives the databases a random suffix and drops
	// them at Close (demo).
	ThrowawayDatabases
	// RecreateDatabases drops and creates them, and drops them at Close
	// (bench).
	RecreateDatabases
)

// Config configures Start. Every field has a default.
type Config struct {
	// NATSURL is an existing NATS server; "" starts an embedded one with
	// NATSPort (0: a free port), StoreDir ("": a temporary directory
	// removed at Close), SyncAlways and ServerName.
	NATSURL    string
	NATSPort   int
	StoreDir   string
	SyncAlways bool
	ServerName string
	// NATSOptions are added to every connection's options.
	NATSOptions []nats.Option

	// DatabaseURL is an existing PostgreSQL server (its database is used
	// to create the banks'); "" starts a throwaway cluster.
	DatabaseURL string
	// Databases: what happens to the banks' databases on an existing
	// server. Default KeepDatabases.
	Databases Databases
	// DatabaseNames maps each bank to its database. Default bank_a, bank_b.
	DatabaseNames map[string]string
	// PoolSize is each bank's pool's size. Default 32.
	PoolSize int32
	// ConnectTimeout bounds reaching PostgreSQL. Default 5s.
	ConnectTimeout time.Duration
	// Seed opens a bank's accounts once its tables exist. Default: none.
	Seed func(ctx context.Context, bank string, pool *pgxpool.Pool) error

	// Namespace and Streams of the deployment, whose streams and bucket
	// Start ensures. Default events.Default(), one replica, 7 days.
	Namespace events.Namespace
	Streams   events.StreamOptions
}

// Stack is a running deployment. Its fields are read-only.
type Stack struct {
	NATS *devenv.NATSServer // nil with Config.NATSURL
	PG   *devenv.Postgres
	NC   *nats.Conn
	JS   jetstream.JetStream
	NS   events.Namespace
	// Per bank: its database's name and URL, and a pool on it.
	DBNames, DBURLs map[string]string
	Pools           map[string]*pgxpool.Pool

	cfg     Config
	url     string
	dropped []string // databases to drop at Close

	mu       sync.Mutex
	services []*Service
	conns    []*nats.Conn
}

// Start starts NATS and PostgreSQL, creates, migrates and seeds the banks'
// databases, connects and ensures the streams. It starts no component (see
// Go). On error it cleans up what it started.
func Start(ctx context.Context, cfg Config) (_ *Stack, err error) {
	if cfg.DatabaseNames == nil {
		cfg.DatabaseNames = map[string]string{bank.BankA: "bank_a", bank.BankB: "bank_b"}
	}
	if cfg.PoolSize == 0 {
		cfg.PoolSize = 32
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = 5 * time.Second
	}
	s := &Stack{cfg: cfg, NS: cfg.Namespace.OrDefault(), url: cfg.NATSURL,
		DBNames: map[string]string{}, DBURLs: map[string]string{}, Pools: map[string]*pgxpool.Pool{}}
	defer func() {
		if err != nil {
			_ = s.Close()
		}
	}()
	if s.url == "" {
		s.NATS, err = devenv.StartNATS(devenv.NATSOptions{Port: cfg.NATSPort, StoreDir: cfg.StoreDir,
			SyncAlways: cfg.SyncAlways, ServerName: cfg.ServerName})
		if err != nil {
			return nil, fmt.Errorf("start NATS: %w", err)
		}
		s.url = s.NATS.URL()
	}
	if cfg.DatabaseURL != "" {
		if s.PG, err = devenv.ExternalPostgres(cfg.DatabaseURL); err != nil {
			return nil, &DatabaseURLError{err}
		}
	} else if s.PG, err = devenv.StartPostgres(devenv.PGOptions{}); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrStartPostgres, err)
	}
	if err := s.openBanks(ctx); err != nil {
		return nil, err
	}
	if s.NC, s.JS, err = s.connect(); err != nil {
		return nil, err
	}
	if err := orchestrator.EnsureStreams(ctx, s.JS, s.NS, cfg.Streams); err != nil {
		return nil, err
	}
	return s, nil
}

// ErrStartPostgres matches an error starting the throwaway cluster (no
// PostgreSQL installed, for one).
var ErrStartPostgres = errors.New("start PostgreSQL")

// DatabaseURLError is a Config.DatabaseURL that cannot be used.
type DatabaseURLError struct{ Err error }

func (e *DatabaseURLError) Error() string { return "database URL: " + e.Err.Error() }
func (e *DatabaseURLError) Unwrap() error { return e.Err }

// openBanks creates, opens, migrates and seeds each bank's database.
func (s *Stack) openBanks(ctx context.Context) error {
	suffix := ""
	if s.cfg.Databases == ThrowawayDatabases && s.PG.External() {
		var b [4]byte
		_, _ = rand.Read(b[:])
		suffix = "_" + hex.EncodeToString(b[:])
	}
	for _, b := range Banks {
		name := s.cfg.DatabaseNames[b] + suffix
		if err := s.createDatabase(ctx, name); err != nil {
			return err
		}
		url := s.PG.URL(name)
		pool, err := s.OpenPool(ctx, name, s.cfg.PoolSize)
		if err != nil {
			return fmt.Errorf("connect to database %s: %w", name, err)
		}
		s.DBNames[b], s.DBURLs[b], s.Pools[b] = name, url, pool
		if err := participants.Migrate(ctx, pool); err != nil {
			return fmt.Errorf("migrate %s: %w", name, err)
		}
		if err := bank.Migrate(ctx, pool); err != nil {
			return fmt.Errorf("migrate %s: %w", name, err)
		}
		if s.cfg.Seed != nil {
			if err := s.cfg.Seed(ctx, b, pool); err != nil {
				return fmt.Errorf("seed %s: %w", name, err)
			}
		}
	}
	return nil
}

// createDatabase creates database name as Config.Databases says.
func (s *Stack) createDatabase(ctx context.Context, name string) error {
	external := s.PG.External()
	if s.cfg.Databases == RecreateDatabases {
		_ = s.PG.DropDatabase(ctx, name)
	}
	err := s.PG.CreateDatabase(ctx, name)
	if err == nil {
		if external && s.cfg.Databases != KeepDatabases {
			s.dropped = append(s.dropped, name)
		}
		return nil
	}
	var pgErr *pgconn.PgError
	if external && s.cfg.Databases == KeepDatabases && errors.As(err, &pgErr) && pgErr.Code == "42P04" {
		return nil // an existing database is kept between runs
	}
	return &CreateDatabaseError{Name: name, URL: s.PG.URL(name), Err: err}
}

// CreateDatabaseError is a bank's database that could not be created. Its
// message leaves out URL, which may hold a password.
type CreateDatabaseError struct {
	Name, URL string
	Err       error
}

func (e *CreateDatabaseError) Error() string {
	return "create database " + e.Name + ": " + e.Err.Error()
}
func (e *CreateDatabaseError) Unwrap() error { return e.Err }

// OpenPool opens a pool of size connections on database, pinged once; the
// caller closes it.
func (s *Stack) OpenPool(ctx context.Context, database string, size int32) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(s.PG.URL(database))
	if err != nil {
		return nil, err
	}
	cfg.MaxConns = size
	if cfg.ConnConfig.ConnectTimeout == 0 || cfg.ConnConfig.ConnectTimeout > s.cfg.ConnectTimeout {
		cfg.ConnConfig.ConnectTimeout = s.cfg.ConnectTimeout
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return pool, nil
}

// URL is the NATS server's URL.
func (s *Stack) URL() string { return s.url }

// Connect opens a connection of its own (as a separate process would have),
// closed at Close.
func (s *Stack) Connect() (*nats.Conn, jetstream.JetStream, error) {
	nc, js, err := s.connect()
	if err != nil {
		return nil, nil, err
	}
	s.mu.Lock()
	s.conns = append(s.conns, nc)
	s.mu.Unlock()
	return nc, js, nil
}

func (s *Stack) connect() (*nats.Conn, jetstream.JetStream, error) {
	opts := append([]nats.Option{nats.MaxReconnects(-1), nats.ReconnectWait(100 * time.Millisecond),
		nats.Timeout(5 * time.Second)}, s.cfg.NATSOptions...)
	nc, err := nats.Connect(s.url, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("connect to NATS at %s: %w", s.url, err)
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, js, nil
}

// Service is a component running on its own goroutine until stopped.
type Service struct {
	name   string
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	err    error
}

// Go runs a component (a coordinator's or a participant's Run) until Stop
// or Close.
func (s *Stack) Go(name string, run func(context.Context) error) *Service {
	ctx, cancel := context.WithCancel(context.Background())
	sv := &Service{name: name, cancel: cancel, done: make(chan error, 1)}
	go func() { sv.done <- run(ctx) }()
	s.mu.Lock()
	s.services = append(s.services, sv)
	s.mu.Unlock()
	return sv
}

// Stop cancels the component and waits for it; it returns what it
// returned. Stopping again returns the same.
func (sv *Service) Stop() error {
	sv.once.Do(func() {
		sv.cancel()
		if err := <-sv.done; err != nil {
			sv.err = fmt.Errorf("%s: %w", sv.name, err)
		}
	})
	return sv.err
}

// Close stops every component, last started first, and removes what Start
// created. It reports the first errors.
func (s *Stack) Close() error {
	var errs []error
	s.mu.Lock()
	services, conns := s.services, s.conns
	s.services, s.conns = nil, nil
	s.mu.Unlock()
	for i := len(services) - 1; i >= 0; i-- {
		errs = append(errs, services[i].Stop())
	}
	for _, nc := range conns {
		nc.Close()
	}
	if s.NC != nil {
		s.NC.Close()
	}
	for _, p := range s.Pools {
		p.Close()
	}
	if s.PG != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		for _, name := range s.dropped {
			errs = append(errs, s.PG.DropDatabase(ctx, name))
		}
		cancel()
		errs = append(errs, s.PG.Stop())
	}
	if s.NATS != nil {
		s.NATS.Close()
	}
	return errors.Join(errs...)
}
