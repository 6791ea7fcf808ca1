package orchestrator

import (
	"testing"

	"github.com/jetsaga/jetsaga/events"
)

// BenchmarkNextTransfer runs a whole committed 2-step transfer through Next:
// one start and two outcomes per iteration.
func BenchmarkNextTransfer(b *testing.B) {
	start := events.Start{V: 1, SagaID: "0195f3c8-1f0a-7b4e-9a51-5c2e2a6f7d10", Name: "transfer", Steps: []events.Step{
		{Name: "debit", Participant: "bank-a", Action: "TransOut", Compensation: "TransOutCompensate", Payload: []byte(`{"user_id":1,"amount":"30.00"}`)},
		{Name: "credit", Participant: "bank-b", Action: "TransIn", Compensation: "TransInCompensate", Payload: []byte(`{"user_id":2,"amount":"30.00"}`), TimeoutMS: 10000},
	}}
	data, _ := start.Encode()
	plan, _ := events.DecodeStart(data)
	o1 := events.Outcome{V: 1, SagaID: plan.SagaID, Participant: "bank-a", Step: "debit", Op: events.OpDo, Attempt: 1, Status: events.Succeeded}
	o2 := events.Outcome{V: 1, SagaID: plan.SagaID, Participant: "bank-b", Step: "credit", Op: events.OpDo, Attempt: 1, Status: events.Succeeded}
	b.ReportAllocs()
	for b.Loop() {
		r := Next(nil, Input{Kind: events.KindStart, SagaID: plan.SagaID, Start: &plan, TimeMS: 1, Seq: 1})
		r = Next(r.State, Input{Kind: events.KindEvent, SagaID: plan.SagaID, Participant: "bank-a", Outcome: &o1, TimeMS: 2, Seq: 2})
		r = Next(r.State, Input{Kind: events.KindEvent, SagaID: plan.SagaID, Participant: "bank-b", Outcome: &o2, TimeMS: 3, Seq: 3})
		if r.State.Status != Committed {
			b.Fatal(r.State.Status)
		}
	}
}

// BenchmarkStateCodec encodes and decodes a running transfer's state, as
// the coordinator does per transition (encode) and per cache miss (decode).
func BenchmarkStateCodec(b *testing.B) {
	start := events.Start{V: 1, SagaID: "0195f3c8-1f0a-7b4e-9a51-5c2e2a6f7d10", Name: "transfer", Steps: []events.Step{
		{Name: "debit", Participant: "bank-a", Action: "TransOut", Compensation: "TransOutCompensate", Payload: []byte(`{"user_id":1,"amount":"30.00"}`)},
		{Name: "credit", Participant: "bank-b", Action: "TransIn", Compensation: "TransInCompensate", Payload: []byte(`{"user_id":2,"amount":"30.00"}`)},
	}}
	data, _ := start.Encode()
	plan, _ := events.DecodeStart(data)
	st := Next(nil, Input{Kind: events.KindStart, SagaID: plan.SagaID, Start: &plan, TimeMS: 1, Seq: 1}).State
	b.ReportAllocs()
	for b.Loop() {
		raw, err := encodeState(st)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := decodeState(raw); err != nil {
			b.Fatal(err)
		}
	}
}
