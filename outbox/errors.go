package outbox

import (
	"errors"
	"fmt"
)

// ErrInvalidMessage matches every [*ValidationError] returned by Write.
var ErrInvalidMessage = errors.New("outbox: invalid message")

// ErrInvalidConfig matches every error returned by [New] and [NewRelay] for
// a bad configuration field.
var ErrInvalidConfig = errors.New("outbox: invalid configuration")

// ErrDuplicateID is returned (wrapped) by Write when a message's ID is
// already pending in the table, in this or another transaction. The
// caller's transaction is aborted by PostgreSQL and must be rolled back.
var ErrDuplicateID = errors.New("outbox: duplicate message id")

// ErrRelayRunning is returned by [Relay.Run] when the relay is already
// running.
var ErrRelayRunning = errors.New("outbox: relay is already running")

// ErrSchemaTooNew is returned (wrapped) by [Migrate] when the database holds
// a migration version this package does not know, i.e. a newer release of
// the package migrated it.
var ErrSchemaTooNew = errors.New("outbox: database schema is newer than this package")

// ValidationError reports one invalid field of one message passed to
// Write. It matches [ErrInvalidMessage] with errors.Is.
type ValidationError struct {
	// Index is the position of the message in the Write call.
	Index int
	// Field is the name of the offending [Message] field ("ID", "Subject",
	// "Header" or "Data").
	Field string
	// Problem says what is wrong, in a few words.
	Problem string
}

// Error implements error.
func (e *ValidationError) Error() string {
	return fmt.Sprintf("outbox: message %d: %s: %s", e.Index, e.Field, e.Problem)
}

// Is reports whether target is [ErrInvalidMessage].
func (e *ValidationError) Is(target error) bool { return target == ErrInvalidMessage }

// configError names a bad configuration field.
type configError struct {
	field   string
	problem string
}

func (e *configError) Error() string {
	return fmt.Sprintf("outbox: config %s: %s", e.field, e.problem)
}

func (e *configError) Is(target error) bool { return target == ErrInvalidConfig }

func errConfig(field, format string, args ...any) error {
	return &configError{field: field, problem: fmt.Sprintf(format, args...)}
}
