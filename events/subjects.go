package events

import (
	"fmt"
	"strings"
)

// DefaultPrefix is the first token of every jetsaga subject unless a
// deployment chooses another one.
const DefaultPrefix = "saga"

// Limits on identifiers. Saga ids, participant, step and action names are
// single subject tokens of at most MaxTokenLen bytes drawn from
// [A-Za-z0-9_-]; a prefix is at most MaxPrefixLen bytes of the same set.
const (
	MaxTokenLen  = 128
	MaxPrefixLen = 32
)

// validPrefix: lower-case letters, digits, '-' and '_', since stream names
// are derived from the upper-cased prefix and two prefixes must never map to
// the same streams.
func validPrefix(s string) error {
	if err := validToken(s, MaxPrefixLen); err != nil {
		return err
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' {
			return fmt.Errorf("has upper-case %q at byte %d; a prefix is lower-case", c, i)
		}
	}
	return nil
}

// ValidToken reports why s cannot be used as an id or name, or nil when it
// can. Allowed: 1..MaxTokenLen bytes of letters, digits, '-' and '_'. This
// rules out '.', '*', '>', spaces and '/' (used inside message ids).
func ValidToken(s string) error { return validToken(s, MaxTokenLen) }

func validToken(s string, max int) error {
	if s == "" {
		return fmt.Errorf("must not be empty")
	}
	if len(s) > max {
		return fmt.Errorf("is %d bytes long, the limit is %d", len(s), max)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_':
		default:
			return fmt.Errorf("has %q at byte %d; only letters, digits, '-' and '_' are allowed", c, i)
		}
	}
	return nil
}

func checkToken(field, s string) error {
	if err := ValidToken(s); err != nil {
		return fieldErr(field, "%q %v", s, err)
	}
	return nil
}

// Kind is the kind of a jetsaga subject, its second token.
type Kind string

// Subject kinds.
const (
	KindStart    Kind = "start" // <prefix>.start.<saga>: a client starts a saga
	KindEvent    Kind = "evt"   // <prefix>.evt.<participant>.<saga>: a participant's outcome
	KindTick     Kind = "tick"  // <prefix>.tick.<saga>: a durable timer fired
	KindControl  Kind = "ctl"   // <prefix>.ctl.<saga>: an operator action
	KindSchedule Kind = "sched" // <prefix>.sched.<saga>: an earlier version's pending timer (not an input)
	KindCommand  Kind = "cmd"   // <prefix>.cmd.<participant>.<saga>: a step command
)

// Namespace builds and parses the subjects, stream and bucket names of one
// jetsaga deployment. Deployments with different prefixes can share one NATS
// account. The zero value is not valid; use NewNamespace or Default.
type Namespace struct {
	prefix string
}

// Default returns the namespace with DefaultPrefix.
func Default() Namespace { return Namespace{prefix: DefaultPrefix} }

// NewNamespace returns the namespace for prefix ("" means DefaultPrefix).
func NewNamespace(prefix string) (Namespace, error) {
	if prefix == "" {
		return Default(), nil
	}
	if err := validPrefix(prefix); err != nil {
		return Namespace{}, fieldErr("prefix", "%q %v", prefix, err)
	}
	return Namespace{prefix: prefix}, nil
}

// OrDefault returns n, or Default for the zero Namespace: the one place
// where "no namespace" means the default one.
func (n Namespace) OrDefault() Namespace {
	if n == (Namespace{}) {
		return Default()
	}
	return n
}

// Prefix returns the first token of the namespace's subjects.
func (n Namespace) Prefix() string { return n.prefix }

// Start is the subject of a saga's start message.
func (n Namespace) Start(sagaID string) string { return n.prefix + ".start." + sagaID }

// Event is the subject of an outcome event from participant about a saga.
func (n Namespace) Event(participant, sagaID string) string {
	return n.prefix + ".evt." + participant + "." + sagaID
}

// Tick is the subject on which a saga's durable timer fires.
func (n Namespace) Tick(sagaID string) string { return n.prefix + ".tick." + sagaID }

// Schedule is the subject on which coordinators before this version kept a
// saga's pending timer as a JetStream message schedule; this version
// publishes none there (its timers are the states' timer_ms, see
// PROTOCOL.md §8.1), but a schedule left there still fires.
func (n Namespace) Schedule(sagaID string) string { return n.prefix + ".sched." + sagaID }

// Control is the subject of operator actions on a saga.
func (n Namespace) Control(sagaID string) string { return n.prefix + ".ctl." + sagaID }

// Command is the subject of a step command for participant.
func (n Namespace) Command(participant, sagaID string) string {
	return n.prefix + ".cmd." + participant + "." + sagaID
}

// CommandFilter is the filter subject of participant's durable consumer.
func (n Namespace) CommandFilter(participant string) string {
	return n.prefix + ".cmd." + participant + ".*"
}

// CoordinatorFilters are the filter subjects of the coordinator's consumer on
// the sagas stream: every input of the state machine, not the schedules.
func (n Namespace) CoordinatorFilters() []string {
	return []string{n.prefix + ".start.*", n.prefix + ".evt.*.*", n.prefix + ".tick.*", n.prefix + ".ctl.*"}
}

// SagaSubjects are the filter subjects that select every message of one saga
// in the sagas stream (schedules excluded).
func (n Namespace) SagaSubjects(sagaID string) []string {
	return []string{n.Start(sagaID), n.prefix + ".evt.*." + sagaID, n.Tick(sagaID), n.Control(sagaID)}
}

// Subject is a parsed jetsaga subject.
type Subject struct {
	Kind        Kind
	Participant string // set for KindEvent and KindCommand
	SagaID      string
}

// Parse splits a subject of this namespace into its parts, validating every
// token.
func (n Namespace) Parse(subject string) (Subject, error) {
	parts := strings.Split(subject, ".")
	if len(parts) < 3 || parts[0] != n.prefix {
		return Subject{}, fieldErr("subject", "%q is not a %s.<kind>.… subject", subject, n.prefix)
	}
	s := Subject{Kind: Kind(parts[1])}
	want := 3
	switch s.Kind {
	case KindStart, KindTick, KindControl, KindSchedule:
	case KindEvent, KindCommand:
		want = 4
	default:
		return Subject{}, fieldErr("subject", "%q has unknown kind %q", subject, parts[1])
	}
	if len(parts) != want {
		return Subject{}, fieldErr("subject", "%q has %d tokens, a %s subject has %d", subject, len(parts), s.Kind, want)
	}
	if want == 4 {
		s.Participant = parts[2]
		if err := checkToken("subject.participant", s.Participant); err != nil {
			return Subject{}, err
		}
	}
	s.SagaID = parts[want-1]
	if err := checkToken("subject.saga_id", s.SagaID); err != nil {
		return Subject{}, err
	}
	return s, nil
}
