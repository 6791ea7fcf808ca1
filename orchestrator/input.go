package orchestrator

import (
	"time"

	"github.com/nats-io/nats.go"

	"github.com/jetsaga/jetsaga/events"
)

// decodeInput turns a message of the sagas stream into an Input: the subject
// names the kind, the saga and (for events) the participant; a body that
// does not decode yields an Input with Err set, which Next rejects and
// records. ok is false when the subject itself is not a saga input (it
// cannot be attributed to any saga).
func decodeInput(ns events.Namespace, subject string, header nats.Header, data []byte, seq uint64, ts time.Time) (in Input, ok bool) {
	sub, err := ns.Parse(subject)
	if err != nil || sub.Kind == events.KindCommand || sub.Kind == events.KindSchedule {
		return Input{}, false
	}
	in = Input{Kind: sub.Kind, SagaID: sub.SagaID, Participant: sub.Participant, Seq: seq, TimeMS: ts.UnixMilli()}
	if sub.Kind == events.KindStart && header != nil {
		in.Trace = Trace{Parent: header.Get(events.HeaderTraceParent), State: header.Get(events.HeaderTraceState)}
	}
	switch sub.Kind {
	case events.KindStart:
		v, err := events.DecodeStart(data)
		in.Start, in.Err = &v, err
	case events.KindEvent:
		v, err := events.DecodeOutcome(data)
		in.Outcome, in.Err = &v, err
	case events.KindTick:
		v, err := events.DecodeTick(data)
		in.Tick, in.Err = &v, err
		if err == nil && v.SagaID != sub.SagaID {
			in.Err = &events.FieldError{Field: "saga_id", Problem: "differs from the subject's"}
		}
	case events.KindControl:
		v, err := events.DecodeControl(data)
		in.Control, in.Err = &v, err
		if err == nil && v.SagaID != sub.SagaID {
			in.Err = &events.FieldError{Field: "saga_id", Problem: "differs from the subject's"}
		}
	}
	return in, true
}
