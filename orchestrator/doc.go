// Package orchestrator is jetsaga's coordinator: the saga plan model and its
// builder, the pure state machine [Next], the [Coordinator] service that
// drives sagas from the JetStream streams, the [Client] that starts sagas and
// reads their state, and [Replay], which rebuilds every saga's state from the
// streams.
//
// # Plans
//
// A saga's start message carries its whole plan, so the coordinator needs no
// user code and every saga keeps the plan it started with:
//
//	plan := orchestrator.NewPlan("transfer").
//		Step("debit", "bank-a", "TransOut", "TransOutCompensate", req).
//		Step("credit", "bank-b", "TransIn", "TransInCompensate", req,
//			orchestrator.Timeout(10*time.Second))
//	id, err := client.Start(ctx, plan)
//	state, err := client.Wait(ctx, id)
//
// Steps run in the order they are added; [After] makes a step wait for named
// steps instead (a DAG: independent steps run in parallel). Steps are
// compensable (the default), at most one [Plan.Pivot] (no undo: once it
// succeeds the saga goes forward) and [Plan.Retriable] steps after it. Build
// rejects a plan that puts a compensable step after or beside a step without
// compensation, with an error naming the step and field.
//
// # The state machine
//
// [Next](state, input) → (state', commands) is pure and deterministic. Every
// time it records comes from the stream timestamps of the inputs, so folding
// the sagas stream through it reproduces the live state, key by key. Outcomes
// for a command that is no longer current (a duplicate, a stale attempt)
// change nothing; inputs that are wrong (undecodable, from a participant that
// does not own the step, for an unknown step, a second start with another
// plan) are rejected and recorded in the saga's Rejections.
//
// On a failure the saga compensates exactly the steps that may have had an
// effect — those that succeeded, timed out, or were still running — in
// reverse dependency order: a step is undone only after every step that
// waits for it is settled. A step whose outcome is "failed" is not undone:
// its participant rolled its work back to a savepoint and committed the
// failed outcome in the same transaction, so a TransIn that committed and
// then reported failure is impossible by construction. A step that timed out
// is undone too; the participant's barrier turns an undo that overtakes its
// action into a null compensation and refuses the late action.
//
// # The coordinator
//
// Any number of coordinator instances share one durable consumer on the
// sagas stream. Messages of one saga go to one worker of an instance, in
// order. Per message a worker loads the state (from its cache, or the state
// bucket with its revision), computes Next, writes the new state with
// compare-and-set, then publishes the transition's commands (kept in
// State.Pending), and acks once both are stored: a command is only ever
// published for a transition that is the saga's. A crash before the publish is repaired
// by whoever loads the state next, which publishes Pending again (message ids
// make that idempotent). On a conflict with another instance the worker
// reloads and recomputes. An input
// that a cached state would drop is checked against the bucket first, since
// another instance may have moved the saga on.
// The first transition is written like the others, so a saga is listed from
// its start.
//
// Each saga's inputs are applied in stream order, whatever order JetStream
// delivers them in (a redelivery after a crash, a nak or another instance's
// hold comes after later messages): State.Seq is the stream sequence of the
// last input a state includes; before applying a later input a worker reads
// the saga's inputs in between from the stream (direct gets on the saga's
// literal subjects) and applies them first, and an input at or below Seq is
// acknowledged without effect. An instance skips those reads for inputs its
// own consecutive deliveries vouch for. Every state written is therefore
// the fold of the stream up to its Seq, which is what Fold and Replay
// compute. Every step has a timeout: its own, or Config.StepTimeout
// (DefaultStepTimeout unless set), recorded in the saga's state at its start.
//
// Timers (step timeouts, the saga deadline, re-sends) are the state's
// TimerMS, one per saga, moved only ever earlier. Every instance watches the
// state bucket and publishes a saga's tick on <prefix>.tick.<id> when its
// timer falls due (events.TickMsgID makes the instances' ticks one message);
// a timer costs no message until then. One that falls due while no
// instance runs fires once the first one has read the bucket.
//
// A saga that cannot make progress on its own is Parked with a reason;
// [Client.Redrive], [Client.Skip] and [Client.Resolve] are the operator's
// tools, and `jetsaga list --status parked` finds them. The coordinator
// logs a saga that parks once, at WARN, with its reason, step and
// participant.
//
// # Metrics and traces
//
// Nothing is measured and no span is recorded unless asked for, and nothing
// is global. Config.Registerer takes a prometheus.Registerer (one
// coordinator per registry) and receives: jetsaga_sagas_started_total{name},
// jetsaga_sagas_finished_total{name,status},
// jetsaga_sagas_parked_total{name},
// jetsaga_saga_duration_seconds{name,status} (from stream timestamps),
// jetsaga_sagas{name,status} and jetsaga_saga_oldest_age_seconds{status} for
// the running, compensating and parked sagas,
// jetsaga_coordinator_commands_published_total{participant,op},
// jetsaga_coordinator_outcomes_total{participant,status},
// jetsaga_coordinator_rejections_total{reason},
// jetsaga_coordinator_redeliveries_total, the Stats counters
// (jetsaga_coordinator_messages_*_total, _cas_conflicts_total,
// _timers_fired_total, _errors_total, _unconsumed_commands_total) and
// every durable consumer's pending and ack-pending counts, read from
// JetStream when scraped. Labels are bounded: saga names and participants
// past Config.MaxLabelValues become "other", and no label carries a saga id.
//
// The gauges come from a census that watches the state bucket, so every
// instance reports every saga (aggregate instances with max, not sum): it
// reads the bucket once when it starts, then the status and name at the
// head of each state written, and keeps only unfinished sagas in memory.
//
// Config.TracerProvider records, in the trace of the saga's start, a span
// per transition (a child of the input's trace context: the client's span
// of Start, or the participant step that sent an outcome) and a span per
// command published (whose context the command carries to the
// participant). [WithTracerProvider] gives the client a span for Start, the
// root of the saga's trace. Without a provider no span, context or header
// is made: the start's W3C trace context is passed on as before.
package orchestrator
