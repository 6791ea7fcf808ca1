package sqlmigrate

import (
	"context"
	"errors"
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

// Migration is one schema version: the SQL that reaches it from the
// previous version (Up) and the SQL that returns to the previous one (Down).
type Migration struct {
	// Version counts from 1.
	Version int
	// Name is the file name's <name> part, recorded with the version.
	Name string
	// Up and Down are the files' contents, placeholders unfilled.
	Up, Down string
}

// ErrTooNew is matched by the error [Apply] returns when the database is at
// a version beyond the set's newest: a newer release migrated it.
var ErrTooNew = errors.New("database schema is newer than this package")

// Latest, as the target of [Apply], means the set's newest version (so
// does any negative target).
const Latest = -1

var fileName = regexp.MustCompile(`^(\d+)_([a-z0-9_]+)\.(up|down)\.sql$`)

// Load reads the migration files of dir in fsys, named
// <version>_<name>.up.sql and <version>_<name>.down.sql, and returns them
// in version order. It fails on any other entry, on versions that do not
// run 1, 2, 3... without gaps, on a version without both files or with two
// names, and on an empty file.
func Load(fsys fs.FS, dir string) ([]Migration, error) {
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, fmt.Errorf("sqlmigrate: read migrations: %w", err)
	}
	byVersion := map[int]*Migration{}
	for _, e := range entries {
		sub := fileName.FindStringSubmatch(e.Name())
		if sub == nil || e.IsDir() {
			return nil, fmt.Errorf("sqlmigrate: migration file %q: name is not <version>_<name>.up.sql or .down.sql", e.Name())
		}
		v, err := strconv.Atoi(sub[1])
		if err != nil || v < 1 {
			return nil, fmt.Errorf("sqlmigrate: migration file %q: version must be a positive integer", e.Name())
		}
		body, err := fs.ReadFile(fsys, path.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("sqlmigrate: read migration %q: %w", e.Name(), err)
		}
		m := byVersion[v]
		if m == nil {
			m = &Migration{Version: v, Name: sub[2]}
			byVersion[v] = m
		}
		if m.Name != sub[2] {
			return nil, fmt.Errorf("sqlmigrate: migration version %d has two names, %q and %q", v, m.Name, sub[2])
		}
		if sub[3] == "up" {
			m.Up = string(body)
		} else {
			m.Down = string(body)
		}
	}
	ms := make([]Migration, 0, len(byVersion))
	for _, m := range byVersion {
		ms = append(ms, *m)
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].Version < ms[j].Version })
	for i, m := range ms {
		switch {
		case m.Version != i+1:
			return nil, fmt.Errorf("sqlmigrate: migration version %d is missing", i+1)
		case strings.TrimSpace(m.Up) == "":
			return nil, fmt.Errorf("sqlmigrate: migration %d_%s has no up file (or it is empty)", m.Version, m.Name)
		case strings.TrimSpace(m.Down) == "":
			return nil, fmt.Errorf("sqlmigrate: migration %d_%s has no down file (or it is empty)", m.Version, m.Name)
		}
	}
	return ms, nil
}

// MustLoad is [Load] for a set embedded in the binary: it panics if the
// set is bad, which a test of the embedding package then reports.
func MustLoad(fsys fs.FS, dir string) []Migration {
	ms, err := Load(fsys, dir)
	if err != nil {
		panic(err)
	}
	return ms
}

// LockKey derives an advisory lock key from s (its 64-bit FNV-1a hash).
// Derive it from something that names the table, so that migrations of
// different tables do not wait for each other.
func LockKey(s string) int64 {
	h := fnv.New64a()
	h.Write([]byte(s))
	return int64(h.Sum64())
}

// DB begins transactions; *pgxpool.Pool and *pgx.Conn implement it.
type DB interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// Querier runs a query that returns one row; *pgxpool.Pool, *pgx.Conn and
// pgx.Tx implement it.
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Set is one table's migrations and where [Apply] records them.
type Set struct {
	// Name says who migrates; it prefixes every error ("outbox").
	// Required.
	Name string
	// Migrations are the versions, as [Load] returns them.
	Migrations []Migration
	// Table is the quoted table the set manages; it appears in errors only.
	// Required.
	Table string
	// Schema, unquoted, is created if it does not exist (looked up first,
	// so that a role without CREATE on the database can migrate into an
	// existing schema). "" creates nothing.
	Schema string
	// Versions is the quoted, possibly schema-qualified, table that records
	// the applied versions; it is created if it does not exist. Required.
	Versions string
	// LockKey is the transaction-scoped advisory lock taken first; see
	// [LockKey].
	LockKey int64
	// Render fills the placeholders of each file before it runs. Default:
	// the file as it is.
	Render func(sql string) string
	// TooNew, if not nil, is a sentinel the too-new error matches besides
	// [ErrTooNew], for packages that export their own.
	TooNew error
}

func (s *Set) validate() error {
	switch {
	case s.Name == "":
		return errors.New("sqlmigrate: Set.Name is empty")
	case s.Table == "":
		return fmt.Errorf("sqlmigrate: %s: Set.Table is empty", s.Name)
	case s.Versions == "":
		return fmt.Errorf("sqlmigrate: %s: Set.Versions is empty", s.Name)
	}
	for i, m := range s.Migrations {
		if m.Version != i+1 {
			return fmt.Errorf("sqlmigrate: %s: Set.Migrations[%d] is version %d, want %d (use Load)", s.Name, i, m.Version, i+1)
		}
	}
	return nil
}

func (s *Set) render(sql string) string {
	if s.Render == nil {
		return sql
	}
	return s.Render(sql)
}

// tooNewError reports a database beyond the set's newest version.
type tooNewError struct {
	name, table     string
	current, latest int
	sentinel        error
}

func (e *tooNewError) Error() string {
	return fmt.Sprintf("%s: migrate %s: %v: the database is at version %d, this package knows up to %d (a newer release migrated it)",
		e.name, e.table, ErrTooNew, e.current, e.latest)
}

func (e *tooNewError) Is(target error) bool {
	return target == ErrTooNew || (e.sentinel != nil && target == e.sentinel)
}

// Apply migrates set's table up or down to version target ([Latest], or
// any negative number, for the newest) in one transaction; see the package documentation. It is
// idempotent, and concurrent calls with the same LockKey run one after the
// other. A target beyond the newest version is an error; a database beyond
// it yields an error matching [ErrTooNew] whatever the target.
func Apply(ctx context.Context, db DB, set Set, target int) error {
	if err := set.validate(); err != nil {
		return err
	}
	latest := len(set.Migrations)
	if target < 0 {
		target = latest
	}
	if target > latest {
		return fmt.Errorf("%s: migrate %s: version %d does not exist, the latest is %d", set.Name, set.Table, target, latest)
	}
	return pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, set.LockKey); err != nil {
			return fmt.Errorf("%s: migrate %s: advisory lock: %w", set.Name, set.Table, err)
		}
		if set.Schema != "" {
			var exists bool
			if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)`, set.Schema).Scan(&exists); err != nil {
				return fmt.Errorf("%s: migrate %s: look up schema: %w", set.Name, set.Table, err)
			}
			if !exists {
				if _, err := tx.Exec(ctx, `CREATE SCHEMA `+pgx.Identifier{set.Schema}.Sanitize()); err != nil {
					return fmt.Errorf("%s: migrate %s: create schema: %w", set.Name, set.Table, err)
				}
			}
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+set.Versions+` (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)`); err != nil {
			return fmt.Errorf("%s: migrate %s: create version table: %w", set.Name, set.Table, err)
		}
		var current int
		if err := tx.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM `+set.Versions).Scan(&current); err != nil {
			return fmt.Errorf("%s: migrate %s: read version: %w", set.Name, set.Table, err)
		}
		if current > latest {
			return &tooNewError{name: set.Name, table: set.Table, current: current, latest: latest, sentinel: set.TooNew}
		}
		for v := current + 1; v <= target; v++ {
			m := set.Migrations[v-1]
			if _, err := tx.Exec(ctx, set.render(m.Up)); err != nil {
				return fmt.Errorf("%s: migrate %s up to %d_%s: %w", set.Name, set.Table, m.Version, m.Name, err)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO `+set.Versions+` (version, name) VALUES ($1, $2)`, m.Version, m.Name); err != nil {
				return fmt.Errorf("%s: migrate %s: record version %d: %w", set.Name, set.Table, m.Version, err)
			}
		}
		for v := current; v > target; v-- {
			m := set.Migrations[v-1]
			if _, err := tx.Exec(ctx, set.render(m.Down)); err != nil {
				return fmt.Errorf("%s: migrate %s down from %d_%s: %w", set.Name, set.Table, m.Version, m.Name, err)
			}
			if _, err := tx.Exec(ctx, `DELETE FROM `+set.Versions+` WHERE version = $1`, m.Version); err != nil {
				return fmt.Errorf("%s: migrate %s: unrecord version %d: %w", set.Name, set.Table, m.Version, err)
			}
		}
		return nil
	})
}

// Version returns the newest version recorded in the quoted versions
// table: 0 when the table does not exist.
func Version(ctx context.Context, q Querier, versions string) (int, error) {
	var exists bool
	if err := q.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, versions).Scan(&exists); err != nil {
		return 0, fmt.Errorf("look up %s: %w", versions, err)
	}
	if !exists {
		return 0, nil
	}
	var v int
	if err := q.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM `+versions).Scan(&v); err != nil {
		return 0, fmt.Errorf("read %s: %w", versions, err)
	}
	return v, nil
}
