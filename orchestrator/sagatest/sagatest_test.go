package sagatest_test

import (
	"errors"
	"slices"
	"testing"

	"github.com/jetsaga/jetsaga/events"
	"github.com/jetsaga/jetsaga/orchestrator"
	"github.com/jetsaga/jetsaga/orchestrator/sagatest"
)

func TestParallelStepsCommit(t *testing.T) {
	plan := orchestrator.NewPlan("fan-out").ID("p").
		Step("a", "x", "A", "UA", nil).
		Step("b", "y", "B", "UB", nil, orchestrator.After()).
		Step("c", "z", "C", "UC", nil, orchestrator.After("a", "b"))
	res, err := sagatest.Run(plan, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.State.Status != orchestrator.Committed {
		t.Fatalf("status %s", res.State.Status)
	}
	if got := res.Steps(); !slices.Equal(got, []string{"a/do", "b/do", "c/do"}) {
		t.Fatalf("commands %v", got)
	}
}

func TestCompensationThatKeepsFailingParks(t *testing.T) {
	plan := orchestrator.NewPlan("transfer").ID("k").
		Step("debit", "bank-a", "TransOut", "TransOutCompensate", nil).
		Step("credit", "bank-b", "TransIn", "TransInCompensate", nil)
	res, err := sagatest.Run(plan, sagatest.Script{
		"credit": sagatest.Fail("no"),
		"debit": func(c events.Command) sagatest.Answer {
			if c.Op == events.OpUndo {
				return sagatest.Answer{Status: events.Exhausted, Reason: "database down"}
			}
			return sagatest.Answer{}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.State.Status != orchestrator.Parked {
		t.Fatalf("status %s (%s), want parked", res.State.Status, res.State.Reason)
	}
}

func TestInvalidAnswerReported(t *testing.T) {
	plan := orchestrator.NewPlan("one").ID("i").Step("a", "x", "A", "UA", nil)
	_, err := sagatest.Run(plan, sagatest.Script{
		"a": func(events.Command) sagatest.Answer { return sagatest.Answer{Status: events.Failed} }, // no reason
	})
	if err == nil {
		t.Fatal("an invalid answer was accepted")
	}
}

func TestNoTimeoutNeverEnds(t *testing.T) {
	plan := orchestrator.NewPlan("one").ID("n").Step("a", "x", "A", "UA", nil, orchestrator.Timeout(orchestrator.NoTimeout))
	_, err := sagatest.Run(plan, sagatest.Script{"a": sagatest.Silent()})
	if !errors.Is(err, sagatest.ErrNoEnd) {
		t.Fatalf("err %v, want ErrNoEnd", err)
	}
}
