// Package outbox is a transactional outbox for PostgreSQL (pgx) with a relay
// that publishes to NATS JetStream.
//
// A service that changes its database and must tell others about it writes
// the message into an outbox table in the same transaction as the change
// (Write): the message exists if and only if the change committed. A [Relay]
// publishes the table's rows to JetStream and deletes them once JetStream
// has acknowledged them. The package knows nothing about sagas; any service
// can use it for any event.
//
// # Setup
//
//	if err := outbox.Migrate(ctx, pool); err != nil { ... } // at start-up, from every instance
//	ob, err := outbox.New(outbox.Config{})                  // the default table, jetsaga_outbox
//	relay, err := outbox.NewRelay(pool, js, outbox.RelayConfig{Outbox: ob})
//	go relay.Run(ctx)
//
//	err = ob.Tx(ctx, pool, func(tx pgx.Tx) error {
//		if _, err := tx.Exec(ctx, `UPDATE accounts SET ...`); err != nil {
//			return err
//		}
//		return ob.Write(ctx, tx, outbox.Message{ID: "transfer/42/debited", Subject: "bank.debited", Data: body})
//	}) // commits, then wakes the relay
//
// # Table and migrations
//
// A row holds a bigint identity id (the publication order), the message id
// (unique, published as Nats-Msg-Id), the subject, the headers (jsonb), the
// payload (bytea) and the time its transaction started. [Migrate] creates
// the table from versioned up/down SQL files embedded in the package and
// records the version in <table>_migrations. It runs in one transaction
// under an advisory lock derived from the table's name, so every instance
// of a service may run it at start-up; it is idempotent. Config.Schema and
// Config.Table choose the table, so several services can share one
// database; names are restricted to plain lower-case identifiers and
// quoted with pgx.Identifier.
//
// # Writing
//
// [Outbox.Write] (and [Write] for the default table) validates every
// message first and writes nothing if one is invalid: the error is a
// [*ValidationError] naming the message's index and field (empty or
// over-long ID, empty subject, wildcards, whitespace or empty tokens in the
// subject, malformed headers, payload above Config.MaxPayload, 1 MiB by
// default). It then inserts all messages in one round trip (a multi-row
// insert over unnest of arrays), keeping their order. An ID that is already
// pending fails with [ErrDuplicateID].
//
// # Waking the relay
//
// A pg_notify in every business transaction serialises commits on
// PostgreSQL's notify queue lock (measured on this project: 7,300 → 2,700
// transactions/s at 64 connections), so Write never notifies. Instead:
//
//   - a writer in the relay's process calls [Outbox.Notify] after the
//     commit ([Outbox.Tx] does), which wakes the relays created with the
//     same Outbox through a channel, without I/O; a transaction wrapper
//     that implements [TxObserver] learns from Write which outboxes to
//     notify (the participants runtime's step transactions do);
//   - a writer in another process sets Config.NotifyDB: Notify then also
//     sends a pg_notify on the table's channel, outside the business
//     transaction, at most one per Config.NotifyInterval (25 ms by default)
//     per Outbox, with a trailing send for calls inside the interval so
//     that no commit goes unannounced; the relay LISTENs on a dedicated
//     connection and reconnects when it drops;
//   - the relay polls anyway every RelayConfig.PollInterval (1 s by
//     default), which catches anything else (a lost notification, a writer
//     that never notifies), and starts the next round at once after a full
//     batch.
//
// # The relay
//
// Each round is one transaction in two round trips: BEGIN, SET LOCAL
// synchronous_commit = off and SELECT ... ORDER BY id LIMIT BatchSize FOR
// UPDATE SKIP LOCKED; then, after publishing every claimed row with
// PublishMsgAsync (Nats-Msg-Id = the row's ID) and waiting for all acks
// (at most AckTimeout), DELETE of the acked rows by an id array and COMMIT.
// Rows whose publication failed stay in the table and are retried;
// consecutive failed rounds back off exponentially with jitter
// (MinBackoff to MaxBackoff). A row is never dropped: a row that cannot be
// published (no stream for its subject, payload above the server's limit)
// is retried until an operator fixes the cause, while the rows after it go
// on. Cancelling Run's context lets the round in flight finish (its
// published rows are deleted) and then Run returns.
//
// There is no cursor: SKIP LOCKED only skips rows other relays hold, and a
// row leaves the table only after it was published. So a transaction that
// takes a lower id but commits after a higher one (the case watermill-sql
// guards against with snapshot xmin checks) is simply picked up by the next
// round.
//
// # Guarantees
//
//   - Atomicity: a message is published only if the transaction that wrote
//     it committed; a rolled-back transaction publishes nothing.
//   - At-least-once to JetStream: a row is deleted only after JetStream
//     acknowledged it. A relay that dies (or loses its database connection,
//     or whose delete is lost in a PostgreSQL crash, see
//     RelayConfig.DurableDelete) between the ack and the commit leaves the
//     row, and it is published again.
//   - Exactly once in the stream within its duplicate window: every
//     publication carries Nats-Msg-Id = the message ID, so JetStream drops
//     re-publications within the stream's duplicate window (2 minutes by
//     default; keep it longer than your worst outage of relay + database
//     recovery). Consumers beyond that window need their own
//     deduplication (jetsaga's participant barrier is one).
//   - Several relays, in one process or many, may share a table: SKIP LOCKED
//     gives each round disjoint rows, so no row is published twice except
//     across a crash as above.
//   - Order: with one relay, rows are published in id order, which follows
//     the order in which each transaction wrote them; asynchronous
//     publishes on one connection keep that order in the stream. Rows of
//     concurrent transactions interleave. The order can break only when a
//     publication fails and is retried after later rows succeeded, or when
//     several relays share the table.
//
// # Observability
//
// [Relay.Stats] returns counters: rows published (and how many were
// duplicates), publish errors, database errors, polls and non-empty
// batches, last, largest and mean batch size, the lag (age of the oldest
// row the latest round claimed), and the state of the LISTEN connection.
// RelayConfig.OnError receives each error the relay recovers from.
// [Outbox.Pending] counts the rows waiting and the age of the oldest.
//
// # Performance
//
// Measured with
//
//	go test -run XXX -bench . -benchtime 20000x -count 5 ./outbox/
//
// on a 2-core AMD EPYC virtual machine with 24 GB of RAM, shared with other
// builds (load average 2 to 3 during the run), Go 1.26; PostgreSQL 15 on
// the same machine with fsync, synchronous_commit and full_page_writes on;
// nats-server v2.15.2 embedded in the benchmark process, one R1 stream
// with file storage; 256-byte payloads; the relay with its defaults
// (deletes committed with synchronous_commit = off). Medians of 5 runs,
// [min..max] in brackets.
//
// The relay alone, draining a committed backlog (BenchmarkRelayDrain),
// rows/s from its first claim to the last ack and delete:
//
//	BatchSize      JetStream default fsync   sync_interval: always
//	1              2,290 [1,830..2,370]      1,490 [1,410..1,610]
//	64            37,700 [33,900..39,400]    6,000 [4,660..6,350]
//	256 (default) 48,900 [43,300..56,000]    6,500 [6,040..6,930]
//
// Commit→ack latency at an offered 2,000 rows/s (single-row transactions
// from 4 goroutines, relay woken in memory, BenchmarkLatencyAt2000): with
// JetStream's default fsync p50 0.27 ms [0.24..0.36], p99 3.5 ms
// [1.0..104] (the worst run coincided with other builds); with
// sync_interval: always p50 11 ms [1.1..149], p99 155 ms [42..1,641]:
// PostgreSQL's 2,000 commits/s and JetStream's per-message fsync share one
// disk, and the relay's rounds wait for the stream's fsyncs.
//
// Writers and relay together at full speed (BenchmarkWriteToAck: 4
// writers committing 16-row transactions as fast as they can), rows/s from
// the first write to the last ack: default fsync 23,200
// [21,900..23,500] at BatchSize 256 (commit→ack p50 3.2 ms, p99 22 ms),
// 19,100 [6,900..30,700] at 64, 2,200 at 1; sync_interval: always 5,200
// [2,700..5,700] at 256. When writers outrun the relay (BatchSize 1, or
// sync always), the latency is the backlog's and grows to seconds.
//
// With sync_interval: always the R1 file store fsyncs every message, so
// the relay is capped near the ~6,000 asynchronous publishes/s this disk
// allows whatever the batch size; going further would need JetStream's
// batch publishing, which this package does not use yet. With the default
// fsync a round costs about two database round trips plus one JetStream
// round trip, so throughput grows with BatchSize; BatchSize 1 is for
// tests only.
package outbox
