package orchestrator

import "github.com/jetsaga/jetsaga/events"

// cmds are the commands a transition publishes.
func (r Result) cmds() []events.Command {
	if !r.Changed || r.State == nil || r.State.Pending == nil {
		return nil
	}
	return r.State.Pending.Commands
}

// scheduleMS is the due time of the timer a transition schedules, 0 if none.
func (r Result) scheduleMS() int64 {
	if !r.Changed || r.State == nil || r.State.Pending == nil {
		return 0
	}
	return r.State.Pending.ScheduleMS
}

// cancelTimerBefore is the bound of the timer cancellation a transition
// asks for, 0 if none.
func (r Result) cancelTimerBefore() uint64 {
	if !r.Changed || r.State == nil || r.State.Pending == nil {
		return 0
	}
	return r.State.Pending.CancelTimerBefore
}
