package orchestrator

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"slices"

	"github.com/jetsaga/jetsaga/events"
)

// Status is the status of a saga.
type Status string

// Saga statuses. Committed, Compensated and Rejected are terminal; Parked
// waits for an operator.
const (
	// Running: steps are being executed forward.
	Running Status = "running"
	// Compensating: a step failed (or timed out, or the deadline passed);
	// the steps that may have had an effect are being compensated in reverse
	// dependency order.
	Compensating Status = "compensating"
	// Committed: every step succeeded (or was skipped by an operator).
	Committed Status = "committed"
	// Compensated: every step that may have had an effect was compensated.
	Compensated Status = "compensated"
	// Parked: the saga cannot make progress on its own (a compensation or a
	// retriable step spent its retry budget, the pivot's outcome is unknown,
	// a participant rejected a compensation). It consumes nothing until an
	// operator redrives it, skips the step or resolves it.
	Parked Status = "parked"
	// Rejected: the start message was invalid; nothing ran. Reason says why.
	Rejected Status = "rejected"
)

// Terminal reports whether a saga in this status will never change again
// (except that a Rejected saga id may be started again with a valid plan).
func (s Status) Terminal() bool {
	return s == Committed || s == Compensated || s == Rejected
}

// StepStatus is the status of one step of a saga.
type StepStatus string

// Step statuses.
const (
	StepPending      StepStatus = "pending"      // not dispatched yet
	StepRunning      StepStatus = "running"      // its action is in flight
	StepSucceeded    StepStatus = "succeeded"    // its action committed
	StepFailed       StepStatus = "failed"       // business failure or rejected: no effect
	StepUnknown      StepStatus = "unknown"      // timed out or exhausted: may have had an effect
	StepCompensating StepStatus = "compensating" // its compensation is in flight
	StepCompensated  StepStatus = "compensated"  // its compensation committed (or was a null compensation)
	StepSkipped      StepStatus = "skipped"      // an operator marked it done
)

// State is the coordinator's record of one saga, stored as JSON in the state
// bucket under the saga id. It is changed only by [Next].
type State struct {
	V      int    `json:"v"`
	SagaID string `json:"saga_id"`
	Name   string `json:"name,omitempty"`
	Status Status `json:"status"`
	// Seq is the stream sequence of the last input that changed the state.
	// Coordinators apply a saga's inputs in stream order (an input at or
	// below Seq is already part of the state), so the state is always the
	// fold of the sagas stream up to Seq.
	Seq uint64 `json:"seq"`
	// Reason says why the saga compensates, is parked or was rejected.
	Reason string `json:"reason,omitempty"`
	// ParkedFrom is the status a parked saga had: the direction it resumes in.
	ParkedFrom Status `json:"parked_from,omitempty"`
	// Resolution is the operator's note of a resolved saga.
	Resolution string `json:"resolution,omitempty"`
	// Plan is the start message, as the saga was started.
	Plan     *events.Start `json:"plan,omitempty"`
	PlanHash string        `json:"plan_hash,omitempty"`
	Steps    []StepState   `json:"steps,omitempty"`
	// StartedMS, UpdatedMS and DeadlineMS are Unix milliseconds taken from
	// the stream timestamps of the saga's messages, never from a clock, so
	// that replay reproduces them.
	StartedMS  int64 `json:"started_ms"`
	UpdatedMS  int64 `json:"updated_ms"`
	DeadlineMS int64 `json:"deadline_ms,omitempty"`
	// StepTimeoutMS is the timeout of the steps whose plan gives none: the
	// coordinator's default when the saga started (0: none).
	StepTimeoutMS int64 `json:"step_timeout_ms,omitempty"`
	// FailMS and FailStep identify the failure that started compensation:
	// the earliest one (by time, then step index), whatever order they were
	// applied in.
	FailMS   int64 `json:"fail_ms,omitempty"`
	FailStep int   `json:"fail_step,omitempty"`
	// TimerMS is the due time of the saga's pending timer, 0 if none.
	TimerMS int64 `json:"timer_ms,omitempty"`
	// Trace is the W3C trace context of the start message, passed on to
	// every command.
	Trace Trace `json:"trace,omitzero"`
	// Pending holds what the last transition must publish: the coordinator
	// writes the state and publishes these (idempotently, by message id).
	// Whoever loads a state that may not have been flushed publishes them
	// again before applying anything, so a crash between the write and the
	// publish loses nothing.
	Pending *Pending `json:"pending,omitempty"`
	// Rejections are the last inputs of this saga that were rejected.
	Rejections []Rejection `json:"rejections,omitempty"`
}

// StepState is the progress of one step.
type StepState struct {
	Name   string     `json:"name"`
	Status StepStatus `json:"status"`
	// Op and Attempt identify the step's latest command; only an outcome for
	// exactly that command is applied.
	Op      events.Op `json:"op,omitempty"`
	Attempt int       `json:"attempt,omitempty"`
	// Sends counts commands of Op sent since the last redrive.
	Sends int `json:"sends,omitempty"`
	// DueMS is when the in-flight command times out, 0 if it does not.
	DueMS int64 `json:"due_ms,omitempty"`
	// DoneMS is when the action's outcome (or timeout) was recorded,
	// UndoneMS when the compensation's was.
	DoneMS   int64           `json:"done_ms,omitempty"`
	UndoneMS int64           `json:"undone_ms,omitempty"`
	Result   json.RawMessage `json:"result,omitempty"`
	Reason   string          `json:"reason,omitempty"`
	// Stuck marks the step that parked the saga.
	Stuck bool `json:"stuck,omitempty"`
}

// Trace is a W3C trace context (the traceparent and tracestate headers).
type Trace = events.Trace

// MaxStoredResultBytes bounds the result of a step kept in the state: a
// larger one is replaced by {"omitted_bytes": n}, so that a state always fits
// in a NATS message.
const MaxStoredResultBytes = 4096

// Pending is the output of a saga's last transition: its commands. (A
// timer is not an output: it is the state's TimerMS, which the coordinators
// follow and fire.)
type Pending struct {
	Commands []events.Command `json:"commands,omitempty"`
}

// Rejection records an input the coordinator refused.
type Rejection struct {
	Seq    uint64      `json:"seq"`
	Kind   events.Kind `json:"kind"`
	TimeMS int64       `json:"time_ms"`
	Reason string      `json:"reason"`
}

// MaxRejections bounds the rejections kept in a state (the newest are kept).
const MaxRejections = 16

// stateVersion is the version of the State encoding.
const stateVersion = 1

func (s *State) clone() *State {
	c := *s
	c.Steps = slices.Clone(s.Steps)
	return &c // Rejections is only ever replaced, never written in place
}

// participants returns the distinct participants of the saga's steps.
func (s *State) participants() []string {
	var ps []string
	if s.Plan != nil {
		for i := range s.Plan.Steps {
			if p := s.Plan.Steps[i].Participant; !slices.Contains(ps, p) {
				ps = append(ps, p)
			}
		}
	}
	return ps
}

func (s *State) hasParticipant(p string) bool {
	if s.Plan != nil {
		for i := range s.Plan.Steps {
			if s.Plan.Steps[i].Participant == p {
				return true
			}
		}
	}
	return false
}

func (s *State) step(name string) (int, *StepState) {
	for i := range s.Steps {
		if s.Steps[i].Name == name {
			return i, &s.Steps[i]
		}
	}
	return -1, nil
}

// planHash is the hash of a start message's canonical encoding: starting a
// saga id again is idempotent when the hashes agree.
func planHash(start *events.Start) (string, error) {
	data, err := start.Encode()
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:]), nil
}

// encodeState encodes a state for the state bucket.
func encodeState(s *State) ([]byte, error) { return json.Marshal(s) }

// decodeState decodes a state from the state bucket.
func decodeState(data []byte) (*State, error) {
	var s State
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, err
	}
	return &s, nil
}
