package participants

import (
	"context"

	"github.com/jackc/pgx/v5"
)

// stepTx is the transaction a handler gets: the step's real transaction,
// except that the handler cannot end it.
type stepTx struct{ pgx.Tx }

// Commit refuses: the runtime commits the step together with its outcome.
func (stepTx) Commit(context.Context) error { return ErrTxOwned }

// Rollback refuses: a handler returns an error instead.
func (stepTx) Rollback(context.Context) error { return ErrTxOwned }
