package orchestrator

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/jetsaga/jetsaga/events"
	"github.com/jetsaga/jetsaga/outbox"
)

// StartTxOptions configure StartTx. The zero value writes into the outbox
// package's default table for the default namespace.
type StartTxOptions struct {
	// Outbox whose table receives the start message; nil: the outbox
	// package's default table (outbox.Write).
	Outbox *outbox.Outbox
	// Namespace of the deployment; the zero value means events.Default().
	Namespace events.Namespace
}

// StartTx starts a saga atomically with the caller's own rows: it writes the
// start message into an outbox table inside tx, and the saga starts if and
// only if tx commits (a relay for that outbox publishes it; call its Notify
// after the commit, or use its Tx, to wake a relay of this process). It
// returns the saga id.
//
// Starting an id again with the same plan is harmless (the message id is the
// same); with a different plan the coordinator rejects the second start and
// records it in the saga — unlike Client.Start, StartTx cannot check the
// stream from inside the transaction.
func StartTx(ctx context.Context, tx pgx.Tx, plan *Plan, opts StartTxOptions) (string, error) {
	start, err := plan.Build()
	if err != nil {
		return "", err
	}
	m, err := opts.Namespace.OrDefault().StartMsg(start, plan.trace)
	if err != nil {
		return "", err
	}
	id := m.Header.Get(events.HeaderMsgID)
	m.Header.Del(events.HeaderMsgID) // the outbox sets it from ID
	msg := outbox.Message{ID: id, Subject: m.Subject, Header: m.Header, Data: m.Data}
	if opts.Outbox == nil {
		err = outbox.Write(ctx, tx, msg)
	} else {
		err = opts.Outbox.Write(ctx, tx, msg)
	}
	if err != nil {
		return "", err
	}
	return start.SagaID, nil
}
