package participants

import (
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	"github.com/jetsaga/jetsaga/events"
	"github.com/jetsaga/jetsaga/internal/commandloop"
	"github.com/jetsaga/jetsaga/internal/sqlmigrate"
	"github.com/jetsaga/jetsaga/outbox"
)

// Defaults of [Config].
const (
	DefaultConcurrency      = 16
	DefaultAckWait          = 30 * time.Second
	DefaultBarrierTable     = "jetsaga_barrier"
	DefaultBarrierRetention = 7 * 24 * time.Hour
	DefaultCleanupInterval  = time.Hour
	DefaultCleanupBatch     = 1000
)

// maxIdentifier is PostgreSQL's NAMEDATALEN-1.
const maxIdentifier = 63

// migrationsSuffix names the barrier's version table.
const migrationsSuffix = "_migrations"

// Config configures a [Participant]. Name, Pool and JetStream are required;
// every other field has a default.
type Config struct {
	// Name is the participant's name, as the saga plans name it; it selects
	// the commands (subject <prefix>.cmd.<Name>.*) and names the durable
	// consumer and the outcome subjects. Required; letters, digits, '-' and
	// '_' (events.ValidToken).
	Name string
	// Pool is the participant's own database: handlers, the barrier and the
	// outbox (with RelayEvents) all use it. Required.
	Pool *pgxpool.Pool
	// JetStream consumes the commands and publishes the outcomes (and,
	// with RelayEvents, the outbox rows). Required. The streams must exist (the orchestrator's
	// deployment creates them); the participant creates or updates only its
	// durable consumer.
	JetStream jetstream.JetStream
	// Namespace selects the subjects and streams. Default events.Default()
	// (prefix "saga").
	Namespace events.Namespace
	// Concurrency is the number of commands handled at the same time, each
	// in its own transaction (so at most that many pool connections).
	// Default [DefaultConcurrency].
	Concurrency int
	// AckWait is how long JetStream waits for an ack before it delivers a
	// command again. Long handlers are kept alive with progress acks every
	// AckWait/3. Default [DefaultAckWait]; at least 100ms.
	AckWait time.Duration
	// MaxAckPending bounds the commands delivered and not yet acked. Default
	// 4 × Concurrency; at least Concurrency.
	MaxAckPending int
	// AtomicBatchMin turns on group commit of outcomes: when at least this
	// many commands finish while the previous outcomes are being stored,
	// their outcomes are stored as one JetStream atomic batch. Default 0:
	// each outcome is published on its own (on one 2-core machine batches
	// cost more than they save; README › Performance).
	AtomicBatchMin int
	// Outbox is the outbox table that handlers may write their own events
	// to, inside the step's transaction (Outbox.Write with the handler's
	// tx): an event then exists if and only if the step committed. Outcomes
	// do not use it: the barrier row records them and the participant
	// publishes them after the commit. Default: the outbox package's
	// default table (jetsaga_outbox).
	Outbox *outbox.Outbox
	// RelayEvents makes the participant relay Outbox, for handlers that
	// publish their own events. Run then runs an outbox relay, which polls
	// the table every Relay.PollInterval and holds one LISTEN connection
	// outside the pool (unless Relay.DisableListen); after every step whose
	// handler wrote outbox rows (through the tx it was given, or a nested
	// transaction of it) and committed, the relay is woken in memory, so
	// the event does not wait for the poll. Participant.Migrate then also
	// creates the outbox table.
	//
	// Default false: no relay — no LISTEN connection, no polling — and
	// Participant.Migrate leaves the outbox table alone. Leave it false
	// when a relay runs elsewhere (its process migrates the table); a
	// step that wrote rows still calls Outbox.Notify after its commit, so
	// configure Outbox with NotifyDB for that relay to learn of them
	// quickly.
	RelayEvents bool
	// Relay tunes the relay Run runs when RelayEvents is set; its Outbox
	// field is ignored (Outbox above is used). Default: the outbox
	// package's defaults.
	Relay outbox.RelayConfig
	// BarrierSchema is the schema of the barrier table. Default "": the
	// connection's current schema. Lower-case letters, digits and '_'.
	BarrierSchema string
	// BarrierTable is the barrier table's name. Default
	// [DefaultBarrierTable]. Lower-case letters, digits and '_', at most 52
	// bytes. Migrate with the same names ([WithBarrierTable]).
	BarrierTable string
	// BarrierRetention is how long barrier rows are kept. A row deleted too
	// early lets a very late duplicate or compensation through, so keep it
	// longer than any saga lives and than the commands stream's max age.
	// Default [DefaultBarrierRetention] (0 selects it); negative disables
	// the cleanup.
	BarrierRetention time.Duration
	// CleanupInterval is the pause between two cleanups of old barrier
	// rows. Default [DefaultCleanupInterval].
	CleanupInterval time.Duration
	// CleanupBatch is the most rows one cleanup statement deletes; a
	// cleanup repeats it until fewer are found. Default
	// [DefaultCleanupBatch].
	CleanupBatch int
	// ShutdownTimeout bounds the wait for handlers in flight once Run's
	// context is done: after it their context is cancelled (their
	// transactions roll back and the commands are delivered again later).
	// Default AckWait.
	ShutdownTimeout time.Duration
	// Logger receives the participant's logs. Default slog.Default().
	Logger *slog.Logger
	// Metrics, if set, receives the participant's Prometheus metrics: its
	// steps, outcomes, barrier decisions, rejections and redeliveries, its
	// consumer's pending counts and, with RelayEvents, its outbox's
	// backlog. One [Metrics] (NewMetrics) serves every participant of a
	// process. Default nil: no metrics.
	Metrics *Metrics
	// TracerProvider, if set, records a span for each command handled, a
	// child of the coordinator's span that published it (the command's
	// traceparent header), with the barrier's decision as an attribute;
	// the outcome carries the span's context. Default nil: no spans, and
	// no cost.
	TracerProvider trace.TracerProvider
}

// withDefaults validates cfg and fills in its defaults.
func (cfg Config) withDefaults() (Config, error) {
	if err := events.ValidToken(cfg.Name); err != nil {
		return cfg, errConfig("Name", "%q %v", cfg.Name, err)
	}
	if cfg.Pool == nil {
		return cfg, errConfig("Pool", "is nil")
	}
	if cfg.JetStream == nil {
		return cfg, errConfig("JetStream", "is nil")
	}
	cfg.Namespace = cfg.Namespace.OrDefault()
	loop := cfg.settings()
	if err := loop.Fill(DefaultConcurrency, DefaultAckWait); err != nil {
		return cfg, errConfig(err.Field, "%s", err.Problem)
	}
	cfg.Concurrency, cfg.AckWait, cfg.MaxAckPending, cfg.ShutdownTimeout = loop.Concurrency, loop.AckWait, loop.MaxAckPending, loop.ShutdownTimeout
	if cfg.AtomicBatchMin < 0 || cfg.AtomicBatchMin == 1 {
		return cfg, errConfig("AtomicBatchMin", "is %d, must be 0 (no group commit) or at least 2", cfg.AtomicBatchMin)
	}
	if cfg.Outbox == nil {
		o, err := outbox.New(outbox.Config{})
		if err != nil {
			return cfg, errConfig("Outbox", "%v", err)
		}
		cfg.Outbox = o
	}
	if cfg.BarrierSchema != "" {
		if err := validIdentifier("BarrierSchema", cfg.BarrierSchema, maxIdentifier); err != nil {
			return cfg, err
		}
	}
	if cfg.BarrierTable == "" {
		cfg.BarrierTable = DefaultBarrierTable
	}
	if err := validIdentifier("BarrierTable", cfg.BarrierTable, maxIdentifier-len(migrationsSuffix)); err != nil {
		return cfg, err
	}
	if cfg.BarrierRetention == 0 {
		cfg.BarrierRetention = DefaultBarrierRetention
	}
	switch {
	case cfg.CleanupInterval < 0:
		return cfg, errConfig("CleanupInterval", "is negative (%s)", cfg.CleanupInterval)
	case cfg.CleanupInterval == 0:
		cfg.CleanupInterval = DefaultCleanupInterval
	}
	switch {
	case cfg.CleanupBatch < 0:
		return cfg, errConfig("CleanupBatch", "is negative (%d)", cfg.CleanupBatch)
	case cfg.CleanupBatch == 0:
		cfg.CleanupBatch = DefaultCleanupBatch
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return cfg, nil
}

// validIdentifier checks a plain lower-case SQL identifier; the error names
// field.
func validIdentifier(field, s string, limit int) error {
	if err := sqlmigrate.ValidIdentifier(s, limit); err != nil {
		return errConfig(field, "%v", err)
	}
	return nil
}

// settings are the consumer settings in cfg.
func (cfg Config) settings() commandloop.Settings {
	return commandloop.Settings{Concurrency: cfg.Concurrency, MaxAckPending: cfg.MaxAckPending,
		AckWait: cfg.AckWait, ShutdownTimeout: cfg.ShutdownTimeout}
}
