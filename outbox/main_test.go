package outbox

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetsaga/jetsaga/devenv"
	"github.com/jetsaga/jetsaga/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// Test timings: generous bounds for eventual conditions (never asserted as
// performance) and short relay timeouts so fault tests move quickly.
const (
	waitTotal = 30 * time.Second
	waitStep  = 10 * time.Millisecond
	// testStream captures testSubjects.
	testStream   = "OUTBOX_TEST"
	testSubjects = "test.>"
)

// bundle is one test's environment: a fresh database with the outbox
// migrated, an embedded NATS server with the test stream, and a
// connection to it.
type bundle struct {
	url  string
	pool *pgxpool.Pool
	ob   *Outbox
	srv  *devenv.NATSServer
	js   jetstream.JetStream
}

func setup(t *testing.T) *bundle {
	t.Helper()
	url := testenv.PostgresURL(t)
	b := &bundle{url: url, pool: openPool(t, url, 8), srv: testenv.NATS(t)}
	// A private Outbox on the default table: Notify on it wakes this
	// test's relays only.
	var err error
	if b.ob, err = New(Config{}); err != nil {
		t.Fatal(err)
	}
	if err := Migrate(t.Context(), b.pool); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	_, b.js = testenv.Connect(t, b.srv.URL())
	createStream(t, b.js)
	return b
}

// openPool opens a pool of up to maxConns connections on url, closed when
// the test ends.
func openPool(t testing.TB, url string, maxConns int32) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = maxConns
	pool, err := pgxpool.NewWithConfig(t.Context(), cfg)
	if err != nil {
		t.Fatalf("open pool: %v", err)
	}
	t.Cleanup(pool.Close)
	return pool
}

func createStream(t *testing.T, js jetstream.JetStream) {
	t.Helper()
	_, err := js.CreateStream(t.Context(), jetstream.StreamConfig{
		Name:     testStream,
		Subjects: []string{testSubjects},
		Storage:  jetstream.FileStorage,
	})
	if err != nil {
		t.Fatalf("create stream: %v", err)
	}
}

// startRelay runs r until the test ends and checks that Run returned nil.
func startRelay(t *testing.T, r *Relay) (stop func()) {
	t.Helper()
	c, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(c) }()
	stopped := false
	stop = func() {
		t.Helper()
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(waitTotal):
			t.Errorf("Run did not return within %s of its context's cancellation", waitTotal)
		}
	}
	t.Cleanup(stop)
	return stop
}

func newRelay(t *testing.T, pool *pgxpool.Pool, js jetstream.JetStream, cfg RelayConfig) *Relay {
	t.Helper()
	if cfg.OnError == nil {
		cfg.OnError = func(err error) { t.Logf("relay: %v", err) }
	}
	r, err := NewRelay(pool, js, cfg)
	if err != nil {
		t.Fatalf("NewRelay: %v", err)
	}
	return r
}

// msgs makes n messages with ids "<prefix>-<i>" on subject test.<prefix>.
func msgs(prefix string, n int) []Message {
	ms := make([]Message, n)
	for i := range ms {
		ms[i] = Message{
			ID:      fmt.Sprintf("%s-%d", prefix, i),
			Subject: "test." + prefix,
			Data:    fmt.Appendf(nil, "payload %s %d", prefix, i),
		}
	}
	return ms
}

// write commits msgs in one transaction through o.
func write(t testing.TB, pool *pgxpool.Pool, o *Outbox, ms ...Message) {
	t.Helper()
	if err := o.Tx(t.Context(), pool, func(tx pgx.Tx) error { return o.Write(t.Context(), tx, ms...) }); err != nil {
		t.Fatalf("write: %v", err)
	}
}

func pending(t testing.TB, pool *pgxpool.Pool, o *Outbox) int64 {
	t.Helper()
	p, err := o.Pending(t.Context(), pool)
	if err != nil {
		t.Fatalf("Pending: %v", err)
	}
	return p.Rows
}

// streamMsg is a message read back from the stream.
type streamMsg struct {
	seq     uint64
	subject string
	id      string
	data    string
	header  map[string][]string
}

// readStream returns every message in the stream, in sequence order.
func readStream(t *testing.T, js jetstream.JetStream, stream string) []streamMsg {
	t.Helper()
	s, err := js.Stream(t.Context(), stream)
	if err != nil {
		t.Fatalf("stream %s: %v", stream, err)
	}
	info, err := s.Info(t.Context())
	if err != nil {
		t.Fatalf("stream info: %v", err)
	}
	total := int(info.State.Msgs)
	out := make([]streamMsg, 0, total)
	if total == 0 {
		return out
	}
	cons, err := s.OrderedConsumer(t.Context(), jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatalf("ordered consumer: %v", err)
	}
	for len(out) < total {
		batch, err := cons.Fetch(min(total-len(out), 1000), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatalf("fetch: %v", err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			md, err := m.Metadata()
			if err != nil {
				t.Fatalf("metadata: %v", err)
			}
			out = append(out, streamMsg{
				seq:     md.Sequence.Stream,
				subject: m.Subject(),
				id:      m.Headers().Get(jetstream.MsgIDHeader),
				data:    string(m.Data()),
				header:  m.Headers(),
			})
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			t.Fatalf("fetch: %v", err)
		}
		if got == 0 {
			t.Fatalf("read %d of the %d messages of %s, then nothing", len(out), total, stream)
		}
	}
	return out
}

// streamCount returns the number of messages in the stream.
func streamCount(t *testing.T, js jetstream.JetStream, stream string) (int, error) {
	s, err := js.Stream(t.Context(), stream)
	if err != nil {
		return 0, err
	}
	info, err := s.Info(t.Context())
	if err != nil {
		return 0, err
	}
	return int(info.State.Msgs), nil
}

// waitStream waits until the stream holds n messages.
func waitStream(t *testing.T, js jetstream.JetStream, n int) {
	t.Helper()
	testenv.CheckFor(t, waitTotal, waitStep, func() error {
		got, err := streamCount(t, js, testStream)
		if err != nil {
			return err
		}
		if got != n {
			return fmt.Errorf("stream has %d messages, want %d", got, n)
		}
		return nil
	})
}

// waitDrained waits until the outbox table is empty.
func waitDrained(t *testing.T, pool *pgxpool.Pool, o *Outbox) {
	t.Helper()
	testenv.CheckFor(t, waitTotal, waitStep, func() error {
		if n := pending(t, pool, o); n != 0 {
			return fmt.Errorf("%d rows still pending", n)
		}
		return nil
	})
}

// waitPublished waits, polling every step for up to total, until the
// relays count at least n published rows between them. (A relay counts a
// batch once its delete has committed, a moment after waitDrained can see
// the table empty.)
func waitPublished(t testing.TB, total, step time.Duration, n uint64, rs ...*Relay) {
	t.Helper()
	testenv.CheckFor(t, total, step, func() error {
		var published uint64
		var lastErr error
		for _, r := range rs {
			s := r.Stats()
			published += s.Published
			lastErr = cmp.Or(s.LastError, lastErr)
		}
		if published < n {
			return fmt.Errorf("relays count %d published rows of %d (last error: %v)", published, n, lastErr)
		}
		return nil
	})
}

// exactlyOnce checks that the stream holds each of ms exactly once, with
// its subject and payload, and nothing else.
func exactlyOnce(t *testing.T, js jetstream.JetStream, ms []Message) []streamMsg {
	t.Helper()
	got := readStream(t, js, testStream)
	want := make(map[string]*Message, len(ms))
	for i := range ms {
		want[ms[i].ID] = &ms[i]
	}
	seen := make(map[string]int, len(got))
	for _, m := range got {
		seen[m.id]++
		w, ok := want[m.id]
		switch {
		case !ok:
			t.Errorf("stream holds unexpected message %q (seq %d)", m.id, m.seq)
		case seen[m.id] > 1:
			t.Errorf("stream holds message %q %d times", m.id, seen[m.id])
		case m.subject != w.Subject || m.data != string(w.Data):
			t.Errorf("message %q: got subject %q data %q, want %q %q", m.id, m.subject, m.data, w.Subject, w.Data)
		}
	}
	missing := 0
	for id := range want {
		if seen[id] == 0 {
			missing++
			if missing <= 5 {
				t.Errorf("message %q is missing from the stream", id)
			}
		}
	}
	if missing > 0 {
		t.Errorf("%d of %d messages missing", missing, len(ms))
	}
	return got
}
