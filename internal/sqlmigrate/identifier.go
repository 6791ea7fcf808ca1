package sqlmigrate

import (
	"errors"
	"fmt"
)

// ValidIdentifier checks that s is a plain lower-case SQL identifier of at
// most limit bytes: lower-case ASCII letters, digits and '_', not starting
// with a digit. Such names need no case folding and are quoted with
// pgx.Identifier where they are used. The error says what is wrong with s;
// callers wrap it in an error that names their field.
func ValidIdentifier(s string, limit int) error {
	if s == "" {
		return errors.New("is empty")
	}
	if len(s) > limit {
		return fmt.Errorf("%q is %d bytes long, the limit is %d", s, len(s), limit)
	}
	for i, r := range s {
		ok := r == '_' || (r >= 'a' && r <= 'z') || (i > 0 && r >= '0' && r <= '9')
		if !ok {
			return fmt.Errorf("%q is not a plain identifier: use lower-case letters, digits and '_', starting with a letter or '_'", s)
		}
	}
	return nil
}
