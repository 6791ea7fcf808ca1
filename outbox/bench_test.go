package outbox

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetsaga/jetsaga/devenv"
	"github.com/jetsaga/jetsaga/internal/testenv"
)

// Benchmark settings.
const (
	benchPayload    = 256  // bytes per message
	benchWriteChunk = 1000 // rows per transaction when filling a backlog
	benchRate       = 2000 // rows/s offered in the latency benchmark
	benchWriters    = 4    // goroutines sharing the offered rate
	benchStatsPoll  = time.Millisecond / 5
)

// benchEnv is one database and one NATS server (default fsync or sync
// always) shared by the sub-benchmarks of one mode.
type benchEnv struct {
	pool  *pgxpool.Pool // writers
	relay *pgxpool.Pool // the relay's
	ob    *Outbox
	srv   *devenv.NATSServer
	js    jetstream.JetStream
	runs  atomic.Int64 // distinct message ids per run
}

func newBenchEnv(b *testing.B, syncAlways bool) *benchEnv {
	b.Helper()
	var opts []testenv.NATSOption
	if syncAlways {
		opts = append(opts, testenv.SyncAlways())
	}
	url := testenv.PostgresURL(b)
	e := &benchEnv{pool: openPool(b, url, 2*benchWriters), relay: openPool(b, url, 2), srv: testenv.NATS(b, opts...)}
	var err error
	if e.ob, err = New(Config{}); err != nil {
		b.Fatal(err)
	}
	if err := e.ob.Migrate(b.Context(), e.pool); err != nil {
		b.Fatal(err)
	}
	_, e.js = testenv.Connect(b, e.srv.URL())
	if _, err := e.js.CreateStream(b.Context(), jetstream.StreamConfig{Name: testStream, Subjects: []string{testSubjects}, Storage: jetstream.FileStorage}); err != nil {
		b.Fatal(err)
	}
	return e
}

// reset empties the table (vacuumed) and the stream between runs.
func (e *benchEnv) reset(b *testing.B) {
	b.Helper()
	if _, err := e.pool.Exec(b.Context(), `TRUNCATE `+e.ob.Table()); err != nil {
		b.Fatal(err)
	}
	if _, err := e.pool.Exec(b.Context(), `VACUUM ANALYZE `+e.ob.Table()); err != nil {
		b.Fatal(err)
	}
	s, err := e.js.Stream(b.Context(), testStream)
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Purge(b.Context()); err != nil {
		b.Fatal(err)
	}
}

func benchMsgs(prefix string, from, n int) []Message {
	ms := make([]Message, n)
	data := []byte(strings.Repeat("x", benchPayload))
	for i := range ms {
		ms[i] = Message{ID: prefix + strconv.Itoa(from+i), Subject: "test.bench", Data: data}
	}
	return ms
}

// runRelay starts a relay on js and returns a function that stops it.
func runRelay(b *testing.B, r *Relay) (stop func()) {
	c, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(c) }()
	return func() {
		cancel()
		if err := <-done; err != nil {
			b.Errorf("Run: %v", err)
		}
	}
}

// BenchmarkRelayDrain measures the relay alone: b.N rows are committed
// beforehand (not timed), then one relay publishes them to JetStream and
// deletes them. rows/s is the relay's throughput from the first claim to
// the last ack and delete.
func BenchmarkRelayDrain(b *testing.B) {
	for _, mode := range []struct {
		name   string
		always bool
	}{{"fsync=default", false}, {"fsync=always", true}} {
		e := newBenchEnv(b, mode.always)
		for _, batch := range []int{1, 64, 256} {
			b.Run(fmt.Sprintf("%s/batch=%d", mode.name, batch), func(b *testing.B) {
				e.reset(b)
				prefix := fmt.Sprintf("drain%d-", e.runs.Add(1))
				for i := 0; i < b.N; i += benchWriteChunk {
					write(b, e.pool, e.ob, benchMsgs(prefix, i, min(benchWriteChunk, b.N-i))...)
				}
				r, err := NewRelay(e.relay, e.js, RelayConfig{Outbox: e.ob, BatchSize: batch, DisableListen: true})
				if err != nil {
					b.Fatal(err)
				}
				b.ResetTimer()
				start := time.Now()
				stop := runRelay(b, r)
				waitPublished(b, 5*time.Minute, benchStatsPoll, uint64(b.N), r)
				elapsed := time.Since(start)
				b.StopTimer()
				stop()
				b.ReportMetric(float64(b.N)/elapsed.Seconds(), "rows/s")
				b.ReportMetric(r.Stats().AvgBatchSize, "rows/batch")
			})
		}
	}
}

// BenchmarkWriteToAck runs writers and one relay together: each of
// benchWriters goroutines commits transactions of 16 rows as fast as it
// can, the relay is woken in memory after each commit. rows/s counts rows
// from the first write until JetStream acked the last; p50/p99 are the
// latencies from each row's commit to its JetStream ack.
func BenchmarkWriteToAck(b *testing.B) {
	const perTx = 16
	for _, mode := range []struct {
		name   string
		always bool
	}{{"fsync=default", false}, {"fsync=always", true}} {
		e := newBenchEnv(b, mode.always)
		for _, batch := range []int{1, 64, 256} {
			b.Run(fmt.Sprintf("%s/batch=%d", mode.name, batch), func(b *testing.B) {
				e.reset(b)
				lat := newLatencies(b.N)
				prefix := fmt.Sprintf("w2a%d-", e.runs.Add(1))
				js := lat.js(b, e.srv.URL(), prefix)
				r, err := NewRelay(e.relay, js, RelayConfig{Outbox: e.ob, BatchSize: batch, DisableListen: true})
				if err != nil {
					b.Fatal(err)
				}
				stop := runRelay(b, r)
				b.ResetTimer()
				start := time.Now()
				var next atomic.Int64
				var wg sync.WaitGroup
				for range benchWriters {
					wg.Go(func() {
						for {
							from := int(next.Add(perTx)) - perTx
							if from >= b.N {
								return
							}
							ms := benchMsgs(prefix, from, min(perTx, b.N-from))
							err := pgx.BeginFunc(context.Background(), e.pool, func(tx pgx.Tx) error { return e.ob.Write(context.Background(), tx, ms...) })
							if err != nil {
								b.Error(err)
								return
							}
							lat.committed(from, len(ms))
							e.ob.Notify()
						}
					})
				}
				wg.Wait()
				waitPublished(b, 5*time.Minute, benchStatsPoll, uint64(b.N), r)
				elapsed := time.Since(start)
				b.StopTimer()
				stop()
				b.ReportMetric(float64(b.N)/elapsed.Seconds(), "rows/s")
				lat.report(b)
			})
		}
	}
}

// BenchmarkLatencyAt2000 offers benchRate single-row transactions per
// second (paced, spread over benchWriters goroutines, each woken relay in
// memory) and reports the commit→ack latency percentiles.
func BenchmarkLatencyAt2000(b *testing.B) {
	for _, mode := range []struct {
		name   string
		always bool
	}{{"fsync=default", false}, {"fsync=always", true}} {
		e := newBenchEnv(b, mode.always)
		b.Run(mode.name, func(b *testing.B) {
			e.reset(b)
			lat := newLatencies(b.N)
			prefix := fmt.Sprintf("lat%d-", e.runs.Add(1))
			js := lat.js(b, e.srv.URL(), prefix)
			r, err := NewRelay(e.relay, js, RelayConfig{Outbox: e.ob, DisableListen: true})
			if err != nil {
				b.Fatal(err)
			}
			stop := runRelay(b, r)
			interval := time.Second / benchRate
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			for w := range benchWriters {
				wg.Go(func() {
					for i := w; i < b.N; i += benchWriters {
						if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
							time.Sleep(d)
						}
						ms := benchMsgs(prefix, i, 1)
						err := pgx.BeginFunc(context.Background(), e.pool, func(tx pgx.Tx) error { return e.ob.Write(context.Background(), tx, ms...) })
						if err != nil {
							b.Error(err)
							return
						}
						lat.committed(i, 1)
						e.ob.Notify()
					}
				})
			}
			wg.Wait()
			waitPublished(b, 5*time.Minute, benchStatsPoll, uint64(b.N), r)
			elapsed := time.Since(start)
			b.StopTimer()
			stop()
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "rows/s")
			lat.report(b)
		})
	}
}

// latencies records, per row number, when its transaction committed and
// when JetStream acked it.
type latencies struct {
	commit []atomic.Int64 // unix ns
	ack    []atomic.Int64
}

func newLatencies(n int) *latencies {
	return &latencies{commit: make([]atomic.Int64, n), ack: make([]atomic.Int64, n)}
}

func (l *latencies) committed(from, n int) {
	now := time.Now().UnixNano()
	for i := from; i < from+n; i++ {
		l.commit[i].Store(now)
	}
}

// js connects a JetStream client whose ack handler stamps the acks of
// messages with ids prefix<n>.
func (l *latencies) js(b *testing.B, url, prefix string) jetstream.JetStream {
	nc, _ := testenv.Connect(b, url)
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncAckHandler(func(_ jetstream.JetStream, m *nats.Msg, _ *jetstream.PubAck) {
		now := time.Now().UnixNano()
		if i, err := strconv.Atoi(strings.TrimPrefix(m.Header.Get(jetstream.MsgIDHeader), prefix)); err == nil && i < len(l.ack) {
			l.ack[i].CompareAndSwap(0, now)
		}
	}))
	if err != nil {
		b.Fatal(err)
	}
	return js
}

func (l *latencies) report(b *testing.B) {
	ds := make([]time.Duration, 0, len(l.ack))
	for i := range l.ack {
		c, a := l.commit[i].Load(), l.ack[i].Load()
		if c == 0 || a == 0 {
			b.Fatalf("row %d: commit at %d, ack at %d", i, c, a)
		}
		// An ack can beat the writer's clock read after Commit returned.
		ds = append(ds, max(0, time.Duration(a-c)))
	}
	slices.Sort(ds)
	pct := func(p float64) float64 {
		return float64(ds[min(len(ds)-1, int(p*float64(len(ds))))]) / float64(time.Millisecond)
	}
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
}
