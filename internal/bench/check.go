package bench

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/jetsaga/jetsaga/examples/bank"
	"github.com/jetsaga/jetsaga/orchestrator"
	"github.com/jetsaga/jetsaga/outbox"
)

// maxReported bounds the invariant errors listed (their count is always
// reported).
const maxReported = 20

// check verifies the invariants of DESIGN.md after the load: every saga
// ended (committed or compensated, none parked, none lost); money is
// conserved in total and per account exactly as the committed transfers
// say; no balance is negative; every committed saga applied each action
// exactly once and every compensated one left no net effect, as the
// barrier rows of both banks record; the outboxes drained.
func (e *env) check(ctx context.Context, ts []*transfer) []string {
	var errs []string
	fail := func(format string, args ...any) {
		if len(errs) < maxReported {
			errs = append(errs, fmt.Sprintf(format, args...))
		} else if len(errs) == maxReported {
			errs = append(errs, "… more invariant errors")
		}
	}
	n := int64(e.o.Accounts)
	wantA := make(map[int64]bank.Cents, n)
	wantB := make(map[int64]bank.Cents, n)
	for id := int64(1); id <= n; id++ {
		wantA[id], wantB[id] = initialBalance, initialBalance
	}
	for _, t := range ts {
		switch {
		case t.err != nil:
			fail("saga %s: %v", t.id, t.err)
		case t.status == orchestrator.Committed:
			wantA[t.from] -= t.amount
			wantB[t.to] += t.amount
		case t.status != orchestrator.Compensated:
			fail("saga %s ended %s", t.id, t.status)
		}
	}
	for _, b := range []struct {
		name string
		pool *pgxpool.Pool
		want map[int64]bank.Cents
	}{{bank.BankA, e.poolA, wantA}, {bank.BankB, e.poolB, wantB}} {
		got, err := balances(ctx, b.pool)
		if err != nil {
			fail("%s: read balances: %v", b.name, err)
			continue
		}
		if len(got) != len(b.want) {
			fail("%s: %d accounts, want %d", b.name, len(got), len(b.want))
		}
		for id, w := range b.want {
			if got[id] != w {
				fail("%s: account %d holds %s, want %s", b.name, id, got[id], w)
			}
			if got[id] < 0 {
				fail("%s: account %d is negative: %s", b.name, id, got[id])
			}
		}
	}
	totalA, errA := bank.Total(ctx, e.poolA)
	totalB, errB := bank.Total(ctx, e.poolB)
	if errA != nil || errB != nil {
		fail("totals: %v %v", errA, errB)
	} else if want := 2 * bank.Cents(n) * initialBalance; totalA+totalB != want {
		fail("money not conserved: %s + %s = %s, want %s", totalA, totalB, totalA+totalB, want)
	}
	e.checkBarriers(ctx, ts, fail)
	for _, pool := range []*pgxpool.Pool{e.poolA, e.poolB} {
		var pending outbox.Pending
		var err error
		for i := 0; i < 100; i++ {
			if pending, err = outboxPending(ctx, pool); err != nil || pending.Rows == 0 {
				break
			}
			sleep(ctx, 100)
		}
		if err != nil || pending.Rows != 0 {
			fail("outbox not drained: %d rows (%v)", pending.Rows, err)
		}
	}
	return errs
}

func outboxPending(ctx context.Context, pool *pgxpool.Pool) (outbox.Pending, error) {
	ob, err := outbox.New(outbox.Config{})
	if err != nil {
		return outbox.Pending{}, err
	}
	return ob.Pending(ctx, pool)
}

func balances(ctx context.Context, pool *pgxpool.Pool) (map[int64]bank.Cents, error) {
	rows, err := pool.Query(ctx, `SELECT user_id, (balance * 100)::bigint FROM accounts`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[int64]bank.Cents{}
	for rows.Next() {
		var id, c int64
		if err := rows.Scan(&id, &c); err != nil {
			return nil, err
		}
		out[id] = bank.Cents(c)
	}
	return out, rows.Err()
}

// barrierRows maps "saga/step/op" to the status of each barrier row.
func barrierRows(ctx context.Context, pool *pgxpool.Pool) (map[string]string, error) {
	rows, err := pool.Query(ctx, `SELECT saga_id, step, op, status FROM jetsaga_barrier`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var saga, step, op, status string
		if err := rows.Scan(&saga, &step, &op, &status); err != nil {
			return nil, err
		}
		out[saga+"/"+step+"/"+op] = status
	}
	return out, rows.Err()
}

func (e *env) checkBarriers(ctx context.Context, ts []*transfer, fail func(string, ...any)) {
	a, errA := barrierRows(ctx, e.poolA)
	b, errB := barrierRows(ctx, e.poolB)
	if errA != nil || errB != nil {
		fail("barrier rows: %v %v", errA, errB)
		return
	}
	wantA, wantB := map[string]string{}, map[string]string{}
	for _, t := range ts {
		if t.err != nil {
			continue
		}
		switch {
		case t.status == orchestrator.Committed:
			wantA[t.id+"/debit/do"] = "succeeded"
			wantB[t.id+"/credit/do"] = "succeeded"
		case t.status == orchestrator.Compensated && !t.debited:
			wantA[t.id+"/debit/do"] = "failed"
		case t.status == orchestrator.Compensated:
			wantA[t.id+"/debit/do"] = "succeeded"
			wantA[t.id+"/debit/undo"] = "compensated"
			wantB[t.id+"/credit/do"] = "failed"
		}
	}
	for _, c := range []struct {
		name      string
		got, want map[string]string
	}{{bank.BankA, a, wantA}, {bank.BankB, b, wantB}} {
		if len(c.got) != len(c.want) {
			fail("%s: %d barrier rows, want %d", c.name, len(c.got), len(c.want))
		}
		for k, w := range c.want {
			if c.got[k] != w {
				fail("%s: barrier %s is %q, want %q", c.name, k, c.got[k], w)
			}
		}
	}
}

func sleep(ctx context.Context, ms int) {
	select {
	case <-ctx.Done():
	case <-time.After(time.Duration(ms) * time.Millisecond):
	}
}
