package outbox

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"testing/fstest"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/jetsaga/jetsaga/internal/sqlmigrate"
	"github.com/jetsaga/jetsaga/internal/testenv"
)

func tableExists(t *testing.T, pool *pgxpool.Pool, qualified string) bool {
	t.Helper()
	var ok bool
	if err := pool.QueryRow(t.Context(), `SELECT to_regclass($1) IS NOT NULL`, qualified).Scan(&ok); err != nil {
		t.Fatal(err)
	}
	return ok
}

func version(t *testing.T, pool *pgxpool.Pool, o *Outbox) int {
	t.Helper()
	v, err := o.Version(t.Context(), pool)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestMigrateConcurrent(t *testing.T) {
	t.Parallel()
	pool := testenv.Postgres(t)
	const workers = 8
	var wg sync.WaitGroup
	errs := make([]error, workers)
	for i := range workers {
		wg.Go(func() { errs[i] = Migrate(t.Context(), pool) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Migrate %d: %v", i, err)
		}
	}
	if v := version(t, pool, defaultOutbox); v != LatestVersion() {
		t.Fatalf("version %d, want %d", v, LatestVersion())
	}
	var recorded int
	if err := pool.QueryRow(t.Context(), `SELECT count(*) FROM jetsaga_outbox_migrations`).Scan(&recorded); err != nil {
		t.Fatal(err)
	}
	if recorded != LatestVersion() {
		t.Errorf("%d versions recorded, want %d (each once)", recorded, LatestVersion())
	}
	// Idempotent.
	if err := Migrate(t.Context(), pool); err != nil {
		t.Fatalf("Migrate again: %v", err)
	}
	if v := version(t, pool, defaultOutbox); v != LatestVersion() {
		t.Fatalf("version %d after a second Migrate, want %d", v, LatestVersion())
	}
}

func TestMigrateRoundTrip(t *testing.T) {
	t.Parallel()
	pool := testenv.Postgres(t)
	if v := version(t, pool, defaultOutbox); v != 0 {
		t.Fatalf("fresh database at version %d", v)
	}
	for round := range 2 {
		if err := Migrate(t.Context(), pool); err != nil {
			t.Fatalf("round %d: up: %v", round, err)
		}
		if !tableExists(t, pool, "jetsaga_outbox") || version(t, pool, defaultOutbox) != LatestVersion() {
			t.Fatalf("round %d: after up: table missing or wrong version", round)
		}
		write(t, pool, defaultOutbox, msgs("rt", 3)...)
		if n := pending(t, pool, defaultOutbox); n != 3 {
			t.Fatalf("round %d: %d rows, want 3", round, n)
		}
		if err := Migrate(t.Context(), pool, ToVersion(0)); err != nil {
			t.Fatalf("round %d: down: %v", round, err)
		}
		if tableExists(t, pool, "jetsaga_outbox") || version(t, pool, defaultOutbox) != 0 {
			t.Fatalf("round %d: after down: table still there or version not 0", round)
		}
	}
	if err := Migrate(t.Context(), pool, ToVersion(LatestVersion()+1)); err == nil || !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("ToVersion beyond the latest: got %v, want ErrInvalidConfig", err)
	}
}

// TestMigrateVersions drives the migrator with a three-version set: partial
// ups and downs, and a database newer than the package.
func TestMigrateVersions(t *testing.T) {
	t.Parallel()
	pool := testenv.Postgres(t)
	set, err := sqlmigrate.Load(fstest.MapFS{
		"m/0001_base.up.sql":     {Data: []byte(`CREATE TABLE {{table}} (id int)`)},
		"m/0001_base.down.sql":   {Data: []byte(`DROP TABLE {{table}}`)},
		"m/0002_col.up.sql":      {Data: []byte(`ALTER TABLE {{table}} ADD COLUMN c text`)},
		"m/0002_col.down.sql":    {Data: []byte(`ALTER TABLE {{table}} DROP COLUMN c`)},
		"m/0003_second.up.sql":   {Data: []byte(`ALTER TABLE {{table}} ADD COLUMN d int; ALTER TABLE {{table}} ADD COLUMN e int`)},
		"m/0003_second.down.sql": {Data: []byte(`ALTER TABLE {{table}} DROP COLUMN e; ALTER TABLE {{table}} DROP COLUMN d`)},
	}, "m")
	if err != nil {
		t.Fatal(err)
	}
	o, err := New(Config{Schema: "vtest", Table: "t"})
	if err != nil {
		t.Fatal(err)
	}
	hasColumn := func(name string) bool {
		var ok bool
		if err := pool.QueryRow(t.Context(), `SELECT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = 'vtest' AND table_name = 't' AND column_name = $1)`, name).Scan(&ok); err != nil {
			t.Fatal(err)
		}
		return ok
	}
	steps := []struct {
		target            int
		table, col, extra bool
	}{
		{2, true, true, false},
		{3, true, true, true},
		{1, true, false, false},
		{3, true, true, true},
		{0, false, false, false},
		{1, true, false, false},
	}
	for _, s := range steps {
		if err := o.migrate(t.Context(), pool, set, s.target); err != nil {
			t.Fatalf("to %d: %v", s.target, err)
		}
		if got := version(t, pool, o); got != s.target {
			t.Fatalf("to %d: version %d", s.target, got)
		}
		if tableExists(t, pool, "vtest.t") != s.table || hasColumn("c") != s.col || hasColumn("d") != s.extra || hasColumn("e") != s.extra {
			t.Fatalf("to %d: schema does not match (table %v, column %v, extra %v)", s.target, s.table, s.col, s.extra)
		}
	}
	if err := o.migrate(t.Context(), pool, set, 3); err != nil {
		t.Fatal(err)
	}
	// The package's one-version set meets a database at version 3.
	err = Migrate(t.Context(), pool, ForOutbox(o))
	if !errors.Is(err, ErrSchemaTooNew) {
		t.Fatalf("got %v, want ErrSchemaTooNew", err)
	}
	if got := version(t, pool, o); got != 3 {
		t.Fatalf("version %d after a refused migration, want 3", got)
	}
}

// TestEmbeddedMigrations: the package's own set loaded (the loader's checks
// are tested in internal/sqlmigrate).
func TestEmbeddedMigrations(t *testing.T) {
	t.Parallel()
	if LatestVersion() < 1 {
		t.Errorf("embedded migrations: %d versions", LatestVersion())
	}
}

// TestTwoTablesOneDatabase runs two services' outboxes side by side: each
// relay publishes its own table's rows only.
func TestTwoTablesOneDatabase(t *testing.T) {
	t.Parallel()
	b := setup(t)
	a, err := New(Config{Table: "service_a_outbox"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(Config{Schema: "service_b"})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range []*Outbox{a, c} {
		if err := o.Migrate(t.Context(), b.pool); err != nil {
			t.Fatalf("Migrate %s: %v", o.Table(), err)
		}
	}
	if !tableExists(t, b.pool, "service_a_outbox_migrations") || !tableExists(t, b.pool, "service_b.jetsaga_outbox_migrations") {
		t.Fatal("each table should have its own version table")
	}
	msA, msC := msgs("a", 20), msgs("c", 30)
	write(t, b.pool, a, msA...)
	write(t, b.pool, c, msC...)

	startRelay(t, newRelay(t, b.pool, b.js, RelayConfig{Outbox: a}))
	waitDrained(t, b.pool, a)
	waitStream(t, b.js, len(msA))
	if n := pending(t, b.pool, c); n != int64(len(msC)) {
		t.Fatalf("table of service b: %d rows pending, want %d (not relayed by a's relay)", n, len(msC))
	}
	startRelay(t, newRelay(t, b.pool, b.js, RelayConfig{Outbox: c}))
	waitDrained(t, b.pool, c)
	exactlyOnce(t, b.js, append(msA, msC...))

	// Migrating one table down leaves the other alone.
	if err := a.Migrate(t.Context(), b.pool, ToVersion(0)); err != nil {
		t.Fatal(err)
	}
	if tableExists(t, b.pool, "service_a_outbox") || !tableExists(t, b.pool, "service_b.jetsaga_outbox") {
		t.Fatal("down migration of one table touched the other")
	}
}

func TestConfigErrors(t *testing.T) {
	t.Parallel()
	cases := []struct {
		cfg   Config
		field string
	}{
		{Config{Table: "Bad-Name"}, "Table"},
		{Config{Table: "1abc"}, "Table"},
		{Config{Table: strings.Repeat("t", maxIdentifier-len(migrationsSuffix)+1)}, "Table"},
		{Config{Schema: "sch ema"}, "Schema"},
		{Config{Schema: strings.Repeat("s", maxIdentifier+1)}, "Schema"},
		{Config{MaxPayload: -1}, "MaxPayload"},
		{Config{NotifyInterval: -1}, "NotifyInterval"},
		{Config{Schema: strings.Repeat("s", 40), Table: strings.Repeat("t", 40)}, "Channel"},
		{Config{Channel: "a\x00b"}, "Channel"},
	}
	for _, c := range cases {
		_, err := New(c.cfg)
		if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), c.field) {
			t.Errorf("New(%+v): got %v, want an ErrInvalidConfig naming %s", c.cfg, err, c.field)
		}
	}
	o, err := New(Config{Schema: "s1", Table: "t_1"})
	if err != nil {
		t.Fatal(err)
	}
	if o.Table() != `"s1"."t_1"` || o.Channel() != "s1.t_1" {
		t.Errorf("table %s channel %s", o.Table(), o.Channel())
	}
	if defaultOutbox.Table() != `"jetsaga_outbox"` {
		t.Errorf("default table %s", defaultOutbox.Table())
	}
}
