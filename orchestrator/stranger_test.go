package orchestrator

import (
	"errors"
	"testing"

	"github.com/jetsaga/jetsaga/events"
)

// TestOutcomeFromStrangerIgnored: an outcome on the subject of a participant
// with no step in the saga, readable or not, changes nothing (it is not
// recorded: the coordinator reads only its participants' subjects to apply
// inputs in stream order).
func TestOutcomeFromStrangerIgnored(t *testing.T) {
	start, err := NewPlan("transfer").ID("s1").
		Step("debit", "bank-a", "TransOut", "TransOutCompensate", nil).Build()
	if err != nil {
		t.Fatal(err)
	}
	r := Next(nil, Input{Kind: events.KindStart, SagaID: "s1", Seq: 1, TimeMS: 1, Start: &start})
	for _, in := range []Input{
		{Kind: events.KindEvent, SagaID: "s1", Participant: "bank-z", Seq: 2, TimeMS: 2,
			Outcome: &events.Outcome{V: 1, SagaID: "s1", Participant: "bank-z", Step: "debit", Op: events.OpDo, Attempt: 1, Status: events.Succeeded}},
		{Kind: events.KindEvent, SagaID: "s1", Participant: "bank-z", Seq: 3, TimeMS: 3, Err: errors.New("not json")},
	} {
		next := Next(r.State, in)
		if next.Changed || next.Rejected != "" || next.Ignored == "" {
			t.Fatalf("outcome from a stranger: changed %v, rejected %q, ignored %q", next.Changed, next.Rejected, next.Ignored)
		}
	}
}
