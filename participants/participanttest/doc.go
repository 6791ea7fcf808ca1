// Package participanttest helps test participants against real NATS
// JetStream: create the streams, send step commands the way the coordinator
// does, and read back the outcomes the participant published. It does not
// replace NATS or PostgreSQL; run both (an embedded nats-server is enough).
//
//	ns := events.Default()
//	if err := participanttest.CreateStreams(ctx, js, ns, events.StreamOptions{}); err != nil { ... }
//	// ... start the participant ...
//	cmd := events.Command{SagaID: "s1", Participant: "bank-a", Step: "debit", Op: events.OpDo,
//		Attempt: 1, Action: "TransOut", Payload: json.RawMessage(`{"user_id":1,"amount":"30.00"}`)}
//	if _, err := participanttest.Send(ctx, js, ns, cmd); err != nil { ... }
//	out, err := participanttest.WaitOutcome(ctx, js, ns, cmd)
package participanttest
