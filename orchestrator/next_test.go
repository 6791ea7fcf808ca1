package orchestrator

import (
	"strconv"
	"strings"
	"testing"

	"github.com/jetsaga/jetsaga/events"
)

// fixture drives Next the way the coordinator does, one input at a time.
type fixture struct {
	t     *testing.T
	state *State
	seq   uint64
	now   int64
	last  Result
	prev  *State // the state before the last transition
}

func newFixture(t *testing.T, steps ...events.Step) *fixture {
	t.Helper()
	f := &fixture{t: t, now: 1_000_000}
	start := events.Start{V: events.Version, SagaID: "s1", Name: "test", Steps: steps}
	data, err := start.Encode()
	if err != nil {
		t.Fatal(err)
	}
	decoded, err := events.DecodeStart(data)
	if err != nil {
		t.Fatal(err)
	}
	f.apply(Input{Kind: events.KindStart, SagaID: "s1", Start: &decoded})
	return f
}

func (f *fixture) apply(in Input) Result {
	f.t.Helper()
	f.seq++
	f.now += 10
	in.Seq, in.TimeMS = f.seq, f.now
	if in.SagaID == "" {
		in.SagaID = "s1"
	}
	r := Next(f.state, in)
	f.prev = f.state
	if r.State != nil {
		f.state = r.State
	}
	f.last = r
	return r
}

// timerSet is the due time of the timer the last transition set, 0 if none.
func (f *fixture) timerSet() int64 { return f.last.timerSet(f.prev) }

func (f *fixture) outcome(participant, step string, op events.Op, attempt int, status events.Status, reason string) Result {
	f.t.Helper()
	o := events.Outcome{V: 1, SagaID: "s1", Participant: participant, Step: step, Op: op, Attempt: attempt, Status: status, Reason: reason}
	return f.apply(Input{Kind: events.KindEvent, Participant: participant, Outcome: &o})
}

func (f *fixture) tick(due int64) Result {
	f.t.Helper()
	if f.now < due {
		f.now = due
	}
	return f.apply(Input{Kind: events.KindTick, Tick: &events.Tick{V: 1, SagaID: "s1", DueMS: due}})
}

func (f *fixture) control(action events.ControlAction, step, note string) Result {
	f.t.Helper()
	return f.apply(Input{Kind: events.KindControl, Control: &events.Control{V: 1, SagaID: "s1", ID: "c", Action: action, Step: step, Note: note}})
}

// expect checks the saga status and the commands of the last transition,
// written as "step/op/attempt".
func (f *fixture) expect(status Status, commands ...string) {
	f.t.Helper()
	if f.state.Status != status {
		f.t.Fatalf("status = %s (reason %q), want %s", f.state.Status, f.state.Reason, status)
	}
	var got []string
	for _, c := range f.last.cmds() {
		got = append(got, c.Step+"/"+string(c.Op)+"/"+itoa(c.Attempt))
	}
	if strings.Join(got, " ") != strings.Join(commands, " ") {
		f.t.Fatalf("commands = %v, want %v", got, commands)
	}
}

func (f *fixture) stepStatus(name string) StepStatus {
	_, st := f.state.step(name)
	return st.Status
}

func itoa(i int) string { return strconv.Itoa(i) }

func comp(name, participant string, after ...string) events.Step {
	return events.Step{Name: name, Participant: participant, Action: "A" + name, Compensation: "U" + name, After: after}
}

func transfer() []events.Step {
	return []events.Step{comp("debit", "bank-a"), comp("credit", "bank-b", "debit")}
}

func TestNextSuccess(t *testing.T) {
	f := newFixture(t, transfer()...)
	f.expect(Running, "debit/do/1")
	if c := f.last.cmds()[0]; c.Participant != "bank-a" || c.Action != "Adebit" || c.Retry != events.DefaultRetry() {
		t.Fatalf("command = %+v", c)
	}
	if f.state.Pending == nil || len(f.state.Pending.Commands) != 1 {
		t.Fatalf("pending = %+v", f.state.Pending)
	}
	f.outcome("bank-a", "debit", events.OpDo, 1, events.Succeeded, "")
	f.expect(Running, "credit/do/1")
	f.outcome("bank-b", "credit", events.OpDo, 1, events.Succeeded, "")
	f.expect(Committed)
	if f.state.Pending != nil {
		t.Fatalf("pending after commit: %+v", f.state.Pending)
	}
}

func TestNextSecondStepFailsCompensatesFirstOnly(t *testing.T) {
	f := newFixture(t, transfer()...)
	f.outcome("bank-a", "debit", events.OpDo, 1, events.Succeeded, "")
	f.outcome("bank-b", "credit", events.OpDo, 1, events.Failed, "account abnormal")
	f.expect(Compensating, "debit/undo/2")
	if !strings.Contains(f.state.Reason, "account abnormal") {
		t.Fatalf("reason = %q", f.state.Reason)
	}
	if c := f.last.cmds()[0]; c.Action != "Udebit" {
		t.Fatalf("undo action = %s", c.Action)
	}
	f.outcome("bank-a", "debit", events.OpUndo, 2, events.Compensated, "")
	f.expect(Compensated)
	if f.stepStatus("credit") != StepFailed || f.stepStatus("debit") != StepCompensated {
		t.Fatalf("steps = %+v", f.state.Steps)
	}
}

func TestNextFirstStepFailsNothingToUndo(t *testing.T) {
	f := newFixture(t, transfer()...)
	f.outcome("bank-a", "debit", events.OpDo, 1, events.Failed, "insufficient balance")
	f.expect(Compensated)
	if f.stepStatus("credit") != StepPending {
		t.Fatal("credit ran")
	}
}

// A step with compensate_failed whose action answers failed is compensated
// (in reverse order, before the earlier steps): the participant may have
// committed before it answered (DTM's HTTP branches). A rejected action is
// still taken as having had no effect.
func TestNextCompensateFailedUndoesTheFailedStep(t *testing.T) {
	steps := transfer()
	steps[1].CompensateFailed = true
	f := newFixture(t, steps...)
	f.outcome("bank-a", "debit", events.OpDo, 1, events.Succeeded, "")
	f.outcome("bank-b", "credit", events.OpDo, 1, events.Failed, "FAILURE")
	f.expect(Compensating, "credit/undo/2")
	if f.stepStatus("credit") != StepCompensating || !strings.Contains(f.state.Reason, "FAILURE") {
		t.Fatalf("steps = %+v, reason %q", f.state.Steps, f.state.Reason)
	}
	f.outcome("bank-b", "credit", events.OpUndo, 2, events.Compensated, "")
	f.expect(Compensating, "debit/undo/2")
	f.outcome("bank-a", "debit", events.OpUndo, 2, events.Compensated, "")
	f.expect(Compensated)

	steps = transfer()
	steps[0].CompensateFailed = true
	f = newFixture(t, steps...)
	f.outcome("bank-a", "debit", events.OpDo, 1, events.Rejected, "unknown action")
	f.expect(Compensated)
	if f.stepStatus("debit") != StepFailed {
		t.Fatalf("a rejected action was compensated: %+v", f.state.Steps)
	}
}

func TestNextDuplicatesAndStaleOutcomes(t *testing.T) {
	f := newFixture(t, transfer()...)
	f.outcome("bank-a", "debit", events.OpDo, 1, events.Succeeded, "")
	before := f.state
	r := f.outcome("bank-a", "debit", events.OpDo, 1, events.Succeeded, "")
	if r.Changed || r.Ignored == "" || len(r.cmds()) != 0 || r.State != before {
		t.Fatalf("duplicate changed something: %+v", r)
	}
	r = f.outcome("bank-b", "credit", events.OpDo, 7, events.Succeeded, "")
	if r.Changed || !strings.Contains(r.Ignored, "stale") {
		t.Fatalf("future attempt applied: %+v", r)
	}
	r = f.outcome("bank-b", "credit", events.OpUndo, 1, events.Compensated, "")
	if r.Changed {
		t.Fatalf("wrong op applied: %+v", r)
	}
}

func TestNextRejectsForgedOutcomes(t *testing.T) {
	f := newFixture(t, transfer()...)
	for _, tc := range []struct {
		subject, body, step, want string
	}{
		{"bank-b", "bank-b", "debit", "belongs to participant \"bank-a\""},
		{"bank-b", "bank-a", "debit", "published on participant \"bank-b\"'s subject"},
		{"bank-a", "bank-a", "nosuch", "unknown step"},
	} {
		o := events.Outcome{V: 1, SagaID: "s1", Participant: tc.body, Step: tc.step, Op: events.OpDo, Attempt: 1, Status: events.Succeeded}
		r := f.apply(Input{Kind: events.KindEvent, Participant: tc.subject, Outcome: &o})
		if !strings.Contains(r.Rejected, tc.want) || !r.Changed {
			t.Fatalf("%+v: rejected = %q", tc, r.Rejected)
		}
		if f.stepStatus("debit") != StepRunning {
			t.Fatal("forged outcome applied")
		}
	}
	if n := len(f.state.Rejections); n != 3 {
		t.Fatalf("rejections recorded = %d", n)
	}
	// A redelivery of a rejected input is recorded once.
	f.seq--
	r := f.apply(Input{Kind: events.KindEvent, Participant: "bank-a", Outcome: &events.Outcome{V: 1, SagaID: "s1", Participant: "bank-a", Step: "nosuch", Op: events.OpDo, Attempt: 1, Status: events.Succeeded}})
	if r.Changed || len(f.state.Rejections) != 3 {
		t.Fatalf("redelivered rejection recorded twice: %+v", f.state.Rejections)
	}
}

func TestNextUnknownSaga(t *testing.T) {
	o := events.Outcome{V: 1, SagaID: "zz", Participant: "p", Step: "x", Op: events.OpDo, Attempt: 1, Status: events.Succeeded}
	r := Next(nil, Input{Kind: events.KindEvent, SagaID: "zz", Participant: "p", Outcome: &o})
	if r.State != nil || r.Changed || !strings.Contains(r.Rejected, "unknown saga") {
		t.Fatalf("%+v", r)
	}
}

func TestNextStartIdempotentAndConflicting(t *testing.T) {
	f := newFixture(t, transfer()...)
	same := *f.state.Plan
	r := f.apply(Input{Kind: events.KindStart, Start: &same})
	if r.Changed || r.Ignored != "duplicate start" {
		t.Fatalf("%+v", r)
	}
	other := same
	other.Name = "other"
	r = f.apply(Input{Kind: events.KindStart, Start: &other})
	if !strings.Contains(r.Rejected, "different plan") || f.state.Name != "test" {
		t.Fatalf("%+v", r)
	}
	mismatch := same
	mismatch.SagaID = "s2"
	r = f.apply(Input{Kind: events.KindStart, Start: &mismatch})
	if !strings.Contains(r.Rejected, "differs from the subject") {
		t.Fatalf("%+v", r)
	}
}

func TestNextMalformedStartIsFindable(t *testing.T) {
	_, err := events.DecodeStart([]byte(`{"v":1,"saga_id":"s9","name":"x","steps":[]}`))
	r := Next(nil, Input{Kind: events.KindStart, SagaID: "s9", Err: err, TimeMS: 5})
	if r.State == nil || r.State.Status != Rejected || !strings.Contains(r.State.Reason, "steps") {
		t.Fatalf("%+v", r)
	}
	// The id is burned: a later valid start with it is rejected and
	// recorded, the saga stays rejected (JetStream would drop its start as a
	// duplicate anyway).
	good := events.Start{V: 1, SagaID: "s9", Name: "x", Steps: transfer()}
	data, _ := good.Encode()
	decoded, _ := events.DecodeStart(data)
	r = Next(r.State, Input{Kind: events.KindStart, SagaID: "s9", Start: &decoded, TimeMS: 6, Seq: 2})
	if r.State.Status != Rejected || len(r.cmds()) != 0 || !strings.Contains(r.Rejected, "rejected start") || len(r.State.Rejections) != 1 {
		t.Fatalf("%+v", r)
	}
}

// Regression: a deadline that passes after a retriable step was dispatched
// (no pivot) must not start a compensation that could never finish.
func TestNextDeadlineAfterPointOfNoReturn(t *testing.T) {
	start := events.Start{V: 1, SagaID: "s1", Name: "t", DeadlineMS: 3000, Steps: []events.Step{
		comp("reserve", "p"),
		{Name: "notify", Participant: "q", Action: "Notify", Kind: events.Retriable},
	}}
	data, _ := start.Encode()
	decoded, _ := events.DecodeStart(data)
	f := &fixture{t: t, now: 1000}
	f.apply(Input{Kind: events.KindStart, Start: &decoded})
	f.outcome("p", "reserve", events.OpDo, 1, events.Succeeded, "")
	f.expect(Running, "notify/do/1")
	r := f.tick(f.state.DeadlineMS)
	if f.state.Status != Running || len(r.cmds()) != 0 {
		t.Fatalf("deadline after the point of no return acted: %+v", f.state)
	}
	f.outcome("q", "notify", events.OpDo, 1, events.Succeeded, "")
	f.expect(Committed)
}

func TestNextLargeResultIsNotStored(t *testing.T) {
	f := newFixture(t, transfer()...)
	big := `{"blob":"` + strings.Repeat("x", MaxStoredResultBytes) + `"}`
	o := events.Outcome{V: 1, SagaID: "s1", Participant: "bank-a", Step: "debit", Op: events.OpDo, Attempt: 1, Status: events.Succeeded, Result: []byte(big)}
	f.apply(Input{Kind: events.KindEvent, Participant: "bank-a", Outcome: &o})
	if got := string(f.state.Steps[0].Result); !strings.Contains(got, "omitted_bytes") {
		t.Fatalf("result stored: %d bytes", len(got))
	}
}

func TestNextReverseOrderCompensation(t *testing.T) {
	f := newFixture(t, comp("a", "p"), comp("b", "p", "a"), comp("c", "p", "b"), comp("d", "p", "c"))
	f.outcome("p", "a", events.OpDo, 1, events.Succeeded, "")
	f.outcome("p", "b", events.OpDo, 1, events.Succeeded, "")
	f.outcome("p", "c", events.OpDo, 1, events.Succeeded, "")
	f.outcome("p", "d", events.OpDo, 1, events.Failed, "no")
	f.expect(Compensating, "c/undo/2")
	f.outcome("p", "c", events.OpUndo, 2, events.Compensated, "")
	f.expect(Compensating, "b/undo/2")
	f.outcome("p", "b", events.OpUndo, 2, events.Compensated, "")
	f.expect(Compensating, "a/undo/2")
	f.outcome("p", "a", events.OpUndo, 2, events.Compensated, "")
	f.expect(Compensated)
}

func TestNextParallelStepsOneFails(t *testing.T) {
	f := newFixture(t, comp("a", "p", []string{}...), comp("b", "q", []string{}...), comp("c", "p", "a", "b"))
	f.expect(Running, "a/do/1", "b/do/1")
	f.outcome("p", "a", events.OpDo, 1, events.Succeeded, "")
	f.expect(Running)
	f.outcome("q", "b", events.OpDo, 1, events.Failed, "boom")
	f.expect(Compensating, "a/undo/2")
	f.outcome("p", "a", events.OpUndo, 2, events.Compensated, "")
	f.expect(Compensated)

	// The other order: b fails while a is still running: a's undo goes out
	// at once (the barrier makes an undo that overtakes its action harmless).
	f = newFixture(t, comp("a", "p", []string{}...), comp("b", "q", []string{}...), comp("c", "p", "a", "b"))
	f.outcome("q", "b", events.OpDo, 1, events.Failed, "boom")
	f.expect(Compensating, "a/undo/2")
	r := f.outcome("p", "a", events.OpDo, 1, events.Succeeded, "")
	if r.Changed {
		t.Fatal("late action outcome applied after its undo was sent")
	}
	f.outcome("p", "a", events.OpUndo, 2, events.Compensated, "")
	f.expect(Compensated)
}

func TestNextStepTimeoutCompensatesTheStepToo(t *testing.T) {
	steps := transfer()
	steps[1].TimeoutMS = 5000
	f := newFixture(t, steps...)
	f.outcome("bank-a", "debit", events.OpDo, 1, events.Succeeded, "")
	if f.timerSet() == 0 || f.state.TimerMS != f.timerSet() {
		t.Fatalf("no timer scheduled: %+v", f.last)
	}
	due := f.state.TimerMS
	r := f.tick(due - 1) // a stale, early tick fires nothing
	if r.Changed {
		t.Fatalf("early tick changed the saga: %+v", r)
	}
	f.tick(due)
	f.expect(Compensating, "credit/undo/2")
	if f.stepStatus("credit") != StepCompensating || !strings.Contains(f.state.Reason, "timed out") {
		t.Fatalf("%+v", f.state)
	}
	f.outcome("bank-b", "credit", events.OpUndo, 2, events.Compensated, "")
	f.expect(Compensating, "debit/undo/2")
	f.outcome("bank-a", "debit", events.OpUndo, 2, events.Compensated, "")
	f.expect(Compensated)
	if f.state.TimerMS != 0 {
		t.Fatal("terminal saga keeps a timer")
	}
	if r := f.tick(due + 10_000); r.Changed {
		t.Fatal("tick changed a terminal saga")
	}
}

func TestNextTimerMovesOnlyEarlier(t *testing.T) {
	steps := transfer()
	steps[0].TimeoutMS = 1000
	steps[1].TimeoutMS = 50_000
	f := newFixture(t, steps...)
	first := f.timerSet()
	if first == 0 {
		t.Fatal("no timer")
	}
	f.outcome("bank-a", "debit", events.OpDo, 1, events.Succeeded, "")
	if f.timerSet() != 0 {
		t.Fatal("a later deadline rescheduled the pending timer")
	}
	f.tick(first) // fires, nothing due; the credit deadline gets a timer
	if f.timerSet() == 0 || f.state.TimerMS != f.timerSet() {
		t.Fatalf("credit's deadline not scheduled after the early timer: %+v", f.last)
	}
}

func TestNextRetriableStepParksThenRedriveAndSkip(t *testing.T) {
	steps := []events.Step{
		comp("reserve", "p"),
		{Name: "charge", Participant: "q", Action: "Charge", Kind: events.Pivot},
		{Name: "ship", Participant: "r", Action: "Ship", Kind: events.Retriable, TimeoutMS: 100,
			Retry: &events.RetryPolicy{MaxAttempts: 2, InitialBackoffMS: 1, MaxBackoffMS: 1}},
	}
	f := newFixture(t, steps...)
	f.outcome("p", "reserve", events.OpDo, 1, events.Succeeded, "")
	f.outcome("q", "charge", events.OpDo, 1, events.Succeeded, "")
	f.expect(Running, "ship/do/1")
	f.tick(f.state.TimerMS)
	f.expect(Running, "ship/do/2")
	f.tick(f.state.TimerMS)
	f.expect(Parked)
	if f.state.ParkedFrom != Running || !strings.Contains(f.state.Reason, "timed out 2 times") {
		t.Fatalf("%+v", f.state)
	}
	r := f.control(events.Skip, "reserve", "")
	if !strings.Contains(r.Rejected, "not what parked") {
		t.Fatalf("%+v", r)
	}
	f.control(events.Redrive, "", "")
	f.expect(Running, "ship/do/3")
	f.outcome("r", "ship", events.OpDo, 3, events.Failed, "address unknown")
	f.expect(Parked)
	f.control(events.Skip, "ship", "shipped by hand")
	f.expect(Committed)
	if f.stepStatus("ship") != StepSkipped {
		t.Fatal(f.stepStatus("ship"))
	}
}

func TestNextPivotUnknownParksResolve(t *testing.T) {
	steps := []events.Step{
		comp("reserve", "p"),
		{Name: "charge", Participant: "q", Action: "Charge", Kind: events.Pivot},
	}
	f := newFixture(t, steps...)
	f.outcome("p", "reserve", events.OpDo, 1, events.Succeeded, "")
	f.outcome("q", "charge", events.OpDo, 1, events.Exhausted, "db down")
	f.expect(Parked)
	r := f.control(events.Resolve, "", "charged by hand")
	if r.Rejected != "" {
		t.Fatal(r.Rejected)
	}
	f.expect(Committed)
	if f.state.Resolution != "charged by hand" {
		t.Fatal(f.state.Resolution)
	}
	if r := f.control(events.Redrive, "", ""); !strings.Contains(r.Rejected, "not parked") {
		t.Fatalf("%+v", r)
	}
}

func TestNextPivotFailureCompensates(t *testing.T) {
	steps := []events.Step{comp("reserve", "p"), {Name: "charge", Participant: "q", Action: "Charge", Kind: events.Pivot}}
	f := newFixture(t, steps...)
	f.outcome("p", "reserve", events.OpDo, 1, events.Succeeded, "")
	f.outcome("q", "charge", events.OpDo, 1, events.Failed, "card declined")
	f.expect(Compensating, "reserve/undo/2")
}

func TestNextCompensationExhaustedParksAndRedrives(t *testing.T) {
	f := newFixture(t, transfer()...)
	f.outcome("bank-a", "debit", events.OpDo, 1, events.Succeeded, "")
	f.outcome("bank-b", "credit", events.OpDo, 1, events.Failed, "abnormal")
	f.outcome("bank-a", "debit", events.OpUndo, 2, events.Exhausted, "db down")
	f.expect(Parked)
	if f.state.ParkedFrom != Compensating {
		t.Fatal(f.state.ParkedFrom)
	}
	f.control(events.Redrive, "", "")
	f.expect(Compensating, "debit/undo/3")
	f.outcome("bank-a", "debit", events.OpUndo, 3, events.Compensated, "")
	f.expect(Compensated)
}

func TestNextDeadline(t *testing.T) {
	start := events.Start{V: 1, SagaID: "s1", Name: "t", DeadlineMS: 3000, Steps: transfer()}
	data, _ := start.Encode()
	decoded, _ := events.DecodeStart(data)
	f := &fixture{t: t, now: 1000}
	f.apply(Input{Kind: events.KindStart, Start: &decoded})
	if f.timerSet() != f.state.DeadlineMS {
		t.Fatalf("deadline not scheduled: %+v", f.last)
	}
	f.outcome("bank-a", "debit", events.OpDo, 1, events.Succeeded, "")
	f.tick(f.state.DeadlineMS)
	f.expect(Compensating, "credit/undo/2") // debit waits for credit's undo
}

// TestNextAnonymousRejection: an anonymous rejection (a command the
// participant could not read) does not say which command it was. Found by
// the fault suite (internal/faulttest, scenario malformed): a garbage
// message on bank-a's command subject of a running saga made the
// coordinator record the debit in flight as failed (no effect) and end the
// saga compensated without undoing it, while the real debit command ran and
// committed: the money stayed debited. The step in flight must be treated as
// unknown and compensated; the barrier voids it if it never ran.
func TestNextAnonymousRejection(t *testing.T) {
	f := newFixture(t, transfer()...)
	o := events.Outcome{V: 1, SagaID: "s1", Participant: "bank-a", Status: events.Rejected, Reason: "bad json"}
	f.apply(Input{Kind: events.KindEvent, Participant: "bank-a", Outcome: &o})
	f.expect(Compensating, "debit/undo/2")
	if f.stepStatus("debit") != StepCompensating {
		t.Fatal(f.stepStatus("debit"))
	}
	if want := `step "debit" unknown: an unreadable command was rejected: bad json`; f.state.Reason != want {
		t.Fatalf("reason %q, want %q", f.state.Reason, want)
	}
	// The real debit's outcome arrives afterwards: stale, ignored; the
	// compensation decides.
	f.outcome("bank-a", "debit", events.OpDo, 1, events.Succeeded, "")
	f.expect(Compensating)
	f.outcome("bank-a", "debit", events.OpUndo, 2, events.Compensated, "")
	f.expect(Compensated)

	// A compensation in flight cannot be told apart either: the saga parks
	// for an operator.
	f = newFixture(t, transfer()...)
	f.outcome("bank-a", "debit", events.OpDo, 1, events.Succeeded, "")
	f.outcome("bank-b", "credit", events.OpDo, 1, events.Failed, "abnormal")
	f.expect(Compensating, "debit/undo/2")
	f.apply(Input{Kind: events.KindEvent, Participant: "bank-a", Outcome: &o})
	f.expect(Parked)

	// Nothing of that participant in flight: ignored.
	f = newFixture(t, transfer()...)
	o.Participant = "bank-b"
	if r := f.apply(Input{Kind: events.KindEvent, Participant: "bank-b", Outcome: &o}); r.Changed || r.Ignored == "" {
		t.Fatalf("result %+v, want ignored", r)
	}
}

func TestNextDoesNotModifyPrevious(t *testing.T) {
	f := newFixture(t, transfer()...)
	prev := f.state
	snapshot, _ := encodeState(prev)
	f.outcome("bank-a", "debit", events.OpDo, 1, events.Succeeded, "")
	after, _ := encodeState(prev)
	if string(snapshot) != string(after) {
		t.Fatal("Next modified its input state")
	}
}

// Regression (found by the fault suite, cluster node loss): a compensation
// that timed out until its budget was spent parks the saga; when the last
// attempt's outcome arrives after all, the saga resumes and ends instead of
// staying parked.
func TestNextLateOutcomeOfAStuckStepResumes(t *testing.T) {
	steps := transfer()
	steps[0].TimeoutMS = 100
	steps[0].Retry = &events.RetryPolicy{MaxAttempts: 2, InitialBackoffMS: 1, MaxBackoffMS: 1}
	f := newFixture(t, steps...)
	f.outcome("bank-a", "debit", events.OpDo, 1, events.Succeeded, "")
	f.outcome("bank-b", "credit", events.OpDo, 1, events.Failed, "abnormal")
	f.expect(Compensating, "debit/undo/2")
	f.tick(f.state.Steps[0].DueMS)
	f.expect(Compensating, "debit/undo/3")
	f.tick(f.state.Steps[0].DueMS)
	f.expect(Parked)
	if !f.state.Steps[0].Stuck || f.state.ParkedFrom != Compensating {
		t.Fatalf("%+v", f.state)
	}
	f.outcome("bank-a", "debit", events.OpUndo, 3, events.Compensated, "")
	f.expect(Compensated)
	if f.state.Steps[0].Stuck || f.state.Steps[0].Status != StepCompensated {
		t.Fatalf("%+v", f.state.Steps[0])
	}

	// The same for a retriable step that timed out until parked.
	f = newFixture(t, comp("reserve", "p"),
		events.Step{Name: "charge", Participant: "q", Action: "Charge", Kind: events.Pivot},
		events.Step{Name: "ship", Participant: "r", Action: "Ship", Kind: events.Retriable, TimeoutMS: 100,
			Retry: &events.RetryPolicy{MaxAttempts: 1, InitialBackoffMS: 1, MaxBackoffMS: 1}})
	f.outcome("p", "reserve", events.OpDo, 1, events.Succeeded, "")
	f.outcome("q", "charge", events.OpDo, 1, events.Succeeded, "")
	f.tick(f.state.Steps[2].DueMS)
	f.expect(Parked)
	f.outcome("r", "ship", events.OpDo, 1, events.Succeeded, "")
	f.expect(Committed)
}
