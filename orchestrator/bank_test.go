package orchestrator_test

import (
	"context"
	"log/slog"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/jetsaga/jetsaga/examples/bank"
	"github.com/jetsaga/jetsaga/internal/testenv"
	"github.com/jetsaga/jetsaga/orchestrator"
	"github.com/jetsaga/jetsaga/participants"
)

// banks runs the two bank participants of the example, each on its own
// fresh database, with accounts 1 and 2 holding 100.00 in both banks.
type banks struct {
	a, b *pgxpool.Pool
}

func (b *bundle) runBanks(accounts map[int64]bank.Cents) *banks {
	b.t.Helper()
	ctx := context.Background()
	out := &banks{a: testenv.Postgres(b.t), b: testenv.Postgres(b.t)}
	for _, x := range []struct {
		name string
		pool *pgxpool.Pool
	}{{bank.BankA, out.a}, {bank.BankB, out.b}} {
		if err := participants.Migrate(ctx, x.pool); err != nil {
			b.t.Fatal(err)
		}
		if err := bank.Migrate(ctx, x.pool); err != nil {
			b.t.Fatal(err)
		}
		if err := bank.Seed(ctx, x.pool, accounts); err != nil {
			b.t.Fatal(err)
		}
		p, err := participants.New(participants.Config{Name: x.name, Pool: x.pool, JetStream: b.js,
			Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			b.t.Fatal(err)
		}
		bank.Register(p)
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- p.Run(rctx) }()
		b.t.Cleanup(func() {
			cancel()
			if err := <-done; err != nil {
				b.t.Errorf("%s: %v", x.name, err)
			}
		})
	}
	return out
}

func (k *banks) balances(t *testing.T, user int64) (bank.Cents, bank.Cents) {
	t.Helper()
	ctx := context.Background()
	a, err := bank.Balance(ctx, k.a, user)
	if err != nil {
		t.Fatal(err)
	}
	b, err := bank.Balance(ctx, k.b, user)
	if err != nil {
		t.Fatal(err)
	}
	return a, b
}

func (k *banks) total(t *testing.T) bank.Cents {
	t.Helper()
	a, err := bank.Total(context.Background(), k.a)
	if err != nil {
		t.Fatal(err)
	}
	b, err := bank.Total(context.Background(), k.b)
	if err != nil {
		t.Fatal(err)
	}
	return a + b
}

// TestBankTransfers: the seed's cases with the bank participants.
func TestBankTransfers(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.runCoordinator(b.js)
	k := b.runBanks(map[int64]bank.Cents{1: 100_00, 2: 100_00})
	ctx := context.Background()
	start := func(id string, from, to int64, amount bank.Cents) {
		t.Helper()
		if _, err := b.client.Start(ctx, bank.TransferPlan(id, from, to, amount)); err != nil {
			t.Fatal(err)
		}
	}
	// Success: A −30, B +30.
	start("ok", 1, 2, 30_00)
	b.wait("ok", orchestrator.Committed)
	if a, bb := k.balances(t, 1); a != 70_00 {
		t.Fatalf("A[1] = %s, B[1] = %s", a, bb)
	}
	if _, bb := k.balances(t, 2); bb != 130_00 {
		t.Fatalf("B[2] = %s", bb)
	}
	// TransIn business failure (user 2's account is abnormal): A is
	// compensated, both balances back.
	if err := bank.SetAbnormal(ctx, k.b, 2, true); err != nil {
		t.Fatal(err)
	}
	start("abnormal", 1, 2, 30_00)
	st := b.wait("abnormal", orchestrator.Compensated)
	if st.Steps[0].Status != orchestrator.StepCompensated || st.Steps[1].Status != orchestrator.StepFailed {
		t.Fatalf("steps %+v", st.Steps)
	}
	if a, _ := k.balances(t, 1); a != 70_00 {
		t.Fatalf("A[1] = %s after compensation, want 70.00", a)
	}
	if _, bb := k.balances(t, 2); bb != 130_00 {
		t.Fatalf("B[2] = %s", bb)
	}
	// Insufficient balance on TransOut: nothing moves.
	if err := bank.SetAbnormal(ctx, k.b, 2, false); err != nil {
		t.Fatal(err)
	}
	start("poor", 1, 2, 1000_00)
	st = b.wait("poor", orchestrator.Compensated)
	if st.Steps[0].Status != orchestrator.StepFailed || st.Steps[1].Status != orchestrator.StepPending {
		t.Fatalf("steps %+v", st.Steps)
	}
	if a, _ := k.balances(t, 1); a != 70_00 {
		t.Fatalf("A[1] = %s", a)
	}
	if got := k.total(t); got != 400_00 {
		t.Fatalf("money not conserved: %s", got)
	}
}
