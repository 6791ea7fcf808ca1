package bank

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"log/slog"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/jetsaga/jetsaga/participants"
)

// Action names, as a transfer saga's plan names them. Their compensations
// are registered under the name followed by participants.CompensationSuffix
// ("TransOutCompensate", "TransInCompensate").
const (
	TransOut = "TransOut"
	TransIn  = "TransIn"
)

//go:embed schema.sql
var schema string

// migrateLock is the advisory lock key that serialises Migrate.
const migrateLock = 0x6a657473616761 // "jetsaga"

// TransferReq is the payload of both steps: move Amount out of (TransOut) or
// into (TransIn) the account of UserID.
type TransferReq struct {
	UserID int64 `json:"user_id"`
	Amount Cents `json:"amount"`
}

// Validate refuses a payload that no bank could act on: such a command is
// rejected (poison), not retried.
func (r TransferReq) Validate() error {
	if r.UserID <= 0 {
		return fmt.Errorf("user_id: is %d, must be > 0", r.UserID)
	}
	if r.Amount <= 0 {
		return fmt.Errorf("amount: is %s, must be > 0", r.Amount)
	}
	return nil
}

// Migrate creates the accounts table; it is idempotent and concurrent calls
// are serialised by an advisory lock. The participant runtime's own tables
// (barrier, outbox) are migrated separately, with participants.Migrate or
// Participant.Migrate.
func Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, migrateLock); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, schema)
		return err
	})
	if err != nil {
		return fmt.Errorf("bank: migrate accounts: %w", err)
	}
	return nil
}

// Register registers both steps of a transfer on p:
//
//   - TransOut: Do debits the account (fails if the account is unknown or
//     its balance is insufficient), Undo credits it back;
//   - TransIn: Do credits the account (fails if it is unknown or abnormal),
//     Undo debits it back.
//
// Each handler is one statement, one round trip.
func Register(p *participants.Participant) {
	if err := RegisterSafely(p); err != nil {
		panic(err)
	}
}

// RegisterSafely is Register, returning the error (for instance when the
// participant already runs or has the actions) instead of panicking.
func RegisterSafely(p *participants.Participant) error {
	if err := participants.RegisterSafely(p, TransOut, participants.Step[TransferReq]{Do: transOut, Undo: transOutCompensate}); err != nil {
		return fmt.Errorf("bank: %w", err)
	}
	if err := participants.RegisterSafely(p, TransIn, participants.Step[TransferReq]{Do: transIn, Undo: transInCompensate}); err != nil {
		return fmt.Errorf("bank: %w", err)
	}
	return nil
}

// transOut debits the account if its balance allows it. When nothing
// qualifies, the same statement says whether the account exists.
func transOut(ctx context.Context, tx pgx.Tx, info participants.StepInfo, r TransferReq) (any, error) {
	var debited, exists bool
	err := tx.QueryRow(ctx, `WITH d AS (
    UPDATE accounts SET balance = balance - $2::numeric, updated = now()
    WHERE user_id = $1 AND balance >= $2::numeric RETURNING 1)
SELECT EXISTS (SELECT 1 FROM d), EXISTS (SELECT 1 FROM accounts WHERE user_id = $1)`,
		r.UserID, r.Amount.String()).Scan(&debited, &exists)
	switch {
	case err != nil:
		return nil, err
	case debited:
		return nil, nil
	case !exists:
		return nil, participants.Failf("account %d does not exist", r.UserID)
	default:
		return nil, participants.Failf("account %d: insufficient balance for %s", r.UserID, r.Amount)
	}
}

// transOutCompensate credits back what transOut debited. It runs only after
// transOut succeeded, so the account exists.
func transOutCompensate(ctx context.Context, tx pgx.Tx, info participants.StepInfo, r TransferReq) (any, error) {
	tag, err := tx.Exec(ctx, `UPDATE accounts SET balance = balance + $2::numeric, updated = now() WHERE user_id = $1`,
		r.UserID, r.Amount.String())
	if err != nil {
		return nil, err
	}
	if tag.RowsAffected() == 0 {
		return nil, bug(info, "TransOut's compensation found no account %d to credit back", r.UserID)
	}
	return nil, nil
}

// transIn credits the account unless it is abnormal. When nothing
// qualifies, the same statement says whether the account exists.
func transIn(ctx context.Context, tx pgx.Tx, info participants.StepInfo, r TransferReq) (any, error) {
	var credited bool
	var abnormal *bool
	err := tx.QueryRow(ctx, `WITH c AS (
    UPDATE accounts SET balance = balance + $2::numeric, updated = now()
    WHERE user_id = $1 AND NOT abnormal RETURNING 1)
SELECT EXISTS (SELECT 1 FROM c), (SELECT abnormal FROM accounts WHERE user_id = $1)`,
		r.UserID, r.Amount.String()).Scan(&credited, &abnormal)
	var pgErr *pgconn.PgError
	switch {
	case errors.As(err, &pgErr) && pgErr.Code == "22003": // numeric_value_out_of_range
		return nil, participants.Failf("account %d: the balance would exceed %s", r.UserID, MaxCents)
	case err != nil:
		return nil, err
	case credited:
		return nil, nil
	case abnormal == nil:
		return nil, participants.Failf("account %d does not exist", r.UserID)
	default:
		return nil, participants.Failf("account %d: user's account is abnormal", r.UserID)
	}
}

// transInCompensate debits back what transIn credited. If the money is no
// longer there (spent since), that must not make the balance negative: it is
// reported as a transient error and logged loudly; the command is retried,
// then the saga parks for an operator.
func transInCompensate(ctx context.Context, tx pgx.Tx, info participants.StepInfo, r TransferReq) (any, error) {
	tag, err := tx.Exec(ctx, `UPDATE accounts SET balance = balance - $2::numeric, updated = now()
WHERE user_id = $1 AND balance >= $2::numeric`, r.UserID, r.Amount.String())
	if err != nil {
		return nil, err
	}
	if tag.RowsAffected() == 0 {
		return nil, bug(info, "TransIn's compensation cannot debit %s back from account %d: unknown account or the balance would go negative", r.Amount, r.UserID)
	}
	return nil, nil
}

// bug logs an impossible state loudly and returns it as an error (transient
// for the runtime: retried, then the saga parks).
func bug(info participants.StepInfo, format string, args ...any) error {
	err := fmt.Errorf("bank: "+format, args...)
	slog.Error("BUG: compensation cannot proceed", "saga", info.SagaID, "step", info.Step, "err", err)
	return err
}

// Seed sets the balances of accounts, creating those that do not exist.
func Seed(ctx context.Context, pool *pgxpool.Pool, accounts map[int64]Cents) error {
	b := &pgx.Batch{}
	for id, bal := range accounts {
		b.Queue(`INSERT INTO accounts (user_id, balance) VALUES ($1, $2::numeric)
ON CONFLICT (user_id) DO UPDATE SET balance = EXCLUDED.balance, updated = now()`, id, bal.String())
	}
	if err := pool.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("bank: seed: %w", err)
	}
	return nil
}

// Balance returns the balance of user's account.
func Balance(ctx context.Context, pool *pgxpool.Pool, user int64) (Cents, error) {
	var c int64
	if err := pool.QueryRow(ctx, `SELECT (balance * 100)::bigint FROM accounts WHERE user_id = $1`, user).Scan(&c); err != nil {
		return 0, fmt.Errorf("bank: balance of %d: %w", user, err)
	}
	return Cents(c), nil
}

// Balances returns every account's balance.
func Balances(ctx context.Context, pool *pgxpool.Pool) (map[int64]Cents, error) {
	rows, err := pool.Query(ctx, `SELECT user_id, (balance * 100)::bigint FROM accounts`)
	if err != nil {
		return nil, fmt.Errorf("bank: balances: %w", err)
	}
	out := map[int64]Cents{}
	for rows.Next() {
		var id, c int64
		if err := rows.Scan(&id, &c); err != nil {
			rows.Close()
			return nil, fmt.Errorf("bank: balances: %w", err)
		}
		out[id] = Cents(c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("bank: balances: %w", err)
	}
	return out, nil
}

// Accounts returns the number of accounts and how many are negative (which
// the bank's handlers never allow).
func Accounts(ctx context.Context, pool *pgxpool.Pool) (n, negative int, err error) {
	err = pool.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE balance < 0) FROM accounts`).Scan(&n, &negative)
	if err != nil {
		return 0, 0, fmt.Errorf("bank: accounts: %w", err)
	}
	return n, negative, nil
}

// Total returns the sum of all balances.
func Total(ctx context.Context, pool *pgxpool.Pool) (Cents, error) {
	var c int64
	if err := pool.QueryRow(ctx, `SELECT coalesce(sum(balance) * 100, 0)::bigint FROM accounts`).Scan(&c); err != nil {
		return 0, fmt.Errorf("bank: total: %w", err)
	}
	return Cents(c), nil
}

// SetAbnormal marks user's account abnormal (TransIn refuses it) or normal.
func SetAbnormal(ctx context.Context, pool *pgxpool.Pool, user int64, abnormal bool) error {
	tag, err := pool.Exec(ctx, `UPDATE accounts SET abnormal = $2, updated = now() WHERE user_id = $1`, user, abnormal)
	if err != nil {
		return fmt.Errorf("bank: set abnormal: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("bank: set abnormal: account %d does not exist", user)
	}
	return nil
}
