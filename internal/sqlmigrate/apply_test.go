package sqlmigrate

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/jetsaga/jetsaga/internal/testenv"
)

const (
	waitTotal = 30 * time.Second
	waitStep  = 10 * time.Millisecond
)

// threeVersions is a set for a table "{{table}}": version 1 creates it,
// 2 adds column c, 3 adds d and e. None of the files is idempotent, so a
// version applied twice fails.
var threeVersions = MustLoad(fstest.MapFS{
	"m/0001_base.up.sql":       {Data: []byte(`CREATE TABLE {{table}} (id int)`)},
	"m/0001_base.down.sql":     {Data: []byte(`DROP TABLE {{table}}`)},
	"m/0002_col.up.sql":        {Data: []byte(`ALTER TABLE {{table}} ADD COLUMN c text`)},
	"m/0002_col.down.sql":      {Data: []byte(`ALTER TABLE {{table}} DROP COLUMN c`)},
	"m/0003_two_cols.up.sql":   {Data: []byte(`ALTER TABLE {{table}} ADD COLUMN d int; ALTER TABLE {{table}} ADD COLUMN e int`)},
	"m/0003_two_cols.down.sql": {Data: []byte(`ALTER TABLE {{table}} DROP COLUMN e; ALTER TABLE {{table}} DROP COLUMN d`)},
}, "m")

// testSet returns a set managing schema.table (schema "" for the current
// one) with the migrations ms.
func testSet(schema, table string, ms []Migration) Set {
	ident := func(name string) pgx.Identifier {
		if schema == "" {
			return pgx.Identifier{name}
		}
		return pgx.Identifier{schema, name}
	}
	qtable := ident(table).Sanitize()
	return Set{
		Name:       "test",
		Migrations: ms,
		Table:      qtable,
		Schema:     schema,
		Versions:   ident(table + "_migrations").Sanitize(),
		LockKey:    LockKey("sqlmigrate/test\x00" + qtable),
		Render:     func(sql string) string { return strings.ReplaceAll(sql, "{{table}}", qtable) },
	}
}

func version(t *testing.T, pool *pgxpool.Pool, set Set) int {
	t.Helper()
	v, err := Version(t.Context(), pool, set.Versions)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// columns returns the columns of schema.table in order, none if it does
// not exist.
func columns(t *testing.T, pool *pgxpool.Pool, schema, table string) []string {
	t.Helper()
	if schema == "" {
		schema = "public"
	}
	rows, err := pool.Query(t.Context(), `SELECT column_name FROM information_schema.columns
WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position`, schema, table)
	if err != nil {
		t.Fatal(err)
	}
	cols, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return cols
}

// wantColumns maps a version of threeVersions to its table's columns.
var wantColumns = map[int]string{0: "", 1: "id", 2: "id c", 3: "id c d e"}

func TestApplyUpAndDown(t *testing.T) {
	t.Parallel()
	pool := testenv.Postgres(t)
	set := testSet("", "t", threeVersions)
	if v := version(t, pool, set); v != 0 {
		t.Fatalf("fresh database at version %d", v)
	}
	for _, target := range []int{2, 3, 1, 3, 0, 1, Latest, 0} {
		if err := Apply(t.Context(), pool, set, target); err != nil {
			t.Fatalf("to %d: %v", target, err)
		}
		want := target
		if target == Latest {
			want = len(threeVersions)
		}
		if v := version(t, pool, set); v != want {
			t.Fatalf("to %d: version %d, want %d", target, v, want)
		}
		if cols := strings.Join(columns(t, pool, "", "t"), " "); cols != wantColumns[want] {
			t.Fatalf("to %d: columns %q, want %q", target, cols, wantColumns[want])
		}
	}
}

func TestApplyRoundTrip(t *testing.T) {
	t.Parallel()
	pool := testenv.Postgres(t)
	set := testSet("", "rt", threeVersions)
	latest := len(threeVersions)
	for round := range 2 {
		for range 2 { // the second Apply is a no-op
			if err := Apply(t.Context(), pool, set, Latest); err != nil {
				t.Fatalf("round %d: up: %v", round, err)
			}
		}
		if v := version(t, pool, set); v != latest {
			t.Fatalf("round %d: version %d after up, want %d", round, v, latest)
		}
		var recorded []string
		rows, err := pool.Query(t.Context(), `SELECT version || '_' || name FROM `+set.Versions+` ORDER BY version`)
		if err != nil {
			t.Fatal(err)
		}
		if recorded, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
			t.Fatal(err)
		}
		var want []string
		for _, m := range threeVersions {
			want = append(want, fmt.Sprintf("%d_%s", m.Version, m.Name))
		}
		if strings.Join(recorded, " ") != strings.Join(want, " ") {
			t.Fatalf("round %d: recorded %v, want %v", round, recorded, want)
		}
		if _, err := pool.Exec(t.Context(), `INSERT INTO rt (id, c) VALUES (1, 'x')`); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if err := Apply(t.Context(), pool, set, 0); err != nil {
			t.Fatalf("round %d: down: %v", round, err)
		}
		if v, cols := version(t, pool, set), columns(t, pool, "", "rt"); v != 0 || len(cols) != 0 {
			t.Fatalf("round %d: after down: version %d, columns %v", round, v, cols)
		}
	}
}

func TestApplyCreatesSchema(t *testing.T) {
	t.Parallel()
	pool := testenv.Postgres(t)
	a := testSet("svc", "a", threeVersions)
	b := testSet("svc", "b", threeVersions[:1])
	for _, set := range []Set{a, b} { // b finds the schema a created
		if err := Apply(t.Context(), pool, set, Latest); err != nil {
			t.Fatal(err)
		}
	}
	if cols := strings.Join(columns(t, pool, "svc", "a"), " "); cols != wantColumns[3] {
		t.Errorf("svc.a columns %q", cols)
	}
	if cols := strings.Join(columns(t, pool, "svc", "b"), " "); cols != wantColumns[1] {
		t.Errorf("svc.b columns %q", cols)
	}
	if va, vb := version(t, pool, a), version(t, pool, b); va != len(a.Migrations) || vb != len(b.Migrations) {
		t.Errorf("versions %d and %d, want %d and %d: each table has its own", va, vb, len(a.Migrations), len(b.Migrations))
	}
	if v := version(t, pool, testSet("", "a", nil)); v != 0 {
		t.Errorf("a's versions landed outside its schema (version %d in public)", v)
	}
}

func TestApplyTooNew(t *testing.T) {
	t.Parallel()
	pool := testenv.Postgres(t)
	set := testSet("", "t", threeVersions)
	if err := Apply(t.Context(), pool, set, Latest); err != nil {
		t.Fatal(err)
	}
	errOwn := errors.New("own sentinel")
	// A release that knows only the first two versions.
	older := testSet("", "t", threeVersions[:2])
	older.TooNew = errOwn
	for _, target := range []int{Latest, 2, 0} {
		err := Apply(t.Context(), pool, older, target)
		if !errors.Is(err, ErrTooNew) || !errors.Is(err, errOwn) {
			t.Fatalf("to %d: %v, want an error matching ErrTooNew and the set's TooNew", target, err)
		}
		for _, part := range []string{"test:", set.Table, "version 3", "up to 2", "newer release"} {
			if !strings.Contains(err.Error(), part) {
				t.Errorf("to %d: %q does not say %q", target, err, part)
			}
		}
		if v, cols := version(t, pool, set), strings.Join(columns(t, pool, "", "t"), " "); v != 3 || cols != wantColumns[3] {
			t.Fatalf("to %d: a refused migration changed the table: version %d, columns %q", target, v, cols)
		}
	}
	older.TooNew = nil
	if err := Apply(t.Context(), pool, older, Latest); !errors.Is(err, ErrTooNew) || errors.Is(err, errOwn) {
		t.Errorf("without TooNew: %v, want ErrTooNew only", err)
	}
}

func TestApplyFailureRollsBack(t *testing.T) {
	t.Parallel()
	pool := testenv.Postgres(t)
	broken := append([]Migration(nil), threeVersions...)
	broken[2].Up = `ALTER TABLE {{table}} ADD COLUMN d int; ALTER TABLE {{table}} ADD COLUMN no_such_type_col no_such_type`
	set := testSet("fail", "t", broken)
	err := Apply(t.Context(), pool, set, Latest)
	if err == nil || !strings.Contains(err.Error(), "up to 3_two_cols") {
		t.Fatalf("Apply with a broken version 3: %v, want an error naming 3_two_cols", err)
	}
	var schemas int
	if err := pool.QueryRow(t.Context(), `SELECT count(*) FROM pg_namespace WHERE nspname = 'fail'`).Scan(&schemas); err != nil {
		t.Fatal(err)
	}
	if v, cols := version(t, pool, set), columns(t, pool, "fail", "t"); schemas != 0 || v != 0 || len(cols) != 0 {
		t.Fatalf("a failed Apply left %d schema(s), version %d, columns %v; want nothing", schemas, v, cols)
	}
	// Versions 1 and 2 are fine on their own; the failed down of version 2
	// from 2 leaves 2.
	if err := Apply(t.Context(), pool, set, 2); err != nil {
		t.Fatal(err)
	}
	set.Migrations[1].Down = `ALTER TABLE {{table}} DROP COLUMN no_such_column`
	if err := Apply(t.Context(), pool, set, 0); err == nil || !strings.Contains(err.Error(), "down from 2_col") {
		t.Fatalf("broken down: %v, want an error naming 2_col", err)
	}
	if v, cols := version(t, pool, set), strings.Join(columns(t, pool, "fail", "t"), " "); v != 2 || cols != wantColumns[2] {
		t.Fatalf("after a failed down: version %d, columns %q; want 2, %q", v, cols, wantColumns[2])
	}
}

func TestApplyRejectsBadInput(t *testing.T) {
	t.Parallel()
	good := testSet("", "t", threeVersions)
	noName, noTable, noVersions, unordered := good, good, good, good
	noName.Name = ""
	noTable.Table = ""
	noVersions.Versions = ""
	unordered.Migrations = []Migration{threeVersions[1], threeVersions[0]}
	cases := []struct {
		name   string
		set    Set
		target int
		want   string
	}{
		{"no name", noName, Latest, "Set.Name"},
		{"no table", noTable, Latest, "Set.Table"},
		{"no versions", noVersions, Latest, "Set.Versions"},
		{"unordered", unordered, Latest, "Set.Migrations[0]"},
		{"target beyond latest", good, len(threeVersions) + 1, "version 4 does not exist"},
	}
	// No database is touched: a nil DB would panic if Apply used it.
	for _, c := range cases {
		if err := Apply(t.Context(), nil, c.set, c.target); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error containing %q", c.name, err, c.want)
		}
	}
}

// TestApplyWaitsForTheLock holds the set's advisory lock in another
// transaction: Apply waits for it and does nothing until it is released.
func TestApplyWaitsForTheLock(t *testing.T) {
	t.Parallel()
	pool := testenv.Postgres(t)
	set := testSet("", "t", threeVersions)
	holder, err := pool.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Rollback(context.Background())
	if _, err := holder.Exec(t.Context(), `SELECT pg_advisory_xact_lock($1)`, set.LockKey); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- Apply(t.Context(), pool, set, Latest) }()
	testenv.CheckFor(t, waitTotal, waitStep, func() error {
		var waiting int
		err := pool.QueryRow(t.Context(), `SELECT count(*) FROM pg_locks
WHERE locktype = 'advisory' AND NOT granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND ((classid::bigint << 32) | objid::bigint) = $1`, set.LockKey).Scan(&waiting)
		if err != nil {
			return err
		}
		if waiting != 1 {
			return fmt.Errorf("%d sessions wait for the lock, want 1", waiting)
		}
		return nil
	})
	select {
	case err := <-done:
		t.Fatalf("Apply returned while the lock was held: %v", err)
	default:
	}
	if v := version(t, pool, set); v != 0 {
		t.Fatalf("version %d while Apply waits for the lock", v)
	}
	if err := holder.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Apply after the lock was released: %v", err)
	}
	if v := version(t, pool, set); v != len(threeVersions) {
		t.Fatalf("version %d, want %d", v, len(threeVersions))
	}
}

// TestApplyConcurrent runs Apply from several connections at once. The
// migrations are not idempotent: without the lock, two of them would
// apply version 1 twice and fail.
func TestApplyConcurrent(t *testing.T) {
	t.Parallel()
	pool := testenv.Postgres(t)
	set := testSet("conc", "t", threeVersions)
	const workers = 8
	errs := make([]error, workers)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range workers {
		wg.Go(func() {
			<-start
			errs[i] = Apply(t.Context(), pool, set, Latest)
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Apply %d: %v", i, err)
		}
	}
	var rows int
	if err := pool.QueryRow(t.Context(), `SELECT count(*) FROM `+set.Versions).Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if rows != len(threeVersions) {
		t.Errorf("%d versions recorded, want %d (each once)", rows, len(threeVersions))
	}
	if cols := strings.Join(columns(t, pool, "conc", "t"), " "); cols != wantColumns[3] {
		t.Errorf("columns %q, want %q", cols, wantColumns[3])
	}
}
