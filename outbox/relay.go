package outbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Defaults of [RelayConfig].
const (
	DefaultBatchSize        = 256
	DefaultPollInterval     = time.Second
	DefaultAckTimeout       = 5 * time.Second
	DefaultStatementTimeout = 10 * time.Second
	DefaultMinBackoff       = 50 * time.Millisecond
	DefaultMaxBackoff       = 5 * time.Second
)

// listenAppName is the application_name of the relay's LISTEN connection.
const listenAppName = "jetsaga-outbox-listen"

// ErrAckTimeout is reported (through RelayConfig.OnError and
// RelayStats.LastError) for rows whose JetStream ack did not arrive within
// RelayConfig.AckTimeout. The rows stay in the table and are published
// again; JetStream drops the copy if the first one was stored.
var ErrAckTimeout = errors.New("outbox: no JetStream ack within the ack timeout")

// RelayConfig configures a [Relay]. The zero value is valid.
type RelayConfig struct {
	// Outbox names the table to relay and links the relay to writers of
	// this process: [Outbox.Notify] and [Outbox.Tx] on it wake the relay.
	// Default: the default table, woken only by [Relay.Wake], NOTIFY and
	// polling.
	Outbox *Outbox
	// BatchSize is the most rows claimed, published and deleted per
	// round. Default [DefaultBatchSize].
	BatchSize int
	// PollInterval is how long the relay waits for a wake, a NOTIFY or
	// more rows before it looks at the table anyway. A round that found a
	// full batch starts the next one at once. Default [DefaultPollInterval].
	PollInterval time.Duration
	// AckTimeout bounds the wait for JetStream's acks of one batch (and
	// for a free slot when the JetStream context has too many async
	// publishes pending). Default [DefaultAckTimeout].
	AckTimeout time.Duration
	// StatementTimeout bounds the round trip that deletes the published
	// rows and commits; it runs even after Run's context is cancelled, so
	// that the in-flight batch finishes. Default [DefaultStatementTimeout].
	StatementTimeout time.Duration
	// MinBackoff and MaxBackoff bound the pause after a failed round (a
	// database error, or a batch none of whose rows could be published);
	// the pause doubles with each consecutive failure and is jittered
	// between half and all of its value. Defaults [DefaultMinBackoff] and
	// [DefaultMaxBackoff].
	MinBackoff time.Duration
	// MaxBackoff: see MinBackoff.
	MaxBackoff time.Duration
	// DisableListen turns off LISTEN on the outbox's NOTIFY channel (e.g.
	// behind a transaction-pooling proxy, where LISTEN does not work). By
	// default the relay holds one extra connection, outside the pool,
	// listening, and reconnects when it drops.
	DisableListen bool
	// DurableDelete makes the relay's transaction (the delete of published
	// rows) commit with the server's synchronous_commit setting. By
	// default it commits with synchronous_commit = off: it does not wait
	// for the WAL flush, which saves an fsync per round. The only risk is
	// a PostgreSQL crash within a fraction of a second of the commit,
	// which brings the deleted rows back; they are then published again
	// and JetStream drops them as duplicates (within the stream's
	// duplicate window, 2 minutes by default). Set it if your streams'
	// duplicate window is shorter than PostgreSQL's recovery time.
	DurableDelete bool
	// OnError, if set, receives the errors the relay recovers from: each
	// database error, the first publish error of each round (all failed
	// rows are counted in RelayStats.PublishErrors), and each failure of
	// the LISTEN connection. It is called from the relay's goroutines and
	// must not block. Default: errors are only counted in [RelayStats].
	OnError func(error)
}

// RelayStats is a snapshot of a relay's counters since it was created.
type RelayStats struct {
	// Published counts rows acked by JetStream and deleted.
	Published uint64
	// Duplicates counts the Published rows that JetStream acked as
	// duplicates (published before, e.g. by a relay that crashed before
	// deleting them).
	Duplicates uint64
	// PublishErrors counts row publications that failed (error, negative
	// ack, or no ack within AckTimeout). The rows stay and are retried.
	PublishErrors uint64
	// DBErrors counts failed database round trips.
	DBErrors uint64
	// Polls counts the rounds that queried the table, empty ones included.
	Polls uint64
	// Batches counts the rounds that claimed at least one row.
	Batches uint64
	// LastBatchSize is the number of rows the latest round claimed.
	LastBatchSize int
	// MaxBatchSize is the largest number of rows one round claimed.
	MaxBatchSize int
	// AvgBatchSize is the mean number of rows claimed by the Batches.
	AvgBatchSize float64
	// OldestPendingAge is the lag: the age of the oldest row the latest
	// round claimed, measured when it claimed it (0 when it found none).
	OldestPendingAge time.Duration
	// Listening reports whether the LISTEN connection is up.
	Listening bool
	// Notifications counts NOTIFY messages received.
	Notifications uint64
	// ListenErrors counts failures of the LISTEN connection.
	ListenErrors uint64
	// LastError is the latest error the relay recovered from, or nil.
	LastError error
}

// Relay publishes the rows of an outbox table to JetStream and deletes them
// once JetStream has acknowledged them. Several relays, in one process or
// many, may share a table. Create it with [NewRelay] and start it with
// [Relay.Run].
type Relay struct {
	pool *pgxpool.Pool
	js   jetstream.JetStream
	cfg  RelayConfig
	ob   *Outbox

	claimSQL  string
	deleteSQL string

	wake    chan struct{}
	running atomic.Bool

	mu          sync.Mutex
	stats       RelayStats
	claimedRows uint64

	// afterPublish, set by tests, runs after the acks of a batch arrived
	// and before the rows are deleted; an error abandons the batch as a
	// crash would.
	afterPublish func(ctx context.Context, backendPID uint32) error
}

// NewRelay returns a relay that reads the table through pool and publishes
// with js. js should be dedicated to the relay or at least not be used for
// PublishAsyncComplete by others; its async publish options (max pending,
// ack handler) apply.
func NewRelay(pool *pgxpool.Pool, js jetstream.JetStream, cfg RelayConfig) (*Relay, error) {
	if pool == nil {
		return nil, errConfig("pool", "is nil")
	}
	if js == nil {
		return nil, errConfig("js", "is nil")
	}
	if cfg.Outbox == nil {
		o, err := New(Config{})
		if err != nil {
			return nil, err
		}
		cfg.Outbox = o
	}
	durations := []struct {
		name string
		d    *time.Duration
		def  time.Duration
	}{
		{"PollInterval", &cfg.PollInterval, DefaultPollInterval},
		{"AckTimeout", &cfg.AckTimeout, DefaultAckTimeout},
		{"StatementTimeout", &cfg.StatementTimeout, DefaultStatementTimeout},
		{"MinBackoff", &cfg.MinBackoff, DefaultMinBackoff},
		{"MaxBackoff", &cfg.MaxBackoff, DefaultMaxBackoff},
	}
	for _, f := range durations {
		switch {
		case *f.d < 0:
			return nil, errConfig(f.name, "is negative (%s)", *f.d)
		case *f.d == 0:
			*f.d = f.def
		}
	}
	if cfg.MinBackoff > cfg.MaxBackoff {
		return nil, errConfig("MinBackoff", "(%s) is above MaxBackoff (%s)", cfg.MinBackoff, cfg.MaxBackoff)
	}
	switch {
	case cfg.BatchSize < 0:
		return nil, errConfig("BatchSize", "is negative (%d)", cfg.BatchSize)
	case cfg.BatchSize == 0:
		cfg.BatchSize = DefaultBatchSize
	}
	t := cfg.Outbox.qtable
	return &Relay{
		pool: pool,
		js:   js,
		cfg:  cfg,
		ob:   cfg.Outbox,
		claimSQL: `SELECT id, msg_id, subject, headers, payload,
       (extract(epoch FROM clock_timestamp() - created_at) * 1e6)::bigint
FROM ` + t + ` ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED`,
		deleteSQL: `DELETE FROM ` + t + ` WHERE id = ANY($1)`,
		wake:      make(chan struct{}, 1),
	}, nil
}

// Wake makes the relay look at the table now (or right after its current
// round) instead of at the end of its poll interval. Call it after the
// commit of a transaction that wrote rows; it never blocks. [Outbox.Notify]
// calls it for relays created with that Outbox.
func (r *Relay) Wake() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Stats returns a snapshot of the relay's counters.
func (r *Relay) Stats() RelayStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.stats
	if s.Batches > 0 {
		s.AvgBatchSize = float64(r.claimedRows) / float64(s.Batches)
	}
	return s
}

// Run relays rows until ctx is done, then returns nil once the round in
// flight has finished: rows already published are still deleted (bounded by
// AckTimeout and StatementTimeout). Errors are retried with backoff, never
// returned; they are counted in [Relay.Stats] and passed to
// RelayConfig.OnError. Run returns [ErrRelayRunning] if the relay is
// already running; it may be run again after it returned.
//
// Each round takes two database round trips: BEGIN (and SET LOCAL
// synchronous_commit = off unless DurableDelete) with SELECT ... ORDER BY
// id LIMIT BatchSize FOR UPDATE SKIP LOCKED, then, after publishing every
// row asynchronously with Nats-Msg-Id = its ID and waiting for the acks,
// DELETE of the acked rows with COMMIT. Rows whose publication failed stay
// and are retried.
func (r *Relay) Run(ctx context.Context) error {
	if !r.running.CompareAndSwap(false, true) {
		return ErrRelayRunning
	}
	defer r.running.Store(false)
	r.ob.register(r)
	defer r.ob.unregister(r)

	var wg sync.WaitGroup
	listenCtx, stopListen := context.WithCancel(ctx)
	defer func() {
		stopListen()
		wg.Wait()
	}()
	if !r.cfg.DisableListen {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.listen(listenCtx)
		}()
	}

	failures := 0
	for {
		if ctx.Err() != nil {
			return nil
		}
		claimed, failed, err := r.round(ctx)
		if ctx.Err() != nil && err != nil {
			return nil // cancelled while claiming: nothing was published
		}
		if err != nil || (claimed > 0 && failed == claimed) {
			failures++
			if !sleepCtx(ctx, r.backoff(failures)) {
				return nil
			}
			continue
		}
		failures = 0
		if claimed == r.cfg.BatchSize {
			continue
		}
		poll := time.NewTimer(r.cfg.PollInterval)
		select {
		case <-ctx.Done():
			poll.Stop()
			return nil
		case <-r.wake:
		case <-poll.C:
		}
		poll.Stop()
	}
}

// backoff returns the jittered pause after n consecutive failures.
func (r *Relay) backoff(n int) time.Duration {
	d := r.cfg.MinBackoff
	for i := 1; i < n && d < r.cfg.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, r.cfg.MaxBackoff)
	half := d / 2
	return half + rand.N(d-half+1)
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// outboxRow is one claimed row.
type outboxRow struct {
	id        int64
	msgID     string
	subject   string
	headers   []byte
	payload   []byte
	ageMicros int64
}

func (r *Relay) report(err error, db bool, publishErrors int) {
	r.mu.Lock()
	if db {
		r.stats.DBErrors++
	}
	r.stats.PublishErrors += uint64(publishErrors)
	r.stats.LastError = err
	r.mu.Unlock()
	if r.cfg.OnError != nil {
		r.cfg.OnError(err)
	}
}

// round claims, publishes and deletes one batch. It returns how many rows
// it claimed and how many of those it could not publish.
func (r *Relay) round(ctx context.Context) (claimed, failed int, err error) {
	conn, err := r.pool.Acquire(ctx)
	if err != nil {
		err = fmt.Errorf("outbox: relay %s: acquire a connection: %w", r.ob.qtable, err)
		if ctx.Err() == nil {
			r.report(err, true, 0)
		}
		return 0, 0, err
	}
	c := conn.Conn()
	defer func() {
		if c.PgConn().TxStatus() != 'I' && !c.IsClosed() {
			// A failed round trip left the transaction open: end it; if
			// that fails too, Release destroys the connection and the
			// server rolls back.
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.cfg.StatementTimeout)
			_, _ = c.Exec(rctx, "ROLLBACK")
			cancel()
		}
		conn.Release()
	}()

	rows, err := r.claim(ctx, c)
	r.mu.Lock()
	r.stats.Polls++
	if err == nil {
		r.stats.LastBatchSize = len(rows)
		r.stats.OldestPendingAge = 0
		if len(rows) > 0 {
			r.stats.Batches++
			r.claimedRows += uint64(len(rows))
			r.stats.MaxBatchSize = max(r.stats.MaxBatchSize, len(rows))
			r.stats.OldestPendingAge = time.Duration(rows[0].ageMicros) * time.Microsecond
		}
	}
	r.mu.Unlock()
	if err != nil {
		err = fmt.Errorf("outbox: relay %s: claim rows: %w", r.ob.qtable, err)
		if ctx.Err() == nil {
			r.report(err, true, 0)
		}
		return 0, 0, err
	}
	if len(rows) == 0 {
		return 0, 0, r.finish(ctx, c, nil)
	}

	acked, dups, perr := r.publish(rows)
	failed = len(rows) - len(acked)
	if failed > 0 {
		r.report(perr, false, failed)
	}
	if r.afterPublish != nil {
		if err := r.afterPublish(ctx, c.PgConn().PID()); err != nil {
			return len(rows), failed, err
		}
	}
	if err := r.finish(ctx, c, acked); err != nil {
		err = fmt.Errorf("outbox: relay %s: delete %d published rows: %w", r.ob.qtable, len(acked), err)
		r.report(err, true, 0)
		return len(rows), failed, err
	}
	r.mu.Lock()
	r.stats.Published += uint64(len(acked))
	r.stats.Duplicates += uint64(dups)
	r.mu.Unlock()
	return len(rows), failed, nil
}

// claim begins the transaction and locks up to BatchSize rows, in one round
// trip.
func (r *Relay) claim(ctx context.Context, c *pgx.Conn) ([]outboxRow, error) {
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	if !r.cfg.DurableDelete {
		b.Queue("SET LOCAL synchronous_commit = off")
	}
	b.Queue(r.claimSQL, r.cfg.BatchSize)
	br := c.SendBatch(ctx, b)
	defer br.Close()
	for range b.Len() - 1 {
		if _, err := br.Exec(); err != nil {
			return nil, err
		}
	}
	q, err := br.Query()
	if err != nil {
		return nil, err
	}
	var rows []outboxRow
	for q.Next() {
		var row outboxRow
		if err := q.Scan(&row.id, &row.msgID, &row.subject, &row.headers, &row.payload, &row.ageMicros); err != nil {
			q.Close()
			return nil, err
		}
		rows = append(rows, row)
	}
	if err := q.Err(); err != nil {
		return nil, err
	}
	return rows, br.Close()
}

// finish deletes the acked rows and commits, in one round trip, even when
// ctx is cancelled.
func (r *Relay) finish(ctx context.Context, c *pgx.Conn, acked []int64) error {
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.cfg.StatementTimeout)
	defer cancel()
	b := &pgx.Batch{}
	if len(acked) > 0 {
		b.Queue(r.deleteSQL, acked)
	}
	b.Queue("COMMIT")
	br := c.SendBatch(fctx, b)
	defer br.Close()
	if len(acked) > 0 {
		tag, err := br.Exec()
		if err != nil {
			return err
		}
		if tag.RowsAffected() != int64(len(acked)) {
			// We hold the row locks: only a manual change can cause this.
			r.report(fmt.Errorf("outbox: relay %s: deleted %d rows of %d published", r.ob.qtable, tag.RowsAffected(), len(acked)), true, 0)
		}
	}
	tag, err := br.Exec()
	if err != nil {
		return err
	}
	if tag.String() != "COMMIT" {
		return fmt.Errorf("transaction was rolled back (%s)", tag)
	}
	return br.Close()
}

// publish sends every row asynchronously, in id order, and waits for the
// acks, at most AckTimeout. It returns the ids of the acked rows, how many
// of them were duplicates, and the first error.
func (r *Relay) publish(rows []outboxRow) (acked []int64, dups int, firstErr error) {
	setErr := func(err error) {
		if firstErr == nil {
			firstErr = err
		}
	}
	type pending struct {
		row    *outboxRow
		future jetstream.PubAckFuture
	}
	sent := make([]pending, 0, len(rows))
	for i := range rows {
		row := &rows[i]
		msg := &nats.Msg{Subject: row.subject, Data: row.payload}
		if row.headers != nil {
			if err := json.Unmarshal(row.headers, &msg.Header); err != nil {
				// Written by something other than Write: keep the row
				// (never drop), tell, and go on with the others.
				setErr(fmt.Errorf("outbox: relay %s: row %d (%q): headers are not a JSON object of string arrays: %w", r.ob.qtable, row.id, row.msgID, err))
				continue
			}
		}
		f, err := r.js.PublishMsgAsync(msg, jetstream.WithMsgID(row.msgID), jetstream.WithStallWait(r.cfg.AckTimeout))
		if err != nil {
			setErr(fmt.Errorf("outbox: relay %s: publish row %d (%q) to %q: %w", r.ob.qtable, row.id, row.msgID, row.subject, err))
			if errors.Is(err, nats.ErrMaxPayload) {
				continue // this row only
			}
			// The connection is unusable: publishing the following rows
			// could only break their order.
			break
		}
		sent = append(sent, pending{row: row, future: f})
	}

	timeout := time.NewTimer(r.cfg.AckTimeout)
	defer timeout.Stop()
	expired := false
	for _, p := range sent {
		var ack *jetstream.PubAck
		var err error
		if !expired {
			select {
			case ack = <-p.future.Ok():
			case err = <-p.future.Err():
			case <-timeout.C:
				expired = true
			}
		}
		if expired {
			select {
			case ack = <-p.future.Ok():
			case err = <-p.future.Err():
			default:
				err = ErrAckTimeout
			}
		}
		if err != nil {
			setErr(fmt.Errorf("outbox: relay %s: publish row %d (%q) to %q: %w", r.ob.qtable, p.row.id, p.row.msgID, p.row.subject, err))
			continue
		}
		acked = append(acked, p.row.id)
		if ack.Duplicate {
			dups++
		}
	}
	return acked, dups, firstErr
}
