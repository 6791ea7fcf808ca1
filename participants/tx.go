package participants

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// stepTx is the transaction a handler gets: the step's real transaction,
// except that the handler cannot end it.
type stepTx struct{ pgx.Tx }

// Commit refuses: the runtime commits the step together with its outcome.
func (stepTx) Commit(context.Context) error { return ErrTxOwned }

// Rollback refuses: a handler returns an error instead.
func (stepTx) Rollback(context.Context) error { return ErrTxOwned }

// errQueueOnly is returned by queueTx for anything but Exec.
var errQueueOnly = errors.New("participants: internal: the outbox writer used a call other than Exec; the outcome cannot be queued")

// queueTx lets outbox.Write add its INSERT to a batch instead of sending it:
// the step's final batch then carries the barrier update, the outbox row
// and COMMIT in one round trip. outbox.Write validates and encodes the
// message and makes exactly one Exec; any other call fails loudly.
type queueTx struct {
	pgx.Tx // nil: only so that methods added to pgx.Tx later compile
	b      *pgx.Batch
}

var _ pgx.Tx = (*queueTx)(nil)

func (q *queueTx) Exec(_ context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	q.b.Queue(sql, args...)
	return pgconn.CommandTag{}, nil
}

func (q *queueTx) Begin(context.Context) (pgx.Tx, error) { return nil, errQueueOnly }
func (q *queueTx) Commit(context.Context) error          { return errQueueOnly }
func (q *queueTx) Rollback(context.Context) error        { return errQueueOnly }
func (q *queueTx) CopyFrom(context.Context, pgx.Identifier, []string, pgx.CopyFromSource) (int64, error) {
	return 0, errQueueOnly
}
func (q *queueTx) SendBatch(context.Context, *pgx.Batch) pgx.BatchResults { return errBatch{} }
func (q *queueTx) LargeObjects() pgx.LargeObjects                         { return pgx.LargeObjects{} }
func (q *queueTx) Prepare(context.Context, string, string) (*pgconn.StatementDescription, error) {
	return nil, errQueueOnly
}
func (q *queueTx) Query(context.Context, string, ...any) (pgx.Rows, error) { return nil, errQueueOnly }
func (q *queueTx) QueryRow(context.Context, string, ...any) pgx.Row        { return errRow{} }
func (q *queueTx) Conn() *pgx.Conn                                         { return nil }

type errRow struct{}

func (errRow) Scan(...any) error { return errQueueOnly }

type errBatch struct{ pgx.BatchResults }

func (errBatch) Exec() (pgconn.CommandTag, error) { return pgconn.CommandTag{}, errQueueOnly }
func (errBatch) Query() (pgx.Rows, error)         { return nil, errQueueOnly }
func (errBatch) QueryRow() pgx.Row                { return errRow{} }
func (errBatch) Close() error                     { return errQueueOnly }
