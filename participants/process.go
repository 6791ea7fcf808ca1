package participants

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime/debug"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetsaga/jetsaga/events"
	"github.com/jetsaga/jetsaga/internal/commandloop"
)

// Reasons the runtime writes into outcomes and barrier rows.
const (
	reasonHanging         = "refused: compensation ran first (hanging action)"
	reasonNullNeverRan    = "null compensation: the action never ran"
	reasonNullFailedFmt   = "null compensation: the action %s"
	reasonUnknownActionFm = "unknown action %q: participant %q has no handler registered under that name"
)

// job is one delivery of one command message.
type job struct {
	msg       jetstream.Msg
	seq       uint64          // the command's stream sequence
	delivered uint64          // deliveries of the message so far
	header    nats.Header     // the command's headers
	cmd       *events.Command // nil until decoded
	// sagaID is the saga the outcome goes to: the command's, or the
	// subject's for an undecodable command.
	sagaID string
	budget events.RetryPolicy
	log    loggerAttrs
	// writes are the outboxes the handler wrote to: their relays are
	// woken once the step commits.
	writes outboxWrites
	// barrier is the barrier's decision when it did not run the command as
	// it came (a Barrier* constant), for metrics and traces.
	barrier string
}

// loggerAttrs are the attributes of a job's log lines.
type loggerAttrs []any

// kind of verdict on a delivery.
type verdictKind int

const (
	// committed: the transaction with the outcome committed; ack.
	vCommitted verdictKind = iota
	// poisoned: a rejected outcome committed; terminate.
	vPoisoned
	// transient: nothing committed; retry with backoff, or exhaust.
	vTransient
	// lost: nothing can be said about the message; terminate and log.
	vLost
)

type verdict struct {
	kind   verdictKind
	reason string          // poisoned, lost: why
	err    error           // transient: the error
	out    *events.Outcome // committed, poisoned: the outcome to send before settling
}

// resendDelay is how long a command whose outcome could not be sent waits
// before it is delivered again to send it (Participant.resendDelay).
const resendDelay = 500 * time.Millisecond

// unreadableDeliveries is how many deliveries an unreadable command gets to
// publish its rejection before it is terminated without an outcome: the
// default retry policy's attempts, since it carries no policy of its own.
var unreadableDeliveries = uint64(events.DefaultRetry().MaxAttempts)

func transient(err error) verdict { return verdict{kind: vTransient, err: err} }

// handle processes one delivery and settles it with JetStream.
func (p *Participant) handle(ctx context.Context, msg jetstream.Msg) {
	meta, err := msg.Metadata()
	if err != nil {
		p.log.Error("command message without JetStream metadata; terminating it", "subject", msg.Subject(), "err", err)
		_ = msg.Term()
		return
	}
	j := &job{msg: msg, seq: meta.Sequence.Stream, delivered: meta.NumDelivered, header: msg.Headers(), budget: events.DefaultRetry(),
		log: loggerAttrs{"subject", msg.Subject(), "stream_seq", meta.Sequence.Stream, "delivered", meta.NumDelivered}}
	ctx, observed := p.observe(ctx, j)
	stop := commandloop.KeepAlive(msg, p.cfg.AckWait/3)
	v := p.process(ctx, j)
	stop()
	p.settle(ctx, j, v)
	observed(v)
}

// process runs the command in msg: decode, check, barrier, handler, outcome,
// commit.
func (p *Participant) process(ctx context.Context, j *job) verdict {
	ns := p.cfg.Namespace
	cmd, err := events.DecodeCommand(j.msg.Data())
	if err != nil {
		return p.rejectUnreadable(ctx, j, "undecodable command: "+err.Error())
	}
	if want := ns.Command(p.cfg.Name, cmd.SagaID); j.msg.Subject() != want {
		return p.rejectUnreadable(ctx, j, fmt.Sprintf("command for saga %q of participant %q arrived on subject %q, want %q",
			cmd.SagaID, cmd.Participant, j.msg.Subject(), want))
	}
	j.cmd = &cmd
	j.sagaID = cmd.SagaID
	j.budget = cmd.Retry
	j.log = append(j.log, "saga", cmd.SagaID, "step", cmd.Step, "op", cmd.Op, "action", cmd.Action, "attempt", cmd.Attempt)
	return p.runCommand(ctx, j)
}

// runCommand runs a decoded command.
func (p *Participant) runCommand(ctx context.Context, j *job) verdict {
	cmd := j.cmd
	if j.delivered > uint64(cmd.Retry.MaxAttempts) {
		// An earlier delivery spent the budget but did not get to
		// terminate the message (a crash): finish the job.
		return transient(fmt.Errorf("delivery %d is past the retry budget of %d attempts", j.delivered, cmd.Retry.MaxAttempts))
	}
	invoke, rejected, badPayload := p.prepare(cmd)
	info := StepInfo{SagaID: cmd.SagaID, Step: cmd.Step, Action: cmd.Action, Op: cmd.Op,
		Attempt: cmd.Attempt, Participant: p.cfg.Name, Delivered: j.delivered}
	if cmd.Op == events.OpDo {
		return p.runDo(ctx, j, info, invoke, rejected)
	}
	return p.runUndo(ctx, j, info, invoke, rejected, badPayload)
}

// prepare finds the command's handler and decodes its payload. A non-empty
// reason means the command is poison; badPayload says that only its payload
// is (the command itself names a handler of ours).
func (p *Participant) prepare(cmd *events.Command) (invoke invokeFunc, reason string, badPayload bool) {
	if cmd.Participant != p.cfg.Name {
		return nil, fmt.Sprintf("command for participant %q delivered to participant %q", cmd.Participant, p.cfg.Name), false
	}
	p.mu.Lock()
	a := p.actions[cmd.Action]
	p.mu.Unlock()
	if a == nil {
		return nil, fmt.Sprintf(reasonUnknownActionFm, cmd.Action, p.cfg.Name), false
	}
	if a.op != cmd.Op {
		return nil, fmt.Sprintf("action %q is registered for op %q, the command has op %q", cmd.Action, a.op, cmd.Op), false
	}
	invoke, err := safePrepare(a, cmd.Payload)
	if err != nil {
		return nil, fmt.Sprintf("action %q: %v", cmd.Action, err), true
	}
	return invoke, "", false
}

func safePrepare(a *action, payload json.RawMessage) (invoke invokeFunc, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("payload: decoding or validation panicked: %v", r)
		}
	}()
	return a.prepare(payload)
}

// baseOutcome is the outcome skeleton answering j's command.
func (p *Participant) baseOutcome(j *job) events.Outcome {
	return events.Outcome{V: events.Version, SagaID: j.cmd.SagaID, Participant: p.cfg.Name,
		Step: j.cmd.Step, Op: j.cmd.Op, Attempt: j.cmd.Attempt}
}

// begin acquires a connection and begins the step's transaction (one round
// trip). release must be called whatever happens, more than once is fine:
// it rolls back a transaction that did not end and returns the connection.
func (p *Participant) begin(ctx context.Context) (tx pgx.Tx, release func(), err error) {
	conn, err := p.cfg.Pool.Acquire(ctx)
	if err != nil {
		return nil, nil, err
	}
	tx, err = conn.Begin(ctx)
	if err != nil {
		conn.Release()
		return nil, nil, err
	}
	var once sync.Once
	return tx, func() {
		once.Do(func() {
			if conn.Conn().PgConn().TxStatus() != 'I' {
				rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ackTimeout)
				_ = tx.Rollback(rctx)
				cancel()
			}
			// The pool closes a connection left inside a transaction
			// rather than reusing it.
			conn.Release()
		})
	}, nil
}

// runDo runs an action. Round trips, the handler's own aside:
//
//  1. BEGIN;
//  2. one batch: barrier INSERT (do, succeeded) ON CONFLICT DO NOTHING;
//     SAVEPOINT;
//  3. one batch: [barrier UPDATE;] COMMIT — the barrier rows hold the outcome,
//     published after the commit.
//
// A business failure first rolls back to the savepoint, in a round trip of
// its own (the handler may have left the transaction aborted, where a batch
// cannot even be prepared). A duplicate or hanging action (the insert found a row) skips the handler,
// reads the stored row (one more round trip, only then) and re-sends its
// outcome in round trip 3.
func (p *Participant) runDo(ctx context.Context, j *job, info StepInfo, invoke invokeFunc, rejected string) verdict {
	tx, release, err := p.begin(ctx)
	if err != nil {
		return transient(fmt.Errorf("begin: %w", err))
	}
	defer release()

	cmd := j.cmd
	var fresh bool
	b := &pgx.Batch{}
	b.Queue(p.bar.insert, cmd.SagaID, cmd.Step, events.OpDo, statusSucceeded, cmd.Attempt).
		Exec(func(ct pgconn.CommandTag) error { fresh = ct.RowsAffected() == 1; return nil })
	b.Queue("SAVEPOINT " + savepoint)
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return transient(fmt.Errorf("barrier: %w", err))
	}
	var cur row
	if !fresh {
		// Duplicate or hanging (rare): read what is there, in a statement
		// of its own so that it sees a row that a concurrent transaction
		// committed while the insert waited for it.
		if err := p.bar.read(ctx, tx, cmd, events.OpDo, &cur); err != nil {
			return transient(err)
		}
	}

	o := p.baseOutcome(j)
	fin := &pgx.Batch{}
	switch {
	case !fresh:
		o.Status, o.Reason, o.Result = storedDoOutcome(&cur)
		j.barrier = BarrierDuplicate
		if cur.status == statusVoided {
			j.barrier = BarrierHanging
		}
		p.log.Info("duplicate action skipped: re-sending its outcome", append(j.log, "status", o.Status)...)
	case rejected != "":
		o.Status, o.Reason = events.Rejected, clampReason(rejected, "rejected")
		fin.Queue(p.bar.finish, cmd.SagaID, cmd.Step, events.OpDo, statusRejected, o.Reason, nil)
	default:
		res, herr := callHandler(ctx, tx, &j.writes, invoke, info)
		var fail *FailError
		switch {
		case herr == nil:
			raw, err := encodeResult(res)
			if err != nil {
				p.log.Error("handler result cannot be sent; treating as a transient error", append(j.log, "err", err)...)
				return transient(err)
			}
			o.Status, o.Result = events.Succeeded, raw
			if raw != nil {
				fin.Queue(p.bar.finish, cmd.SagaID, cmd.Step, events.OpDo, statusSucceeded, nil, raw)
			}
		case errors.As(herr, &fail):
			o.Status, o.Reason = events.Failed, clampReason(fail.Reason, "failed")
			j.writes = outboxWrites{} // rolled back with the rest
			// On its own: a statement of the handler may have failed (the
			// handler turned its error into Fail) and left the transaction
			// aborted, where the next batch could not even be prepared.
			if _, err := tx.Exec(ctx, "ROLLBACK TO SAVEPOINT "+savepoint); err != nil {
				return transient(fmt.Errorf("rollback to savepoint: %w", err))
			}
			fin.Queue(p.bar.finish, cmd.SagaID, cmd.Step, events.OpDo, statusFailed, o.Reason, nil)
		default:
			return transient(herr)
		}
	}
	v := p.commit(ctx, j, tx, fin, &o)
	if v.kind == vCommitted && o.Status == events.Rejected {
		v.kind, v.reason = vPoisoned, o.Reason
	}
	return v
}

// storedUndoOutcome is the outcome a duplicate compensation re-sends: its
// reason says whether it was a null one.
func storedUndoOutcome(r *row) (events.Status, string, json.RawMessage) {
	reason := ""
	if r.reason != nil {
		reason = *r.reason
	}
	return events.Compensated, reason, r.result
}

// storedDoOutcome is the outcome a duplicate action re-sends.
func storedDoOutcome(r *row) (events.Status, string, json.RawMessage) {
	reason := ""
	if r.reason != nil {
		reason = *r.reason
	}
	switch r.status {
	case statusSucceeded:
		return events.Succeeded, "", r.result
	case statusRejected:
		return events.Rejected, clampReason(reason, "rejected"), nil
	case statusVoided:
		return events.Failed, reasonHanging, nil
	default:
		return events.Failed, clampReason(reason, "failed"), nil
	}
}

// runUndo runs a compensation. Round trips, the handler's own aside:
//
//  1. BEGIN;
//  2. one batch: barrier INSERT (undo, compensated) ON CONFLICT DO NOTHING;
//     barrier INSERT (do, voided) ON CONFLICT DO NOTHING — the hanging
//     guard, which also decides a race with the action: whoever inserts
//     the do row first wins, the other waits for it; the do row read back
//     (a statement of its own, so a new snapshot: it sees a row committed
//     while the insert waited);
//  3. one batch: [barrier UPDATE;] COMMIT — the barrier rows hold the outcome,
//     published after the commit.
//
// A duplicate (the undo row existed) reads that row in one more round trip.
//
// Only a compensation whose action succeeded runs the handler; a duplicate
// re-sends "compensated", and one whose action never ran, failed or was
// rejected is a null compensation. A command that names no compensation of
// ours is rejected whatever the barrier says (a plan bug shows at once); a
// payload that does not decode is rejected only if the handler must run (a
// rejected action's compensation carries the same bad payload and is a
// null compensation). A rejected compensation writes no barrier row.
func (p *Participant) runUndo(ctx context.Context, j *job, info StepInfo, invoke invokeFunc, rejected string, badPayload bool) verdict {
	tx, release, err := p.begin(ctx)
	if err != nil {
		return transient(fmt.Errorf("begin: %w", err))
	}
	defer release()

	cmd := j.cmd
	var fresh, voided bool
	var do, undo row
	b := &pgx.Batch{}
	b.Queue(p.bar.insert, cmd.SagaID, cmd.Step, events.OpUndo, statusCompensated, cmd.Attempt).
		Exec(func(ct pgconn.CommandTag) error { fresh = ct.RowsAffected() == 1; return nil })
	b.Queue(p.bar.insert, cmd.SagaID, cmd.Step, events.OpDo, statusVoided, cmd.Attempt).
		Exec(func(ct pgconn.CommandTag) error { voided = ct.RowsAffected() == 1; return nil })
	b.Queue(p.bar.get, cmd.SagaID, cmd.Step, events.OpDo).
		QueryRow(func(r pgx.Row) error { return r.Scan(&do.status, &do.reason, &do.result) })
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return transient(fmt.Errorf("barrier: %w", err))
	}
	if !fresh {
		// A duplicate (rare): read the outcome it re-sends.
		if err := p.bar.read(ctx, tx, cmd, events.OpUndo, &undo); err != nil {
			return transient(err)
		}
	}

	o := p.baseOutcome(j)
	o.Status = events.Compensated
	fin := &pgx.Batch{}
	switch {
	case !fresh:
		o.Status, o.Reason, o.Result = storedUndoOutcome(&undo)
		j.barrier = BarrierDuplicate
		p.log.Info("duplicate compensation skipped: re-sending its outcome", j.log...)
	case rejected != "" && !badPayload:
		o.Status, o.Reason = events.Rejected, clampReason(rejected, "rejected")
		return answer(&o)
	case voided || do.status != statusSucceeded:
		j.barrier = BarrierNullCompensation
		o.Reason = reasonNullNeverRan
		if !voided {
			o.Reason = fmt.Sprintf(reasonNullFailedFmt, do.status)
		}
		fin.Queue(p.bar.finish, cmd.SagaID, cmd.Step, events.OpUndo, statusCompensated, o.Reason, nil)
	case rejected != "":
		// Nothing of this transaction may commit: the compensation did not
		// run. Report the poison command on its own.
		o.Status, o.Reason = events.Rejected, clampReason(rejected, "rejected")
		return answer(&o)
	default:
		res, herr := callHandler(ctx, tx, &j.writes, invoke, info)
		var fail *FailError
		switch {
		case herr == nil:
			raw, err := encodeResult(res)
			if err != nil {
				p.log.Error("compensation result cannot be sent; treating as a transient error", append(j.log, "err", err)...)
				return transient(err)
			}
			o.Result = raw
			if raw != nil {
				fin.Queue(p.bar.finish, cmd.SagaID, cmd.Step, events.OpUndo, statusCompensated, nil, raw)
			}
		case errors.As(herr, &fail):
			p.log.Error("BUG: a compensation returned participants.Fail; compensations must not fail for business reasons. Retrying it as a transient error",
				append(j.log, "reason", fail.Reason)...)
			return transient(herr)
		default:
			return transient(herr)
		}
	}
	return p.commit(ctx, j, tx, fin, &o)
}

// commit sends fin and COMMIT (one round trip). The barrier rows it commits
// hold the outcome o: the participant publishes it after the commit, and a
// delivery that finds the rows (the command came back because the publish
// or the ack was lost) sends it again.
func (p *Participant) commit(ctx context.Context, j *job, tx pgx.Tx, fin *pgx.Batch, o *events.Outcome) verdict {
	fin.Queue("COMMIT").Exec(func(ct pgconn.CommandTag) error {
		if ct.String() != "COMMIT" {
			return fmt.Errorf("COMMIT answered %q: the transaction was rolled back", ct)
		}
		return nil
	})
	if err := tx.SendBatch(ctx, fin).Close(); err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "25P02" { // in_failed_sql_transaction
			p.log.Error("BUG: the handler returned success after a statement of its transaction failed; return that error (or participants.Fail) instead",
				append(j.log, "err", err)...)
		}
		return transient(fmt.Errorf("commit: %w", err))
	}
	p.wakeRelays(&j.writes)
	if p.afterCommit != nil && j.msg != nil {
		p.afterCommit(j.msg)
	}
	return verdict{kind: vCommitted, out: o}
}

// answer is the verdict for an outcome that changes no barrier row (poison
// commands): it is a function of the command alone, so a delivery that
// comes back computes it again.
func answer(o *events.Outcome) verdict {
	if o.Status == events.Rejected {
		return verdict{kind: vPoisoned, reason: o.Reason, out: o}
	}
	return verdict{kind: vCommitted, out: o}
}

// rejectUnreadable answers a command that cannot be read (or is not ours)
// with an anonymous rejected outcome on the saga of its subject.
func (p *Participant) rejectUnreadable(ctx context.Context, j *job, reason string) verdict {
	subj, err := p.cfg.Namespace.Parse(j.msg.Subject())
	if err != nil || subj.Kind != events.KindCommand {
		return verdict{kind: vLost, reason: reason + "; and its subject names no saga"}
	}
	j.sagaID = subj.SagaID
	j.log = append(j.log, "saga", subj.SagaID)
	o := events.Outcome{V: events.Version, SagaID: subj.SagaID, Participant: p.cfg.Name,
		Status: events.Rejected, Reason: clampReason(reason, "rejected")}
	return answer(&o)
}

// outcomeMsg is the message carrying o: its subject, id and headers.
func (p *Participant) outcomeMsg(j *job, o *events.Outcome) (*nats.Msg, error) {
	return p.cfg.Namespace.OutcomeMsg(o, j.seq, events.TraceOf(j.header))
}

// send publishes o and waits for JetStream to store it. Its message id is
// derived from the command's stream sequence, so sending it again (after a
// lost ack) is dropped as a duplicate.
func (p *Participant) send(ctx context.Context, j *job, o *events.Outcome) error {
	m, err := p.outcomeMsg(j, o)
	if err != nil {
		return fmt.Errorf("encode outcome: %w", err)
	}
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ackTimeout)
	defer cancel()
	if _, err := p.outcomes.Publish(pctx, m); err != nil {
		return fmt.Errorf("publish outcome: %w", err)
	}
	p.sent(o)
	return nil
}

// settle answers JetStream for a processed delivery.
func (p *Participant) settle(ctx context.Context, j *job, v verdict) {
	if v.out != nil {
		if err := p.send(ctx, j, v.out); err != nil {
			if j.cmd == nil && j.delivered >= unreadableDeliveries {
				// An unreadable command has no retry budget to spend
				// on an exhausted outcome, and its rejection is a
				// function of the message: nothing is lost but the
				// answer, which cannot be published.
				reason := fmt.Sprintf("unreadable command terminated without an outcome: its rejection could not be published in %d deliveries (last error: %v): %s",
					j.delivered, err, v.reason)
				p.log.Error("unreadable command terminated without an outcome: its rejection could not be published",
					append(j.log, "err", err, "reason", v.reason)...)
				if err := j.msg.TermWithReason(clampReason(reason, "unreadable")); err != nil {
					p.log.Warn("terminating an unreadable command failed; it will be delivered again", append(j.log, "err", err)...)
				}
				return
			}
			// The outcome is committed (or a function of the command):
			// the command comes back and sends it again.
			p.log.Warn("outcome not sent; the command will be delivered again to send it", append(j.log, "err", err, "delay", p.resendDelay)...)
			_ = j.msg.NakWithDelay(p.resendDelay)
			return
		}
	}
	switch v.kind {
	case vCommitted:
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ackTimeout)
		err := j.msg.DoubleAck(actx)
		cancel()
		if err != nil {
			// Redelivered later; the barrier makes that harmless.
			p.log.Warn("ack failed; the command will be delivered again and skipped as a duplicate", append(j.log, "err", err)...)
		}
	case vPoisoned:
		p.log.Error("poison command rejected", append(j.log, "reason", v.reason)...)
		if err := j.msg.TermWithReason(clampReason(v.reason, "rejected")); err != nil {
			p.log.Warn("terminating a poison command failed; it will be delivered again", append(j.log, "err", err)...)
		}
	case vLost:
		p.log.Error("command terminated without an outcome", append(j.log, "reason", v.reason)...)
		_ = j.msg.TermWithReason(clampReason(v.reason, "unreadable"))
	case vTransient:
		p.retryOrExhaust(ctx, j, v.err)
	}
}

// retryOrExhaust naks a delivery that failed transiently, with exponential
// backoff and full jitter, or, once the command's retry budget is spent,
// reports it exhausted and terminates it.
func (p *Participant) retryOrExhaust(ctx context.Context, j *job, cause error) {
	n := j.delivered
	if ctx.Err() != nil {
		// Shutting down: this delivery was interrupted, not failed.
		p.log.Warn("command interrupted by shutdown; it will be delivered again", append(j.log, "err", cause)...)
		_ = j.msg.Nak()
		return
	}
	if n < uint64(j.budget.MaxAttempts) {
		d := j.budget.Backoff(int(n))
		if d > 0 {
			d = rand.N(d + 1) // full jitter
		}
		p.log.Warn("transient error; retrying", append(j.log, "err", cause, "delay", d)...)
		if err := j.msg.NakWithDelay(d); err != nil {
			p.log.Warn("nak failed; the command will be delivered again after AckWait", append(j.log, "err", err)...)
		}
		return
	}
	reason := fmt.Sprintf("retry budget spent: %d deliveries (max_attempts %d); last error: %v", n, j.budget.MaxAttempts, cause)
	p.log.Error("command exhausted its retry budget", append(j.log, "err", cause)...)
	// Only a decoded command fails transiently (an unreadable one is
	// answered by its rejection), so j.cmd is set.
	o := p.baseOutcome(j)
	o.Status, o.Reason = events.Exhausted, clampReason(reason, "exhausted")
	err := p.exhaustedOutcome(ctx, j, &o)
	if err == nil {
		err = p.send(ctx, j, &o)
	}
	if err != nil {
		// Never drop the command without an outcome: try again later
		// (the handler does not run again: the budget is spent).
		d := max(time.Duration(j.budget.MaxBackoffMS)*time.Millisecond, time.Second)
		p.log.Error("could not send the exhausted outcome; the command will come back to try again",
			append(j.log, "err", err, "delay", d)...)
		_ = j.msg.NakWithDelay(d)
		return
	}
	_ = j.msg.TermWithReason(clampReason(reason, "exhausted"))
}

// exhaustedOutcome completes the outcome of a command whose budget is spent:
// o stays exhausted, unless the barrier shows that an earlier delivery
// committed after all (its outcome was not sent, or its ack was lost): then
// it becomes that delivery's outcome.
func (p *Participant) exhaustedOutcome(ctx context.Context, j *job, o *events.Outcome) error {
	var cur row
	err := p.bar.read(ctx, p.cfg.Pool, j.cmd, j.cmd.Op, &cur)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
	case err != nil:
		return err
	case j.cmd.Op == events.OpDo:
		o.Status, o.Reason, o.Result = storedDoOutcome(&cur)
	default:
		o.Status, o.Reason, o.Result = storedUndoOutcome(&cur)
	}
	return nil
}

// callHandler runs a handler, turning a panic into an error.
func callHandler(ctx context.Context, tx pgx.Tx, w *outboxWrites, invoke invokeFunc, info StepInfo) (res any, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("handler panicked: %v\n%s", r, debug.Stack())
		}
	}()
	return invoke(ctx, &stepTx{Tx: tx, w: w}, info)
}

// encodeResult encodes a handler's result; nil stays nil.
func encodeResult(res any) (json.RawMessage, error) {
	if res == nil {
		return nil, nil
	}
	if raw, ok := res.(json.RawMessage); ok {
		if !json.Valid(raw) {
			return nil, fmt.Errorf("result is not valid JSON")
		}
		return raw, nil
	}
	b, err := json.Marshal(res)
	if err != nil {
		return nil, fmt.Errorf("encode result: %w", err)
	}
	if string(b) == "null" {
		return nil, nil
	}
	if len(b) > events.MaxPayloadBytes {
		return nil, fmt.Errorf("result is %d bytes, the limit is %d", len(b), events.MaxPayloadBytes)
	}
	return b, nil
}
