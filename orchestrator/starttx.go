package orchestrator

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/jetsaga/jetsaga/events"
	"github.com/jetsaga/jetsaga/outbox"
)

// StartTx starts a saga atomically with the caller's own rows: it writes the
// start message into ob's outbox table inside tx, and the saga starts if and
// only if tx commits (a relay for ob publishes it; call ob.Notify after the
// commit, or use ob.Tx, to wake a relay of this process). ob nil means the
// outbox package's default table. It returns the saga id.
//
// Starting an id again with the same plan is harmless (the message id is the
// same); with a different plan the coordinator rejects the second start and
// records it in the saga — unlike Client.Start, StartTx cannot check the
// stream from inside the transaction.
func StartTx(ctx context.Context, tx pgx.Tx, ob *outbox.Outbox, ns events.Namespace, plan *Plan) (string, error) {
	start, err := plan.Build()
	if err != nil {
		return "", err
	}
	ns = ns.OrDefault()
	m, err := ns.StartMsg(start, plan.trace)
	if err != nil {
		return "", err
	}
	id := m.Header.Get(events.HeaderMsgID)
	m.Header.Del(events.HeaderMsgID) // the outbox sets it from ID
	msg := outbox.Message{ID: id, Subject: m.Subject, Header: m.Header, Data: m.Data}
	if ob == nil {
		err = outbox.Write(ctx, tx, msg)
	} else {
		err = ob.Write(ctx, tx, msg)
	}
	if err != nil {
		return "", err
	}
	return start.SagaID, nil
}
