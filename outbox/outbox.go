package outbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/jetsaga/jetsaga/internal/sqlmigrate"
)

// DefaultTable is the table used when Config.Table is empty: created in the
// connection's current schema (the first schema of search_path).
const DefaultTable = "jetsaga_outbox"

// DefaultNotifyInterval is the default Config.NotifyInterval.
const DefaultNotifyInterval = 25 * time.Millisecond

// maxIdentifier is PostgreSQL's NAMEDATALEN-1: longer names are truncated.
const maxIdentifier = 63

// migrationsSuffix names the version table: <table>_migrations.
const migrationsSuffix = "_migrations"

// DB begins transactions; *pgxpool.Pool and *pgx.Conn implement it.
type DB interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// Execer executes a statement; *pgxpool.Pool and *pgx.Conn implement it.
type Execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// Querier runs a query returning one row; *pgxpool.Pool, *pgx.Conn and
// pgx.Tx implement it.
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// TxObserver is an optional capability of the pgx.Tx given to [Outbox.Write]:
// a transaction wrapper that implements it learns which outboxes were
// written through it, so that it can wake their relays (Outbox.Notify) once
// it commits. The participants runtime's step transactions implement it: an
// event a handler writes is relayed as soon as the step commits.
type TxObserver interface {
	// OutboxWritten is called by Write after it inserted rows into o's
	// table through the transaction (they are not committed yet).
	OutboxWritten(o *Outbox)
}

// Config configures an [Outbox]. The zero value is valid: the table
// jetsaga_outbox in the current schema, a 1 MiB payload limit, and wakes for
// relays in this process only.
type Config struct {
	// Schema holds the table. Default "": the connection's current schema
	// (search_path). Lower-case letters, digits and '_', starting with a
	// letter or '_', at most 63 bytes.
	Schema string
	// Table is the outbox table's name. Default [DefaultTable]. Same
	// character rules as Schema, at most 52 bytes (the version table is
	// named <Table>_migrations). Two services sharing one database use two
	// tables (or two schemas).
	Table string
	// MaxPayload is the largest accepted Message.Data, in bytes. Default
	// [DefaultMaxPayload]. Keep it below the NATS server's max_payload
	// minus the headers, or the relay cannot publish the row.
	MaxPayload int
	// Channel is the PostgreSQL NOTIFY channel that relays LISTEN on and
	// that Notify signals when NotifyDB is set. Default: Table, or
	// Schema.Table when Schema is set. At most 63 bytes, no NUL.
	Channel string
	// NotifyDB, when set, makes [Outbox.Notify] also send a rate-limited
	// pg_notify through it (at most one per NotifyInterval for this
	// Outbox, never inside the business transaction), so that relays in
	// other processes wake up. Default nil: Notify only wakes relays of
	// this process that were created with this Outbox. A *pgxpool.Pool
	// implements it. Call [Outbox.Close] when done with such an Outbox.
	NotifyDB Execer
	// NotifyInterval is the least time between two pg_notify calls; a
	// Notify within the interval is folded into one sent at its end.
	// Default [DefaultNotifyInterval]. Only used with NotifyDB.
	NotifyInterval time.Duration
	// OnNotifyError, if set, receives errors of the background pg_notify.
	// Such errors lose nothing: relays poll as a fallback. Default: they
	// are dropped.
	OnNotifyError func(error)
}

// Outbox writes messages into one outbox table inside the caller's
// transactions and wakes the relays after commit. It is safe for concurrent
// use.
type Outbox struct {
	schema     string
	table      string
	qtable     string // quoted, schema-qualified when a schema is set
	qversions  string // quoted version table
	channel    string
	maxPayload int

	insertOne  string
	insertMany string

	notifier *notifier

	mu     sync.Mutex
	relays map[*Relay]struct{}
}

// defaultOutbox serves the package-level functions.
var defaultOutbox = mustNew(Config{})

func mustNew(cfg Config) *Outbox {
	o, err := New(cfg)
	if err != nil {
		panic(err)
	}
	return o
}

// New returns an Outbox for the table cfg names. It does not touch the
// database; run [Migrate] to create the table.
func New(cfg Config) (*Outbox, error) {
	if cfg.Table == "" {
		cfg.Table = DefaultTable
	}
	if cfg.Schema != "" {
		if err := validIdentifier("Schema", cfg.Schema, maxIdentifier); err != nil {
			return nil, err
		}
	}
	if err := validIdentifier("Table", cfg.Table, maxIdentifier-len(migrationsSuffix)); err != nil {
		return nil, err
	}
	switch {
	case cfg.MaxPayload < 0:
		return nil, errConfig("MaxPayload", "is negative (%d)", cfg.MaxPayload)
	case cfg.MaxPayload == 0:
		cfg.MaxPayload = DefaultMaxPayload
	}
	switch {
	case cfg.NotifyInterval < 0:
		return nil, errConfig("NotifyInterval", "is negative (%s)", cfg.NotifyInterval)
	case cfg.NotifyInterval == 0:
		cfg.NotifyInterval = DefaultNotifyInterval
	}
	if cfg.Channel == "" {
		cfg.Channel = cfg.Table
		if cfg.Schema != "" {
			cfg.Channel = cfg.Schema + "." + cfg.Table
		}
	}
	switch {
	case len(cfg.Channel) > maxIdentifier:
		return nil, errConfig("Channel", "is %d bytes long, the limit is %d; set a shorter Channel", len(cfg.Channel), maxIdentifier)
	case containsNUL(cfg.Channel):
		return nil, errConfig("Channel", "contains a NUL byte")
	}

	o := &Outbox{
		schema:     cfg.Schema,
		table:      cfg.Table,
		channel:    cfg.Channel,
		maxPayload: cfg.MaxPayload,
		relays:     make(map[*Relay]struct{}),
	}
	o.qtable = o.ident(cfg.Table).Sanitize()
	o.qversions = o.ident(cfg.Table + migrationsSuffix).Sanitize()
	o.insertOne = `INSERT INTO ` + o.qtable + ` (msg_id, subject, headers, payload) VALUES ($1, $2, ($3::text)::jsonb, $4)`
	o.insertMany = `INSERT INTO ` + o.qtable + ` (msg_id, subject, headers, payload)
SELECT m, s, h::jsonb, p FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[]) WITH ORDINALITY AS u(m, s, h, p, n)
ORDER BY n`
	if cfg.NotifyDB != nil {
		o.notifier = &notifier{db: cfg.NotifyDB, channel: cfg.Channel, interval: cfg.NotifyInterval, onError: cfg.OnNotifyError}
	}
	return o, nil
}

// ident returns the identifier of name in the outbox's schema.
func (o *Outbox) ident(name string) pgx.Identifier {
	if o.schema == "" {
		return pgx.Identifier{name}
	}
	return pgx.Identifier{o.schema, name}
}

// Table returns the quoted, possibly schema-qualified, table name, ready to
// use in SQL.
func (o *Outbox) Table() string { return o.qtable }

// Channel returns the NOTIFY channel relays of this table listen on.
func (o *Outbox) Channel() string { return o.channel }

// validIdentifier checks a plain lower-case SQL identifier; the error names
// field.
func validIdentifier(field, s string, limit int) error {
	if err := sqlmigrate.ValidIdentifier(s, limit); err != nil {
		return errConfig(field, "%v", err)
	}
	return nil
}

func containsNUL(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == 0 {
			return true
		}
	}
	return false
}

// Write inserts msgs into the default table (jetsaga_outbox in the current
// schema) within tx, in one round trip. See [Outbox.Write].
func Write(ctx context.Context, tx pgx.Tx, msgs ...Message) error {
	return defaultOutbox.Write(ctx, tx, msgs...)
}

// Write inserts msgs into the outbox table within the caller's transaction
// tx, in one round trip, keeping their order: one relay publishes them in
// this order. The messages are validated first; if any is invalid, nothing
// is written and the error is a [*ValidationError] naming the message's
// index and field. An ID already pending in the table yields an error
// matching [ErrDuplicateID] (and the transaction is aborted). Writing no
// message does nothing.
//
// Write does not wake the relay: call [Outbox.Notify] after the
// transaction commits, or use [Outbox.Tx], which does both. If tx
// implements [TxObserver], Write tells it about the rows it inserted.
func (o *Outbox) Write(ctx context.Context, tx pgx.Tx, msgs ...Message) error {
	if len(msgs) == 0 {
		return nil
	}
	headers := make([]pgtype.Text, len(msgs))
	for i := range msgs {
		if err := msgs[i].validate(i, o.maxPayload); err != nil {
			return err
		}
		if len(msgs[i].Header) > 0 {
			b, err := json.Marshal(msgs[i].Header)
			if err != nil {
				return &ValidationError{Index: i, Field: "Header", Problem: err.Error()}
			}
			headers[i] = pgtype.Text{String: string(b), Valid: true}
		}
	}
	var err error
	if len(msgs) == 1 {
		m := &msgs[0]
		_, err = tx.Exec(ctx, o.insertOne, m.ID, m.Subject, headers[0], nonNil(m.Data))
	} else {
		seen := make(map[string]int, len(msgs))
		ids := make([]string, len(msgs))
		subjects := make([]string, len(msgs))
		payloads := make([][]byte, len(msgs))
		for i := range msgs {
			if j, dup := seen[msgs[i].ID]; dup {
				return &ValidationError{Index: i, Field: "ID", Problem: fmt.Sprintf("%q repeats the ID of message %d", msgs[i].ID, j)}
			}
			seen[msgs[i].ID] = i
			ids[i], subjects[i], payloads[i] = msgs[i].ID, msgs[i].Subject, nonNil(msgs[i].Data)
		}
		_, err = tx.Exec(ctx, o.insertMany, ids, subjects, headers, payloads)
	}
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "23505" && pgErr.TableName == o.table {
			return fmt.Errorf("%w in %s: %s: %w", ErrDuplicateID, o.qtable, pgErr.Detail, err)
		}
		return fmt.Errorf("outbox: insert into %s: %w", o.qtable, err)
	}
	if obs, ok := tx.(TxObserver); ok {
		obs.OutboxWritten(o)
	}
	return nil
}

// nonNil maps a nil payload to an empty one: the column is NOT NULL.
func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// Tx runs fn in a transaction begun on db, commits it if fn returns nil
// (rolls it back otherwise), and after a successful commit calls
// [Outbox.Notify]. fn writes its business rows and its messages with
// [Outbox.Write] on the same tx.
func (o *Outbox) Tx(ctx context.Context, db DB, fn func(pgx.Tx) error) error {
	if err := pgx.BeginFunc(ctx, db, fn); err != nil {
		return err
	}
	o.Notify()
	return nil
}

// Notify tells relays that rows were committed. Call it after the commit
// (never inside the transaction: a relay woken before the commit finds
// nothing). It never blocks on I/O: it wakes every running relay of this
// process that was created with this Outbox, and, when Config.NotifyDB is
// set, schedules a rate-limited pg_notify for relays in other processes.
func (o *Outbox) Notify() {
	o.mu.Lock()
	for r := range o.relays {
		r.Wake()
	}
	o.mu.Unlock()
	if o.notifier != nil {
		o.notifier.notify()
	}
}

// Close stops the background pg_notify of an Outbox configured with
// NotifyDB, waiting for one in progress; a notify still pending is dropped
// (relays poll as a fallback). After Close, Notify only wakes in-process
// relays. Close is a no-op for other Outboxes.
func (o *Outbox) Close() {
	if o.notifier != nil {
		o.notifier.close()
	}
}

func (o *Outbox) register(r *Relay) {
	o.mu.Lock()
	o.relays[r] = struct{}{}
	o.mu.Unlock()
}

func (o *Outbox) unregister(r *Relay) {
	o.mu.Lock()
	delete(o.relays, r)
	o.mu.Unlock()
}

// Pending describes the rows waiting in an outbox table.
type Pending struct {
	// Rows is the number of rows in the table (published rows are deleted).
	Rows int64
	// OldestAge is how long ago the oldest row's transaction started; 0
	// when the table is empty.
	OldestAge time.Duration
}

// Pending counts the rows waiting in the table, for monitoring and tests.
// It scans the table: do not call it at high frequency on a large backlog.
func (o *Outbox) Pending(ctx context.Context, q Querier) (Pending, error) {
	var p Pending
	var ageMicros int64
	err := q.QueryRow(ctx, `SELECT count(*), coalesce((extract(epoch FROM clock_timestamp() - min(created_at)) * 1e6)::bigint, 0) FROM `+o.qtable).
		Scan(&p.Rows, &ageMicros)
	if err != nil {
		return Pending{}, fmt.Errorf("outbox: count pending rows of %s: %w", o.qtable, err)
	}
	p.OldestAge = time.Duration(ageMicros) * time.Microsecond
	return p, nil
}
