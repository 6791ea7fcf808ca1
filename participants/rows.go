package participants

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/jetsaga/jetsaga/events"
)

// BarrierStatus is what a barrier row records.
type BarrierStatus string

// Barrier statuses. An action's row (op do) is succeeded, failed (business
// failure), rejected (a command that could not be run) or voided (written
// by a compensation that found no action: the action is refused if it ever
// arrives); a compensation's row (op undo) is compensated.
const (
	BarrierSucceeded   BarrierStatus = "succeeded"
	BarrierFailed      BarrierStatus = "failed"
	BarrierRejected    BarrierStatus = "rejected"
	BarrierVoided      BarrierStatus = "voided"
	BarrierCompensated BarrierStatus = "compensated"
)

// BarrierRow is one row of a participant's barrier table: what happened to
// one op of one step of one saga at this participant.
type BarrierRow struct {
	SagaID  string
	Step    string // the step's name in the plan
	Op      events.Op
	Status  BarrierStatus
	Reason  string          // why it failed, was rejected or was voided
	Result  json.RawMessage // the handler's result
	Attempt int             // the command's attempt that wrote the row
	Created time.Time
}

// Applied reports whether the step's action is in effect according to its
// rows: its action succeeded and no compensation followed.
func Applied(do, undo *BarrierRow) bool {
	return do != nil && do.Status == BarrierSucceeded && undo == nil
}

// Rows is what ReadBarrier needs: *pgxpool.Pool, *pgx.Conn and pgx.Tx
// implement it.
type Rows interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// BarrierQuery selects the rows ReadBarrier reads. The zero value reads
// every row of the default table.
type BarrierQuery struct {
	// Schema and Table of the barrier (as Config.BarrierSchema and
	// Config.BarrierTable; default DefaultBarrierTable in the search path).
	Schema, Table string
	// SagaID, if set, keeps one saga's rows.
	SagaID string
}

// ReadBarrier reads barrier rows, ordered by saga, step and op: for
// operators and for checks of a participant's database (tools read the
// barrier through it rather than spelling out its layout).
func ReadBarrier(ctx context.Context, q Rows, query BarrierQuery) ([]BarrierRow, error) {
	if query.Table == "" {
		query.Table = DefaultBarrierTable
	}
	if err := validIdentifier("Table", query.Table, maxIdentifier); err != nil {
		return nil, err
	}
	if query.Schema != "" {
		if err := validIdentifier("Schema", query.Schema, maxIdentifier); err != nil {
			return nil, err
		}
	}
	b := newBarrier(query.Schema, query.Table)
	sql := `SELECT saga_id, step, op, status, coalesce(reason, ''), result, attempt, created_at FROM ` + b.qtable
	var args []any
	if query.SagaID != "" {
		sql += ` WHERE saga_id = $1`
		args = append(args, query.SagaID)
	}
	sql += ` ORDER BY saga_id, step, op`
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("participants: read barrier %s: %w", b.qtable, err)
	}
	defer rows.Close()
	var out []BarrierRow
	for rows.Next() {
		var (
			r          BarrierRow
			op, status string
			result     []byte
		)
		if err := rows.Scan(&r.SagaID, &r.Step, &op, &status, &r.Reason, &result, &r.Attempt, &r.Created); err != nil {
			return nil, fmt.Errorf("participants: read barrier %s: %w", b.qtable, err)
		}
		r.Op, r.Status = events.Op(op), BarrierStatus(status)
		if len(result) > 0 {
			r.Result = result
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("participants: read barrier %s: %w", b.qtable, err)
	}
	return out, nil
}
