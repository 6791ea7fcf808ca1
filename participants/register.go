package participants

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"reflect"

	"github.com/jackc/pgx/v5"

	"github.com/jetsaga/jetsaga/events"
)

// CompensationSuffix is appended to an action's name to name its
// compensation when [Step.UndoAction] is empty: registering "TransOut"
// registers its Undo as "TransOutCompensate".
const CompensationSuffix = "Compensate"

// StepInfo describes the command a handler runs for.
type StepInfo struct {
	// SagaID is the saga's id.
	SagaID string
	// Step is the step's name in the saga's plan (not the action's name).
	Step string
	// Action is the name the command asked for ("TransOut" or
	// "TransOutCompensate").
	Action string
	// Op is events.OpDo for an action, events.OpUndo for a compensation.
	Op events.Op
	// Attempt is the coordinator's attempt number of this command (it sends
	// a step again, with the next attempt, after a timeout).
	Attempt int
	// Participant is this participant's name.
	Participant string
	// Delivered counts JetStream deliveries of this command message: 1 the
	// first time, more after transient errors or lost acks.
	Delivered uint64
}

// Handler runs one step's action or compensation inside the step's
// transaction tx. The barrier row and the outcome are written in the same
// transaction, so whatever the handler writes through tx commits exactly
// once, together with the outcome, or not at all.
//
// Return values:
//   - nil error: the outcome is "succeeded" (op do) or "compensated" (op
//     undo), with result, if not nil, encoded as JSON in the outcome;
//   - an error made by [Fail] (Do handlers only): everything the handler did
//     is rolled back and the outcome is "failed" with the reason;
//   - any other error (and a panic): transient; the transaction rolls back
//     and the command is retried with backoff until its retry budget is
//     spent, then the outcome is "exhausted".
//
// A handler must not keep tx, commit it or roll it back (those return
// [ErrTxOwned]); tx.Begin for a nested savepoint is fine. ctx is cancelled
// if the participant's shutdown timeout passes while the handler runs.
type Handler[T any] func(ctx context.Context, tx pgx.Tx, info StepInfo, payload T) (result any, err error)

// Step is what a participant does for one kind of step: Do is the action,
// Undo its compensation. The payload of both is the step's payload in the
// saga's plan, decoded as JSON into T with unknown fields rejected; if T (or
// *T) has a method Validate() error, a payload it rejects is a poison
// command (outcome "rejected").
type Step[T any] struct {
	// Do runs the action. Required.
	Do Handler[T]
	// Undo runs the compensation. Nil for a step without compensation (a
	// pivot or a retriable step). An error made by Fail is a programming
	// error in a compensation (a compensation must not fail for business
	// reasons): it is logged and handled as transient.
	Undo Handler[T]
	// UndoAction is the name the saga's plan gives the compensation.
	// Default: the action's name followed by [CompensationSuffix]. Ignored
	// when Undo is nil.
	UndoAction string
}

// validator is implemented by payload types that check themselves.
type validator interface{ Validate() error }

// invokeFunc runs a prepared handler call.
type invokeFunc func(ctx context.Context, tx pgx.Tx, info StepInfo) (any, error)

// action is one registered action name.
type action struct {
	name string
	op   events.Op
	// prepare decodes and validates a payload and returns the call to
	// make; an error is a poison payload.
	prepare func(payload json.RawMessage) (invokeFunc, error)
}

// Register registers s under action (and its compensation under
// s.UndoAction or action+"Compensate"). It panics on misuse: a name that is
// not a valid token, a nil Do, a name already registered, a call after
// [Participant.Run] started. Use [RegisterSafely] to get an error instead.
func Register[T any](p *Participant, action string, s Step[T]) {
	if err := RegisterSafely(p, action, s); err != nil {
		panic(err)
	}
}

// RegisterSafely is [Register] returning an error (matching
// [ErrInvalidRegistration]) instead of panicking.
func RegisterSafely[T any](p *Participant, actionName string, s Step[T]) error {
	if p == nil {
		return &registrationError{action: actionName, problem: "participant is nil"}
	}
	if err := events.ValidToken(actionName); err != nil {
		return &registrationError{action: actionName, problem: "name " + err.Error()}
	}
	if s.Do == nil {
		return &registrationError{action: actionName, problem: "Do is nil"}
	}
	acts := []*action{{name: actionName, op: events.OpDo, prepare: preparer(s.Do)}}
	if s.Undo != nil {
		undo := s.UndoAction
		if undo == "" {
			undo = actionName + CompensationSuffix
		}
		if err := events.ValidToken(undo); err != nil {
			return &registrationError{action: actionName, problem: "UndoAction " + err.Error()}
		}
		if undo == actionName {
			return &registrationError{action: actionName, problem: "UndoAction is the action's own name"}
		}
		acts = append(acts, &action{name: undo, op: events.OpUndo, prepare: preparer(s.Undo)})
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.started {
		return &registrationError{action: actionName, problem: "the participant is already running"}
	}
	for _, a := range acts {
		if _, dup := p.actions[a.name]; dup {
			return &registrationError{action: actionName, problem: fmt.Sprintf("%q is already registered", a.name)}
		}
	}
	for _, a := range acts {
		p.actions[a.name] = a
	}
	return nil
}

// preparer builds the payload decoder of a typed handler.
func preparer[T any](h Handler[T]) func(json.RawMessage) (invokeFunc, error) {
	return func(raw json.RawMessage) (invokeFunc, error) {
		v, err := decodePayload[T](raw)
		if err != nil {
			return nil, err
		}
		return func(ctx context.Context, tx pgx.Tx, info StepInfo) (any, error) {
			return h(ctx, tx, info, v)
		}, nil
	}
}

// decodePayload decodes raw into a T strictly (unknown fields and trailing
// data rejected; an absent payload is T's zero value) and validates it with
// T's or *T's Validate method, if any (not on a nil pointer).
func decodePayload[T any](raw json.RawMessage) (T, error) {
	var v T
	if len(raw) > 0 {
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&v); err != nil {
			return v, fmt.Errorf("payload: %w", err)
		}
		if dec.More() {
			return v, fmt.Errorf("payload: trailing data after the JSON value")
		}
	}
	var err error
	if x, ok := any(v).(validator); ok {
		if rv := reflect.ValueOf(v); rv.Kind() != reflect.Pointer || !rv.IsNil() {
			err = x.Validate()
		}
	} else if x, ok := any(&v).(validator); ok {
		err = x.Validate()
	}
	if err != nil {
		return v, fmt.Errorf("payload: %w", err)
	}
	return v, nil
}
