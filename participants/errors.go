package participants

import (
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/jetsaga/jetsaga/events"
)

// ErrInvalidConfig matches every error returned by [New] for a bad
// configuration field.
var ErrInvalidConfig = errors.New("participants: invalid configuration")

// ErrInvalidRegistration matches every error returned by [RegisterSafely]
// (and the value [Register] panics with): a bad action name, a nil Do
// handler, a name registered twice, or a registration after Run started.
var ErrInvalidRegistration = errors.New("participants: invalid registration")

// ErrRunning is returned by [Participant.Run] when the participant is
// already running or has run: a Participant runs once.
var ErrRunning = errors.New("participants: Run called twice")

// ErrNoHandlers is returned by [Participant.Run] when no action was
// registered.
var ErrNoHandlers = errors.New("participants: no action registered")

// ErrTxOwned is returned by Commit and Rollback of the transaction a handler
// receives: the runtime owns that transaction. A handler reports a business
// failure with [Fail] and anything else with a plain error; nested
// transactions (tx.Begin) are fine.
var ErrTxOwned = errors.New("participants: the step's transaction belongs to the runtime; return an error instead of ending it")

// ErrBusiness matches every error made by [Fail] and [Failf].
var ErrBusiness = errors.New("participants: business failure")

// FailError is a business failure: the step's action cannot be done (for
// example an insufficient balance). Returned from a Do handler, it rolls
// back everything the handler did, records the failure in the barrier and
// reports outcome "failed" with Reason; the saga then compensates the steps
// that succeeded. It is never retried. Make one with [Fail] or [Failf].
type FailError struct {
	// Reason says why, for people: it becomes the outcome's reason.
	Reason string
}

// Error implements error.
func (e *FailError) Error() string { return "participants: business failure: " + e.Reason }

// Is makes errors.Is(err, ErrBusiness) true.
func (e *FailError) Is(target error) bool { return target == ErrBusiness }

// Fail returns a business failure with reason. An empty reason becomes
// "failed". Reasons longer than events.MaxReasonBytes are truncated.
func Fail(reason string) error {
	return &FailError{Reason: clampReason(reason, "failed")}
}

// Failf is Fail with a formatted reason.
func Failf(format string, args ...any) error {
	return Fail(fmt.Sprintf(format, args...))
}

// configError names a bad configuration field.
type configError struct{ field, problem string }

func (e *configError) Error() string {
	return fmt.Sprintf("participants: config %s: %s", e.field, e.problem)
}

func (e *configError) Is(target error) bool { return target == ErrInvalidConfig }

func errConfig(field, format string, args ...any) error {
	return &configError{field: field, problem: fmt.Sprintf(format, args...)}
}

// registrationError names what is wrong with a registration.
type registrationError struct{ action, problem string }

func (e *registrationError) Error() string {
	return fmt.Sprintf("participants: register action %q: %s", e.action, e.problem)
}

func (e *registrationError) Is(target error) bool { return target == ErrInvalidRegistration }

// clampReason makes s a valid outcome reason: not empty (def instead) and at
// most events.MaxReasonBytes of valid UTF-8.
func clampReason(s, def string) string {
	if s == "" {
		return def
	}
	if len(s) > events.MaxReasonBytes {
		const ellipsis = "…"
		cut := events.MaxReasonBytes - len(ellipsis)
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + ellipsis
	}
	if !utf8.ValidString(s) {
		s = string([]rune(s)) // replaces invalid bytes with U+FFFD
		if len(s) > events.MaxReasonBytes {
			return clampReason(s, def)
		}
	}
	return s
}
