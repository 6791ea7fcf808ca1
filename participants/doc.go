// Package participants is jetsaga's participant runtime: it consumes one
// participant's step commands from JetStream and runs the user's typed
// handlers, each command in ONE PostgreSQL transaction together with the
// sub-transaction barrier, whose rows record the outcome; after COMMIT it
// publishes the outcome to the sagas stream, where the coordinator picks it
// up, and only then acks the command.
//
// The barrier row is the step's transactional outbox: it commits atomically
// with the business change and holds everything the outcome says. If the
// publish or the ack is lost (a crash, NATS unreachable), the command is
// delivered again, the barrier recognises it, and the stored outcome is
// published again under the same message id. So an outcome needs no outbox
// row, no relay round and no extra commit: a step is one write transaction
// and one JetStream write. (The outbox package remains for events a handler
// writes itself; see "Events of your own".)
//
// # Writing a participant
//
//	p, err := participants.New(participants.Config{Name: "bank-a", Pool: pool, JetStream: js})
//	if err != nil { ... }
//	if err := p.Migrate(ctx); err != nil { ... } // the barrier table
//	participants.Register(p, "TransOut", participants.Step[TransferReq]{
//		Do: func(ctx context.Context, tx pgx.Tx, info participants.StepInfo, r TransferReq) (any, error) {
//			tag, err := tx.Exec(ctx, `UPDATE accounts SET balance = balance - $2 WHERE user_id = $1 AND balance >= $2`, r.UserID, r.Amount)
//			if err != nil {
//				return nil, err // transient: retried with backoff
//			}
//			if tag.RowsAffected() == 0 {
//				return nil, participants.Fail("insufficient balance") // business failure
//			}
//			return nil, nil // succeeded
//		},
//		Undo: func(ctx context.Context, tx pgx.Tx, info participants.StepInfo, r TransferReq) (any, error) {
//			_, err := tx.Exec(ctx, `UPDATE accounts SET balance = balance + $2 WHERE user_id = $1`, r.UserID, r.Amount)
//			return nil, err
//		},
//	})
//	err = p.Run(ctx) // until ctx is done; graceful
//
// [Register] panics on misuse (bad name, nil Do, duplicate, after Run
// started); [RegisterSafely] returns the error instead.
//
// # Action names
//
// A saga plan names, per step, the participant's action (e.g. "TransOut")
// and its compensation. Commands carry the name to run and op do or undo.
// Register(p, "TransOut", Step{Do, Undo}) registers Do under "TransOut" and
// Undo under "TransOutCompensate" (the name plus [CompensationSuffix]), or
// under Step.UndoAction when set; the plan must use those names. A Step
// without Undo registers only its action (pivot and retriable steps).
//
// The barrier, however, is keyed by the plan's STEP name (saga id, step,
// op), not by the action's, so that the action and its compensation of one
// step meet there.
//
// # Payloads
//
// The command's payload is decoded into the handler's type T with
// encoding/json, unknown fields rejected; if T or *T has a method Validate()
// error, it is called. A payload that does not decode or validate makes the
// command poison (see below).
//
// # One command, one transaction
//
// For an action (op do), in round trips:
//
//  1. BEGIN;
//  2. INSERT the barrier row (saga, step, do, succeeded) ON CONFLICT DO
//     NOTHING, and SAVEPOINT — one batch;
//  3. the handler, with the transaction;
//  4. [UPDATE the barrier row with the result or the failure;] COMMIT — one
//     batch;
//  5. publish the outcome and wait for JetStream to store it; double ack.
//
// So three round trips plus the handler's own. A business failure adds one:
// ROLLBACK TO SAVEPOINT before step 4, on its own, because the handler may
// have turned a failed statement into Fail, and a transaction in that state
// accepts nothing but the rollback (a handler may therefore map, say, a
// unique violation to Fail). A compensation (op undo)
// inserts its own row (saga, step, undo, compensated) and the hanging guard
// (saga, step, do, voided), both ON CONFLICT DO NOTHING, and reads the do
// row, in round trip 2; it needs no savepoint. Only duplicates cost one more
// round trip (reading the stored row). After COMMIT the outbox relay is
// woken if the handler wrote events (see "Events of your own"), the outcome
// is published and the message double-acked.
//
// # The barrier
//
// DTM's sub-transaction barrier, in the same transaction as the business
// change. What a command finds decides what runs:
//
//	command  barrier finds                handler  outcome                             rows written
//	-------  ---------------------------  -------  ----------------------------------  ---------------------
//	do       nothing                      runs     succeeded (result)                  do=succeeded
//	do       nothing                      runs     failed (participants.Fail: reason)  do=failed
//	do       nothing, payload poison      -        rejected (reason)                   do=rejected
//	do       do=succeeded   (duplicate)   -        succeeded, the stored result        -
//	do       do=failed|rejected (dup.)    -        failed|rejected, the stored reason  -
//	do       do=voided      (hanging)     -        failed "refused: compensation ran first (hanging action)"
//	undo     nothing        (null comp.)  -        compensated "null compensation: the action never ran"
//	                                                                                   do=voided, undo=compensated
//	undo     do=failed|rejected (null)    -        compensated "null compensation: the action failed"
//	                                                                                   undo=compensated
//	undo     do=succeeded                 runs     compensated (result)                undo=compensated
//	undo     undo=compensated (duplicate) -        compensated, as stored              -
//
// Duplicates and refusals are answered under the CURRENT command's attempt,
// so that a coordinator that sent the step again accepts the answer.
//
// An action and its compensation racing each other are decided by the
// primary key: whichever inserts the do row first wins and the other waits
// for it (READ COMMITTED; the row is then read with a fresh snapshot). If the
// action wins, the compensation undoes it; if the compensation wins, the
// action is refused. Under REPEATABLE READ or SERIALIZABLE the loser gets a
// serialization failure instead, which is transient and retried: the same
// decision, one retry later.
//
// # Why "committed, then reported failure" cannot happen
//
// A classic saga bug: TransIn credits the account, commits, then reports
// failure (or crashes before reporting), and the compensation that follows
// has nothing reliable to work from. Here it is impossible by construction.
// The business change, the barrier row and the outcome are written in one
// transaction: either all of them commit or none does, so no outcome can
// disagree with the database. A business failure (Fail) rolls back to the
// savepoint taken right after the barrier insert — undoing everything the
// handler wrote — BEFORE the failed outcome and the barrier's failed status
// are written; a failed outcome therefore always means that nothing of the
// action is left. Any other error rolls back the whole transaction and
// nothing is reported until a later try commits. A crash after COMMIT and
// before the ack redelivers the command; the barrier recognises it and
// re-sends the outcome already committed, read from its barrier row (its
// message id, derived from the command's stream sequence, makes JetStream
// drop a copy that was stored after all).
//
// # Outcomes and acknowledgements
//
//	handler returns / command is      outcome               JetStream
//	--------------------------------  --------------------  -----------------------------
//	nil                               succeeded|compensated DoubleAck after COMMIT+publish
//	participants.Fail (do)            failed                DoubleAck after COMMIT+publish
//	other error, panic                (none yet)            NakWithDelay(backoff)
//	... budget spent                  exhausted             Term
//	undecodable, not ours, unknown    rejected              TermWithReason
//	action, wrong op, bad payload
//	long-running handler              -                     InProgress every AckWait/3
//
// Transient errors are retried with exponential backoff and full jitter from
// the command's retry policy (events.RetryPolicy). When a delivery fails and
// JetStream has delivered the message Retry.MaxAttempts times, the command is
// terminated and an exhausted outcome is written in a fresh transaction —
// unless the barrier shows that an earlier delivery committed after all (its
// ack was lost), in which case that delivery's outcome is sent again. If the
// outcome cannot be written (the database is down), the command is not
// terminated: it comes back after the policy's maximum backoff (at least a
// second) to try the write again, without running the handler. The handler
// never loops past its budget, and no command is dropped without an outcome. A
// Fail from a compensation is a programming error (a compensation cannot
// fail for business reasons): it is logged loudly and treated as transient.
//
// A rejected action records do=rejected, so that its compensation (which
// carries the same poison payload) is a null compensation. A compensation is
// rejected only when it must run (its action succeeded) or when it names no
// compensation of ours; it records nothing, so a corrected command can still
// run. An undecodable command is answered with an anonymous rejected outcome
// (no step) on the saga named by its subject; one whose subject names no
// saga is only logged and terminated. An outcome that cannot be published
// brings the command back after 500 ms to publish it again; an unreadable
// command, which has no retry budget, is terminated without an outcome
// (and logged) when the publish of its 10th delivery fails too.
//
// Outcomes go to <prefix>.evt.<participant>.<saga> with Nats-Msg-Id
// events.OutcomeMsgID, the saga id, step, op, attempt and participant
// headers, and the command's traceparent and tracestate passed through.
//
// # Events of your own
//
// A handler that must tell other services about its change writes the event
// to the transactional outbox with the tx it was given (or a nested
// transaction of it), so that the event exists if and only if the step
// committed:
//
//	return nil, p.Outbox().Write(ctx, tx, outbox.Message{ID: info.SagaID + "/booked", Subject: "hotel.booked", Data: body})
//
// Set Config.RelayEvents to have the participant publish them: Run then
// runs an outbox relay for Config.Outbox (Config.Relay tunes it; it polls
// every second by default and holds one LISTEN connection outside the
// pool) and Participant.Migrate creates the outbox table. The step's
// transaction notes the outbox writes made through it (outbox.TxObserver),
// and after its COMMIT the relay is woken in memory, so the event is
// published right after the step rather than at the next poll. Outbox.Notify
// is called too, which also reaches a relay elsewhere when the Outbox was
// configured with NotifyDB. A Fail discards the writes with the rest of
// the handler's work.
//
// RelayEvents is off by default: a participant whose handlers publish
// nothing of their own runs no relay, holds no LISTEN connection, does not
// poll, and Participant.Migrate leaves the outbox table alone. Outcomes
// never go through the outbox.
//
// # Consumer, concurrency and shutdown
//
// Run creates or updates the durable pull consumer
// <prefix>_participant_<name> on the commands stream (filter
// <prefix>.cmd.<name>.*, explicit acks, AckWait default 30s, MaxAckPending
// default 4 × Concurrency, MaxDeliver unlimited: the runtime ends a command
// itself by its budget). It never creates streams; the deployment does (see
// participanttest.CreateStreams for tests). Up to Concurrency commands run at
// once. When Run's context is done it stops fetching, lets handlers in
// flight and commands already fetched commit and ack (cancelling handlers
// after ShutdownTimeout), stops the relay (if any) and returns.
//
// # Metrics and traces
//
// Config.Metrics (from [NewMetrics]: one per prometheus.Registerer, shared by
// every participant of the process) reports, per participant:
// jetsaga_participant_step_duration_seconds{participant,action,op,outcome}
// (from a command's receipt to its ack; outcome is the outcome's status, or
// "error" for a transient failure, "lost" for a command terminated without
// an outcome), jetsaga_participant_outcomes_total{participant,status},
// jetsaga_participant_barrier_decisions_total{participant,decision}
// (duplicate, null_compensation, hanging),
// jetsaga_participant_rejections_total{participant,reason} (undecodable,
// wrong_subject, wrong_participant, unknown_action, wrong_op, bad_payload),
// jetsaga_participant_redeliveries_total{participant}, its consumer's pending
// and ack-pending counts read from JetStream when scraped, and, with
// RelayEvents, the outbox's backlog (jetsaga_outbox_backlog_rows,
// jetsaga_outbox_oldest_row_age_seconds). An action that has no handler is
// labelled "unknown": labels never carry a plan's free text nor a saga id.
// The exported methods of [Metrics] let another runtime (an HTTP
// participant) report the same series.
//
// Config.TracerProvider records a span per command handled ("saga step
// <action>"), a child of the coordinator's span that published it (the
// command's traceparent header), with the saga, step, op, attempt, outcome
// and the barrier's decision (ran, duplicate, null_compensation, hanging)
// as attributes; the outcome carries the span's context, so the
// coordinator's transition is its child. Without a provider no span is
// made and the outcome carries the command's trace context unchanged.
//
// # Barrier retention
//
// A background loop deletes barrier rows older than BarrierRetention
// (default 7 days) in batches of CleanupBatch. A row deleted too early lets a
// very late duplicate or compensation through, so keep the retention longer
// than any saga lives and than the streams' max age.
//
// # Performance
//
// BenchmarkSteps measures steps per second through the whole path: commands
// published (asynchronously) to JetStream, consumed, one transaction each
// (barrier insert, savepoint, a balance update, barrier result, fsync'd
// commit), the outcome published and stored in the sagas stream, the
// command double-acked; the clock stops when the last outcome is stored.
// Medians of -count 3 with -benchtime 4000x on the project's 2-core AMD EPYC
// VM (GOMAXPROCS 2), PostgreSQL 15 with fsync and synchronous_commit on,
// embedded nats-server 2.15 with file storage, everything on loopback:
//
//	concurrency  JetStream sync default  JetStream sync always
//	1            1,120 steps/s           700 steps/s
//	16           3,321 steps/s           1,318 steps/s
//	64           3,064 steps/s           1,279 steps/s
//
// With "sync always" every step costs two fsync'd JetStream writes (its
// command and its outcome) on top of PostgreSQL's commit, and nats-server
// fsyncs each message of a stream in turn; more concurrency then only adds
// contention. Against the outbox relay this runtime used before (outcomes
// written to an outbox row, published by the relay): default sync 1,012 /
// 2,711 / 2,450 and always 830 / 1,407 / 1,104 steps/s on the same machine.
// Publishing from the step costs at concurrency 1 with "always" (the step
// now waits for its outcome's fsync before it takes the next command, where
// the relay published in the background) and gains elsewhere; for whole
// sagas it removes a hop and the relay's transactions (see README,
// Performance).
//
// Run it with
//
//	go test -run '^$' -bench BenchmarkSteps -benchtime 4000x -count 3 ./participants/
package participants
