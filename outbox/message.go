package outbox

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Limits on a [Message] that are not configurable.
const (
	// MaxIDLength is the longest accepted [Message.ID], in bytes.
	MaxIDLength = 256
	// MaxSubjectLength is the longest accepted [Message.Subject], in bytes.
	MaxSubjectLength = 1024
	// DefaultMaxPayload is the default limit on len([Message.Data]): 1 MiB,
	// the NATS server's default max_payload.
	DefaultMaxPayload = 1 << 20
)

// Message is one message to publish to JetStream once the transaction that
// wrote it commits.
type Message struct {
	// ID identifies the message; the relay publishes it as the Nats-Msg-Id
	// header, so JetStream drops a re-publish within the stream's duplicate
	// window. Required, at most [MaxIDLength] bytes, no control characters,
	// and unique among the rows pending in the table. Build it from what
	// the message means (e.g. "<saga>/<step>/<op>/<attempt>") so that a
	// retried business transaction produces the same ID.
	ID string
	// Subject is the NATS subject, bound to a stream. Required, no
	// wildcards ('*', '>'), no whitespace, no empty tokens.
	Subject string
	// Header holds optional NATS headers. A Nats-Msg-Id header, if present,
	// must equal ID.
	Header nats.Header
	// Data is the payload, at most Config.MaxPayload bytes.
	Data []byte
}

// validate checks m, the i-th message of a Write call.
func (m *Message) validate(i, maxPayload int) error {
	bad := func(field, format string, args ...any) error {
		return &ValidationError{Index: i, Field: field, Problem: fmt.Sprintf(format, args...)}
	}
	switch {
	case m.ID == "":
		return bad("ID", "is empty")
	case len(m.ID) > MaxIDLength:
		return bad("ID", "is %d bytes long, the limit is %d", len(m.ID), MaxIDLength)
	case !utf8.ValidString(m.ID):
		return bad("ID", "is not valid UTF-8")
	case strings.IndexFunc(m.ID, isControl) >= 0:
		return bad("ID", "contains a control character")
	}
	if err := validSubject(m.Subject); err != "" {
		return bad("Subject", "%s", err)
	}
	for k, vs := range m.Header {
		if k == "" {
			return bad("Header", "has an empty key")
		}
		if strings.IndexFunc(k, func(r rune) bool { return r <= ' ' || r == ':' || r >= 0x7f }) >= 0 {
			return bad("Header", "key %q contains a space, a colon or a non-printable character", k)
		}
		for _, v := range vs {
			if strings.ContainsAny(v, "\r\n") {
				return bad("Header", "value of %q contains a line break", k)
			}
		}
		if k == jetstream.MsgIDHeader && (len(vs) != 1 || vs[0] != m.ID) {
			return bad("Header", "%s is set from ID and must not differ from it", jetstream.MsgIDHeader)
		}
	}
	if len(m.Data) > maxPayload {
		return bad("Data", "is %d bytes long, the limit is %d", len(m.Data), maxPayload)
	}
	return nil
}

func isControl(r rune) bool { return r < ' ' || r == 0x7f }

// validSubject returns what is wrong with subj, or "".
func validSubject(subj string) string {
	switch {
	case subj == "":
		return "is empty"
	case len(subj) > MaxSubjectLength:
		return fmt.Sprintf("is %d bytes long, the limit is %d", len(subj), MaxSubjectLength)
	case strings.ContainsAny(subj, "*>"):
		return fmt.Sprintf("%q contains a wildcard ('*' or '>')", subj)
	case strings.IndexFunc(subj, func(r rune) bool { return r <= ' ' || r == 0x7f }) >= 0:
		return fmt.Sprintf("%q contains whitespace or a control character", subj)
	case !utf8.ValidString(subj):
		return "is not valid UTF-8"
	}
	if strings.HasPrefix(subj, ".") || strings.HasSuffix(subj, ".") || strings.Contains(subj, "..") {
		return fmt.Sprintf("%q has an empty token", subj)
	}
	return ""
}
