package events

import (
	"strconv"

	"github.com/nats-io/nats.go"
)

// Framing: one constructor per message, the only place where a message's
// subject, Nats-Msg-Id and jetsaga headers are put together. Each encodes
// (and so validates) the body.

// Trace is a W3C trace context, carried in the traceparent and tracestate
// headers from a start to its commands and their outcomes.
type Trace struct {
	Parent string `json:"parent,omitempty"`
	State  string `json:"state,omitempty"`
}

// TraceOf returns the trace context a message carries.
func TraceOf(h nats.Header) Trace {
	if h == nil {
		return Trace{}
	}
	return Trace{Parent: h.Get(HeaderTraceParent), State: h.Get(HeaderTraceState)}
}

// set writes the trace context into h.
func (t Trace) set(h nats.Header) {
	if t.Parent == "" {
		return
	}
	h.Set(HeaderTraceParent, t.Parent)
	if t.State != "" {
		h.Set(HeaderTraceState, t.State)
	}
}

// StartMsg is the message that starts saga s.SagaID.
func (n Namespace) StartMsg(s Start, trace Trace) (*nats.Msg, error) {
	data, err := s.Encode()
	if err != nil {
		return nil, err
	}
	m := nats.NewMsg(n.Start(s.SagaID))
	m.Data = data
	m.Header.Set(HeaderMsgID, StartMsgID(s.SagaID))
	m.Header.Set(HeaderSagaID, s.SagaID)
	trace.set(m.Header)
	return m, nil
}

// CommandMsg is the message of command c, on its participant's subject.
func (n Namespace) CommandMsg(c *Command, trace Trace) (*nats.Msg, error) {
	data, err := c.Encode()
	if err != nil {
		return nil, err
	}
	m := nats.NewMsg(n.Command(c.Participant, c.SagaID))
	m.Data = data
	h := m.Header
	h.Set(HeaderMsgID, CommandMsgID(c.SagaID, c.Step, c.Op, c.Attempt))
	h.Set(HeaderSagaID, c.SagaID)
	h.Set(HeaderStep, c.Step)
	h.Set(HeaderOp, string(c.Op))
	h.Set(HeaderAttempt, strconv.Itoa(c.Attempt))
	h.Set(HeaderParticipant, c.Participant)
	trace.set(h)
	return m, nil
}

// OutcomeMsg is the message of outcome o, on its participant's subject.
// cmdSeq is the commands stream sequence of the command it answers (it
// keys an anonymous rejection's id, see OutcomeMsgID).
func (n Namespace) OutcomeMsg(o *Outcome, cmdSeq uint64, trace Trace) (*nats.Msg, error) {
	data, err := o.Encode()
	if err != nil {
		return nil, err
	}
	m := nats.NewMsg(n.Event(o.Participant, o.SagaID))
	m.Data = data
	h := m.Header
	h.Set(HeaderMsgID, OutcomeMsgID(o, cmdSeq))
	h.Set(HeaderSagaID, o.SagaID)
	h.Set(HeaderParticipant, o.Participant)
	if o.Step != "" {
		h.Set(HeaderStep, o.Step)
		h.Set(HeaderOp, string(o.Op))
		h.Set(HeaderAttempt, strconv.Itoa(o.Attempt))
	}
	trace.set(h)
	return m, nil
}

// ControlMsg is the message of operator action c.
func (n Namespace) ControlMsg(c Control) (*nats.Msg, error) {
	data, err := c.Encode()
	if err != nil {
		return nil, err
	}
	m := nats.NewMsg(n.Control(c.SagaID))
	m.Data = data
	m.Header.Set(HeaderMsgID, ControlMsgID(c.SagaID, c.ID))
	m.Header.Set(HeaderSagaID, c.SagaID)
	return m, nil
}

// TickMsg is the message that fires saga sagaID's timer due at dueMS
// (Unix milliseconds): the coordinator publishes it when the timer falls
// due. rev is the state bucket revision of the state that holds the timer:
// with the saga and the due time it makes the message id, so the ticks that
// several coordinator instances publish for one timer are one message,
// while a later timer for the same due time gets its own.
func (n Namespace) TickMsg(sagaID string, dueMS int64, rev uint64) (*nats.Msg, error) {
	data, err := Tick{V: Version, SagaID: sagaID, DueMS: dueMS}.Encode()
	if err != nil {
		return nil, err
	}
	m := nats.NewMsg(n.Tick(sagaID))
	m.Data = data
	m.Header.Set(HeaderMsgID, TickMsgID(sagaID, dueMS, rev))
	m.Header.Set(HeaderSagaID, sagaID)
	return m, nil
}
