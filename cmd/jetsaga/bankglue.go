package main

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/jetsaga/jetsaga/examples/bank"
	"github.com/jetsaga/jetsaga/orchestrator"
	"github.com/jetsaga/jetsaga/participants"
)

// account is an account of the example: a user in one bank.
type account struct {
	bank string // the participant: bank-a or bank-b
	user int64
	name string
}

func (a account) String() string { return a.name + "@" + a.bank }

// The example's accounts and their opening balances.
var (
	alice = account{"bank-a", 1, "alice"}
	carol = account{"bank-a", 2, "carol"}
	bob   = account{"bank-b", 1, "bob"}
	dave  = account{"bank-b", 2, "dave"}

	demoAccounts = []account{alice, carol, bob, dave}
	openingCents = map[account]bank.Cents{alice: 1000_00, carol: 500_00, bob: 1000_00, dave: 500_00}
)

// transferPlan is the example's transfer saga: debit from (at bank-a),
// then credit to (at bank-b).
func transferPlan(from, to account, amount int64) *orchestrator.Plan {
	return bank.TransferPlan("", from.user, to.user, bank.Cents(amount))
}

// transferJSON is a transfer plan as JSON, for people to paste.
func transferJSON(from, to account, amount int64) string {
	a := bank.Cents(amount).String()
	return fmt.Sprintf(`{"name": "transfer", "steps": [
  {"name": "debit", "participant": %q, "action": "TransOut", "compensation": "TransOutCompensate",
   "payload": {"user_id": %d, "amount": %q}},
  {"name": "credit", "participant": %q, "action": "TransIn", "compensation": "TransInCompensate",
   "payload": {"user_id": %d, "amount": %q}}]}`, from.bank, from.user, a, to.bank, to.user, a)
}

// migrateBank creates the participant's tables (barrier, outbox) and the
// bank's accounts table.
func migrateBank(ctx context.Context, pool *pgxpool.Pool) error {
	if err := participants.Migrate(ctx, pool); err != nil {
		return err
	}
	return bank.Migrate(ctx, pool)
}

// seedBank opens the example's accounts of participant in an empty bank; a
// bank that has accounts is left alone.
func seedBank(ctx context.Context, pool *pgxpool.Pool, participant string) (bool, error) {
	n, _, err := bank.Accounts(ctx, pool)
	if err != nil {
		return false, err
	}
	if n > 0 {
		return false, nil
	}
	accounts := map[int64]bank.Cents{}
	for acc, c := range openingCents {
		if acc.bank == participant {
			accounts[acc.user] = c
		}
	}
	return true, bank.Seed(ctx, pool, accounts)
}

// registerBank registers the bank's steps on p.
func registerBank(p *participants.Participant) error {
	return bank.RegisterSafely(p)
}

func balance(ctx context.Context, pool *pgxpool.Pool, acc account) (int64, error) {
	c, err := bank.Balance(ctx, pool, acc.user)
	return int64(c), err
}

func bankTotal(ctx context.Context, pool *pgxpool.Pool) (int64, error) {
	c, err := bank.Total(ctx, pool)
	return int64(c), err
}

func setAbnormal(ctx context.Context, pool *pgxpool.Pool, acc account, abnormal bool) error {
	return bank.SetAbnormal(ctx, pool, acc.user, abnormal)
}

func countNegative(ctx context.Context, pool *pgxpool.Pool) (int, error) {
	_, n, err := bank.Accounts(ctx, pool)
	return n, err
}

// lockAccount holds a row lock on acc until release is called, so that a
// step touching the account blocks inside its transaction.
func lockAccount(ctx context.Context, pool *pgxpool.Pool, acc account) (release func(), err error) {
	tx, err := pool.Begin(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := tx.Exec(ctx, `SELECT 1 FROM accounts WHERE user_id = $1 FOR UPDATE`, acc.user); err != nil {
		_ = tx.Rollback(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("lock %s: %w", acc, err)
	}
	var once sync.Once
	return func() {
		once.Do(func() { _ = tx.Rollback(context.WithoutCancel(ctx)) })
	}, nil
}

// waitLockWaiter waits until a session of the pool's database waits for a
// lock.
func waitLockWaiter(ctx context.Context, pool *pgxpool.Pool, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var n int
		err := pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&n)
		if err != nil {
			return err
		}
		if n > 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no step blocked on the lock within %s", timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// barrierRows renders the barrier rows of a saga in a participant's
// database.
func barrierRows(ctx context.Context, pool *pgxpool.Pool, sagaID string) ([]string, error) {
	rows, err := participants.ReadBarrier(ctx, pool, participants.BarrierQuery{SagaID: sagaID})
	if err != nil {
		return nil, err
	}
	slices.SortStableFunc(rows, func(a, b participants.BarrierRow) int { return a.Created.Compare(b.Created) })
	out := make([]string, len(rows))
	for i, r := range rows {
		out[i] = fmt.Sprintf("step=%s op=%s status=%s attempt=%d", r.Step, r.Op, r.Status, r.Attempt)
	}
	return out, nil
}
