package orchestrator

import (
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetsaga/jetsaga/events"
)

// TestStateHead: the census reads the status and the name at the head of
// an encoded state, whatever the name holds.
func TestStateHead(t *testing.T) {
	for _, name := range []string{"", "transfer", `say "status":"committed"`, `back\slash`, "ünïcode", `"status":"parked"`} {
		for _, status := range []Status{Running, Compensating, Parked, Committed} {
			st := &State{V: stateVersion, SagaID: "s", Name: name, Status: status, Reason: `"status":"x"`,
				Plan: &events.Start{Name: name}}
			data, err := encodeState(st)
			if err != nil {
				t.Fatal(err)
			}
			gotStatus, gotName, ok := stateHead(data)
			if !ok || gotStatus != status || gotName != name {
				t.Errorf("stateHead(%s) = %q, %q, %v; want %q, %q", data, gotStatus, gotName, ok, status, name)
			}
		}
	}
	if _, _, ok := stateHead([]byte("not json")); ok {
		t.Error("stateHead accepted a value that is not a state")
	}
}

// kvEntry is a state bucket entry for the census and the timers.
type kvEntry struct {
	key     string
	value   []byte
	op      jetstream.KeyValueOp
	created time.Time
	rev     uint64 // 0: 1
}

func (e kvEntry) Bucket() string                  { return "b" }
func (e kvEntry) Key() string                     { return e.key }
func (e kvEntry) Value() []byte                   { return e.value }
func (e kvEntry) Revision() uint64                { return max(e.rev, 1) }
func (e kvEntry) Created() time.Time              { return e.created }
func (e kvEntry) Delta() uint64                   { return 0 }
func (e kvEntry) Operation() jetstream.KeyValueOp { return e.op }

// BenchmarkMetricsPerSaga is what the coordinator's metrics add to a
// committed transfer (a start and two outcomes): the hooks of three
// transitions and two commands, and the census reading the three states
// written. Compare with BenchmarkNextTransfer and with the CPU a saga costs
// end to end (jetsaga bench).
func BenchmarkMetricsPerSaga(b *testing.B) {
	start := events.Start{V: 1, SagaID: "0195f3c8-1f0a-7b4e-9a51-5c2e2a6f7d10", Name: "transfer", Steps: []events.Step{
		{Name: "debit", Participant: "bank-a", Action: "TransOut", Compensation: "TransOutCompensate", Payload: []byte(`{"user_id":1,"amount":"30.00"}`)},
		{Name: "credit", Participant: "bank-b", Action: "TransIn", Compensation: "TransInCompensate", Payload: []byte(`{"user_id":2,"amount":"30.00"}`), TimeoutMS: 10000},
	}}
	data, _ := start.Encode()
	plan, _ := events.DecodeStart(data)
	o1 := events.Outcome{V: 1, SagaID: plan.SagaID, Participant: "bank-a", Step: "debit", Op: events.OpDo, Attempt: 1, Status: events.Succeeded}
	o2 := events.Outcome{V: 1, SagaID: plan.SagaID, Participant: "bank-b", Step: "credit", Op: events.OpDo, Attempt: 1, Status: events.Succeeded}
	ins := []Input{
		{Kind: events.KindStart, SagaID: plan.SagaID, Start: &plan, TimeMS: 1, Seq: 1},
		{Kind: events.KindEvent, SagaID: plan.SagaID, Participant: "bank-a", Outcome: &o1, TimeMS: 2, Seq: 2},
		{Kind: events.KindEvent, SagaID: plan.SagaID, Participant: "bank-b", Outcome: &o2, TimeMS: 3, Seq: 3},
	}
	var states []*State
	var entries []kvEntry
	var prev *State
	for _, in := range ins {
		r := Next(prev, in)
		states = append(states, r.State)
		enc, _ := encodeState(r.State)
		entries = append(entries, kvEntry{key: plan.SagaID, value: enc, op: jetstream.KeyValuePut, created: time.Now()})
		prev = r.State
	}
	obs := &observer{log: slog.New(slog.DiscardHandler), m: newMetricSet(0)}
	obs.m.census = newCensus(obs.m.names)
	h := nats.Header{}
	census := obs.m.census
	b.ReportAllocs()
	for b.Loop() {
		var before *State
		for i := range ins {
			obs.input(&ins[i], h, 1)
			obs.written(before, &ins[i], states[i])
			if p := states[i].Pending; p != nil {
				obs.published(p)
			}
			census.apply(entries[i], false)
			before = states[i]
		}
	}
}
