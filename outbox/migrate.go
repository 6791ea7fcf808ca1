package outbox

import (
	"context"
	"embed"
	"fmt"
	"hash/fnv"
	"io/fs"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// migration is one schema version: SQL to reach it from the previous one
// (up) and to return (down).
type migration struct {
	version int
	name    string
	up      string
	down    string
}

// embedded is the package's migration set, checked at init.
var embedded = mustLoadMigrations(migrationFS, "migrations")

func mustLoadMigrations(fsys fs.FS, dir string) []migration {
	ms, err := loadMigrations(fsys, dir)
	if err != nil {
		panic(err)
	}
	return ms
}

var migrationFile = regexp.MustCompile(`^(\d+)_([a-z0-9_]+)\.(up|down)\.sql$`)

// loadMigrations reads <version>_<name>.{up,down}.sql files from dir. The
// versions must run 1, 2, 3... without gaps, each with both files.
func loadMigrations(fsys fs.FS, dir string) ([]migration, error) {
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, fmt.Errorf("outbox: read migrations: %w", err)
	}
	byVersion := map[int]*migration{}
	for _, e := range entries {
		sub := migrationFile.FindStringSubmatch(e.Name())
		if sub == nil || e.IsDir() {
			return nil, fmt.Errorf("outbox: migration file %q: name is not <version>_<name>.up.sql or .down.sql", e.Name())
		}
		v, err := strconv.Atoi(sub[1])
		if err != nil || v < 1 {
			return nil, fmt.Errorf("outbox: migration file %q: version must be a positive integer", e.Name())
		}
		body, err := fs.ReadFile(fsys, path.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("outbox: read migration %q: %w", e.Name(), err)
		}
		m := byVersion[v]
		if m == nil {
			m = &migration{version: v, name: sub[2]}
			byVersion[v] = m
		}
		if m.name != sub[2] {
			return nil, fmt.Errorf("outbox: migration version %d has two names, %q and %q", v, m.name, sub[2])
		}
		if sub[3] == "up" {
			m.up = string(body)
		} else {
			m.down = string(body)
		}
	}
	ms := make([]migration, 0, len(byVersion))
	for _, m := range byVersion {
		ms = append(ms, *m)
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	for i, m := range ms {
		switch {
		case m.version != i+1:
			return nil, fmt.Errorf("outbox: migration version %d is missing", i+1)
		case strings.TrimSpace(m.up) == "":
			return nil, fmt.Errorf("outbox: migration %d_%s has no up file", m.version, m.name)
		case strings.TrimSpace(m.down) == "":
			return nil, fmt.Errorf("outbox: migration %d_%s has no down file", m.version, m.name)
		}
	}
	return ms, nil
}

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
	var exists bool
	if err := q.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, o.qversions).Scan(&exists); err != nil {
		return 0, fmt.Errorf("outbox: look up %s: %w", o.qversions, err)
	}
	if !exists {
		return 0, nil
	}
	var v int
	if err := q.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM `+o.qversions).Scan(&v); err != nil {
		return 0, fmt.Errorf("outbox: read %s: %w", o.qversions, err)
	}
	return v, nil
}

// lockKey is the advisory lock key of migrations of this table.
func (o *Outbox) lockKey() int64 {
	h := fnv.New64a()
	h.Write([]byte("jetsaga/outbox/migrate\x00" + o.qtable))
	return int64(h.Sum64())
}

func (o *Outbox) migrate(ctx context.Context, db DB, ms []migration, target int) error {
	if target < 0 {
		target = len(ms)
	}
	if target > len(ms) {
		return errConfig("ToVersion", "version %d does not exist, the latest is %d", target, len(ms))
	}
	return pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, o.lockKey()); err != nil {
			return fmt.Errorf("outbox: migrate %s: advisory lock: %w", o.qtable, err)
		}
		if o.schema != "" {
			var exists bool
			if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)`, o.schema).Scan(&exists); err != nil {
				return fmt.Errorf("outbox: migrate %s: look up schema: %w", o.qtable, err)
			}
			if !exists {
				if _, err := tx.Exec(ctx, `CREATE SCHEMA `+pgx.Identifier{o.schema}.Sanitize()); err != nil {
					return fmt.Errorf("outbox: migrate %s: create schema: %w", o.qtable, err)
				}
			}
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+o.qversions+` (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)`); err != nil {
			return fmt.Errorf("outbox: migrate %s: create version table: %w", o.qtable, err)
		}
		var current int
		if err := tx.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM `+o.qversions).Scan(&current); err != nil {
			return fmt.Errorf("outbox: migrate %s: read version: %w", o.qtable, err)
		}
		if current > len(ms) && target >= len(ms) {
			return fmt.Errorf("%w: %s is at version %d, this package knows up to %d", ErrSchemaTooNew, o.qtable, current, len(ms))
		}
		for v := current + 1; v <= target; v++ {
			m := ms[v-1]
			if _, err := tx.Exec(ctx, o.render(m.up)); err != nil {
				return fmt.Errorf("outbox: migrate %s up to %d_%s: %w", o.qtable, m.version, m.name, err)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO `+o.qversions+` (version, name) VALUES ($1, $2)`, m.version, m.name); err != nil {
				return fmt.Errorf("outbox: migrate %s: record version %d: %w", o.qtable, m.version, err)
			}
		}
		for v := current; v > target; v-- {
			if v > len(ms) {
				return fmt.Errorf("%w: %s is at version %d, cannot migrate down from an unknown version", ErrSchemaTooNew, o.qtable, v)
			}
			m := ms[v-1]
			if _, err := tx.Exec(ctx, o.render(m.down)); err != nil {
				return fmt.Errorf("outbox: migrate %s down from %d_%s: %w", o.qtable, m.version, m.name, err)
			}
			if _, err := tx.Exec(ctx, `DELETE FROM `+o.qversions+` WHERE version = $1`, m.version); err != nil {
				return fmt.Errorf("outbox: migrate %s: unrecord version %d: %w", o.qtable, m.version, err)
			}
		}
		return nil
	})
}

// render fills the placeholders of a migration.
func (o *Outbox) render(sql string) string {
	return strings.ReplaceAll(sql, "{{table}}", o.qtable)
}
