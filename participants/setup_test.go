package participants

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetsaga/jetsaga/events"
	"github.com/jetsaga/jetsaga/internal/testenv"
	"github.com/jetsaga/jetsaga/outbox"
	"github.com/jetsaga/jetsaga/participants/participanttest"
)

func TestConfigErrorsNameTheField(t *testing.T) {
	t.Parallel()
	pool := testenv.Postgres(t)
	srv := testenv.NATS(t)
	_, js := testenv.Connect(t, srv.URL())
	ok := Config{Name: "bank-a", Pool: pool, JetStream: js}
	cases := []struct {
		field  string
		mutate func(*Config)
	}{
		{"Name", func(c *Config) { c.Name = "" }},
		{"Name", func(c *Config) { c.Name = "bank.a" }},
		{"Pool", func(c *Config) { c.Pool = nil }},
		{"JetStream", func(c *Config) { c.JetStream = nil }},
		{"Concurrency", func(c *Config) { c.Concurrency = -1 }},
		{"AckWait", func(c *Config) { c.AckWait = -time.Second }},
		{"AckWait", func(c *Config) { c.AckWait = time.Millisecond }},
		{"MaxAckPending", func(c *Config) { c.MaxAckPending = -1 }},
		{"MaxAckPending", func(c *Config) { c.Concurrency, c.MaxAckPending = 8, 4 }},
		{"BarrierSchema", func(c *Config) { c.BarrierSchema = "Bad-Schema" }},
		{"BarrierTable", func(c *Config) { c.BarrierTable = "drop table" }},
		{"BarrierTable", func(c *Config) { c.BarrierTable = strings.Repeat("t", 60) }},
		{"CleanupInterval", func(c *Config) { c.CleanupInterval = -1 }},
		{"CleanupBatch", func(c *Config) { c.CleanupBatch = -1 }},
		{"ShutdownTimeout", func(c *Config) { c.ShutdownTimeout = -1 }},
	}
	for _, tc := range cases {
		cfg := ok
		tc.mutate(&cfg)
		_, err := New(cfg)
		if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), " "+tc.field+": ") {
			t.Errorf("%s: New = %v, want an ErrInvalidConfig naming %s", tc.field, err, tc.field)
		}
	}
	p, err := New(ok)
	if err != nil {
		t.Fatal(err)
	}
	c := p.cfg
	if c.Namespace != events.Default() || c.Concurrency != DefaultConcurrency || c.AckWait != DefaultAckWait ||
		c.MaxAckPending != 4*DefaultConcurrency || c.BarrierTable != DefaultBarrierTable ||
		c.BarrierRetention != DefaultBarrierRetention || c.ShutdownTimeout != DefaultAckWait || c.Outbox == nil || c.Logger == nil {
		t.Fatalf("defaults not applied: %+v", c)
	}
	cc := p.ConsumerConfig()
	if cc.Durable != "saga_participant_bank-a" || cc.FilterSubject != "saga.cmd.bank-a.*" || cc.MaxDeliver != -1 ||
		cc.AckPolicy != jetstream.AckExplicitPolicy || cc.AckWait != DefaultAckWait || cc.MaxAckPending != 64 {
		t.Fatalf("consumer config = %+v", cc)
	}
}

type payload struct {
	N int `json:"n"`
}

func (p payload) Validate() error {
	if p.N < 0 {
		return errors.New("n: must be >= 0")
	}
	return nil
}

type ptrPayload struct {
	N int `json:"n"`
}

func (p *ptrPayload) Validate() error {
	if p.N == 13 {
		return errors.New("n: unlucky")
	}
	return nil
}

func TestDecodePayload(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		raw, err string
	}{
		{`{"n":1}`, ""},
		{``, ""},
		{`null`, ""},
		{`{"n":-1}`, "n: must be >= 0"},
		{`{"n":1,"x":2}`, `unknown field "x"`},
		{`{"n":"1"}`, "cannot unmarshal"},
		{`{"n":1} {"n":2}`, "trailing data"},
	} {
		_, err := decodePayload[payload](json.RawMessage(tc.raw))
		if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("decode %q = %v, want error containing %q", tc.raw, err, tc.err)
		}
	}
	if _, err := decodePayload[ptrPayload](json.RawMessage(`{"n":13}`)); err == nil || !strings.Contains(err.Error(), "unlucky") {
		t.Errorf("pointer-receiver Validate not called: %v", err)
	}
	if _, err := decodePayload[*ptrPayload](json.RawMessage(`{"n":13}`)); err == nil || !strings.Contains(err.Error(), "unlucky") {
		t.Errorf("Validate of a pointer payload not called: %v", err)
	}
	if _, err := decodePayload[*ptrPayload](nil); err != nil {
		t.Errorf("an absent pointer payload: %v, want the nil pointer, not a panic", err)
	}
}

func TestRegister(t *testing.T) {
	t.Parallel()
	pool := testenv.Postgres(t)
	srv := testenv.NATS(t)
	_, js := testenv.Connect(t, srv.URL())
	p, err := New(Config{Name: "bank-a", Pool: pool, JetStream: js})
	if err != nil {
		t.Fatal(err)
	}
	h := func(context.Context, pgx.Tx, StepInfo, payload) (any, error) { return nil, nil }
	if err := RegisterSafely(p, "TransOut", Step[payload]{Do: h, Undo: h}); err != nil {
		t.Fatal(err)
	}
	if err := RegisterSafely(p, "Pay", Step[payload]{Do: h, Undo: h, UndoAction: "Refund"}); err != nil {
		t.Fatal(err)
	}
	if err := RegisterSafely(p, "Ship", Step[payload]{Do: h}); err != nil {
		t.Fatal(err)
	}
	for name, op := range map[string]events.Op{"TransOut": events.OpDo, "TransOutCompensate": events.OpUndo,
		"Pay": events.OpDo, "Refund": events.OpUndo, "Ship": events.OpDo} {
		if a := p.actions[name]; a == nil || a.op != op {
			t.Errorf("action %s: %+v, want registered for %s", name, a, op)
		}
	}
	if _, ok := p.actions["ShipCompensate"]; ok {
		t.Error("a step without Undo registered a compensation")
	}
	for _, tc := range []struct {
		name, action, want string
		s                  Step[payload]
	}{
		{"bad name", "Trans Out", "name", Step[payload]{Do: h}},
		{"nil Do", "X", "Do is nil", Step[payload]{Undo: h}},
		{"duplicate", "TransOut", `"TransOut" is already registered`, Step[payload]{Do: h}},
		{"duplicate compensation", "Other", `"Refund" is already registered`, Step[payload]{Do: h, Undo: h, UndoAction: "Refund"}},
		{"bad UndoAction", "Y", "UndoAction", Step[payload]{Do: h, Undo: h, UndoAction: "a.b"}},
		{"UndoAction is the action", "Z", "own name", Step[payload]{Do: h, Undo: h, UndoAction: "Z"}},
	} {
		err := RegisterSafely(p, tc.action, tc.s)
		if !errors.Is(err, ErrInvalidRegistration) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want ErrInvalidRegistration containing %q", tc.name, err, tc.want)
		}
	}
	if _, ok := p.actions["Other"]; ok {
		t.Error("a failed registration registered its action")
	}
	func() {
		defer func() {
			if r := recover(); r == nil {
				t.Error("Register did not panic on a bad registration")
			}
		}()
		Register(p, "", Step[payload]{Do: h})
	}()

	// After Run starts, registration fails, and Run cannot run twice.
	if err := participanttest.CreateStreams(t.Context(), js, events.Default(), events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := Migrate(t.Context(), pool); err != nil {
		t.Fatal(err)
	}
	stop := start(t, p)
	testenv.CheckFor(t, waitTotal, waitStep, func() error {
		p.mu.Lock()
		defer p.mu.Unlock()
		if !p.started {
			return errors.New("not started")
		}
		return nil
	})
	if err := RegisterSafely(p, "Late", Step[payload]{Do: h}); !errors.Is(err, ErrInvalidRegistration) {
		t.Errorf("registration while running: %v, want ErrInvalidRegistration", err)
	}
	if err := p.Run(t.Context()); !errors.Is(err, ErrRunning) {
		t.Errorf("second Run: %v, want ErrRunning", err)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

func TestRunWithoutHandlersOrStreams(t *testing.T) {
	t.Parallel()
	pool := testenv.Postgres(t)
	srv := testenv.NATS(t)
	_, js := testenv.Connect(t, srv.URL())
	p, err := New(Config{Name: "bank-a", Pool: pool, JetStream: js})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Run(t.Context()); !errors.Is(err, ErrNoHandlers) {
		t.Fatalf("Run without handlers: %v, want ErrNoHandlers", err)
	}
	p, err = New(Config{Name: "bank-a", Pool: pool, JetStream: js})
	if err != nil {
		t.Fatal(err)
	}
	Register(p, "X", Step[payload]{Do: func(context.Context, pgx.Tx, StepInfo, payload) (any, error) { return nil, nil }})
	if err := p.Run(t.Context()); err == nil || !strings.Contains(err.Error(), "SAGA_CMDS") {
		t.Fatalf("Run without the commands stream: %v, want an error naming it", err)
	}
}

func TestMigrateUpDownUp(t *testing.T) {
	t.Parallel()
	pool := testenv.Postgres(t)
	ctx := t.Context()
	exists := func(table string) bool {
		var ok bool
		if err := pool.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, table).Scan(&ok); err != nil {
			t.Fatal(err)
		}
		return ok
	}
	version := func(table string) int {
		var v int
		if err := pool.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM `+table).Scan(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	// Concurrent first migrations serialise on the advisory lock.
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Add(1)
		go func() { defer wg.Done(); errs <- Migrate(ctx, pool) }()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent Migrate: %v", err)
		}
	}
	if !exists("jetsaga_barrier") || !exists("jetsaga_outbox") || version("jetsaga_barrier_migrations") != LatestVersion() {
		t.Fatal("Migrate did not create the barrier and the outbox at the latest version")
	}
	if _, err := pool.Exec(ctx, `INSERT INTO jetsaga_barrier (saga_id, step, op, status, attempt) VALUES ('s', 'x', 'do', 'succeeded', 1)`); err != nil {
		t.Fatal(err)
	}
	// The status check follows the op.
	if _, err := pool.Exec(ctx, `INSERT INTO jetsaga_barrier (saga_id, step, op, status, attempt) VALUES ('s', 'x', 'undo', 'succeeded', 1)`); err == nil {
		t.Fatal("an undo row with status succeeded was accepted")
	}
	if err := Migrate(ctx, pool, ToVersion(0)); err != nil {
		t.Fatal(err)
	}
	if exists("jetsaga_barrier") || version("jetsaga_barrier_migrations") != 0 {
		t.Fatal("down to version 0 left the barrier table")
	}
	if !exists("jetsaga_outbox") {
		t.Fatal("ToVersion(0) touched the outbox")
	}
	if err := Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	if err := Migrate(ctx, pool); err != nil {
		t.Fatalf("second Migrate: %v", err)
	}
	if !exists("jetsaga_barrier") || version("jetsaga_barrier_migrations") != LatestVersion() {
		t.Fatal("up again did not recreate the barrier")
	}
	if err := Migrate(ctx, pool, ToVersion(LatestVersion()+1)); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("ToVersion past the latest: %v", err)
	}

	// Another schema and table, and its own outbox.
	ob, err := outbox.New(outbox.Config{Schema: "pay", Table: "pay_outbox"})
	if err != nil {
		t.Fatal(err)
	}
	if err := Migrate(ctx, pool, WithBarrierTable("pay", "pay_barrier"), WithOutbox(ob)); err != nil {
		t.Fatal(err)
	}
	if !exists("pay.pay_barrier") || !exists("pay.pay_outbox") {
		t.Fatal("custom tables not created")
	}
	if err := Migrate(ctx, pool, WithBarrierTable("", "Bad")); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("bad table name: %v", err)
	}
	// A database migrated by a newer release is refused.
	if _, err := pool.Exec(ctx, `INSERT INTO jetsaga_barrier_migrations (version, name) VALUES ($1, 'future')`, LatestVersion()+1); err != nil {
		t.Fatal(err)
	}
	if err := Migrate(ctx, pool); err == nil || !strings.Contains(err.Error(), "newer release") {
		t.Fatalf("Migrate of a newer schema: %v", err)
	}
}

func TestBarrierCleanup(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	// 25 old rows and 5 recent ones.
	if _, err := b.pool.Exec(ctx, `INSERT INTO jetsaga_barrier (saga_id, step, op, status, attempt, created_at)
SELECT 'old-' || i, 'x', 'do', 'succeeded', 1, now() - interval '10 days' FROM generate_series(1, 25) i`); err != nil {
		t.Fatal(err)
	}
	if _, err := b.pool.Exec(ctx, `INSERT INTO jetsaga_barrier (saga_id, step, op, status, attempt, created_at)
SELECT 'new-' || i, 'x', 'do', 'succeeded', 1, now() - interval '1 day' FROM generate_series(1, 5) i`); err != nil {
		t.Fatal(err)
	}
	count := func(prefix string) int {
		var n int
		if err := b.pool.QueryRow(ctx, `SELECT count(*) FROM jetsaga_barrier WHERE saga_id LIKE $1 || '%'`, prefix).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	// In batches of 10: 10, 10, 5.
	n, err := newBarrier("", DefaultBarrierTable).prune(ctx, b.pool, time.Now().Add(-7*24*time.Hour), 10)
	if err != nil {
		t.Fatal(err)
	}
	if n != 25 || count("old-") != 0 || count("new-") != 5 {
		t.Fatalf("prune deleted %d; left %d old and %d new rows, want 25 deleted, 0 old and 5 new left", n, count("old-"), count("new-"))
	}

	// The loop in Run does the same with the configured retention.
	if _, err := b.pool.Exec(ctx, `UPDATE jetsaga_barrier SET created_at = now() - interval '3 days' WHERE saga_id = 'new-1'`); err != nil {
		t.Fatal(err)
	}
	p := b.newParticipant(t, nil, func(c *Config) { c.BarrierRetention = 2 * 24 * time.Hour })
	start(t, p)
	testenv.CheckFor(t, waitTotal, waitStep, func() error {
		if n := count("new-"); n != 4 {
			return errors.New("the cleanup loop has not pruned the row past the retention yet")
		}
		return nil
	})
}
