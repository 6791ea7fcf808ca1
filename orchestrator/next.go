package orchestrator

import (
	"encoding/json"
	"fmt"

	"github.com/jetsaga/jetsaga/events"
)

// Input is one message of the sagas stream, as the state machine sees it.
type Input struct {
	Kind events.Kind
	// SagaID and Participant come from the subject.
	SagaID      string
	Participant string
	// Seq and TimeMS are the message's stream sequence and timestamp (Unix
	// milliseconds). Every time the state machine records comes from them.
	Seq    uint64
	TimeMS int64
	// Exactly one of these is set, matching Kind, unless Err is set.
	Start   *events.Start
	Outcome *events.Outcome
	Tick    *events.Tick
	Control *events.Control
	// Err is the decoding error of a message that could not be read; the
	// input is rejected and recorded.
	Err error
	// Trace is the start message's trace context.
	Trace Trace
	// StepTimeoutMS is the default step timeout that a start records in
	// the new saga's state (the coordinator's, or replay's; 0: none).
	StepTimeoutMS int64
}

// Result is what [Next] decided.
type Result struct {
	// State is the new state; nil when there is no saga (an input for an
	// unknown saga). It is a new value: the previous state is not modified.
	State *State
	// Changed reports whether State differs from the previous state and must
	// be written. State.Pending then holds what the transition publishes
	// once the state is written: commands (with events.CommandMsgID). A
	// timer is State.TimerMS, which the coordinators fire.
	Changed bool
	// Rejected says why the input was refused (recorded in State when there
	// is one); Ignored why it changed nothing (a duplicate or stale input).
	Rejected string
	Ignored  string
}

// Next is the saga state machine: a pure, deterministic function of the
// previous state (nil if the saga is unknown) and one input. The coordinator
// writes the new state (its Pending output included) with compare-and-set
// and publishes the commands and the timer, then acks; it applies each
// saga's inputs in stream order, so replay, which folds the stream through
// the same function, rebuilds exactly the states it wrote.
//
// Inputs that do not fit — a duplicate, an outcome for an attempt that is no
// longer current, a tick for a timer that moved — change nothing. Inputs
// that are wrong — undecodable, from the wrong participant, for an unknown
// step — are rejected and recorded in the state.
func Next(prev *State, in Input) Result {
	if in.Kind == events.KindStart {
		return onStart(prev, in)
	}
	if prev == nil {
		return Result{Rejected: fmt.Sprintf("unknown saga %q", in.SagaID)}
	}
	if in.Kind == events.KindEvent && !prev.hasParticipant(in.Participant) {
		// Not a participant of this saga: nothing it says can concern the
		// saga, so it is not recorded (the coordinator logs it). Recording it
		// would also make the saga's state depend on inputs that no reader
		// of the saga's own subjects sees.
		return Result{State: prev, Ignored: fmt.Sprintf("outcome from %q, which has no step in this saga", in.Participant)}
	}
	m := machine{s: prev.clone(), seq: in.Seq, now: in.TimeMS}
	var rejected string
	if in.Err != nil {
		rejected = in.Err.Error()
	} else {
		switch in.Kind {
		case events.KindEvent:
			rejected = m.onOutcome(in)
		case events.KindTick:
			m.onTick(in.Tick.DueMS)
		case events.KindControl:
			rejected = m.onControl(in.Control)
		default:
			rejected = fmt.Sprintf("unexpected message kind %q", in.Kind)
		}
	}
	if rejected != "" {
		m.reject(in, rejected)
	}
	m.advance()
	return m.result(prev, rejected)
}

type machine struct {
	s        *State
	seq      uint64 // the input's stream sequence
	now      int64
	changed  bool
	ignored  string
	commands []events.Command
}

func (m *machine) result(prev *State, rejected string) Result {
	r := Result{State: m.s, Rejected: rejected}
	if !m.s.Status.Terminal() && m.s.Status != Parked {
		if due := m.nextDue(); due != 0 && (m.s.TimerMS == 0 || due < m.s.TimerMS) {
			m.s.TimerMS = due
			m.changed = true
		}
	}
	if !m.changed {
		r.State = prev
		r.Ignored = m.ignored
		if r.Ignored == "" && rejected == "" {
			r.Ignored = "nothing to do"
		}
		return r
	}
	if m.now > m.s.UpdatedMS {
		m.s.UpdatedMS = m.now
	}
	m.s.Seq = max(m.s.Seq, m.seq)
	m.s.Pending = nil
	if len(m.commands) > 0 {
		m.s.Pending = &Pending{Commands: m.commands}
	}
	r.Changed = true
	return r
}

func onStart(prev *State, in Input) Result {
	start := in.Start
	err := in.Err
	if err == nil && start.SagaID != in.SagaID {
		err = fmt.Errorf("saga_id %q differs from the subject's %q", start.SagaID, in.SagaID)
	}
	var hash string
	if err == nil {
		hash, err = planHash(start)
	}
	if err != nil {
		if prev != nil {
			m := machine{s: prev.clone(), seq: in.Seq, now: in.TimeMS}
			m.reject(in, err.Error())
			return m.result(prev, err.Error())
		}
		s := &State{V: stateVersion, SagaID: in.SagaID, Seq: in.Seq, Status: Rejected, Reason: err.Error(),
			StartedMS: in.TimeMS, UpdatedMS: in.TimeMS}
		return Result{State: s, Changed: true, Rejected: err.Error()}
	}
	if prev != nil {
		if prev.PlanHash == hash {
			return Result{State: prev, Ignored: "duplicate start"}
		}
		m := machine{s: prev.clone(), seq: in.Seq, now: in.TimeMS}
		reason := "saga id already started with a different plan"
		if prev.Status == Rejected {
			reason = "saga id already used by a rejected start; use a new id"
		}
		m.reject(in, reason)
		return m.result(prev, reason)
	}
	s := &State{V: stateVersion, SagaID: start.SagaID, Name: start.Name, Status: Running, Plan: start,
		PlanHash: hash, Trace: in.Trace, StartedMS: in.TimeMS, UpdatedMS: in.TimeMS, Steps: make([]StepState, len(start.Steps)),
		StepTimeoutMS: max(in.StepTimeoutMS, 0)}
	if start.DeadlineMS > 0 {
		s.DeadlineMS = in.TimeMS + start.DeadlineMS
	}
	for i, st := range start.Steps {
		s.Steps[i] = StepState{Name: st.Name, Status: StepPending}
	}
	m := machine{s: s, seq: in.Seq, now: in.TimeMS, changed: true}
	m.advance()
	return m.result(nil, "")
}

func (m *machine) reject(in Input, reason string) {
	for _, r := range m.s.Rejections {
		if r.Seq == in.Seq && in.Seq != 0 {
			return // a redelivery of an input already recorded
		}
	}
	rs := append([]Rejection(nil), m.s.Rejections...)
	rs = append(rs, Rejection{Seq: in.Seq, Kind: in.Kind, TimeMS: in.TimeMS, Reason: reason})
	if len(rs) > MaxRejections {
		rs = rs[len(rs)-MaxRejections:]
	}
	m.s.Rejections = rs
	m.changed = true
}

func (m *machine) def(i int) *events.Step { return &m.s.Plan.Steps[i] }

// timeoutMS is step i's timeout: its own, else the saga's default; 0: none.
func (m *machine) timeoutMS(i int) int64 {
	switch t := m.def(i).TimeoutMS; {
	case t > 0:
		return t
	case t == events.NoTimeout:
		return 0
	}
	return m.s.StepTimeoutMS
}

func (m *machine) onOutcome(in Input) string {
	o := in.Outcome
	if o.SagaID != in.SagaID {
		return fmt.Sprintf("outcome names saga %q on saga %q's subject", o.SagaID, in.SagaID)
	}
	if o.Participant != in.Participant {
		return fmt.Sprintf("outcome from participant %q published on participant %q's subject", o.Participant, in.Participant)
	}
	if o.Step == "" {
		// A command too broken to read: the participant cannot say which
		// one. It may not be the command in flight, which may still run
		// (or have run): an action in flight is therefore not "failed, no
		// effect" but unknown (compensated, where the barrier voids it if
		// it never ran); a compensation in flight parks the saga.
		hit := false
		for i := range m.s.Steps {
			st := &m.s.Steps[i]
			if m.def(i).Participant == o.Participant && m.inFlight(st) {
				status := o.Status
				if st.Op == events.OpDo {
					status = outcomeUnknown
				}
				m.applyOutcome(i, st.Op, status, "an unreadable command was rejected: "+o.Reason, nil)
				hit = true
			}
		}
		if !hit {
			m.ignored = "anonymous rejection matches no command in flight"
		}
		return ""
	}
	i, st := m.s.step(o.Step)
	if st == nil {
		return fmt.Sprintf("outcome for unknown step %q", o.Step)
	}
	if want := m.def(i).Participant; want != o.Participant {
		return fmt.Sprintf("step %q belongs to participant %q, not %q", o.Step, want, o.Participant)
	}
	if !m.inFlight(st) || st.Op != o.Op || st.Attempt != o.Attempt {
		m.ignored = fmt.Sprintf("stale outcome %s/%s/%d (current %s/%d, step %s)", o.Step, o.Op, o.Attempt, st.Op, st.Attempt, st.Status)
		return ""
	}
	m.applyOutcome(i, o.Op, o.Status, o.Reason, o.Result)
	return ""
}

// outcomeUnknown is not a wire status: it applies to an action in flight
// whose outcome nothing tells (see the anonymous rejection in onOutcome).
const outcomeUnknown events.Status = "unknown"

func (m *machine) inFlight(st *StepState) bool {
	return st.Status == StepRunning || st.Status == StepCompensating
}

// applyOutcome applies the outcome of step i's current command.
func (m *machine) applyOutcome(i int, op events.Op, status events.Status, reason string, result []byte) {
	st, def := &m.s.Steps[i], m.def(i)
	m.changed = true
	st.DueMS = 0
	if op == events.OpUndo {
		st.UndoneMS = m.now
		if status == events.Compensated {
			st.Status = StepCompensated
			m.unstick(i)
			return
		}
		m.stick(i, fmt.Sprintf("compensation of step %q %s: %s", st.Name, status, reason))
		return
	}
	st.DoneMS = m.now
	switch status {
	case events.Succeeded:
		st.Status = StepSucceeded
		st.Result = result
		if len(result) > MaxStoredResultBytes {
			st.Result = json.RawMessage(fmt.Sprintf(`{"omitted_bytes":%d}`, len(result)))
		}
		m.unstick(i)
		return
	case events.Failed:
		st.Status = StepFailed
		if def.CompensateFailed {
			// The participant may have committed and then answered
			// failure (DTM's HTTP branches): undo it like a timeout.
			st.Status = StepUnknown
		}
	case events.Rejected:
		st.Status = StepFailed
	default: // exhausted: every try rolled back, but a commit whose reply was lost cannot be ruled out
		st.Status = StepUnknown
	}
	st.Reason = reason
	why := fmt.Sprintf("step %q %s: %s", st.Name, status, reason)
	if def.Kind == events.Compensable || (def.Kind == events.Pivot && st.Status == StepFailed) {
		m.compensate(i, why)
		return
	}
	m.stick(i, why) // a pivot whose outcome is unknown, or a retriable step that cannot go on
}

// compensate turns a running saga to compensation because of step i (or of
// the deadline, i = -1), keeping the earliest cause as the reason whatever
// the order in which causes were applied.
func (m *machine) compensate(i int, why string) {
	m.changed = true
	switch m.s.Status {
	case Running:
		m.s.Status = Compensating
	case Compensating:
		if m.now > m.s.FailMS || (m.now == m.s.FailMS && i >= m.s.FailStep) {
			return
		}
	case Parked:
		if m.s.ParkedFrom == Running {
			m.s.ParkedFrom = Compensating
		}
		return
	default:
		return
	}
	m.s.FailMS, m.s.FailStep, m.s.Reason = m.now, i, why
}

// unstick clears step i's part in parking the saga once its command
// succeeded after all (the outcome of the last attempt that timed out came
// late, e.g. after an outage): when no step is stuck any more, the saga
// resumes in the direction it was going, as a redrive would make it.
func (m *machine) unstick(i int) {
	if !m.s.Steps[i].Stuck {
		return
	}
	m.s.Steps[i].Stuck = false
	if m.s.Status == Parked && !m.anyStuck() {
		m.s.Status, m.s.ParkedFrom = m.s.ParkedFrom, ""
	}
}

// stick parks the saga because of step i.
func (m *machine) stick(i int, why string) {
	m.changed = true
	m.s.Steps[i].Stuck = true
	m.s.Steps[i].DueMS = 0
	if m.s.Status == Parked {
		return
	}
	m.s.ParkedFrom, m.s.Status, m.s.Reason = m.s.Status, Parked, why
}

// leavesFinished reports whether Next leaves every finished saga as it is
// for in, whatever the saga's state: a decodable timer, since a finished
// saga has none pending (its timer fires later, once, and is ignored).
// Replay uses it to skip reading back a finished saga it no longer holds.
func leavesFinished(in Input) bool {
	return in.Kind == events.KindTick && in.Err == nil && in.Tick != nil
}

func (m *machine) onTick(due int64) {
	s := m.s
	if s.TimerMS == due {
		s.TimerMS = 0
		m.changed = true
	}
	if s.Status != Running && s.Status != Compensating {
		if !m.changed {
			m.ignored = "timer of a saga that is " + string(s.Status)
		}
		return
	}
	m.now = max(m.now, due)
	fired := false
	for i := range s.Steps {
		st, def := &s.Steps[i], m.def(i)
		if !m.inFlight(st) || st.DueMS == 0 || st.DueMS > due {
			continue
		}
		fired = true
		retry := def.RetryPolicy()
		resend := st.Op == events.OpUndo || def.Kind == events.Retriable
		switch {
		case resend && st.Sends < retry.MaxAttempts:
			m.send(i, st.Op, st.DueMS)
		case resend:
			what := "step"
			if st.Op == events.OpUndo {
				what = "compensation of step"
			}
			m.stick(i, fmt.Sprintf("%s %q timed out %d times", what, st.Name, st.Sends))
		default:
			m.now = st.DueMS
			m.applyOutcome(i, events.OpDo, events.Exhausted, fmt.Sprintf("timed out after %d ms (attempt %d)", m.timeoutMS(i), st.Attempt), nil)
			m.now = max(due, m.now)
		}
	}
	if s.Status == Running && s.DeadlineMS != 0 && s.DeadlineMS <= due && !m.pastNoReturn() {
		fired = true
		m.now = s.DeadlineMS
		m.compensate(-1, fmt.Sprintf("saga deadline of %d ms exceeded", s.Plan.DeadlineMS))
	}
	if !fired && !m.changed {
		m.ignored = "timer with nothing due"
	}
}

// pastNoReturn reports whether the saga has passed its point of no return:
// its pivot, or (without a pivot) one of its retriable steps, has been
// dispatched and not failed. The saga deadline no longer applies then: a step
// that may have succeeded and has no compensation forbids going back.
func (m *machine) pastNoReturn() bool {
	for i := range m.s.Steps {
		if k := m.def(i).Kind; k == events.Pivot || k == events.Retriable {
			if st := m.s.Steps[i].Status; st != StepPending && st != StepFailed {
				return true
			}
		}
	}
	return false
}

func (m *machine) onControl(c *events.Control) string {
	s := m.s
	if s.Status != Parked {
		return fmt.Sprintf("%s: saga is %s, not parked", c.Action, s.Status)
	}
	switch c.Action {
	case events.Redrive:
		s.Status, s.ParkedFrom = s.ParkedFrom, ""
		for i := range s.Steps {
			if st := &s.Steps[i]; st.Stuck {
				st.Stuck, st.Sends = false, 0
				op := events.OpDo
				if st.Status == StepCompensating && m.def(i).Kind == events.Compensable {
					op = events.OpUndo
				}
				m.send(i, op, m.now)
			}
		}
	case events.Skip:
		_, st := s.step(c.Step)
		if st == nil {
			return fmt.Sprintf("skip: unknown step %q", c.Step)
		}
		if !st.Stuck {
			return fmt.Sprintf("skip: step %q is not what parked the saga", c.Step)
		}
		st.Stuck, st.Status, st.DueMS, st.Reason = false, StepSkipped, 0, "skipped by operator: "+c.Note
		if s.ParkedFrom == Running {
			st.DoneMS = m.now
		} else {
			st.UndoneMS = m.now
		}
		if !m.anyStuck() {
			s.Status, s.ParkedFrom = s.ParkedFrom, ""
		}
	case events.Resolve:
		end := Committed
		if s.ParkedFrom == Compensating {
			end = Compensated
		}
		s.Status, s.ParkedFrom, s.Resolution, s.TimerMS = end, "", c.Note, 0
		for i := range s.Steps {
			s.Steps[i].Stuck, s.Steps[i].DueMS = false, 0
		}
	}
	m.changed = true
	return ""
}

func (m *machine) anyStuck() bool {
	for i := range m.s.Steps {
		if m.s.Steps[i].Stuck {
			return true
		}
	}
	return false
}

// send dispatches a command for step i, ready at readyMS.
func (m *machine) send(i int, op events.Op, readyMS int64) {
	st, def := &m.s.Steps[i], m.def(i)
	if st.Op != op {
		st.Sends = 0
	}
	st.Op = op
	st.Attempt++
	st.Sends++
	st.DueMS = 0
	if t := m.timeoutMS(i); t > 0 {
		st.DueMS = readyMS + t
	}
	action := def.Action
	if op == events.OpDo {
		st.Status = StepRunning
	} else {
		st.Status = StepCompensating
		action = def.Compensation
	}
	m.changed = true
	m.commands = append(m.commands, events.Command{
		V: events.Version, SagaID: m.s.SagaID, Participant: def.Participant, Step: def.Name, Op: op,
		Attempt: st.Attempt, Action: action, Payload: def.Payload, Retry: def.RetryPolicy(),
	})
}

// advance dispatches every command that has become ready and moves the saga
// to a terminal status when nothing is left to do.
func (m *machine) advance() {
	switch m.s.Status {
	case Running:
		m.advanceForward()
	case Compensating:
		m.advanceBackward()
	}
}

func (m *machine) forwardDone(i int) bool {
	st := m.s.Steps[i].Status
	return st == StepSucceeded || st == StepSkipped
}

func (m *machine) advanceForward() {
	s, all := m.s, true
	for i := range s.Steps {
		if !m.forwardDone(i) {
			all = false
		}
		if s.Steps[i].Status != StepPending {
			continue
		}
		ready, readyMS := true, s.StartedMS
		for _, dep := range m.def(i).After {
			j, _ := s.step(dep)
			if !m.forwardDone(j) {
				ready = false
				break
			}
			readyMS = max(readyMS, s.Steps[j].DoneMS)
		}
		if ready {
			m.send(i, events.OpDo, readyMS)
		}
	}
	if all {
		s.Status, s.TimerMS, s.Reason = Committed, 0, ""
		m.changed = true
	}
}

// needsUndo reports whether step i may have had an effect that is not yet
// compensated.
func (m *machine) needsUndo(i int) bool {
	if m.def(i).Kind != events.Compensable {
		return false
	}
	switch m.s.Steps[i].Status {
	case StepRunning, StepSucceeded, StepUnknown:
		return true
	}
	return false
}

func (m *machine) advanceBackward() {
	s, pending := m.s, false
	for i := range s.Steps {
		st := &s.Steps[i]
		if st.Status == StepCompensating {
			pending = true
			continue
		}
		if !m.needsUndo(i) {
			continue
		}
		pending = true
		// Undo only after every step that waits for this one is settled:
		// compensation runs in reverse dependency order.
		ready, readyMS := true, s.FailMS
		for j := range s.Steps {
			if !dependsOn(m.def(j), st.Name) {
				continue
			}
			switch s.Steps[j].Status {
			case StepPending, StepFailed, StepSkipped:
			case StepCompensated:
				readyMS = max(readyMS, s.Steps[j].UndoneMS)
			default:
				ready = false
			}
		}
		if ready {
			m.send(i, events.OpUndo, readyMS)
		}
	}
	if !pending {
		s.Status, s.TimerMS = Compensated, 0
		m.changed = true
	}
}

func dependsOn(step *events.Step, name string) bool {
	for _, d := range step.After {
		if d == name {
			return true
		}
	}
	return false
}

// nextDue is the earliest time at which the saga needs a timer.
func (m *machine) nextDue() int64 {
	var due int64
	take := func(t int64) {
		if t != 0 && (due == 0 || t < due) {
			due = t
		}
	}
	for i := range m.s.Steps {
		if st := &m.s.Steps[i]; m.inFlight(st) && !st.Stuck {
			take(st.DueMS)
		}
	}
	if m.s.Status == Running && !m.pastNoReturn() {
		take(m.s.DeadlineMS)
	}
	return due
}
