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
// compare-and-set, then publishes the transition's commands and timer (kept in
// State.Pending) and acks. Writing before publishing means no command is ever
// published for a transition that lost its compare-and-set; a crash between
// the write and the publish is repaired by whoever loads the state next,
// which publishes Pending again (message ids make that idempotent). On a
// conflict with another instance the worker reloads and recomputes. An input
// that a cached state would drop is checked against the bucket first, since
// another instance may have moved the saga on.
// The first transition is not written: a new saga's state is a function of
// its start message, which the stream keeps, so the bucket receives the state
// with the saga's first outcome, and until then the start message is folded
// wherever the state is needed (one write less per saga).
//
// Timers (step timeouts, the saga deadline, re-sends) are JetStream message
// schedules: one pending schedule per saga on <prefix>.sched.<id>, targeting
// <prefix>.tick.<id>, moved only ever earlier; they fire even if every
// coordinator is down, and the tick waits in the stream. Schedules have a
// one-second resolution; a timer never fires early.
//
// A saga that cannot make progress on its own is Parked with a reason;
// [Client.Redrive], [Client.Skip] and [Client.Resolve] are the operator's
// tools, and `jetsaga list --status parked` finds them.
package orchestrator
