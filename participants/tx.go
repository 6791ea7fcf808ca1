package participants

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/jetsaga/jetsaga/outbox"
)

// outboxWrites records the outboxes a step's handler wrote to, so that their
// relays are woken once the step commits. A handler uses its transaction
// from one goroutine at a time (pgx requires it), so it needs no lock.
type outboxWrites struct{ outboxes []*outbox.Outbox }

func (w *outboxWrites) add(o *outbox.Outbox) {
	for _, x := range w.outboxes {
		if x == o {
			return
		}
	}
	w.outboxes = append(w.outboxes, o)
}

// stepTx is the transaction a handler gets: the step's real transaction,
// except that the handler cannot end it, and that it notes the outbox
// writes made through it (and through its nested transactions).
type stepTx struct {
	pgx.Tx
	w *outboxWrites
}

// Commit refuses: the runtime commits the step together with its outcome.
func (*stepTx) Commit(context.Context) error { return ErrTxOwned }

// Rollback refuses: a handler returns an error instead.
func (*stepTx) Rollback(context.Context) error { return ErrTxOwned }

// Begin starts a nested transaction (a savepoint) that notes its outbox
// writes too.
func (t *stepTx) Begin(ctx context.Context) (pgx.Tx, error) { return beginNested(ctx, t.Tx, t.w) }

// OutboxWritten implements outbox.TxObserver.
func (t *stepTx) OutboxWritten(o *outbox.Outbox) { t.w.add(o) }

// nestedTx is a savepoint inside a step's transaction; the handler ends it
// as it likes.
type nestedTx struct {
	pgx.Tx
	w *outboxWrites
}

// Begin starts a savepoint inside this one.
func (t *nestedTx) Begin(ctx context.Context) (pgx.Tx, error) { return beginNested(ctx, t.Tx, t.w) }

// OutboxWritten implements outbox.TxObserver.
func (t *nestedTx) OutboxWritten(o *outbox.Outbox) { t.w.add(o) }

func beginNested(ctx context.Context, tx pgx.Tx, w *outboxWrites) (pgx.Tx, error) {
	inner, err := tx.Begin(ctx)
	if err != nil {
		return nil, err
	}
	return &nestedTx{Tx: inner, w: w}, nil
}
