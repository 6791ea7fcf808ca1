package outbox

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetsaga/jetsaga/internal/testenv"
)

// fastRelay are relay settings for fault tests: short timeouts and
// backoffs so that retries happen within the test's patience.
func fastRelay(o *Outbox) RelayConfig {
	return RelayConfig{
		Outbox:       o,
		PollInterval: 50 * time.Millisecond,
		AckTimeout:   500 * time.Millisecond,
		MinBackoff:   10 * time.Millisecond,
		MaxBackoff:   100 * time.Millisecond,
	}
}

func TestRelayRolledBackNeverPublishedCommittedOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	startRelay(t, newRelay(t, b.pool, b.js, RelayConfig{Outbox: b.ob}))

	errRollback := errors.New("business failure")
	err := b.ob.Tx(t.Context(), b.pool, func(tx pgx.Tx) error {
		if err := b.ob.Write(t.Context(), tx, Message{ID: "rolled-back", Subject: "test.rb"}); err != nil {
			return err
		}
		return errRollback
	})
	if !errors.Is(err, errRollback) {
		t.Fatalf("Tx: got %v, want the function's error", err)
	}
	// Written after the rolled-back one: once it is in the stream, the
	// relay has been past the rolled-back row's place.
	committed := Message{ID: "committed", Subject: "test.c", Data: []byte("c")}
	write(t, b.pool, b.ob, committed)
	waitStream(t, b.js, 1)
	waitDrained(t, b.pool, b.ob)
	exactlyOnce(t, b.js, []Message{committed})
}

// TestRelayLateCommit: tx1 takes the lower id but commits after tx2. With
// SKIP LOCKED and delete-after-publish there is no cursor to move past
// tx1's row, so it is published when it commits.
func TestRelayLateCommit(t *testing.T) {
	t.Parallel()
	b := setup(t)
	r := newRelay(t, b.pool, b.js, RelayConfig{Outbox: b.ob})
	startRelay(t, r)

	idOf := func(q pgx.Tx, msgID string) int64 {
		var id int64
		if err := q.QueryRow(t.Context(), `SELECT id FROM jetsaga_outbox WHERE msg_id = $1`, msgID).Scan(&id); err != nil {
			t.Fatal(err)
		}
		return id
	}
	tx1, err := b.pool.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer tx1.Rollback(context.Background())
	late := Message{ID: "late", Subject: "test.late"}
	if err := b.ob.Write(t.Context(), tx1, late); err != nil {
		t.Fatal(err)
	}
	id1 := idOf(tx1, "late")

	tx2, err := b.pool.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	early := Message{ID: "early", Subject: "test.early"}
	if err := b.ob.Write(t.Context(), tx2, early); err != nil {
		t.Fatal(err)
	}
	id2 := idOf(tx2, "early")
	if id1 >= id2 {
		t.Fatalf("ids %d, %d: want the late transaction's id first", id1, id2)
	}
	if err := tx2.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
	b.ob.Notify()
	waitStream(t, b.js, 1)

	if err := tx1.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
	b.ob.Notify()
	waitStream(t, b.js, 2)
	waitDrained(t, b.pool, b.ob)
	got := exactlyOnce(t, b.js, []Message{early, late})
	if got[0].id != "early" || got[1].id != "late" {
		t.Errorf("stream order %q, %q: want early (committed first), then late", got[0].id, got[1].id)
	}
}

var errCrash = errors.New("simulated crash between publish and delete")

// TestRelayCrashAfterPublish kills a relay between JetStream's acks and the
// delete: its context is cancelled and the batch abandoned. A new relay
// publishes every row again; JetStream drops the copies.
func TestRelayCrashAfterPublish(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ms := msgs("crash", 40)
	write(t, b.pool, b.ob, ms...)

	c, cancel := context.WithCancel(t.Context())
	first := newRelay(t, b.pool, b.js, RelayConfig{Outbox: b.ob})
	first.afterPublish = func(context.Context, uint32) error {
		cancel()
		return errCrash
	}
	if err := first.Run(c); err != nil {
		t.Fatalf("Run of the crashing relay: %v", err)
	}
	if n := pending(t, b.pool, b.ob); n != int64(len(ms)) {
		t.Fatalf("%d rows pending after the crash, want %d", n, len(ms))
	}
	if n, _ := streamCount(t, b.js, testStream); n != len(ms) {
		t.Fatalf("stream has %d messages after the crash, want %d (published before it)", n, len(ms))
	}
	if s := first.Stats(); s.Published != 0 {
		t.Fatalf("crashed relay counts %d published rows", s.Published)
	}

	second := newRelay(t, b.pool, b.js, RelayConfig{Outbox: b.ob})
	startRelay(t, second)
	waitDrained(t, b.pool, b.ob)
	exactlyOnce(t, b.js, ms)
	waitPublished(t, waitTotal, waitStep, uint64(len(ms)), second)
	if s := second.Stats(); s.Published != uint64(len(ms)) || s.Duplicates != uint64(len(ms)) {
		t.Errorf("second relay: published %d, duplicates %d; want %d and %d", s.Published, s.Duplicates, len(ms), len(ms))
	}
}

// TestRelayConnectionTerminatedAfterPublish terminates the relay's
// database connection between the acks and the delete.
func TestRelayConnectionTerminatedAfterPublish(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ms := msgs("term", 40)
	write(t, b.pool, b.ob, ms...)

	admin := openPool(t, b.url, 1)
	var killed atomic.Bool
	r := newRelay(t, b.pool, b.js, fastRelay(b.ob))
	r.afterPublish = func(ctx context.Context, pid uint32) error {
		if killed.Swap(true) {
			return nil
		}
		var ok bool
		if err := admin.QueryRow(ctx, `SELECT pg_terminate_backend($1)`, int32(pid)).Scan(&ok); err != nil || !ok {
			t.Errorf("pg_terminate_backend(%d): %v %v", pid, ok, err)
		}
		return nil
	}
	startRelay(t, r)
	waitDrained(t, b.pool, b.ob)
	exactlyOnce(t, b.js, ms)
	waitPublished(t, waitTotal, waitStep, uint64(len(ms)), r)
	s := r.Stats()
	if !killed.Load() || s.DBErrors == 0 {
		t.Errorf("connection killed %v, database errors %d: the fault did not happen", killed.Load(), s.DBErrors)
	}
	if s.Published != uint64(len(ms)) || s.Duplicates != uint64(len(ms)) {
		t.Errorf("published %d, duplicates %d; want %d and %d (every row re-published once)", s.Published, s.Duplicates, len(ms), len(ms))
	}
}

// TestRelayCancelFinishesBatch cancels Run's context while a batch is in
// flight: the relay still deletes what it published, then returns.
func TestRelayCancelFinishesBatch(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ms := msgs("cancel", 30)
	write(t, b.pool, b.ob, ms...)
	c, cancel := context.WithCancel(t.Context())
	r := newRelay(t, b.pool, b.js, RelayConfig{Outbox: b.ob})
	r.afterPublish = func(context.Context, uint32) error {
		cancel()
		return nil
	}
	if err := r.Run(c); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if n := pending(t, b.pool, b.ob); n != 0 {
		t.Fatalf("%d rows pending: the in-flight batch was not finished", n)
	}
	exactlyOnce(t, b.js, ms)
	if s := r.Stats(); s.Published != uint64(len(ms)) || s.Batches != 1 {
		t.Errorf("published %d in %d batches, want %d in 1", s.Published, s.Batches, len(ms))
	}
}

// TestRelayNATSDown stops NATS while rows keep coming, then starts it again
// on the same store: the rows pile up, then all are published, none lost.
func TestRelayNATSDown(t *testing.T) {
	t.Parallel()
	b := setup(t)
	r := newRelay(t, b.pool, b.js, fastRelay(b.ob))
	startRelay(t, r)

	before := msgs("before", 20)
	write(t, b.pool, b.ob, before...)
	// Published and deleted (the stream holding them is not enough: the
	// relay deletes rows once it has the acks).
	waitDrained(t, b.pool, b.ob)

	b.srv.Shutdown()
	during := msgs("during", 50)
	for i := 0; i < len(during); i += 10 {
		write(t, b.pool, b.ob, during[i:i+10]...)
	}
	testenv.CheckFor(t, waitTotal, waitStep, func() error {
		s := r.Stats()
		if s.PublishErrors == 0 || s.OldestPendingAge == 0 {
			return fmt.Errorf("publish errors %d, lag %s: the relay has not tried yet", s.PublishErrors, s.OldestPendingAge)
		}
		return nil
	})
	if n := pending(t, b.pool, b.ob); n != int64(len(during)) {
		t.Fatalf("%d rows pending while NATS is down, want %d", n, len(during))
	}
	if err := b.srv.Start(); err != nil {
		t.Fatalf("restart NATS: %v", err)
	}
	after := msgs("after", 20)
	write(t, b.pool, b.ob, after...)
	waitDrained(t, b.pool, b.ob)
	all := append(append(before, during...), after...)
	exactlyOnce(t, b.js, all)
	waitPublished(t, waitTotal, waitStep, uint64(len(all)), r)
}

// TestRelayThreeRelays: three relays, each with its own pools and NATS
// connection, drain 10,000 rows written concurrently; every message is in
// the stream once, and no relay published a row another one did.
func TestRelayThreeRelays(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const relays, writers, rows = 3, 8, 10_000
	rs := make([]*Relay, relays)
	for i := range rs {
		_, js := testenv.Connect(t, b.srv.URL())
		rs[i] = newRelay(t, openPool(t, b.url, 2), js, RelayConfig{Outbox: b.ob})
		startRelay(t, rs[i])
	}
	all := msgs("many", rows)
	var wg sync.WaitGroup
	per := rows / writers
	for w := range writers {
		wg.Go(func() {
			mine := all[w*per : (w+1)*per]
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for len(mine) > 0 {
				n := min(len(mine), 1+rng.IntN(25))
				err := b.ob.Tx(context.Background(), b.pool, func(tx pgx.Tx) error {
					return b.ob.Write(context.Background(), tx, mine[:n]...)
				})
				if err != nil {
					t.Errorf("writer %d: %v", w, err)
					return
				}
				mine = mine[n:]
			}
		})
	}
	wg.Wait()
	waitDrained(t, b.pool, b.ob)
	exactlyOnce(t, b.js, all)
	waitPublished(t, waitTotal, waitStep, rows, rs...)
	var published, dups uint64
	for i, r := range rs {
		s := r.Stats()
		t.Logf("relay %d: %+v", i, s)
		published += s.Published
		dups += s.Duplicates
	}
	if published != rows || dups != 0 {
		t.Errorf("relays published %d rows with %d duplicates, want %d and 0", published, dups, rows)
	}
}

// TestRelayOrder: rows written by one transaction keep their order in the
// stream when one relay runs, with transactions committing concurrently
// and batches smaller than a transaction.
func TestRelayOrder(t *testing.T) {
	t.Parallel()
	b := setup(t)
	startRelay(t, newRelay(t, b.pool, b.js, RelayConfig{Outbox: b.ob, BatchSize: 16}))
	const writers, txs, perTx = 4, 5, 60
	var wg sync.WaitGroup
	var all []Message
	var mu sync.Mutex
	for w := range writers {
		wg.Go(func() {
			for x := range txs {
				ms := msgs(fmt.Sprintf("o%d-%d", w, x), perTx)
				err := b.ob.Tx(context.Background(), b.pool, func(tx pgx.Tx) error {
					// Several Write calls of varied sizes in one transaction.
					for _, part := range [][]Message{ms[:1], ms[1:11], ms[11:]} {
						if err := b.ob.Write(context.Background(), tx, part...); err != nil {
							return err
						}
					}
					return nil
				})
				if err != nil {
					t.Errorf("writer %d: %v", w, err)
					return
				}
				mu.Lock()
				all = append(all, ms...)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	waitDrained(t, b.pool, b.ob)
	got := exactlyOnce(t, b.js, all)
	next := map[string]int{} // transaction prefix -> next expected index
	for _, m := range got {
		i := strings.LastIndexByte(m.id, '-')
		prefix := m.id[:i]
		var n int
		fmt.Sscan(m.id[i+1:], &n)
		if n != next[prefix] {
			t.Fatalf("stream seq %d holds %q, want %s-%d next: a transaction's order was broken", m.seq, m.id, prefix, next[prefix])
		}
		next[prefix]++
	}
}

// TestRelayHeaders: headers written with the message arrive with it.
func TestRelayHeaders(t *testing.T) {
	t.Parallel()
	b := setup(t)
	startRelay(t, newRelay(t, b.pool, b.js, RelayConfig{Outbox: b.ob}))
	m := Message{ID: "h", Subject: "test.h", Header: map[string][]string{"Trace": {"a", "b"}}, Data: []byte("x")}
	write(t, b.pool, b.ob, m)
	waitStream(t, b.js, 1)
	got := exactlyOnce(t, b.js, []Message{m})
	if strings.Join(got[0].header["Trace"], ",") != "a,b" {
		t.Errorf("headers %v", got[0].header)
	}
}

// TestRelayWakeInProcess: with polling and LISTEN out of the picture, the
// in-memory signal of Outbox.Tx wakes the relay.
func TestRelayWakeInProcess(t *testing.T) {
	t.Parallel()
	b := setup(t)
	r := newRelay(t, b.pool, b.js, RelayConfig{Outbox: b.ob, PollInterval: time.Hour, DisableListen: true})
	startRelay(t, r)
	testenv.CheckFor(t, waitTotal, waitStep, func() error {
		if r.Stats().Polls == 0 {
			return errors.New("no first poll yet")
		}
		return nil
	})
	ms := msgs("wake", 3)
	for _, m := range ms {
		write(t, b.pool, b.ob, m)
	}
	waitDrained(t, b.pool, b.ob)
	exactlyOnce(t, b.js, ms)
}

// TestRelayFullBatchLoops: a full batch is followed at once by the next
// round, without a wake or a poll.
func TestRelayFullBatchLoops(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const batch, rows = 10, 35
	ms := msgs("full", rows)
	write(t, b.pool, b.ob, ms...)
	r := newRelay(t, b.pool, b.js, RelayConfig{Outbox: b.ob, BatchSize: batch, PollInterval: time.Hour, DisableListen: true, DurableDelete: true})
	startRelay(t, r)
	waitDrained(t, b.pool, b.ob)
	exactlyOnce(t, b.js, ms)
	rounds := (rows + batch - 1) / batch
	s := r.Stats()
	if s.Polls != uint64(rounds) || s.Batches != uint64(rounds) || s.MaxBatchSize != batch || s.LastBatchSize != rows%batch {
		t.Errorf("stats %+v: want %d polls and batches, max %d, last %d", s, rounds, batch, rows%batch)
	}
	if want := float64(rows) / float64(rounds); s.AvgBatchSize != want {
		t.Errorf("average batch %v, want %v", s.AvgBatchSize, want)
	}
}

// TestRelayCrossProcessWake: the writer's Outbox has no relay in its
// process, the relay polls once an hour: only the rate-limited NOTIFY can
// wake it, also after its LISTEN connection was terminated.
func TestRelayCrossProcessWake(t *testing.T) {
	t.Parallel()
	b := setup(t)
	relayOutbox, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	r := newRelay(t, openPool(t, b.url, 2), b.js, RelayConfig{Outbox: relayOutbox, PollInterval: time.Hour, MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond})
	startRelay(t, r)
	listening := func(minErrors uint64) {
		testenv.CheckFor(t, waitTotal, waitStep, func() error {
			s := r.Stats()
			if s.Polls == 0 || !s.Listening || s.ListenErrors < minErrors {
				return fmt.Errorf("polls %d, listening %v, listen errors %d", s.Polls, s.Listening, s.ListenErrors)
			}
			return nil
		})
	}
	listening(0)

	writer, err := New(Config{NotifyDB: b.pool})
	if err != nil {
		t.Fatal(err)
	}
	defer writer.Close()
	m1 := Message{ID: "remote-1", Subject: "test.remote"}
	write(t, b.pool, writer, m1)
	waitStream(t, b.js, 1)
	if s := r.Stats(); s.Notifications == 0 {
		t.Fatalf("published without a notification: %+v", s)
	}

	// Terminate the LISTEN connection: the relay reconnects.
	var killed int
	if err := b.pool.QueryRow(t.Context(), `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1 AND datname = current_database()`, listenAppName).Scan(&killed); err != nil || killed != 1 {
		t.Fatalf("terminated %d LISTEN connections (%v), want 1", killed, err)
	}
	listening(1)
	notified := r.Stats().Notifications
	m2 := Message{ID: "remote-2", Subject: "test.remote"}
	write(t, b.pool, writer, m2)
	waitStream(t, b.js, 2)
	testenv.CheckFor(t, waitTotal, waitStep, func() error {
		if n := r.Stats().Notifications; n <= notified {
			return fmt.Errorf("%d notifications, want more than %d", n, notified)
		}
		return nil
	})
	exactlyOnce(t, b.js, []Message{m1, m2})
}

// TestRelayKeepsUnpublishableRows: a row whose subject no stream captures
// is retried with backoff, never dropped, and published once a stream
// exists; other rows are not held up.
func TestRelayKeepsUnpublishableRows(t *testing.T) {
	t.Parallel()
	b := setup(t)
	cfg := fastRelay(b.ob)
	// Longer than the client's retries on "no responders" (2 x 250ms), so
	// that the stream error, not the timeout, is reported.
	cfg.AckTimeout = 5 * time.Second
	r := newRelay(t, b.pool, b.js, cfg)
	startRelay(t, r)
	orphan := Message{ID: "orphan", Subject: "nostream.x", Data: []byte("o")}
	ok := Message{ID: "ok", Subject: "test.ok", Data: []byte("k")}
	write(t, b.pool, b.ob, orphan, ok)
	waitStream(t, b.js, 1)
	testenv.CheckFor(t, waitTotal, waitStep, func() error {
		if s := r.Stats(); s.PublishErrors < 2 || !errors.Is(s.LastError, jetstream.ErrNoStreamResponse) {
			return fmt.Errorf("publish errors %d, last error %v", s.PublishErrors, s.LastError)
		}
		return nil
	})
	if n := pending(t, b.pool, b.ob); n != 1 {
		t.Fatalf("%d rows pending, want the orphan", n)
	}
	if _, err := b.js.CreateStream(t.Context(), jetstream.StreamConfig{Name: "NOSTREAM", Subjects: []string{"nostream.>"}, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	waitDrained(t, b.pool, b.ob)
	if n, err := streamCount(t, b.js, "NOSTREAM"); err != nil || n != 1 {
		t.Fatalf("NOSTREAM holds %d messages (%v), want 1", n, err)
	}
	exactlyOnce(t, b.js, []Message{ok})
}

func TestRelayRunTwice(t *testing.T) {
	t.Parallel()
	b := setup(t)
	r := newRelay(t, b.pool, b.js, RelayConfig{Outbox: b.ob})
	stop := startRelay(t, r)
	testenv.CheckFor(t, waitTotal, waitStep, func() error {
		if r.Stats().Polls == 0 {
			return errors.New("not running yet")
		}
		return nil
	})
	if err := r.Run(t.Context()); !errors.Is(err, ErrRelayRunning) {
		t.Fatalf("second Run: got %v, want ErrRelayRunning", err)
	}
	stop()
	// Runs again after it returned.
	startRelay(t, r)
	m := Message{ID: "again", Subject: "test.again"}
	write(t, b.pool, b.ob, m)
	waitDrained(t, b.pool, b.ob)
	exactlyOnce(t, b.js, []Message{m})
}

func TestRelayConfigErrors(t *testing.T) {
	t.Parallel()
	b := setup(t)
	if _, err := NewRelay(nil, b.js, RelayConfig{}); !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "pool") {
		t.Errorf("nil pool: %v", err)
	}
	if _, err := NewRelay(b.pool, nil, RelayConfig{}); !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "js") {
		t.Errorf("nil js: %v", err)
	}
	cases := []struct {
		cfg   RelayConfig
		field string
	}{
		{RelayConfig{BatchSize: -1}, "BatchSize"},
		{RelayConfig{PollInterval: -1}, "PollInterval"},
		{RelayConfig{AckTimeout: -1}, "AckTimeout"},
		{RelayConfig{StatementTimeout: -1}, "StatementTimeout"},
		{RelayConfig{MinBackoff: -1}, "MinBackoff"},
		{RelayConfig{MaxBackoff: -1}, "MaxBackoff"},
		{RelayConfig{MinBackoff: time.Second, MaxBackoff: time.Millisecond}, "MinBackoff"},
	}
	for _, c := range cases {
		if _, err := NewRelay(b.pool, b.js, c.cfg); !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), c.field) {
			t.Errorf("%+v: got %v, want an ErrInvalidConfig naming %s", c.cfg, err, c.field)
		}
	}
}

func TestBackoff(t *testing.T) {
	t.Parallel()
	r := &Relay{cfg: RelayConfig{MinBackoff: 10 * time.Millisecond, MaxBackoff: 80 * time.Millisecond}}
	for n := 1; n <= 10; n++ {
		ceil := min(r.cfg.MinBackoff<<(n-1), r.cfg.MaxBackoff)
		for range 100 {
			if d := r.backoff(n); d < ceil/2 || d > ceil {
				t.Fatalf("backoff(%d) = %s, want within [%s, %s]", n, d, ceil/2, ceil)
			}
		}
	}
}
