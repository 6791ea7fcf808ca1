package orchestrator

import (
	"context"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"

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
	if ns == (events.Namespace{}) {
		ns = events.Default
	}
	data, err := start.Encode()
	if err != nil {
		return "", err
	}
	msg := outbox.Message{
		ID:      events.StartMsgID(start.SagaID),
		Subject: ns.Start(start.SagaID),
		Header:  nats.Header{events.HeaderSagaID: []string{start.SagaID}},
		Data:    data,
	}
	if plan.trace.Parent != "" {
		msg.Header.Set(events.HeaderTraceParent, plan.trace.Parent)
		if plan.trace.State != "" {
			msg.Header.Set(events.HeaderTraceState, plan.trace.State)
		}
	}
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
