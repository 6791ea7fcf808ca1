package participants

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetsaga/jetsaga/events"
	"github.com/jetsaga/jetsaga/internal/testenv"
	"github.com/jetsaga/jetsaga/outbox"
)

// eventsSubjects is the stream of the events the test handlers publish.
const eventsSubjects = "ledger.events.>"

// TestHandlerEventsAreRelayedAfterTheCommit: with RelayEvents, an event that
// a handler writes to the outbox in its step's transaction is published as
// soon as the step commits: the relay is woken in memory, it does not wait
// for its poll (an hour here). Each path a handler may write through is
// covered: the step's tx with the participant's Outbox, and a nested
// transaction with the package-level outbox.Write (another Outbox value of
// the same table).
func TestHandlerEventsAreRelayedAfterTheCommit(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.l.seed(t, map[string]int64{"alice": 100})
	if _, err := b.js.CreateStream(t.Context(), jetstream.StreamConfig{Name: "LEDGER_EVENTS", Subjects: []string{eventsSubjects}}); err != nil {
		t.Fatal(err)
	}
	const poll = time.Hour
	p := b.newParticipant(t, nil, func(c *Config) {
		c.RelayEvents = true
		c.Relay = outbox.RelayConfig{PollInterval: poll, DisableListen: true}
	})
	Register(p, "Debited", Step[move]{Do: func(ctx context.Context, tx pgx.Tx, info StepInfo, m move) (any, error) {
		if err := debit(ctx, tx, m); err != nil {
			return nil, err
		}
		msg := outbox.Message{ID: info.SagaID + "/debited", Subject: "ledger.events.debited." + info.SagaID, Data: []byte(`{}`)}
		if info.Step == "nested" {
			return nil, pgx.BeginFunc(ctx, tx, func(nested pgx.Tx) error { return outbox.Write(ctx, nested, msg) })
		}
		return nil, p.Outbox().Write(ctx, tx, msg)
	}})
	start(t, p)
	// The first event may be published by the relay's first round; each
	// later one finds the relay waiting for its poll.
	for i, step := range []string{"plain", "plain", "nested"} {
		c := cmd(fmt.Sprintf("s%d", i), step, events.OpDo, "Debited", "alice", 1)
		b.send(t, c)
		if o := b.wait(t, c); o.Status != events.Succeeded {
			t.Fatalf("%s: outcome = %+v", c.SagaID, o.Outcome)
		}
		subject := "ledger.events.debited." + c.SagaID
		testenv.CheckFor(t, waitTotal, waitStep, func() error {
			s, err := b.js.Stream(t.Context(), "LEDGER_EVENTS")
			if err != nil {
				return err
			}
			if _, err := s.GetLastMsgForSubject(t.Context(), subject); err != nil {
				return fmt.Errorf("event %s (written through the %s tx) not published within %s, with the relay's poll at %s: %w",
					subject, step, waitTotal, poll, err)
			}
			return nil
		})
	}
}

// TestNoRelayByDefault: without RelayEvents the participant holds no LISTEN
// connection, runs no relay and does not migrate the outbox table.
func TestNoRelayByDefault(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	if _, err := b.pool.Exec(ctx, `DROP TABLE jetsaga_outbox, jetsaga_outbox_migrations`); err != nil {
		t.Fatal(err)
	}
	b.l.seed(t, map[string]int64{"alice": 100})
	// Listening as the default relay would.
	p := b.newParticipant(t, nil, func(c *Config) { c.Relay = outbox.RelayConfig{} })
	if err := p.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	var exists bool
	if err := b.pool.QueryRow(ctx, `SELECT to_regclass('jetsaga_outbox') IS NOT NULL`).Scan(&exists); err != nil {
		t.Fatal(err)
	}
	if exists {
		t.Fatal("Participant.Migrate created the outbox table without RelayEvents")
	}
	start(t, p)
	c := cmd("s1", "debit", events.OpDo, "Withdraw", "alice", 1)
	b.send(t, c)
	if o := b.wait(t, c); o.Status != events.Succeeded {
		t.Fatalf("outcome = %+v", o.Outcome)
	}
	var listeners int
	if err := b.pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'jetsaga-outbox-listen'`).
		Scan(&listeners); err != nil {
		t.Fatal(err)
	}
	if listeners != 0 || p.relay != nil {
		t.Fatalf("%d LISTEN connections, relay %p: want none without RelayEvents", listeners, p.relay)
	}

	// With RelayEvents, Migrate creates the table.
	q, err := New(Config{Name: "ledger2", Pool: b.pool, JetStream: b.js, RelayEvents: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.pool.QueryRow(ctx, `SELECT to_regclass('jetsaga_outbox') IS NOT NULL`).Scan(&exists); err != nil {
		t.Fatal(err)
	}
	if !exists {
		t.Fatal("Participant.Migrate did not create the outbox table with RelayEvents")
	}
}
