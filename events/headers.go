package events

import (
	"strconv"
)

// Header names. Every jetsaga message carries Nats-Msg-Id and the saga id;
// commands and outcomes also carry step, op and attempt so that tools can
// route and filter without decoding the body. The W3C trace context headers
// are passed through from start to commands to outcomes unchanged.
const (
	HeaderMsgID       = "Nats-Msg-Id"
	HeaderSagaID      = "Jetsaga-Saga-Id"
	HeaderStep        = "Jetsaga-Step"
	HeaderOp          = "Jetsaga-Op"
	HeaderAttempt     = "Jetsaga-Attempt"
	HeaderParticipant = "Jetsaga-Participant"
	HeaderTraceParent = "traceparent"
	HeaderTraceState  = "tracestate"
)

// Message ids are built from what a message means, so that publishing it
// again after a crash yields the same id and JetStream's duplicate window
// drops it. Ids never collide across kinds: the kind is always one of the
// '/'-separated parts, and tokens cannot contain '/'.

// StartMsgID is the Nats-Msg-Id of a saga's start message.
func StartMsgID(sagaID string) string { return sagaID + "/start" }

// CommandMsgID is the Nats-Msg-Id of a command.
func CommandMsgID(sagaID, step string, op Op, attempt int) string {
	return sagaID + "/" + step + "/" + string(op) + "/" + strconv.Itoa(attempt)
}

// OutcomeMsgID is the Nats-Msg-Id of an outcome. The status is part of it: an
// attempt has one outcome, but a rejected one for an unreadable command has
// no step and is keyed by the command's stream sequence (cmdSeq).
func OutcomeMsgID(o *Outcome, cmdSeq uint64) string {
	if o.Step == "" {
		return o.SagaID + "/" + o.Participant + "/rejected/" + strconv.FormatUint(cmdSeq, 10)
	}
	return CommandMsgID(o.SagaID, o.Step, o.Op, o.Attempt) + "/" + string(o.Status)
}

// TickMsgID is the Nats-Msg-Id of the tick that fires a saga's timer due
// at dueMS, held by the state of bucket revision rev.
func TickMsgID(sagaID string, dueMS int64, rev uint64) string {
	return sagaID + "/tick/" + strconv.FormatInt(dueMS, 10) + "/" + strconv.FormatUint(rev, 10)
}

// ControlMsgID is the Nats-Msg-Id of an operator action.
func ControlMsgID(sagaID, id string) string { return sagaID + "/ctl/" + id }
