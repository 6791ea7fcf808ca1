package events

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func transferJSON() string {
	return `{"v":1,"saga_id":"s1","name":"transfer","input":{"amount":"30.00"},"steps":[
	 {"name":"debit","participant":"bank-a","action":"TransOut","compensation":"TransOutCompensate","payload":{"user":1, "amount":"30.00"}},
	 {"name":"credit","participant":"bank-b","action":"TransIn","compensation":"TransInCompensate","timeout_ms":5000,
	  "retry":{"max_attempts":3,"initial_backoff_ms":10,"max_backoff_ms":100}}]}`
}

func TestDecodeStartNormalises(t *testing.T) {
	s, err := DecodeStart([]byte(transferJSON()))
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Steps[0].After; got == nil || len(got) != 0 {
		t.Errorf("steps[0].after = %#v, want empty non-nil", got)
	}
	if got := s.Steps[1].After; !reflect.DeepEqual(got, []string{"debit"}) {
		t.Errorf("steps[1].after = %#v, want [debit]", got)
	}
	if s.Steps[0].Kind != Compensable {
		t.Errorf("kind = %q, want compensable", s.Steps[0].Kind)
	}
	if string(s.Steps[0].Payload) != `{"user":1,"amount":"30.00"}` {
		t.Errorf("payload not compacted: %s", s.Steps[0].Payload)
	}
	if s.Steps[1].RetryPolicy().MaxAttempts != 3 || s.Steps[0].RetryPolicy() != DefaultRetry() {
		t.Errorf("retry policies wrong: %+v %+v", s.Steps[1].RetryPolicy(), s.Steps[0].RetryPolicy())
	}
}

func TestStartRoundTrip(t *testing.T) {
	s, err := DecodeStart([]byte(transferJSON()))
	if err != nil {
		t.Fatal(err)
	}
	data, err := s.Encode()
	if err != nil {
		t.Fatal(err)
	}
	s2, err := DecodeStart(data)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(s, s2) {
		t.Fatalf("round trip changed the message:\n%+v\n%+v", s, s2)
	}
}

func TestEncodeFillsSequentialAfter(t *testing.T) {
	s := Start{SagaID: "x", Name: "n", Steps: []Step{
		{Name: "a", Participant: "p", Action: "A", Compensation: "UA"},
		{Name: "b", Participant: "p", Action: "B", Kind: Pivot},
		{Name: "c", Participant: "p", Action: "C", Kind: Retriable},
	}}
	data, err := s.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeStart(data)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.Steps[2].After, []string{"b"}) {
		t.Fatalf("after = %v", got.Steps[2].After)
	}
}

// mutate decodes the transfer plan into a generic map, applies f, and
// re-marshals, so each table case changes one thing.
func mutate(t *testing.T, f func(m map[string]any)) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(transferJSON()), &m); err != nil {
		t.Fatal(err)
	}
	f(m)
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func step(m map[string]any, i int) map[string]any { return m["steps"].([]any)[i].(map[string]any) }

func TestDecodeStartErrors(t *testing.T) {
	tests := []struct {
		name  string
		data  func(t *testing.T) []byte
		field string // expected FieldError.Field; "" for whole-message errors
		want  string // substring of the message
	}{
		{"not json", func(*testing.T) []byte { return []byte("{") }, "", "not a JSON object"},
		{"array", func(*testing.T) []byte { return []byte("[]") }, "", "not a JSON object"},
		{"missing version", func(t *testing.T) []byte { return mutate(t, func(m map[string]any) { delete(m, "v") }) }, "v", "missing"},
		{"unknown version", func(t *testing.T) []byte { return mutate(t, func(m map[string]any) { m["v"] = 2 }) }, "", "unknown protocol version 2"},
		{"unknown field", func(t *testing.T) []byte { return mutate(t, func(m map[string]any) { m["deadline"] = 5 }) }, "", "unknown field"},
		{"trailing data", func(*testing.T) []byte { return []byte(transferJSON() + "{}") }, "", "after top-level value"},
		{"oversized message", func(*testing.T) []byte { return []byte(`{"v":1,"x":"` + strings.Repeat("a", MaxMessageBytes) + `"}`) }, "", "limit"},
		{"missing saga id", func(t *testing.T) []byte { return mutate(t, func(m map[string]any) { delete(m, "saga_id") }) }, "saga_id", "empty"},
		{"saga id with dot", func(t *testing.T) []byte { return mutate(t, func(m map[string]any) { m["saga_id"] = "a.b" }) }, "saga_id", "'.'"},
		{"saga id wildcard", func(t *testing.T) []byte { return mutate(t, func(m map[string]any) { m["saga_id"] = "a*" }) }, "saga_id", "'*'"},
		{"saga id gt", func(t *testing.T) []byte { return mutate(t, func(m map[string]any) { m["saga_id"] = ">" }) }, "saga_id", "'>'"},
		{"saga id space", func(t *testing.T) []byte { return mutate(t, func(m map[string]any) { m["saga_id"] = "a b" }) }, "saga_id", "' '"},
		{"saga id too long", func(t *testing.T) []byte {
			return mutate(t, func(m map[string]any) { m["saga_id"] = strings.Repeat("a", MaxTokenLen+1) })
		}, "saga_id", "limit"},
		{"missing name", func(t *testing.T) []byte { return mutate(t, func(m map[string]any) { delete(m, "name") }) }, "name", "empty"},
		{"input too big", func(t *testing.T) []byte {
			return mutate(t, func(m map[string]any) { m["input"] = strings.Repeat("x", MaxPayloadBytes) })
		}, "input", "limit"},
		{"negative deadline", func(t *testing.T) []byte { return mutate(t, func(m map[string]any) { m["deadline_ms"] = -1 }) }, "deadline_ms", ">= 0"},
		{"no steps", func(t *testing.T) []byte { return mutate(t, func(m map[string]any) { m["steps"] = []any{} }) }, "steps", "at least one"},
		{"too many steps", func(t *testing.T) []byte {
			return mutate(t, func(m map[string]any) {
				var steps []any
				for i := 0; i <= MaxSteps; i++ {
					steps = append(steps, map[string]any{"name": "s" + strings.Repeat("x", i), "participant": "p", "action": "a", "compensation": "c"})
				}
				m["steps"] = steps
			})
		}, "steps", "limit"},
		{"duplicate step name", func(t *testing.T) []byte { return mutate(t, func(m map[string]any) { step(m, 1)["name"] = "debit" }) }, "steps[1].name", "also the name of steps[0]"},
		{"bad participant", func(t *testing.T) []byte {
			return mutate(t, func(m map[string]any) { step(m, 0)["participant"] = "bank.a" })
		}, "steps[0].participant", "'.'"},
		{"missing action", func(t *testing.T) []byte { return mutate(t, func(m map[string]any) { delete(step(m, 1), "action") }) }, "steps[1].action", "empty"},
		{"missing compensation", func(t *testing.T) []byte {
			return mutate(t, func(m map[string]any) { delete(step(m, 0), "compensation") })
		}, "steps[0].compensation", "missing"},
		{"pivot with compensation", func(t *testing.T) []byte { return mutate(t, func(m map[string]any) { step(m, 1)["kind"] = "pivot" }) }, "steps[1].compensation", "no compensation"},
		{"pivot compensating its failure", func(t *testing.T) []byte {
			return mutate(t, func(m map[string]any) {
				step(m, 1)["kind"] = "pivot"
				delete(step(m, 1), "compensation")
				step(m, 1)["compensate_failed"] = true
			})
		}, "steps[1].compensate_failed", "no compensation"},
		{"unknown kind", func(t *testing.T) []byte { return mutate(t, func(m map[string]any) { step(m, 1)["kind"] = "magic" }) }, "steps[1].kind", "unknown kind"},
		{"two pivots", func(t *testing.T) []byte {
			return mutate(t, func(m map[string]any) {
				for i := 0; i < 2; i++ {
					step(m, i)["kind"] = "pivot"
					delete(step(m, i), "compensation")
				}
			})
		}, "steps[1].kind", "at most one pivot"},
		{"compensable after pivot", func(t *testing.T) []byte {
			return mutate(t, func(m map[string]any) { step(m, 0)["kind"] = "pivot"; delete(step(m, 0), "compensation") })
		}, "steps[0].after", "must wait"},
		{"retriable beside compensable", func(t *testing.T) []byte {
			return mutate(t, func(m map[string]any) {
				step(m, 1)["kind"] = "retriable"
				delete(step(m, 1), "compensation")
				step(m, 1)["after"] = []any{}
			})
		}, "steps[1].after", "must wait"},
		{"payload too big", func(t *testing.T) []byte {
			return mutate(t, func(m map[string]any) { step(m, 0)["payload"] = strings.Repeat("x", MaxPayloadBytes) })
		}, "steps[0].payload", "limit"},
		{"negative timeout", func(t *testing.T) []byte { return mutate(t, func(m map[string]any) { step(m, 1)["timeout_ms"] = -5 }) }, "steps[1].timeout_ms", ">= 0"},
		{"zero attempts", func(t *testing.T) []byte {
			return mutate(t, func(m map[string]any) { step(m, 1)["retry"].(map[string]any)["max_attempts"] = 0 })
		}, "steps[1].retry.max_attempts", "1..1000"},
		{"backoff inverted", func(t *testing.T) []byte {
			return mutate(t, func(m map[string]any) { step(m, 1)["retry"].(map[string]any)["max_backoff_ms"] = 1 })
		}, "steps[1].retry.max_backoff_ms", ">= initial"},
		{"unknown dependency", func(t *testing.T) []byte {
			return mutate(t, func(m map[string]any) { step(m, 1)["after"] = []any{"nope"} })
		}, "steps[1].after[0]", "unknown step"},
		{"self dependency", func(t *testing.T) []byte {
			return mutate(t, func(m map[string]any) { step(m, 1)["after"] = []any{"credit"} })
		}, "steps[1].after[0]", "itself"},
		{"duplicate dependency", func(t *testing.T) []byte {
			return mutate(t, func(m map[string]any) { step(m, 1)["after"] = []any{"debit", "debit"} })
		}, "steps[1].after[1]", "twice"},
		{"cycle", func(t *testing.T) []byte {
			return mutate(t, func(m map[string]any) { step(m, 0)["after"] = []any{"credit"} })
		}, "steps[0].after", "dependency cycle: debit -> credit -> debit"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeStart(tc.data(t))
			if err == nil {
				t.Fatal("decoded without error")
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error %v does not match ErrInvalid", err)
			}
			var fe *FieldError
			if tc.field != "" {
				if !errors.As(err, &fe) || fe.Field != tc.field {
					t.Errorf("error %q: want field %q", err, tc.field)
				}
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}

func TestUnknownVersionIsDistinguishable(t *testing.T) {
	_, err := DecodeCommand([]byte(`{"v":7}`))
	if !errors.Is(err, ErrUnknownVersion) || !errors.Is(err, ErrInvalid) {
		t.Fatalf("err = %v", err)
	}
}

func validCommand() Command {
	return Command{V: Version, SagaID: "s1", Participant: "bank-a", Step: "debit", Op: OpDo, Attempt: 1,
		Action: "TransOut", Payload: json.RawMessage(`{"a":1}`), Retry: DefaultRetry()}
}

func TestCommandValidation(t *testing.T) {
	tests := []struct {
		name  string
		f     func(c *Command)
		field string
	}{
		{"missing saga", func(c *Command) { c.SagaID = "" }, "saga_id"},
		{"bad participant", func(c *Command) { c.Participant = "a>" }, "participant"},
		{"missing step", func(c *Command) { c.Step = "" }, "step"},
		{"missing action", func(c *Command) { c.Action = "" }, "action"},
		{"missing op", func(c *Command) { c.Op = "" }, "op"},
		{"unknown op", func(c *Command) { c.Op = "redo" }, "op"},
		{"attempt zero", func(c *Command) { c.Attempt = 0 }, "attempt"},
		{"bad retry", func(c *Command) { c.Retry = RetryPolicy{} }, "retry.max_attempts"},
		{"bad payload", func(c *Command) { c.Payload = json.RawMessage(`{`) }, "payload"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := validCommand()
			tc.f(&c)
			_, err := c.Encode()
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != tc.field {
				t.Fatalf("Encode error = %v, want field %q", err, tc.field)
			}
			// The decoder rejects the same thing.
			c.V = Version
			raw, _ := json.Marshal(c)
			if _, err := DecodeCommand(raw); err == nil && tc.name != "bad payload" {
				t.Fatalf("DecodeCommand accepted %s", raw)
			}
		})
	}
}

func TestCommandRoundTrip(t *testing.T) {
	c := validCommand()
	data, err := c.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeCommand(data)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c, got) {
		t.Fatalf("%+v != %+v", c, got)
	}
}

func TestOutcomeValidation(t *testing.T) {
	base := Outcome{V: Version, SagaID: "s1", Participant: "bank-a", Step: "debit", Op: OpDo, Attempt: 1, Status: Succeeded}
	tests := []struct {
		name  string
		f     func(o *Outcome)
		field string // "" means valid
	}{
		{"succeeded", func(o *Outcome) {}, ""},
		{"failed needs reason", func(o *Outcome) { o.Status = Failed }, "reason"},
		{"failed with reason", func(o *Outcome) { o.Status = Failed; o.Reason = "insufficient balance" }, ""},
		{"compensated answers undo", func(o *Outcome) { o.Status = Compensated }, "status"},
		{"undo succeeded", func(o *Outcome) { o.Op = OpUndo }, "status"},
		{"undo compensated", func(o *Outcome) { o.Op = OpUndo; o.Status = Compensated }, ""},
		{"exhausted needs reason", func(o *Outcome) { o.Status = Exhausted }, "reason"},
		{"unknown status", func(o *Outcome) { o.Status = "done" }, "status"},
		{"missing status", func(o *Outcome) { o.Status = "" }, "status"},
		{"anonymous rejected", func(o *Outcome) {
			*o = Outcome{V: 1, SagaID: "s", Participant: "p", Status: Rejected, Reason: "bad json"}
		}, ""},
		{"anonymous succeeded", func(o *Outcome) { o.Step = ""; o.Op = ""; o.Attempt = 0 }, "step"},
		{"reason too long", func(o *Outcome) { o.Status = Failed; o.Reason = strings.Repeat("r", MaxReasonBytes+1) }, "reason"},
		{"bad result", func(o *Outcome) { o.Result = json.RawMessage("nope") }, "result"},
		{"bad participant", func(o *Outcome) { o.Participant = "" }, "participant"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := base
			tc.f(&o)
			data, err := o.Encode()
			if tc.field == "" {
				if err != nil {
					t.Fatal(err)
				}
				got, err := DecodeOutcome(data)
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(got, o) {
					t.Fatalf("round trip %+v != %+v", got, o)
				}
				return
			}
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != tc.field {
				t.Fatalf("error = %v, want field %q", err, tc.field)
			}
		})
	}
}

func TestTickAndControl(t *testing.T) {
	tk := Tick{SagaID: "s1", DueMS: time.Now().UnixMilli()}
	data, err := tk.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if got, err := DecodeTick(data); err != nil || got.DueMS != tk.DueMS {
		t.Fatalf("tick round trip: %+v %v", got, err)
	}
	if _, err := DecodeTick([]byte(`{"v":1,"saga_id":"s1","due_ms":0}`)); err == nil || !strings.Contains(err.Error(), "due_ms") {
		t.Fatalf("zero due accepted: %v", err)
	}
	for _, tc := range []struct {
		c     Control
		field string
	}{
		{Control{SagaID: "s", ID: "1", Action: Redrive}, ""},
		{Control{SagaID: "s", ID: "1", Action: Skip, Step: "debit"}, ""},
		{Control{SagaID: "s", ID: "1", Action: Skip}, "step"},
		{Control{SagaID: "s", ID: "1", Action: Resolve}, "note"},
		{Control{SagaID: "s", ID: "1", Action: Resolve, Note: "refunded by hand"}, ""},
		{Control{SagaID: "s", ID: "1", Action: "undo"}, "action"},
		{Control{SagaID: "s", Action: Redrive}, "id"},
	} {
		data, err := tc.c.Encode()
		if tc.field == "" {
			if err != nil {
				t.Fatal(err)
			}
			if _, err := DecodeControl(data); err != nil {
				t.Fatal(err)
			}
			continue
		}
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field {
			t.Errorf("%+v: error %v, want field %q", tc.c, err, tc.field)
		}
	}
}

func TestSubjects(t *testing.T) {
	n := Default()
	for _, tc := range []struct {
		subject string
		want    Subject
	}{
		{n.Start("s1"), Subject{Kind: KindStart, SagaID: "s1"}},
		{n.Event("bank-a", "s1"), Subject{Kind: KindEvent, Participant: "bank-a", SagaID: "s1"}},
		{n.Command("bank-b", "s2"), Subject{Kind: KindCommand, Participant: "bank-b", SagaID: "s2"}},
		{n.Tick("s1"), Subject{Kind: KindTick, SagaID: "s1"}},
		{n.Control("s1"), Subject{Kind: KindControl, SagaID: "s1"}},
		{n.Schedule("s1"), Subject{Kind: KindSchedule, SagaID: "s1"}},
	} {
		got, err := n.Parse(tc.subject)
		if err != nil || got != tc.want {
			t.Errorf("Parse(%q) = %+v, %v; want %+v", tc.subject, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "saga", "saga.start", "other.start.s1", "saga.boom.s1", "saga.start.a.b",
		"saga.evt.s1", "saga.evt.p*.s1", "saga.start.*"} {
		if _, err := n.Parse(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("Parse(%q) err = %v", bad, err)
		}
	}
	if n.CommandFilter("bank-a") != "saga.cmd.bank-a.*" {
		t.Error(n.CommandFilter("bank-a"))
	}
}

func TestNamespaceNames(t *testing.T) {
	if Default().SagasStream() != "SAGAS" || Default().CommandsStream() != "SAGA_CMDS" || Default().StateBucket() != "saga_state" {
		t.Fatal(Default().SagasStream(), Default().CommandsStream(), Default().StateBucket())
	}
	acme, err := NewNamespace("acme")
	if err != nil {
		t.Fatal(err)
	}
	if acme.SagasStream() != "SAGAS_ACME" || acme.Start("x") != "acme.start.x" {
		t.Fatal(acme.SagasStream(), acme.Start("x"))
	}
	if _, err := NewNamespace("a.b"); err == nil {
		t.Fatal("prefix with a dot accepted")
	}
	if _, err := NewNamespace("ACME"); err == nil {
		t.Fatal("upper-case prefix accepted: it would share streams with acme")
	}
	cfg := acme.SagasStreamConfig(StreamOptions{Replicas: 3})
	if cfg.Replicas != 3 || cfg.MaxAge != DefaultMaxAge || !cfg.AllowMsgSchedules || cfg.Duplicates != DefaultDuplicates {
		t.Fatalf("%+v", cfg)
	}
	if c := acme.CommandsStreamConfig(StreamOptions{}); c.Replicas != 1 || c.Subjects[0] != "acme.cmd.*.*" {
		t.Fatalf("%+v", c)
	}
	if kv := acme.StateBucketConfig(StreamOptions{}); kv.Bucket != "acme_state" {
		t.Fatalf("%+v", kv)
	}
}

func TestMsgIDs(t *testing.T) {
	if got := CommandMsgID("s1", "debit", OpUndo, 2); got != "s1/debit/undo/2" {
		t.Error(got)
	}
	o := Outcome{SagaID: "s1", Participant: "p", Step: "debit", Op: OpDo, Attempt: 1, Status: Failed}
	if got := OutcomeMsgID(&o, 9); got != "s1/debit/do/1/failed" {
		t.Error(got)
	}
	anon := Outcome{SagaID: "s1", Participant: "p", Status: Rejected}
	if got := OutcomeMsgID(&anon, 9); got != "s1/p/rejected/9" {
		t.Error(got)
	}
}

func TestBackoff(t *testing.T) {
	r := RetryPolicy{MaxAttempts: 5, InitialBackoffMS: 100, MaxBackoffMS: 350}
	want := []time.Duration{100, 200, 350, 350}
	for i, w := range want {
		if got := r.Backoff(i + 1); got != w*time.Millisecond {
			t.Errorf("Backoff(%d) = %v, want %v", i+1, got, w*time.Millisecond)
		}
	}
}

// TestStartValidateDoesNotModify: Validate checks without normalising
// (DecodeStart and Encode normalise first).
func TestStartValidateDoesNotModify(t *testing.T) {
	s := Start{V: Version, SagaID: "s", Name: "n", Input: json.RawMessage(`{ "a" : 1 }`),
		Steps: []Step{{Name: "a", Participant: "p", Action: "A", Compensation: "U", After: []string{}, Payload: json.RawMessage(`[ 1, 2 ]`)}}}
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	if string(s.Input) != `{ "a" : 1 }` || string(s.Steps[0].Payload) != `[ 1, 2 ]` || s.Steps[0].Kind != "" {
		t.Fatalf("Validate changed the start: %+v", s)
	}
	data, err := s.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), `"input":{"a":1}`) || !strings.Contains(string(data), `"kind":"compensable"`) {
		t.Fatalf("Encode did not normalise: %s", data)
	}
}
