package outbox

import (
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func TestValidate(t *testing.T) {
	t.Parallel()
	ok := Message{ID: "a/1", Subject: "test.a", Data: []byte("x")}
	cases := []struct {
		name    string
		edit    func(m *Message)
		field   string
		problem string // part of the problem text
	}{
		{"empty id", func(m *Message) { m.ID = "" }, "ID", "empty"},
		{"long id", func(m *Message) { m.ID = strings.Repeat("i", MaxIDLength+1) }, "ID", "limit"},
		{"id with newline", func(m *Message) { m.ID = "a\nb" }, "ID", "control"},
		{"id not utf8", func(m *Message) { m.ID = "a\xffb" }, "ID", "UTF-8"},
		{"empty subject", func(m *Message) { m.Subject = "" }, "Subject", "empty"},
		{"star", func(m *Message) { m.Subject = "test.*" }, "Subject", "wildcard"},
		{"gt", func(m *Message) { m.Subject = "test.>" }, "Subject", "wildcard"},
		{"star inside token", func(m *Message) { m.Subject = "test.a*b" }, "Subject", "wildcard"},
		{"space", func(m *Message) { m.Subject = "test. a" }, "Subject", "whitespace"},
		{"tab", func(m *Message) { m.Subject = "test.\ta" }, "Subject", "whitespace"},
		{"empty token", func(m *Message) { m.Subject = "test..a" }, "Subject", "empty token"},
		{"leading dot", func(m *Message) { m.Subject = ".test" }, "Subject", "empty token"},
		{"trailing dot", func(m *Message) { m.Subject = "test." }, "Subject", "empty token"},
		{"long subject", func(m *Message) { m.Subject = "t." + strings.Repeat("s", MaxSubjectLength) }, "Subject", "limit"},
		{"header key colon", func(m *Message) { m.Header = nats.Header{"a:b": {"v"}} }, "Header", "colon"},
		{"header key empty", func(m *Message) { m.Header = nats.Header{"": {"v"}} }, "Header", "empty key"},
		{"header value newline", func(m *Message) { m.Header = nats.Header{"K": {"v\r\n"}} }, "Header", "line break"},
		{"msg id header differs", func(m *Message) { m.Header = nats.Header{jetstream.MsgIDHeader: {"other"}} }, "Header", "ID"},
		{"payload too big", func(m *Message) { m.Data = make([]byte, DefaultMaxPayload+1) }, "Data", "limit"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := ok
			c.edit(&m)
			err := m.validate(7, DefaultMaxPayload)
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("validate: got %v, want a *ValidationError", err)
			}
			if !errors.Is(err, ErrInvalidMessage) {
				t.Errorf("%v does not match ErrInvalidMessage", err)
			}
			if ve.Index != 7 || ve.Field != c.field || !strings.Contains(ve.Problem, c.problem) {
				t.Errorf("got index %d field %q problem %q, want 7, %q, ...%q...", ve.Index, ve.Field, ve.Problem, c.field, c.problem)
			}
			if !strings.Contains(err.Error(), "message 7") || !strings.Contains(err.Error(), c.field) {
				t.Errorf("error text %q does not name the message index and field", err)
			}
		})
	}
	good := []Message{
		ok,
		{ID: "x", Subject: "a"},
		{ID: "x", Subject: "a.b-c_d.E9", Header: nats.Header{"K": {"v 1", "v2"}, jetstream.MsgIDHeader: {"x"}}},
		{ID: strings.Repeat("i", MaxIDLength), Subject: "a", Data: make([]byte, DefaultMaxPayload)},
	}
	for i, m := range good {
		if err := m.validate(i, DefaultMaxPayload); err != nil {
			t.Errorf("valid message %d: %v", i, err)
		}
	}
}

func TestWriteBadInputWritesNothing(t *testing.T) {
	t.Parallel()
	b := setup(t)
	o, err := New(Config{MaxPayload: 10})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		ms    []Message
		index int
		field string
	}{
		{"empty subject", []Message{{ID: "a", Subject: "test.a"}, {ID: "b", Subject: ""}}, 1, "Subject"},
		{"wildcard", []Message{{ID: "a", Subject: "test.*"}, {ID: "b", Subject: "test.b"}}, 0, "Subject"},
		{"oversized payload", []Message{{ID: "a", Subject: "test.a"}, {ID: "b", Subject: "test.b"}, {ID: "c", Subject: "test.c", Data: make([]byte, 11)}}, 2, "Data"},
		{"empty id", []Message{{ID: "", Subject: "test.a"}}, 0, "ID"},
		{"id repeated in one call", []Message{{ID: "a", Subject: "test.a"}, {ID: "b", Subject: "test.b"}, {ID: "a", Subject: "test.c"}}, 2, "ID"},
	}
	for _, c := range cases {
		var werr error
		err := pgx.BeginFunc(t.Context(), b.pool, func(tx pgx.Tx) error {
			werr = o.Write(t.Context(), tx, c.ms...)
			return nil // commit whatever was written: nothing must be
		})
		if err != nil {
			t.Fatalf("%s: transaction: %v", c.name, err)
		}
		var ve *ValidationError
		if !errors.As(werr, &ve) || ve.Index != c.index || ve.Field != c.field {
			t.Errorf("%s: got %v, want a validation error for message %d field %s", c.name, werr, c.index, c.field)
		}
		if n := pending(t, b.pool, o); n != 0 {
			t.Errorf("%s: %d rows written, want none", c.name, n)
		}
	}
}

func TestWriteDuplicateID(t *testing.T) {
	t.Parallel()
	b := setup(t)
	write(t, b.pool, b.ob, Message{ID: "dup", Subject: "test.a"})
	err := pgx.BeginFunc(t.Context(), b.pool, func(tx pgx.Tx) error {
		return Write(t.Context(), tx, Message{ID: "other", Subject: "test.a"}, Message{ID: "dup", Subject: "test.b"})
	})
	if !errors.Is(err, ErrDuplicateID) || !strings.Contains(err.Error(), "dup") {
		t.Fatalf("got %v, want ErrDuplicateID naming the id", err)
	}
	if n := pending(t, b.pool, b.ob); n != 1 {
		t.Fatalf("%d rows pending, want 1 (the rolled-back transaction wrote nothing)", n)
	}
}

func TestWriteStoresMessages(t *testing.T) {
	t.Parallel()
	b := setup(t)
	hdr := nats.Header{"Trace": {"t1", "t2"}, jetstream.MsgIDHeader: {"h-1"}}
	ms := []Message{
		{ID: "h-1", Subject: "test.h", Header: hdr, Data: []byte("one")},
		{ID: "h-2", Subject: "test.h"}, // nil data, no header
	}
	write(t, b.pool, b.ob, ms...)
	rows, err := b.pool.Query(t.Context(), `SELECT msg_id, subject, headers, payload FROM jetsaga_outbox ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	type stored struct {
		ID, Subject string
		Headers     map[string][]string
		Payload     []byte
	}
	got, err := pgx.CollectRows(rows, pgx.RowToStructByPos[stored])
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].ID != "h-1" || got[1].ID != "h-2" {
		t.Fatalf("stored %+v, want h-1 then h-2", got)
	}
	if strings.Join(got[0].Headers["Trace"], ",") != "t1,t2" || got[0].Headers[jetstream.MsgIDHeader][0] != "h-1" || string(got[0].Payload) != "one" {
		t.Errorf("first row stored as %+v", got[0])
	}
	if got[1].Headers != nil || got[1].Payload == nil || len(got[1].Payload) != 0 {
		t.Errorf("second row stored as %+v, want NULL headers and an empty payload", got[1])
	}
	// Write of nothing is a no-op.
	if err := pgx.BeginFunc(t.Context(), b.pool, func(tx pgx.Tx) error { return Write(t.Context(), tx) }); err != nil {
		t.Errorf("Write(): %v", err)
	}
}

// FuzzValidSubject checks that every subject validSubject accepts is a
// literal NATS subject: bounded, no wildcards, no whitespace, no empty
// tokens.
func FuzzValidSubject(f *testing.F) {
	for _, s := range []string{"a", "a.b", "test.>", "a..b", ".a", "a.", "a b", "a.*.c", "ä.ö", "a\x00b", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if validSubject(s) != "" {
			return
		}
		if s == "" || len(s) > MaxSubjectLength || strings.ContainsAny(s, "*> \t\r\n\x00") {
			t.Fatalf("accepted %q", s)
		}
		for _, tok := range strings.Split(s, ".") {
			if tok == "" {
				t.Fatalf("accepted %q with an empty token", s)
			}
		}
	})
}

// observedTx is a transaction wrapper that records the outboxes Write
// tells it about.
type observedTx struct {
	pgx.Tx
	written []*Outbox
}

func (t *observedTx) OutboxWritten(o *Outbox) { t.written = append(t.written, o) }

// TestWriteTellsTheTxObserver: a successful Write tells a transaction that
// implements TxObserver which outbox it wrote to; a failed one does not.
func TestWriteTellsTheTxObserver(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var tx *observedTx
	err := pgx.BeginFunc(t.Context(), b.pool, func(inner pgx.Tx) error {
		tx = &observedTx{Tx: inner}
		if err := b.ob.Write(t.Context(), tx, Message{ID: "", Subject: "test.a"}); err == nil {
			t.Error("an invalid message was accepted")
		}
		if len(tx.written) != 0 {
			t.Errorf("a Write that wrote nothing was observed: %v", tx.written)
		}
		return b.ob.Write(t.Context(), tx, Message{ID: "o-1", Subject: "test.a"}, Message{ID: "o-2", Subject: "test.a"})
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(tx.written) != 1 || tx.written[0] != b.ob {
		t.Fatalf("observed %v, want the Outbox written to, once", tx.written)
	}
}
