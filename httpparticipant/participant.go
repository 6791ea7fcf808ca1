package httpparticipant

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetsaga/jetsaga/events"
	"github.com/jetsaga/jetsaga/internal/commandloop"
)

// ErrRunning is returned by [Participant.Run] when it is called twice.
var ErrRunning = errors.New("httpparticipant: Run called twice")

// ackTimeout bounds publishes and acks after a call; not tied to Run's
// context so that calls finished during shutdown are still answered.
const ackTimeout = 5 * time.Second

// Participant carries out HTTP steps: it consumes the commands of its
// participant name and calls the step's URLs as DTM does. Create it with
// [New], then call [Participant.Run].
type Participant struct {
	cfg    Config
	log    *slog.Logger
	client *http.Client

	started atomic.Bool
	stats   stats
}

type stats struct {
	calls, succeeded, failed, ongoing, transient, rejected atomic.Int64
}

// Stats are counters of a participant since it was created.
type Stats struct {
	// Calls counts HTTP requests made.
	Calls int64
	// Succeeded, Failed, Ongoing and Transient count the answers by class.
	Succeeded, Failed, Ongoing, Transient int64
	// Rejected counts commands answered rejected without a call (a bad
	// payload, a URL outside the allowed list).
	Rejected int64
}

// Stats returns the participant's counters.
func (p *Participant) Stats() Stats {
	return Stats{Calls: p.stats.calls.Load(), Succeeded: p.stats.succeeded.Load(), Failed: p.stats.failed.Load(),
		Ongoing: p.stats.ongoing.Load(), Transient: p.stats.transient.Load(), Rejected: p.stats.rejected.Load()}
}

// New checks cfg and returns a participant without touching the network.
func New(cfg Config) (*Participant, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	p := &Participant{cfg: c, log: c.Logger.With("participant", c.Name)}
	p.client = &http.Client{
		Transport: c.Transport,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 10 {
				return errors.New("stopped after 10 redirects")
			}
			if err := c.Allow.CheckURL(req.URL); err != nil {
				return fmt.Errorf("redirect refused: %w", err)
			}
			return nil
		},
	}
	return p, nil
}

// Name returns the participant's name.
func (p *Participant) Name() string { return p.cfg.Name }

// ConsumerConfig returns the configuration of the durable consumer Run
// creates or updates: the same as a Go participant's of the same name.
func (p *Participant) ConsumerConfig() jetstream.ConsumerConfig {
	return commandloop.ConsumerConfig(p.cfg.Namespace, p.cfg.Name, "jetsaga HTTP participant "+p.cfg.Name, p.cfg.settings())
}

// Run creates or updates the durable consumer and handles commands,
// Concurrency at a time, until ctx is done. Shutdown is graceful: it stops
// fetching, lets the calls in flight finish and answers them (cancelling
// them after Config.ShutdownTimeout; commands waiting on an ONGOING service
// are handed back at once), then returns nil. It returns an error if the
// consumer cannot be created or the connection closes. A Participant runs
// once.
func (p *Participant) Run(ctx context.Context) error {
	if !p.started.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer p.client.CloseIdleConnections()
	loop := commandloop.Loop{Package: "httpparticipant", JetStream: p.cfg.JetStream,
		Stream: p.cfg.Namespace.CommandsStream(), Consumer: p.ConsumerConfig(), Settings: p.cfg.settings(),
		Logger: p.log, Handle: p.handle}
	return loop.Run(ctx)
}

// job is one delivery of one command.
type job struct {
	msg       jetstream.Msg
	seq       uint64
	delivered uint64
	published time.Time
	cmd       *events.Command
	log       []any
}

type verdictKind int

const (
	vAnswered  verdictKind = iota // an outcome to publish, then ack
	vPoisoned                     // a rejected outcome to publish, then terminate
	vTransient                    // retry with backoff, or exhaust
	vHandBack                     // shutting down, or the attempt is over: nak / term without outcome
	vLost                         // nothing to answer: terminate
)

type verdict struct {
	kind   verdictKind
	out    *events.Outcome
	err    error
	reason string
	term   bool // vHandBack: terminate (the attempt is over) instead of nak
}

func (p *Participant) handle(runCtx, workCtx context.Context, msg jetstream.Msg) {
	meta, err := msg.Metadata()
	if err != nil {
		p.log.Error("command without JetStream metadata; terminating it", "subject", msg.Subject(), "err", err)
		_ = msg.Term()
		return
	}
	j := &job{msg: msg, seq: meta.Sequence.Stream, delivered: meta.NumDelivered, published: meta.Timestamp,
		log: []any{"subject", msg.Subject(), "stream_seq", meta.Sequence.Stream, "delivered", meta.NumDelivered}}
	stop := commandloop.KeepAlive(msg, p.cfg.AckWait/3)
	v := p.process(runCtx, workCtx, j)
	stop()
	p.settle(workCtx, j, v)
}

func (p *Participant) outcome(j *job, status events.Status, reason string) *events.Outcome {
	o := &events.Outcome{V: events.Version, SagaID: j.cmd.SagaID, Participant: p.cfg.Name, Step: j.cmd.Step,
		Op: j.cmd.Op, Attempt: j.cmd.Attempt, Status: status}
	if reason != "" {
		o.Reason = clamp(reason)
	}
	return o
}

func (p *Participant) process(runCtx, workCtx context.Context, j *job) verdict {
	ns := p.cfg.Namespace
	cmd, err := events.DecodeCommand(j.msg.Data())
	if err != nil {
		return p.rejectUnreadable(j, "undecodable command: "+err.Error())
	}
	if want := ns.Command(p.cfg.Name, cmd.SagaID); j.msg.Subject() != want {
		return p.rejectUnreadable(j, fmt.Sprintf("command for saga %q of participant %q arrived on subject %q, want %q",
			cmd.SagaID, cmd.Participant, j.msg.Subject(), want))
	}
	j.cmd = &cmd
	j.log = append(j.log, "saga", cmd.SagaID, "step", cmd.Step, "op", cmd.Op, "attempt", cmd.Attempt)
	if cmd.Participant != p.cfg.Name {
		p.stats.rejected.Add(1)
		reason := fmt.Sprintf("command for participant %q delivered to participant %q", cmd.Participant, p.cfg.Name)
		return verdict{kind: vPoisoned, out: p.outcome(j, events.Rejected, reason), reason: reason}
	}
	if j.delivered > uint64(cmd.Retry.MaxAttempts) {
		return verdict{kind: vTransient, err: fmt.Errorf("delivery %d is past the retry budget of %d attempts", j.delivered, cmd.Retry.MaxAttempts)}
	}
	pl, err := DecodePayload(cmd.Payload)
	if err != nil {
		p.stats.rejected.Add(1)
		return verdict{kind: vPoisoned, out: p.outcome(j, events.Rejected, err.Error()), reason: err.Error()}
	}
	target, op, done := pl.Action, ActionName, events.Succeeded
	if cmd.Op == events.OpUndo {
		target, op, done = pl.Compensate, CompensateName, events.Compensated
	}
	if target == "" {
		return verdict{kind: vAnswered, out: p.outcome(j, done, "")}
	}
	if err := p.cfg.Allow.Check(target); err != nil {
		p.stats.rejected.Add(1)
		reason := fmt.Sprintf("payload.%s: %v", op, err)
		return verdict{kind: vPoisoned, out: p.outcome(j, events.Rejected, reason), reason: reason}
	}
	req := request{url: target, op: op, payload: &pl, header: j.msg.Headers()}
	interval := durationMS(pl.OngoingIntervalMS, p.cfg.OngoingInterval)
	limit := durationMS(pl.OngoingLimitMS, p.cfg.OngoingLimit)
	for {
		ans := p.call(workCtx, j, req)
		switch ans.class {
		case classSuccess:
			p.stats.succeeded.Add(1)
			return verdict{kind: vAnswered, out: p.outcome(j, done, "")}
		case classFailure:
			p.stats.failed.Add(1)
			if cmd.Op == events.OpDo {
				return verdict{kind: vAnswered, out: p.outcome(j, events.Failed, ans.describe())}
			}
			// A compensation cannot fail: DTM retries it; so do we.
			p.stats.transient.Add(1)
			return verdict{kind: vTransient, err: fmt.Errorf("compensation answered failure: %s", ans.describe())}
		case classTransient:
			p.stats.transient.Add(1)
			return verdict{kind: vTransient, err: errors.New(ans.describe())}
		}
		p.stats.ongoing.Add(1)
		if time.Since(j.published)+interval > limit {
			return verdict{kind: vHandBack, term: true,
				reason: fmt.Sprintf("still ONGOING %s after the command was sent (limit %s): this attempt is over", time.Since(j.published).Round(time.Millisecond), limit)}
		}
		t := time.NewTimer(interval)
		select {
		case <-t.C:
		case <-runCtx.Done():
			t.Stop()
			return verdict{kind: vHandBack, reason: "shutting down while the service answers ONGOING"}
		}
	}
}

func durationMS(ms int64, def time.Duration) time.Duration {
	if ms > 0 {
		return time.Duration(ms) * time.Millisecond
	}
	return def
}

// rejectUnreadable answers a command that cannot be read with an anonymous
// rejection on the saga of its subject.
func (p *Participant) rejectUnreadable(j *job, reason string) verdict {
	subj, err := p.cfg.Namespace.Parse(j.msg.Subject())
	if err != nil || subj.Kind != events.KindCommand {
		return verdict{kind: vLost, reason: reason + "; and its subject names no saga"}
	}
	p.stats.rejected.Add(1)
	o := &events.Outcome{V: events.Version, SagaID: subj.SagaID, Participant: p.cfg.Name, Status: events.Rejected, Reason: clamp(reason)}
	return verdict{kind: vPoisoned, out: o, reason: reason}
}

func (p *Participant) send(ctx context.Context, j *job, o *events.Outcome) error {
	m, err := p.cfg.Namespace.OutcomeMsg(o, j.seq, events.TraceOf(j.msg.Headers()))
	if err != nil {
		return fmt.Errorf("encode outcome: %w", err)
	}
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ackTimeout)
	defer cancel()
	if _, err := p.cfg.JetStream.PublishMsg(pctx, m); err != nil {
		return fmt.Errorf("publish outcome: %w", err)
	}
	return nil
}

func (p *Participant) settle(ctx context.Context, j *job, v verdict) {
	if v.out != nil {
		if err := p.send(ctx, j, v.out); err != nil {
			// The outcome is a function of the call: the command comes
			// back and calls again (the service's barrier absorbs it).
			p.log.Warn("outcome not sent; the command will be delivered again", append(j.log, "err", err)...)
			_ = j.msg.NakWithDelay(500 * time.Millisecond)
			return
		}
	}
	switch v.kind {
	case vAnswered:
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ackTimeout)
		err := j.msg.DoubleAck(actx)
		cancel()
		if err != nil {
			p.log.Warn("ack failed; the command will be delivered again", append(j.log, "err", err)...)
		}
	case vPoisoned:
		p.log.Error("command rejected", append(j.log, "reason", v.reason)...)
		_ = j.msg.TermWithReason(clamp(v.reason))
	case vLost:
		p.log.Error("command terminated without an outcome", append(j.log, "reason", v.reason)...)
		_ = j.msg.TermWithReason(clamp(v.reason))
	case vHandBack:
		if v.term {
			p.log.Warn("command dropped without an outcome", append(j.log, "reason", v.reason)...)
			_ = j.msg.TermWithReason(clamp(v.reason))
			return
		}
		_ = j.msg.Nak()
	case vTransient:
		p.retryOrExhaust(ctx, j, v.err)
	}
}

func (p *Participant) retryOrExhaust(ctx context.Context, j *job, cause error) {
	if ctx.Err() != nil {
		p.log.Warn("call interrupted by shutdown; the command will be delivered again", append(j.log, "err", cause)...)
		_ = j.msg.Nak()
		return
	}
	budget := j.cmd.Retry
	if n := j.delivered; n < uint64(budget.MaxAttempts) {
		d := budget.Backoff(int(n))
		if d > 0 {
			d = rand.N(d + 1)
		}
		p.log.Warn("transient error; retrying", append(j.log, "err", cause, "delay", d)...)
		_ = j.msg.NakWithDelay(d)
		return
	}
	reason := fmt.Sprintf("retry budget spent: %d deliveries (max_attempts %d); last error: %v", j.delivered, budget.MaxAttempts, cause)
	p.log.Error("command exhausted its retry budget", append(j.log, "err", cause)...)
	if err := p.send(ctx, j, p.outcome(j, events.Exhausted, reason)); err != nil {
		d := max(time.Duration(budget.MaxBackoffMS)*time.Millisecond, time.Second)
		p.log.Error("could not send the exhausted outcome; the command will come back", append(j.log, "err", err, "delay", d)...)
		_ = j.msg.NakWithDelay(d)
		return
	}
	_ = j.msg.TermWithReason(clamp(reason))
}

// clamp keeps a reason within the protocol's limit, on a rune boundary, and
// never empty.
func clamp(s string) string {
	if s == "" {
		return "no reason given"
	}
	if len(s) <= events.MaxReasonBytes {
		return s
	}
	s = s[:events.MaxReasonBytes-3]
	for !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s + "..."
}
