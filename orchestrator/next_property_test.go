package orchestrator

import (
	"fmt"
	"testing"

	"pgregory.net/rapid"

	"github.com/jetsaga/jetsaga/events"
)

// behaviour of one step's participant in a simulated run.
type behaviour int

const (
	succeeds behaviour = iota
	fails              // business failure
	silent             // never answers its first attempt: the step times out
)

// barrierModel is the participant side of one step, with the barrier's rules.
type barrierModel struct {
	doRow      string // "", "succeeded", "failed", "voided"
	undoRow    bool
	applied    bool // the action's effect is in place
	appliedDo  int  // times the action's effect was applied
	undoneWith bool // an undo ran and reverted the action
}

// sim runs a saga against modelled participants and an unreliable network.
type sim struct {
	t        *rapid.T
	plan     events.Start
	behave   map[string]behaviour
	state    *State
	now      int64
	seq      uint64
	barrier  map[string]*barrierModel
	network  []Input          // outcomes on their way to the coordinator
	commands []events.Command // commands on their way to participants
	undoLog  []string         // order in which undo actions took effect
	chaos    bool
}

func (s *sim) feed(in Input) {
	s.seq++
	s.now += 7
	in.Seq, in.TimeMS, in.SagaID = s.seq, s.now, s.plan.SagaID
	r := Next(s.state, in)
	if r.State == nil {
		s.t.Fatalf("state vanished on %+v", in)
	}
	// Compensation order: an undo goes out only once every step that waits
	// for this one is settled.
	for _, c := range r.cmds() {
		if c.Op != events.OpUndo {
			continue
		}
		for j, d := range s.plan.Steps {
			if dependsOn(&d, c.Step) {
				switch r.State.Steps[j].Status {
				case StepPending, StepFailed, StepCompensated:
				default:
					s.t.Fatalf("undo of %s sent while dependent %s is %s", c.Step, d.Name, r.State.Steps[j].Status)
				}
			}
		}
	}
	if r.Changed && r.State.Status.Terminal() && r.State.TimerMS != 0 {
		s.t.Fatalf("finished saga keeps a timer: %d", r.State.TimerMS)
	}
	s.state = r.State
	s.commands = append(s.commands, r.cmds()...)
	if s.chaos && len(r.cmds()) > 0 && rapid.Bool().Draw(s.t, "dupCmd") {
		s.commands = append(s.commands, r.cmds()[0]) // redelivered command
	}
}

// participant executes a command with the barrier's semantics.
func (s *sim) participant(c events.Command) {
	b := s.barrier[c.Step]
	o := events.Outcome{V: 1, SagaID: c.SagaID, Participant: c.Participant, Step: c.Step, Op: c.Op, Attempt: c.Attempt}
	if c.Op == events.OpDo {
		switch b.doRow {
		case "":
			if s.behave[c.Step] == silent && c.Attempt == 1 {
				return // lost: no row, no answer
			}
			if s.behave[c.Step] == fails {
				b.doRow, o.Status, o.Reason = "failed", events.Failed, "no"
			} else {
				b.doRow, b.applied, o.Status = "succeeded", true, events.Succeeded
				b.appliedDo++
			}
		case "succeeded":
			o.Status = events.Succeeded
		default:
			o.Status, o.Reason = events.Failed, "refused"
		}
	} else {
		o.Status = events.Compensated
		if !b.undoRow {
			b.undoRow = true
			switch b.doRow {
			case "":
				b.doRow = "voided" // null compensation; a late action is refused
			case "succeeded":
				b.applied, b.undoneWith = false, true
				s.undoLog = append(s.undoLog, c.Step)
			}
		}
	}
	s.network = append(s.network, Input{Kind: events.KindEvent, Participant: c.Participant, Outcome: &o})
}

func (s *sim) run() {
	for steps := 0; steps < 10_000; steps++ {
		switch {
		case len(s.commands) > 0 || len(s.network) > 0:
			// Deliver one message: in order when calm, in any order (with
			// duplicates) under chaos.
			fromCmds := len(s.network) == 0 || (len(s.commands) > 0 && (!s.chaos || rapid.Bool().Draw(s.t, "which")))
			if fromCmds {
				i := 0
				if s.chaos {
					i = rapid.IntRange(0, len(s.commands)-1).Draw(s.t, "cmd")
				}
				c := s.commands[i]
				s.commands = append(s.commands[:i], s.commands[i+1:]...)
				s.participant(c)
				continue
			}
			i := 0
			if s.chaos {
				i = rapid.IntRange(0, len(s.network)-1).Draw(s.t, "evt")
			}
			in := s.network[i]
			if !s.chaos || !rapid.Bool().Draw(s.t, "keepDup") {
				s.network = append(s.network[:i], s.network[i+1:]...)
			}
			s.feed(in)
		case s.state.TimerMS != 0 && !s.state.Status.Terminal():
			if s.now < s.state.TimerMS {
				s.now = s.state.TimerMS
			}
			s.feed(Input{Kind: events.KindTick, Tick: &events.Tick{V: 1, SagaID: s.plan.SagaID, DueMS: s.state.TimerMS}})
		default:
			return
		}
	}
	s.t.Fatal("no quiescence after 10000 deliveries")
}

func genPlan(t *rapid.T) (events.Start, map[string]behaviour) {
	n := rapid.IntRange(1, 6).Draw(t, "steps")
	start := events.Start{V: 1, SagaID: "prop", Name: "p"}
	behave := map[string]behaviour{}
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("s%d", i)
		after := []string{}
		for j := 0; j < i; j++ {
			if rapid.Bool().Draw(t, "dep") {
				after = append(after, fmt.Sprintf("s%d", j))
			}
		}
		start.Steps = append(start.Steps, events.Step{Name: name, Participant: fmt.Sprintf("p%d", i%3),
			Action: "A", Compensation: "U", After: after, TimeoutMS: 1000})
		behave[name] = behaviour(rapid.IntRange(0, 5).Draw(t, "behaviour") % 3)
		if rapid.IntRange(0, 2).Draw(t, "mostlyOK") > 0 {
			behave[name] = succeeds
		}
	}
	data, err := start.Encode()
	if err != nil {
		t.Fatal(err)
	}
	decoded, err := events.DecodeStart(data)
	if err != nil {
		t.Fatal(err)
	}
	return decoded, behave
}

func runSim(t *rapid.T, plan events.Start, behave map[string]behaviour, chaos bool) *sim {
	s := &sim{t: t, plan: plan, behave: behave, barrier: map[string]*barrierModel{}, now: 1_000_000, chaos: chaos}
	for _, st := range plan.Steps {
		s.barrier[st.Name] = &barrierModel{}
	}
	p := plan
	s.feed(Input{Kind: events.KindStart, Start: &p})
	s.run()
	return s
}

// TestNextProperties: random plans (DAGs), random participant behaviour, and
// random interleavings, duplicates and reorderings of commands and outcomes
// reach the same terminal status as the clean run; a committed saga applied
// every action exactly once, a compensated one left no effect; compensation
// runs in reverse dependency order over exactly the steps that may have had
// an effect.
func TestNextProperties(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		plan, behave := genPlan(t)
		clean := runSim(t, plan, behave, false)
		chaotic := runSim(t, plan, behave, true)
		for _, s := range []*sim{clean, chaotic} {
			if !s.state.Status.Terminal() {
				t.Fatalf("not terminal: %s (%s)", s.state.Status, s.state.Reason)
			}
			// A finished saga's late timer changes nothing (Replay relies
			// on it: leavesFinished).
			late := Input{Kind: events.KindTick, Seq: 1 << 40, TimeMS: s.now + 1,
				Tick: &events.Tick{V: 1, SagaID: plan.SagaID, DueMS: rapid.Int64Range(1, s.now+120_000).Draw(t, "lateDue")}}
			if !leavesFinished(late) {
				t.Fatal("leavesFinished: a decodable tick is not recognised")
			}
			if r := Next(s.state, late); r.Changed {
				t.Fatalf("a late timer changed a %s saga", s.state.Status)
			}
			for name, b := range s.barrier {
				if b.appliedDo > 1 {
					t.Fatalf("action %s applied %d times", name, b.appliedDo)
				}
				switch s.state.Status {
				case Committed:
					if !b.applied {
						t.Fatalf("committed saga: step %s has no effect", name)
					}
				case Compensated:
					if b.applied {
						t.Fatalf("compensated saga: step %s still has its effect", name)
					}
				}
			}
			// Undo took effect in reverse dependency order.
			pos := map[string]int{}
			for i, name := range s.undoLog {
				pos[name] = i
			}
			for _, st := range s.plan.Steps {
				for _, dep := range st.After {
					pi, ok1 := pos[st.Name]
					pd, ok2 := pos[dep]
					if ok1 && ok2 && pd < pi {
						t.Fatalf("undo of %s ran before undo of its dependent %s: %v", dep, st.Name, s.undoLog)
					}
				}
			}
		}
		if clean.state.Status != chaotic.state.Status {
			t.Fatalf("clean run %s, chaotic run %s", clean.state.Status, chaotic.state.Status)
		}
		anyBad := false
		for _, b := range behave {
			anyBad = anyBad || b != succeeds
		}
		if want := map[bool]Status{false: Committed, true: Compensated}[anyBad]; clean.state.Status != want {
			t.Fatalf("status %s, want %s", clean.state.Status, want)
		}
	})
}
