package events

import (
	"reflect"
	"testing"
)

// Each fuzz target checks that decoding arbitrary bytes never panics and that
// whatever decodes re-encodes to the same meaning.

func FuzzDecodeStart(f *testing.F) {
	f.Add([]byte(transferJSON()))
	f.Add([]byte(`{"v":1,"saga_id":"a","name":"n","steps":[{"name":"x","participant":"p","action":"A","kind":"pivot","after":[]}]}`))
	f.Add([]byte(`{"v":1,"saga_id":"a","name":"n","steps":[{"name":"x","participant":"p","action":"A","compensation":"B","after":["x"]}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := DecodeStart(data)
		if err != nil {
			return
		}
		out, err := s.Encode()
		if err != nil {
			t.Fatalf("decoded message does not encode: %v", err)
		}
		s2, err := DecodeStart(out)
		if err != nil {
			t.Fatalf("re-encoded message does not decode: %v\n%s", err, out)
		}
		if !reflect.DeepEqual(s, s2) {
			t.Fatalf("meaning changed:\n%+v\n%+v", s, s2)
		}
	})
}

func fuzzRoundTrip[T any](f *testing.F, seeds []string, decode func([]byte) (T, error), encode func(T) ([]byte, error)) {
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := decode(data)
		if err != nil {
			return
		}
		out, err := encode(v)
		if err != nil {
			t.Fatalf("decoded message does not encode: %v", err)
		}
		v2, err := decode(out)
		if err != nil {
			t.Fatalf("re-encoded message does not decode: %v\n%s", err, out)
		}
		if !reflect.DeepEqual(v, v2) {
			t.Fatalf("meaning changed:\n%+v\n%+v", v, v2)
		}
	})
}

func FuzzDecodeCommand(f *testing.F) {
	fuzzRoundTrip(f, []string{
		`{"v":1,"saga_id":"s","participant":"p","step":"x","op":"do","attempt":1,"action":"A","payload":{"a":[1,2]},"retry":{"max_attempts":3,"initial_backoff_ms":1,"max_backoff_ms":2}}`,
	}, DecodeCommand, Command.Encode)
}

func FuzzDecodeOutcome(f *testing.F) {
	fuzzRoundTrip(f, []string{
		`{"v":1,"saga_id":"s","participant":"p","step":"x","op":"do","attempt":1,"status":"succeeded","result":{"ok":true}}`,
		`{"v":1,"saga_id":"s","participant":"p","status":"rejected","reason":"bad"}`,
	}, DecodeOutcome, Outcome.Encode)
}

func FuzzDecodeTick(f *testing.F) {
	fuzzRoundTrip(f, []string{`{"v":1,"saga_id":"s","due_ms":1700000000000}`}, DecodeTick, Tick.Encode)
}

func FuzzDecodeControl(f *testing.F) {
	fuzzRoundTrip(f, []string{`{"v":1,"saga_id":"s","action":"skip","id":"x","step":"a","note":"n"}`}, DecodeControl, Control.Encode)
}

func FuzzParseSubject(f *testing.F) {
	for _, s := range []string{"saga.start.a", "saga.evt.p.s", "saga.cmd..x", "saga.tick.*"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, subject string) {
		s, err := Default().Parse(subject)
		if err != nil {
			return
		}
		var rebuilt string
		switch s.Kind {
		case KindStart:
			rebuilt = Default().Start(s.SagaID)
		case KindEvent:
			rebuilt = Default().Event(s.Participant, s.SagaID)
		case KindCommand:
			rebuilt = Default().Command(s.Participant, s.SagaID)
		case KindTick:
			rebuilt = Default().Tick(s.SagaID)
		case KindControl:
			rebuilt = Default().Control(s.SagaID)
		case KindSchedule:
			rebuilt = Default().Schedule(s.SagaID)
		}
		if rebuilt != subject {
			t.Fatalf("Parse(%q) = %+v rebuilds as %q", subject, s, rebuilt)
		}
	})
}
