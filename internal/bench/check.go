package bench

import (
	"context"
	"fmt"

	"github.com/jetsaga/jetsaga/examples/bank"
	"github.com/jetsaga/jetsaga/internal/invariants"
	"github.com/jetsaga/jetsaga/orchestrator"
)

// maxReported bounds the invariant errors listed (their count is always
// reported).
const maxReported = 20

// check verifies the invariants of DESIGN.md after the load with the shared
// checker (internal/invariants), which reads every saga's final state by id
// through client: every saga ended (committed or compensated, none parked,
// none lost); money is conserved in total and per account exactly as the
// committed transfers say; no balance is negative; every committed saga
// applied each action exactly once and every compensated one left no net
// effect, as the barrier rows of both banks record; the outboxes drained. A
// transfer whose Start or Wait failed is reported too.
func (e *env) check(ctx context.Context, client *orchestrator.Client, ts []*transfer) []string {
	var errs []string
	add := func(s string) {
		if len(errs) < maxReported {
			errs = append(errs, s)
		} else if len(errs) == maxReported {
			errs = append(errs, "… more invariant errors")
		}
	}
	initial := make(map[int64]bank.Cents, e.o.Accounts)
	for id := int64(1); id <= int64(e.o.Accounts); id++ {
		initial[id] = initialBalance
	}
	in := make([]invariants.Transfer, 0, len(ts))
	for _, t := range ts {
		if t.err != nil {
			add(fmt.Sprintf("saga %s: %v", t.id, t.err))
		}
		if t.id == "" {
			continue // the plan did not build: nothing was published
		}
		in = append(in, invariants.Transfer{ID: t.id, From: t.from, To: t.to, Amount: t.amount, Unacked: t.unacked, Final: t.status})
	}
	rep, err := invariants.Check(ctx, invariants.Config{Client: client, BankA: e.poolA, BankB: e.poolB,
		InitialA: initial, InitialB: initial, Transfers: in, MaxViolations: maxReported,
		AllowExpired: e.o.MaxAge > 0})
	if err != nil {
		add("invariant check: " + err.Error())
		return errs
	}
	for _, v := range rep.Violations {
		add(v)
	}
	if rep.ViolationCount > len(rep.Violations) {
		add(fmt.Sprintf("… %d more invariant violations", rep.ViolationCount-len(rep.Violations)))
	}
	return errs
}
