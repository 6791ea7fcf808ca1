// Package sagatest runs a saga plan through the coordinator's state machine
// against scripted participants, in memory: no NATS, no PostgreSQL, no
// clock. Use it to test a plan's shape — which steps run, in which order,
// what is compensated when a step fails or times out, when the saga parks —
// the way river's rivertest lets a worker be tested without a queue.
//
//	res, err := sagatest.Run(plan, sagatest.Script{
//		"credit": sagatest.Fail("account frozen"),
//	})
//	// res.State.Status == orchestrator.Compensated; res.Sent lists every command.
//
// The simulation is the real orchestrator.Next: steps, dependencies, timeouts
// (virtual time jumps to the next timer when nothing else can happen; a step
// without a timeout of its own gets the coordinator's default,
// orchestrator.DefaultStepTimeout),
// retries of compensations and retriable steps, the deadline and parking
// behave as in production. Participants answer each command at once, in the
// order the commands were sent; a step without a script succeeds.
package sagatest

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jetsaga/jetsaga/events"
	"github.com/jetsaga/jetsaga/orchestrator"
)

// Answer is what a scripted participant answers to one command.
type Answer struct {
	// Status of the outcome; empty means success (succeeded for an action,
	// compensated for a compensation).
	Status events.Status
	// Reason of a failure.
	Reason string
	// Result of a successful action (encoded as JSON).
	Result any
	// Silent: no answer at all; the step's timeout decides.
	Silent bool
}

// Responder answers the commands of one step.
type Responder func(events.Command) Answer

// Script maps step names to their responders.
type Script map[string]Responder

// Succeed answers every command with success.
func Succeed() Responder { return func(events.Command) Answer { return Answer{} } }

// Fail fails the step's action (business failure) and succeeds its
// compensation.
func Fail(reason string) Responder {
	return func(c events.Command) Answer {
		if c.Op == events.OpDo {
			return Answer{Status: events.Failed, Reason: reason}
		}
		return Answer{}
	}
}

// Silent never answers the step's action (it times out) and succeeds its
// compensation.
func Silent() Responder {
	return func(c events.Command) Answer {
		if c.Op == events.OpDo {
			return Answer{Silent: true}
		}
		return Answer{}
	}
}

// Result is the end of a simulated run.
type Result struct {
	// State is the saga's last state: terminal, or parked.
	State *orchestrator.State
	// Sent are the commands the coordinator sent, in order.
	Sent []events.Command
	// Ticks counts the timers that fired.
	Ticks int
}

// Steps returns "step/op" for every command sent, in order: a compact view
// for assertions.
func (r *Result) Steps() []string {
	out := make([]string, len(r.Sent))
	for i, c := range r.Sent {
		out[i] = c.Step + "/" + string(c.Op)
	}
	return out
}

// maxInputs bounds a run: a plan whose saga never ends (a participant that
// never lets it) is reported instead of looping.
const maxInputs = 10_000

// ErrNoEnd is returned when the saga neither ends nor parks.
var ErrNoEnd = errors.New("sagatest: the saga did not end")

// Run builds the plan and runs its saga to its end (terminal or parked).
// It returns an error if the plan is invalid, a responder answers with a
// status the protocol does not allow, or the saga does not end.
func Run(plan *orchestrator.Plan, script Script) (*Result, error) {
	start, err := plan.Build()
	if err != nil {
		return nil, err
	}
	s := &sim{script: script, res: &Result{}}
	s.feed(orchestrator.Input{Kind: events.KindStart, Start: &start,
		StepTimeoutMS: orchestrator.DefaultStepTimeout.Milliseconds()}, start.SagaID)
	if s.res.State.Status == orchestrator.Rejected {
		return s.res, fmt.Errorf("sagatest: start rejected: %s", s.res.State.Reason)
	}
	for n := 0; n < maxInputs; n++ {
		st := s.res.State
		if st.Status.Terminal() || st.Status == orchestrator.Parked {
			return s.res, s.err
		}
		if len(s.queue) > 0 {
			c := s.queue[0]
			s.queue = s.queue[1:]
			s.answer(c)
			continue
		}
		if st.TimerMS == 0 {
			return s.res, fmt.Errorf("%w: %s with nothing in flight and no timer", ErrNoEnd, st.Status)
		}
		s.now = max(s.now, st.TimerMS)
		s.res.Ticks++
		s.feed(orchestrator.Input{Kind: events.KindTick, Tick: &events.Tick{V: events.Version, SagaID: st.SagaID, DueMS: st.TimerMS}}, st.SagaID)
	}
	return s.res, fmt.Errorf("%w after %d inputs", ErrNoEnd, maxInputs)
}

type sim struct {
	script Script
	res    *Result
	queue  []events.Command
	seq    uint64
	now    int64
	err    error
}

// feed applies one input at the next sequence and a millisecond later.
func (s *sim) feed(in orchestrator.Input, id string) {
	s.seq++
	s.now++
	in.SagaID, in.Seq, in.TimeMS = id, s.seq, s.now
	r := orchestrator.Next(s.res.State, in)
	if r.Changed {
		s.res.State = r.State
		if p := r.State.Pending; p != nil {
			s.queue = append(s.queue, p.Commands...)
			s.res.Sent = append(s.res.Sent, p.Commands...)
		}
	}
}

func (s *sim) answer(c events.Command) {
	respond := s.script[c.Step]
	if respond == nil {
		respond = Succeed()
	}
	a := respond(c)
	if a.Silent {
		return
	}
	status := a.Status
	if status == "" {
		status = events.Succeeded
		if c.Op == events.OpUndo {
			status = events.Compensated
		}
	}
	o := events.Outcome{V: events.Version, SagaID: c.SagaID, Participant: c.Participant, Step: c.Step,
		Op: c.Op, Attempt: c.Attempt, Status: status, Reason: a.Reason}
	if a.Result != nil {
		data, err := json.Marshal(a.Result)
		if err != nil {
			s.err = errors.Join(s.err, fmt.Errorf("sagatest: result of %s/%s: %w", c.Step, c.Op, err))
			return
		}
		o.Result = data
	}
	if err := o.Validate(); err != nil {
		s.err = errors.Join(s.err, fmt.Errorf("sagatest: answer to %s/%s: %w", c.Step, c.Op, err))
		return
	}
	s.feed(orchestrator.Input{Kind: events.KindEvent, Participant: c.Participant, Outcome: &o}, c.SagaID)
}
