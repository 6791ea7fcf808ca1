package participants

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

	"github.com/jetsaga/jetsaga/outbox"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// DB begins transactions; *pgxpool.Pool and *pgx.Conn implement it.
type DB interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// migration is one version of the barrier schema.
type migration struct {
	version  int
	name     string
	up, down string
}

var migrations = mustLoadMigrations()

var migrationName = regexp.MustCompile(`^(\d+)_([a-z0-9_]+)\.(up|down)\.sql$`)

func mustLoadMigrations() []migration {
	ms, err := loadMigrations(migrationFS, "migrations")
	if err != nil {
		panic(err)
	}
	return ms
}

// loadMigrations reads <version>_<name>.{up,down}.sql from dir; versions
// must run from 1 without gaps, each with both files.
func loadMigrations(fsys fs.FS, dir string) ([]migration, error) {
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, fmt.Errorf("participants: read migrations: %w", err)
	}
	byVersion := map[int]*migration{}
	for _, e := range entries {
		m := migrationName.FindStringSubmatch(e.Name())
		if m == nil {
			return nil, fmt.Errorf("participants: migration %q: name is not <version>_<name>.up.sql or .down.sql", e.Name())
		}
		v, _ := strconv.Atoi(m[1])
		body, err := fs.ReadFile(fsys, path.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("participants: read migration %q: %w", e.Name(), err)
		}
		mg := byVersion[v]
		if mg == nil {
			mg = &migration{version: v, name: m[2]}
			byVersion[v] = mg
		}
		if mg.name != m[2] {
			return nil, fmt.Errorf("participants: migration version %d has two names, %q and %q", v, mg.name, m[2])
		}
		if m[3] == "up" {
			mg.up = string(body)
		} else {
			mg.down = string(body)
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
			return nil, fmt.Errorf("participants: migration version %d is missing", i+1)
		case strings.TrimSpace(m.up) == "" || strings.TrimSpace(m.down) == "":
			return nil, fmt.Errorf("participants: migration %d_%s lacks its up or down file", m.version, m.name)
		}
	}
	return ms, nil
}

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
// table (through outbox.Migrate) and the barrier table. The migrations are
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

// Migrate migrates the participant's own tables (its Outbox, its barrier
// table) to the latest schema; see [Migrate].
func (p *Participant) Migrate(ctx context.Context) error {
	return Migrate(ctx, p.cfg.Pool, WithOutbox(p.cfg.Outbox), WithBarrierTable(p.cfg.BarrierSchema, p.cfg.BarrierTable))
}

func (b *barrier) lockKey() int64 {
	h := fnv.New64a()
	h.Write([]byte("jetsaga/participants/migrate\x00" + b.qtable))
	return int64(h.Sum64())
}

func (b *barrier) migrate(ctx context.Context, db DB, target int) error {
	if target < 0 {
		target = len(migrations)
	}
	return pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, b.lockKey()); err != nil {
			return fmt.Errorf("participants: migrate %s: advisory lock: %w", b.qtable, err)
		}
		if b.schema != "" {
			if _, err := tx.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS `+pgx.Identifier{b.schema}.Sanitize()); err != nil {
				return fmt.Errorf("participants: migrate %s: create schema: %w", b.qtable, err)
			}
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+b.qversions+` (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)`); err != nil {
			return fmt.Errorf("participants: migrate %s: create version table: %w", b.qtable, err)
		}
		var current int
		if err := tx.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM `+b.qversions).Scan(&current); err != nil {
			return fmt.Errorf("participants: migrate %s: read version: %w", b.qtable, err)
		}
		if current > len(migrations) {
			return fmt.Errorf("participants: migrate %s: the database is at version %d, this package knows up to %d (a newer release migrated it)",
				b.qtable, current, len(migrations))
		}
		for v := current + 1; v <= target; v++ {
			m := migrations[v-1]
			if _, err := tx.Exec(ctx, b.render(m.up)); err != nil {
				return fmt.Errorf("participants: migrate %s up to %d_%s: %w", b.qtable, v, m.name, err)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO `+b.qversions+` (version, name) VALUES ($1, $2)`, v, m.name); err != nil {
				return fmt.Errorf("participants: migrate %s: record version %d: %w", b.qtable, v, err)
			}
		}
		for v := current; v > target; v-- {
			m := migrations[v-1]
			if _, err := tx.Exec(ctx, b.render(m.down)); err != nil {
				return fmt.Errorf("participants: migrate %s down from %d_%s: %w", b.qtable, v, m.name, err)
			}
			if _, err := tx.Exec(ctx, `DELETE FROM `+b.qversions+` WHERE version = $1`, v); err != nil {
				return fmt.Errorf("participants: migrate %s: unrecord version %d: %w", b.qtable, v, err)
			}
		}
		return nil
	})
}

func (b *barrier) render(sql string) string {
	return strings.NewReplacer("{{table}}", b.qtable, "{{created_index}}", pgx.Identifier{b.table + "_created"}.Sanitize()).Replace(sql)
}
