package orchestrator

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/jetsaga/jetsaga/events"
)

// Plan builds a saga's start message. Steps run in the order they are added
// unless a step names the steps it waits for ([After]); independent steps
// run in parallel. Build validates the plan; errors name the step and field.
//
//	plan := orchestrator.NewPlan("transfer").
//		Step("debit", "bank-a", "TransOut", "TransOutCompensate", req).
//		Step("credit", "bank-b", "TransIn", "TransInCompensate", req, orchestrator.Timeout(10*time.Second))
type Plan struct {
	start events.Start
	trace Trace
	errs  []error
}

// TraceContext sets the W3C trace context (traceparent, tracestate) sent
// with the start message; the coordinator passes it on to every command and
// participants to their outcomes.
func (p *Plan) TraceContext(traceparent, tracestate string) *Plan {
	p.trace = Trace{Parent: traceparent, State: tracestate}
	return p
}

// NewPlan starts a plan for a saga of the given name. Its id is a new UUIDv7
// unless [Plan.ID] sets one.
func NewPlan(name string) *Plan {
	return &Plan{start: events.Start{V: events.Version, Name: name}}
}

// ID sets the saga id (a single subject token). Starting the same id twice
// with the same plan starts one saga.
func (p *Plan) ID(id string) *Plan { p.start.SagaID = id; return p }

// Input attaches a JSON document to the saga, for the record.
func (p *Plan) Input(v any) *Plan {
	raw, err := marshal(v)
	if err != nil {
		p.errs = append(p.errs, fmt.Errorf("input: %w", err))
	}
	p.start.Input = raw
	return p
}

// Deadline bounds the whole saga: when it passes before the pivot (if any)
// has been dispatched, the saga compensates.
func (p *Plan) Deadline(d time.Duration) *Plan { p.start.DeadlineMS = d.Milliseconds(); return p }

// StepOption tunes one step.
type StepOption func(*events.Step)

// After makes the step wait for the named steps instead of the previous one.
// After() with no names makes it start at once, beside the others.
func After(steps ...string) StepOption {
	return func(s *events.Step) { s.After = append([]string{}, steps...) }
}

// Timeout bounds each attempt of the step: without an outcome by then, a
// compensable step is compensated, a retriable one sent again, a pivot parks
// the saga.
// Without it a step gets the coordinator's default (Config.StepTimeout);
// Timeout(NoTimeout) says that the step never times out.
func Timeout(d time.Duration) StepOption {
	return func(s *events.Step) {
		if d == NoTimeout {
			s.TimeoutMS = events.NoTimeout
			return
		}
		s.TimeoutMS = d.Milliseconds()
	}
}

// NoTimeout, given to [Timeout], makes a step's attempts never time out.
const NoTimeout time.Duration = -1

// Retry sets the step's retry policy (participant-side retries of transient
// errors, and re-sends of retriable steps and compensations).
func Retry(maxAttempts int, initial, max time.Duration) StepOption {
	return func(s *events.Step) {
		s.Retry = &events.RetryPolicy{MaxAttempts: maxAttempts, InitialBackoffMS: initial.Milliseconds(), MaxBackoffMS: max.Milliseconds()}
	}
}

// CompensateFailed makes a failed action of the step count as one whose
// effect is unknown, so that it is compensated too (as after a timeout)
// instead of taken as having had no effect. It is for participants that
// may commit and then answer failure, such as DTM-style HTTP services whose
// barrier turns the compensation into a null one when nothing committed.
// Compensable steps only.
func CompensateFailed() StepOption {
	return func(s *events.Step) { s.CompensateFailed = true }
}

// Step adds a compensable step: participant runs action, and compensation if
// the saga has to be undone. payload is marshalled to JSON (json.RawMessage
// and []byte holding JSON are used as they are).
func (p *Plan) Step(name, participant, action, compensation string, payload any, opts ...StepOption) *Plan {
	return p.add(events.Step{Name: name, Participant: participant, Action: action, Compensation: compensation,
		Kind: events.Compensable}, payload, opts)
}

// Pivot adds the pivot step: it has no compensation; once it succeeds the
// saga only goes forward.
func (p *Plan) Pivot(name, participant, action string, payload any, opts ...StepOption) *Plan {
	return p.add(events.Step{Name: name, Participant: participant, Action: action, Kind: events.Pivot}, payload, opts)
}

// Retriable adds a step after the pivot that is retried until it succeeds
// (or its budget is spent: then the saga parks).
func (p *Plan) Retriable(name, participant, action string, payload any, opts ...StepOption) *Plan {
	return p.add(events.Step{Name: name, Participant: participant, Action: action, Kind: events.Retriable}, payload, opts)
}

func (p *Plan) add(s events.Step, payload any, opts []StepOption) *Plan {
	raw, err := marshal(payload)
	if err != nil {
		p.errs = append(p.errs, fmt.Errorf("steps[%d] (%s).payload: %w", len(p.start.Steps), s.Name, err))
	}
	s.Payload = raw
	for _, o := range opts {
		o(&s)
	}
	p.start.Steps = append(p.start.Steps, s)
	return p
}

func marshal(v any) (json.RawMessage, error) {
	switch v := v.(type) {
	case nil:
		return nil, nil
	case json.RawMessage:
		return v, nil
	case []byte:
		return json.RawMessage(v), nil
	}
	return json.Marshal(v)
}

// Build validates the plan and returns its start message. A plan without
// an id ([Plan.ID]) gets a new UUIDv7 at every Build, so starting one plan
// in a loop starts a new saga each time.
func (p *Plan) Build() (events.Start, error) {
	start, _, err := p.build()
	return start, err
}

// build is Build, also reporting whether it chose the id (then no saga can
// have it yet).
func (p *Plan) build() (start events.Start, generated bool, err error) {
	if err := errors.Join(p.errs...); err != nil {
		return events.Start{}, false, err
	}
	start = p.start
	if start.SagaID == "" {
		id, err := uuid.NewV7()
		if err != nil {
			return events.Start{}, false, err
		}
		start.SagaID, generated = id.String(), true
	}
	data, err := start.Encode()
	if err != nil {
		return events.Start{}, false, err
	}
	start, err = events.DecodeStart(data)
	return start, generated, err
}

// ParsePlan decodes a plan written as JSON: a start message whose "v"
// (default: the protocol's version) and "saga_id" (default: a new UUIDv7)
// may be left out. Decoding is the protocol's strict decoding: unknown
// fields are errors, and every error names its field ("steps[1].timeout_ms:
// …") without Go's type names.
func ParsePlan(data []byte) (events.Start, error) {
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(data, &doc); err != nil {
		return events.Start{}, fmt.Errorf("not a JSON object: %s", strings.TrimPrefix(err.Error(), "json: "))
	}
	if _, ok := doc["v"]; !ok {
		doc["v"] = json.RawMessage(strconv.Itoa(events.Version))
	}
	if id, ok := doc["saga_id"]; !ok || string(id) == `""` || string(id) == "null" {
		u, err := uuid.NewV7()
		if err != nil {
			return events.Start{}, err
		}
		doc["saga_id"], _ = json.Marshal(u.String())
	}
	norm, err := json.Marshal(doc)
	if err != nil {
		return events.Start{}, err
	}
	start, err := events.DecodeStart(norm)
	if err != nil {
		var fe *events.FieldError
		if errors.As(err, &fe) {
			if fe.Field == "" {
				return events.Start{}, errors.New(fe.Problem)
			}
			return events.Start{}, fmt.Errorf("%s: %s", fe.Field, fe.Problem)
		}
		return events.Start{}, errors.New(strings.TrimPrefix(err.Error(), "json: "))
	}
	return start, nil
}
