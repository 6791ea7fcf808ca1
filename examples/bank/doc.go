// Package bank is jetsaga's reference example: the two participants of a
// bank transfer. Each bank is a participant with its own PostgreSQL
// database holding an accounts table; a transfer saga debits the source
// account in one bank (step action TransOut, compensation
// TransOutCompensate) and credits the destination account in the other
// (TransIn, TransInCompensate).
//
// # Running a bank
//
//	pool, _ := pgxpool.New(ctx, "postgres://.../bank_a")
//	_ = bank.Migrate(ctx, pool)                    // accounts
//	p, _ := participants.New(participants.Config{Name: "bank-a", Pool: pool, JetStream: js})
//	_ = p.Migrate(ctx)                            // barrier and outbox
//	bank.Register(p)
//	_ = bank.Seed(ctx, pool, map[int64]bank.Cents{1: 100_00})
//	err := p.Run(ctx)
//
// # Money
//
// Amounts are exact: [Cents] in Go, numeric(12,2) in PostgreSQL, and a
// decimal string in JSON ({"user_id": 1, "amount": "30.00"}). A JSON
// number, more than two decimals, or an amount that is not positive makes
// the command poison: it is rejected, never retried.
//
// # Failures
//
// TransOut fails (a business failure, the saga compensates) when the account
// does not exist or its balance is insufficient; TransIn when the account
// does not exist or is marked abnormal ([SetAbnormal], the switch tests and
// demos use). A compensation cannot fail for business reasons: if
// TransInCompensate finds that the money credited has been spent since, it
// refuses to make the balance negative, logs the bug loudly and returns a
// transient error; after the command's retry budget the saga is parked for
// an operator.
package bank
