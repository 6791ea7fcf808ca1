package sagatest_test

import (
	"fmt"
	"time"

	"github.com/jetsaga/jetsaga/orchestrator"
	"github.com/jetsaga/jetsaga/orchestrator/sagatest"
)

// A transfer whose credit fails: the debit is compensated.
func ExampleRun() {
	plan := orchestrator.NewPlan("transfer").ID("t1").
		Step("debit", "bank-a", "TransOut", "TransOutCompensate", map[string]any{"amount": "30.00"}).
		Step("credit", "bank-b", "TransIn", "TransInCompensate", map[string]any{"amount": "30.00"})
	res, err := sagatest.Run(plan, sagatest.Script{"credit": sagatest.Fail("account frozen")})
	if err != nil {
		panic(err)
	}
	fmt.Println(res.State.Status, res.Steps())
	// Output: compensated [debit/do credit/do debit/undo]
}

// A credit that never answers times out; its compensation is sent too (the
// participant's barrier makes it a null compensation if the credit never
// ran).
func ExampleSilent() {
	plan := orchestrator.NewPlan("transfer").ID("t2").
		Step("debit", "bank-a", "TransOut", "TransOutCompensate", nil).
		Step("credit", "bank-b", "TransIn", "TransInCompensate", nil, orchestrator.Timeout(5*time.Second))
	res, err := sagatest.Run(plan, sagatest.Script{"credit": sagatest.Silent()})
	if err != nil {
		panic(err)
	}
	fmt.Println(res.State.Status, res.Ticks, res.Steps())
	// Output: compensated 1 [debit/do credit/do credit/undo debit/undo]
}
