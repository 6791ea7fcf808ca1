package orchestrator_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/jetsaga/jetsaga/internal/testenv"
	"github.com/jetsaga/jetsaga/orchestrator"
	"github.com/jetsaga/jetsaga/outbox"
)

// TestStartTx: a saga started inside a committed transaction runs; one
// started inside a rolled-back transaction never exists.
func TestStartTx(t *testing.T) {
	t.Parallel()
	b := setup(t)
	pool := testenv.Postgres(t)
	ctx := context.Background()
	if err := outbox.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	ob, err := outbox.New(outbox.Config{})
	if err != nil {
		t.Fatal(err)
	}
	relay, err := outbox.NewRelay(pool, b.js, outbox.RelayConfig{Outbox: ob})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- relay.Run(rctx) }()
	t.Cleanup(func() { cancel(); <-done })
	b.runCoordinator(b.js)
	b.respond("bank-a", ok)
	b.respond("bank-b", ok)
	if _, err := pool.Exec(ctx, `create table orders (id text primary key)`); err != nil {
		t.Fatal(err)
	}
	err = ob.Tx(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `insert into orders values ('o1')`); err != nil {
			return err
		}
		_, err := orchestrator.StartTx(ctx, tx, transferPlan("committed-tx"), orchestrator.StartTxOptions{Outbox: ob, Namespace: b.client.Namespace()})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	errRollback := errors.New("business says no")
	err = ob.Tx(ctx, pool, func(tx pgx.Tx) error {
		if _, err := orchestrator.StartTx(ctx, tx, transferPlan("rolled-back-tx"), orchestrator.StartTxOptions{Outbox: ob, Namespace: b.client.Namespace()}); err != nil {
			return err
		}
		return errRollback
	})
	if !errors.Is(err, errRollback) {
		t.Fatal(err)
	}
	b.wait("committed-tx", orchestrator.Committed)
	// The relay has drained the table, so the rolled-back start would have
	// been published by now if it had been written.
	testenv.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		p, err := ob.Pending(ctx, pool)
		if err != nil {
			return err
		}
		if p.Rows != 0 {
			return errors.New("outbox not drained")
		}
		return nil
	})
	if _, err := b.client.Get(ctx, "rolled-back-tx"); !errors.Is(err, orchestrator.ErrNotFound) {
		t.Fatalf("rolled-back saga: %v", err)
	}
}
