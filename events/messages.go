package events

import (
	"encoding/json"
	"time"
)

// Version is the protocol version this build writes and the only one it
// reads. Every message carries it in its "v" field.
const Version = 1

// Size limits. A message over MaxMessageBytes is rejected before it is
// parsed; payload, input and result documents over MaxPayloadBytes are
// rejected; a plan has at most MaxSteps steps. They keep a saga's state (its
// plan plus what it records per step) well below NATS's default 1 MiB
// message size.
const (
	MaxMessageBytes = 256 << 10
	MaxPayloadBytes = 64 << 10
	MaxSteps        = 64
	MaxReasonBytes  = 4096
)

// StepKind is the place of a step in the classic saga taxonomy.
type StepKind string

// Step kinds.
const (
	// Compensable steps have a compensation and run before the pivot.
	Compensable StepKind = "compensable"
	// Pivot is the point of no return: it has no compensation and once it
	// succeeds the saga goes forward. At most one per plan.
	Pivot StepKind = "pivot"
	// Retriable steps run after the pivot (after every compensable step when
	// there is no pivot), have no compensation and are retried until they
	// succeed or their budget is spent (then the saga is parked).
	Retriable StepKind = "retriable"
)

// Op says whether a command runs a step's action or its compensation.
type Op string

// Ops.
const (
	OpDo   Op = "do"
	OpUndo Op = "undo"
)

// Status is the result a participant reports for one command.
type Status string

// Outcome statuses.
const (
	// Succeeded: the action committed (op do).
	Succeeded Status = "succeeded"
	// Failed: a business failure; nothing of the action committed (op do).
	Failed Status = "failed"
	// Compensated: the compensation committed, or there was nothing to
	// compensate (op undo).
	Compensated Status = "compensated"
	// Rejected: the command could not be decoded or validated, or names an
	// unknown action; nothing was applied.
	Rejected Status = "rejected"
	// Exhausted: transient errors used up the command's retry budget; nothing
	// of this attempt committed.
	Exhausted Status = "exhausted"
)

// RetryPolicy bounds how often a participant runs a command that fails
// transiently, and how long it waits between tries (exponential backoff with
// jitter, from InitialBackoffMS doubling up to MaxBackoffMS).
type RetryPolicy struct {
	MaxAttempts      int   `json:"max_attempts"`
	InitialBackoffMS int64 `json:"initial_backoff_ms"`
	MaxBackoffMS     int64 `json:"max_backoff_ms"`
}

// DefaultRetry returns the policy of a step that names none: 10 attempts,
// backoff from 100 ms doubling up to 10 s. (A function, so that no program
// can change the protocol's default for the others in its process.)
func DefaultRetry() RetryPolicy {
	return RetryPolicy{MaxAttempts: 10, InitialBackoffMS: 100, MaxBackoffMS: 10_000}
}

// NoTimeout as a step's TimeoutMS says that its attempts never time out
// (the coordinator's default step timeout does not apply).
const NoTimeout = -1

// Backoff is the delay before try n+1 after n failed tries (n >= 1), without
// jitter.
func (r RetryPolicy) Backoff(n int) time.Duration {
	d := time.Duration(r.InitialBackoffMS) * time.Millisecond
	max := time.Duration(r.MaxBackoffMS) * time.Millisecond
	for i := 1; i < n && d < max; i++ {
		d *= 2
	}
	if d > max {
		d = max
	}
	return d
}

// Start is the message that starts a saga and carries its whole plan.
// Published on <prefix>.start.<saga_id> with Nats-Msg-Id StartMsgID(saga_id).
type Start struct {
	V      int             `json:"v"`
	SagaID string          `json:"saga_id"`
	Name   string          `json:"name"`
	Input  json.RawMessage `json:"input,omitempty"`
	// DeadlineMS bounds the whole saga, from its start. When it passes while
	// the saga is running, the saga compensates. 0: no deadline.
	DeadlineMS int64  `json:"deadline_ms,omitempty"`
	Steps      []Step `json:"steps"`
}

// Step is one step of a plan.
type Step struct {
	Name        string `json:"name"`
	Participant string `json:"participant"`
	Action      string `json:"action"`
	// Compensation is the participant's action that undoes Action. Required
	// for compensable steps, forbidden for pivot and retriable ones.
	Compensation string `json:"compensation,omitempty"`
	// Kind defaults to compensable.
	Kind    StepKind        `json:"kind,omitempty"`
	Payload json.RawMessage `json:"payload,omitempty"`
	// After names the steps this one waits for. Absent (or null) in JSON it
	// means the previous step (sequential plans); [] means none. Decoding
	// makes it explicit, so a decoded Start always has a non-nil After.
	After []string `json:"after"`
	// TimeoutMS bounds one attempt of the action, from its dispatch: when it
	// passes without an outcome the step counts as failed-or-unknown and is
	// compensated (retriable steps are sent again). 0 (or absent): the
	// coordinator's default step timeout (one minute unless configured),
	// recorded in the saga's state when it starts; NoTimeout (-1): none.
	TimeoutMS int64 `json:"timeout_ms,omitempty"`
	// Retry is the step's retry policy; nil means DefaultRetry.
	Retry *RetryPolicy `json:"retry,omitempty"`
	// CompensateFailed makes a failed action count as one whose effect is
	// unknown: the step is compensated like one that timed out, instead of
	// being taken as having had no effect. For participants that may commit
	// and then answer failure (DTM's HTTP branches: their barrier makes the
	// compensation a null one when nothing committed). Compensable steps only.
	CompensateFailed bool `json:"compensate_failed,omitempty"`
}

// RetryPolicy returns the step's policy or DefaultRetry.
func (s *Step) RetryPolicy() RetryPolicy {
	if s.Retry == nil {
		return DefaultRetry()
	}
	return *s.Retry
}

// Command asks a participant to run a step's action (op do) or its
// compensation (op undo). Published by the coordinator on
// <prefix>.cmd.<participant>.<saga_id> with Nats-Msg-Id CommandMsgID.
type Command struct {
	V           int             `json:"v"`
	SagaID      string          `json:"saga_id"`
	Participant string          `json:"participant"`
	Step        string          `json:"step"`
	Op          Op              `json:"op"`
	Attempt     int             `json:"attempt"`
	Action      string          `json:"action"`
	Payload     json.RawMessage `json:"payload,omitempty"`
	Retry       RetryPolicy     `json:"retry"`
}

// Outcome is a participant's answer to a command. Published (after the
// step's transaction committed) on <prefix>.evt.<participant>.<saga_id> with
// Nats-Msg-Id OutcomeMsgID.
type Outcome struct {
	V           int    `json:"v"`
	SagaID      string `json:"saga_id"`
	Participant string `json:"participant"`
	// Step, Op and Attempt echo the command. Only a rejected outcome for a
	// command too broken to read may leave them empty.
	Step    string          `json:"step,omitempty"`
	Op      Op              `json:"op,omitempty"`
	Attempt int             `json:"attempt,omitempty"`
	Status  Status          `json:"status"`
	Reason  string          `json:"reason,omitempty"`
	Result  json.RawMessage `json:"result,omitempty"`
}

// Tick is a durable timer firing. A coordinator publishes it on
// <prefix>.tick.<saga_id> when the saga's timer (its state's timer_ms,
// DueMS) falls due; applying it, the coordinator acts on every deadline of
// the saga that has passed by DueMS (step timeouts, retry delays, the saga
// deadline).
type Tick struct {
	V      int    `json:"v"`
	SagaID string `json:"saga_id"`
	// DueMS is the time the timer was set for, in Unix milliseconds.
	DueMS int64 `json:"due_ms"`
}

// ControlAction is an operator action on a saga.
type ControlAction string

// Operator actions.
const (
	// Redrive resumes a parked saga: the step that parked it gets a fresh
	// retry budget and is sent again.
	Redrive ControlAction = "redrive"
	// Skip marks a parked saga's step as done without running it (the
	// operator has fixed things by hand) and resumes the saga.
	Skip ControlAction = "skip"
	// Resolve ends a parked saga with the operator's note: it becomes
	// terminal in the direction it was going (compensated if it was
	// compensating, committed otherwise); the operator vouches for the rest.
	Resolve ControlAction = "resolve"
)

// Control is an operator action, published on <prefix>.ctl.<saga_id>.
type Control struct {
	V      int           `json:"v"`
	SagaID string        `json:"saga_id"`
	Action ControlAction `json:"action"`
	// ID makes the action unique (Nats-Msg-Id ControlMsgID); a retried
	// publish of the same action keeps its ID.
	ID   string `json:"id"`
	Step string `json:"step,omitempty"`
	Note string `json:"note,omitempty"`
	By   string `json:"by,omitempty"`
}
