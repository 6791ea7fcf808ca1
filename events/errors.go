package events

import (
	"errors"
	"fmt"
)

// ErrInvalid is matched (with errors.Is) by every validation error of this
// package: a message that is malformed, breaks a limit or does not fit the
// protocol. Such a message must never be retried; it is rejected.
var ErrInvalid = errors.New("invalid message")

// FieldError reports a problem with one field of a message. Field is a JSON
// path such as "steps[1].after[0]".
type FieldError struct {
	Field   string
	Problem string
}

func (e *FieldError) Error() string {
	if e.Field == "" {
		return "invalid message: " + e.Problem
	}
	return fmt.Sprintf("invalid message: %s: %s", e.Field, e.Problem)
}

// Is makes errors.Is(err, ErrInvalid) true for every FieldError.
func (e *FieldError) Is(target error) bool { return target == ErrInvalid }

func fieldErr(field, format string, args ...any) error {
	return &FieldError{Field: field, Problem: fmt.Sprintf(format, args...)}
}

// ErrUnknownVersion is matched by the error returned for a message whose
// protocol version this build does not speak.
var ErrUnknownVersion = errors.New("unknown protocol version")

type versionError struct{ got int }

func (e *versionError) Error() string {
	return fmt.Sprintf("invalid message: v: unknown protocol version %d (this build speaks %d)", e.got, Version)
}

func (e *versionError) Is(target error) bool {
	return target == ErrUnknownVersion || target == ErrInvalid
}
