package events

import "testing"

func BenchmarkDecodeStart(b *testing.B) {
	data := []byte(transferJSON())
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeStart(data); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCommandCodec(b *testing.B) {
	c := validCommand()
	b.ReportAllocs()
	for b.Loop() {
		data, err := c.Encode()
		if err != nil {
			b.Fatal(err)
		}
		if _, err := DecodeCommand(data); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkOutcomeCodec(b *testing.B) {
	o := Outcome{V: Version, SagaID: "0195f3c8-1f0a-7b4e-9a51-5c2e2a6f7d10", Participant: "bank-a", Step: "debit", Op: OpDo, Attempt: 1, Status: Succeeded}
	b.ReportAllocs()
	for b.Loop() {
		data, err := o.Encode()
		if err != nil {
			b.Fatal(err)
		}
		if _, err := DecodeOutcome(data); err != nil {
			b.Fatal(err)
		}
	}
}
