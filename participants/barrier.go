package participants

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/jetsaga/jetsaga/events"
	"github.com/jetsaga/jetsaga/outbox"
)

// Barrier statuses, as stored in the status column (see BarrierStatus).
const (
	statusSucceeded   = string(BarrierSucceeded)
	statusFailed      = string(BarrierFailed)
	statusRejected    = string(BarrierRejected)
	statusVoided      = string(BarrierVoided)
	statusCompensated = string(BarrierCompensated)
)

// savepoint is the savepoint the runtime sets after the barrier insert of an
// action: a business failure rolls back to it, keeping the barrier row.
const savepoint = "jetsaga_step"

// barrier holds the SQL of one barrier table.
type barrier struct {
	schema, table     string
	qtable, qversions string

	insert  string // $1 saga, $2 step, $3 op, $4 status, $5 attempt; affects 0 rows on conflict
	get     string // $1 saga, $2 step, $3 op → status, reason, result
	finish  string // $1 saga, $2 step, $3 op, $4 status, $5 reason, $6 result
	cleanup string // $1 cutoff, $2 limit
}

func newBarrier(schema, table string) *barrier {
	ident := func(name string) pgx.Identifier {
		if schema == "" {
			return pgx.Identifier{name}
		}
		return pgx.Identifier{schema, name}
	}
	b := &barrier{schema: schema, table: table}
	b.qtable = ident(table).Sanitize()
	b.qversions = ident(table + migrationsSuffix).Sanitize()
	b.insert = `INSERT INTO ` + b.qtable + ` (saga_id, step, op, status, attempt) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (saga_id, step, op) DO NOTHING`
	b.get = `SELECT status, reason, result FROM ` + b.qtable + ` WHERE saga_id = $1 AND step = $2 AND op = $3`
	b.finish = `UPDATE ` + b.qtable + ` SET status = $4, reason = $5, result = $6::jsonb
WHERE saga_id = $1 AND step = $2 AND op = $3`
	b.cleanup = `DELETE FROM ` + b.qtable + ` WHERE ctid = ANY (ARRAY(
    SELECT ctid FROM ` + b.qtable + ` WHERE created_at < $1 ORDER BY created_at LIMIT $2))`
	return b
}

// execer runs a statement; *pgxpool.Pool implements it.
type execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// row is a barrier row as read back.
type row struct {
	status string
	reason *string
	result []byte
}

// read reads the row of cmd's step for op into r.
func (b *barrier) read(ctx context.Context, q outbox.Querier, cmd *events.Command, op events.Op, r *row) error {
	err := q.QueryRow(ctx, b.get, cmd.SagaID, cmd.Step, op).Scan(&r.status, &r.reason, &r.result)
	if err != nil {
		return fmt.Errorf("barrier: read the %s row: %w", op, err)
	}
	return nil
}

// prune deletes rows created before cutoff, at most batch per statement,
// until a statement finds fewer; it returns how many it deleted.
func (b *barrier) prune(ctx context.Context, db execer, cutoff time.Time, batch int) (int64, error) {
	var total int64
	for {
		tag, err := db.Exec(ctx, b.cleanup, cutoff, batch)
		if err != nil {
			return total, fmt.Errorf("participants: prune %s: %w", b.qtable, err)
		}
		n := tag.RowsAffected()
		total += n
		if n < int64(batch) {
			return total, nil
		}
	}
}
