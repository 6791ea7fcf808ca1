package outbox

import (
	"context"
	"embed"
	"fmt"
	"strings"

	"github.com/jetsaga/jetsaga/internal/sqlmigrate"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// embedded is the package's migration set, checked at init.
var embedded = sqlmigrate.MustLoad(migrationFS, "migrations")

// LatestVersion is the newest schema version this package knows.
func LatestVersion() int { return len(embedded) }

// MigrateOption adjusts [Migrate].
type MigrateOption func(*migrateOptions)

type migrateOptions struct {
	outbox *Outbox
	target int // -1: latest
}

// ForOutbox migrates the table of o instead of the default table.
func ForOutbox(o *Outbox) MigrateOption {
	return func(m *migrateOptions) { m.outbox = o }
}

// ToVersion migrates up or down to version v instead of [LatestVersion].
// Version 0 drops the outbox table and every row in it; the version table
// stays.
func ToVersion(v int) MigrateOption {
	return func(m *migrateOptions) { m.target = v }
}

// Migrate brings the outbox table (the default one, or the one chosen with
// [ForOutbox]) to the latest schema version, or the one chosen with
// [ToVersion]. It applies the package's embedded migrations in one
// transaction, recording each version in the table <table>_migrations next
// to the outbox table, and creates the schema if it is configured and
// missing. It is idempotent, and safe to run concurrently from several
// processes: a transaction-scoped advisory lock derived from the table name
// serialises them. A database at a version newer than [LatestVersion]
// yields an error matching [ErrSchemaTooNew] unless a lower version is
// requested explicitly.
func Migrate(ctx context.Context, db DB, opts ...MigrateOption) error {
	o := migrateOptions{outbox: defaultOutbox, target: -1}
	for _, opt := range opts {
		opt(&o)
	}
	if o.outbox == nil {
		return errConfig("ForOutbox", "outbox is nil")
	}
	return o.outbox.migrate(ctx, db, embedded, o.target)
}

// Migrate is [Migrate] for this outbox's table.
func (o *Outbox) Migrate(ctx context.Context, db DB, opts ...MigrateOption) error {
	return Migrate(ctx, db, append(opts, ForOutbox(o))...)
}

// Version returns the table's current schema version: 0 when it was never
// migrated.
func (o *Outbox) Version(ctx context.Context, q Querier) (int, error) {
	v, err := sqlmigrate.Version(ctx, q, o.qversions)
	if err != nil {
		return 0, fmt.Errorf("outbox: %w", err)
	}
	return v, nil
}

// migrate brings the table to version target (negative: the newest of ms).
func (o *Outbox) migrate(ctx context.Context, db DB, ms []sqlmigrate.Migration, target int) error {
	if target > len(ms) {
		return errConfig("ToVersion", "version %d does not exist, the latest is %d", target, len(ms))
	}
	return sqlmigrate.Apply(ctx, db, sqlmigrate.Set{
		Name:       "outbox",
		Migrations: ms,
		Table:      o.qtable,
		Schema:     o.schema,
		Versions:   o.qversions,
		LockKey:    sqlmigrate.LockKey("jetsaga/outbox/migrate\x00" + o.qtable),
		Render:     func(sql string) string { return strings.ReplaceAll(sql, "{{table}}", o.qtable) },
		TooNew:     ErrSchemaTooNew,
	}, target)
}
