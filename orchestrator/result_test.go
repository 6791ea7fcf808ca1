package orchestrator

import "github.com/jetsaga/jetsaga/events"

// cmds are the commands a transition publishes.
func (r Result) cmds() []events.Command {
	if !r.Changed || r.State == nil || r.State.Pending == nil {
		return nil
	}
	return r.State.Pending.Commands
}

// timerSet is the due time of the timer a transition sets (a new timer,
// or an earlier one), 0 if none.
func (r Result) timerSet(prev *State) int64 {
	if !r.Changed || r.State == nil || r.State.TimerMS == 0 || prev != nil && prev.TimerMS == r.State.TimerMS {
		return 0
	}
	return r.State.TimerMS
}
