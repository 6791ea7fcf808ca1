package participants

import (
	"context"
	"embed"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/jetsaga/jetsaga/internal/sqlmigrate"
	"github.com/jetsaga/jetsaga/outbox"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// DB begins transactions; *pgxpool.Pool and *pgx.Conn implement it.
type DB interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// migrations is the barrier's migration set, checked at init.
var migrations = sqlmigrate.MustLoad(migrationFS, "migrations")

// LatestVersion is the newest barrier schema version this package knows.
func LatestVersion() int { return len(migrations) }

// MigrateOption adjusts [Migrate].
type MigrateOption func(*migrateOptions)

type migrateOptions struct {
	schema, table string
	outbox        *outbox.Outbox
	target        int // -1: latest
	skipOutbox    bool
}

// WithBarrierTable migrates the barrier table schema.table (schema "" is the
// connection's current schema) instead of the default one. Use the names of
// Config.BarrierSchema and Config.BarrierTable.
func WithBarrierTable(schema, table string) MigrateOption {
	return func(o *migrateOptions) { o.schema, o.table = schema, table }
}

// WithOutbox migrates the outbox table of ob instead of the default one.
func WithOutbox(ob *outbox.Outbox) MigrateOption {
	return func(o *migrateOptions) { o.outbox = ob }
}

// ToVersion migrates the barrier table up or down to version v instead of
// [LatestVersion]; version 0 drops it. It leaves the outbox table alone
// (use outbox.Migrate for that).
func ToVersion(v int) MigrateOption {
	return func(o *migrateOptions) { o.target = v; o.skipOutbox = true }
}

// Migrate brings the participant's tables to the latest schema: the outbox
// table (through outbox.Migrate; a participant needs it only when its
// handlers write events, see Config.RelayEvents) and the barrier table. The migrations are
// embedded in the binary and versioned in <barrier table>_migrations; each
// table migrates in one transaction under an advisory lock, so concurrent
// calls from several processes are safe, and a second call does nothing.
func Migrate(ctx context.Context, db DB, opts ...MigrateOption) error {
	o := migrateOptions{table: DefaultBarrierTable, target: -1}
	for _, opt := range opts {
		opt(&o)
	}
	if o.schema != "" {
		if err := validIdentifier("BarrierSchema", o.schema, maxIdentifier); err != nil {
			return err
		}
	}
	if err := validIdentifier("BarrierTable", o.table, maxIdentifier-len(migrationsSuffix)); err != nil {
		return err
	}
	if o.target > len(migrations) {
		return errConfig("ToVersion", "version %d does not exist, the latest is %d", o.target, len(migrations))
	}
	if !o.skipOutbox {
		var oopts []outbox.MigrateOption
		if o.outbox != nil {
			oopts = append(oopts, outbox.ForOutbox(o.outbox))
		}
		if err := outbox.Migrate(ctx, db, oopts...); err != nil {
			return fmt.Errorf("participants: migrate the outbox: %w", err)
		}
	}
	return newBarrier(o.schema, o.table).migrate(ctx, db, o.target)
}

// Migrate migrates the participant's own tables to the latest schema: its
// barrier table, and its Outbox's table when Config.RelayEvents is set; see
// [Migrate].
func (p *Participant) Migrate(ctx context.Context) error {
	opts := []MigrateOption{WithBarrierTable(p.cfg.BarrierSchema, p.cfg.BarrierTable), WithOutbox(p.cfg.Outbox)}
	if !p.cfg.RelayEvents {
		opts = append(opts, withoutOutbox())
	}
	return Migrate(ctx, p.cfg.Pool, opts...)
}

// withoutOutbox makes Migrate leave the outbox table alone.
func withoutOutbox() MigrateOption {
	return func(o *migrateOptions) { o.skipOutbox = true }
}

// migrate brings the barrier table to version target (negative: the
// latest).
func (b *barrier) migrate(ctx context.Context, db DB, target int) error {
	return sqlmigrate.Apply(ctx, db, sqlmigrate.Set{
		Name:       "participants",
		Migrations: migrations,
		Table:      b.qtable,
		Schema:     b.schema,
		Versions:   b.qversions,
		LockKey:    sqlmigrate.LockKey("jetsaga/participants/migrate\x00" + b.qtable),
		Render:     b.render,
	}, target)
}

// render fills the placeholders of a migration.
func (b *barrier) render(sql string) string {
	return strings.NewReplacer("{{table}}", b.qtable, "{{created_index}}", pgx.Identifier{b.table + "_created"}.Sanitize()).Replace(sql)
}
