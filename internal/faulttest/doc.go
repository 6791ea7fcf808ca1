// Package faulttest is jetsaga's fault-injection suite (test files only).
// It runs the bank-transfer example as a real deployment — the coordinator
// and both banks as separate processes of the jetsaga binary, NATS
// JetStream on disk (embedded in the test process, restartable, or a
// 3-node cluster), PostgreSQL with one database per bank — puts a mixed
// load on it, injects one kind of fault at random moments while the load
// runs, waits for every saga to end, and checks every invariant of
// DESIGN.md with internal/invariants.
//
// # Scenarios
//
//   - coordinator-kill: SIGKILL the coordinator repeatedly, restart it;
//   - participant-kill: SIGKILL bank-a or bank-b repeatedly, restart it;
//   - two-coordinators: two coordinators share the work; kill one at a time;
//   - nats-restart: restart the NATS server on its store mid-load;
//   - cluster-node-loss: 3-node cluster, R3 streams and bucket; stop one
//     node, bring it back, then another;
//   - pg-terminate: pg_terminate_backend on the banks' connections;
//   - duplicates: copies of commands, outcomes and starts under new
//     message ids (past JetStream's duplicate window);
//   - silent-participant: bank-b stops answering (SIGSTOP, or killed and
//     kept down) for longer than the step timeout; its late actions must be
//     refused by the barrier;
//   - malformed: bad JSON, unknown versions, wrong participants, huge
//     payloads, forged outcomes and commands for unknown actions on every
//     subject.
//
// What "faults injected" counts: processes killed (and restarted), server
// restarts, cluster nodes stopped, PostgreSQL sessions terminated, messages
// copied, silences (kills and stops) of bank-b, and malformed messages
// published, respectively.
//
// # Parked sagas
//
// A parked saga fails the check except in the malformed scenario, where an
// unreadable command answered while the same participant's compensation is
// in flight legitimately parks the saga (the anonymous rejection does not
// say which command could not be read). The suite then redrives such sagas,
// as an operator would, and they must end like any other.
//
// # Running
//
//	go test -race -count=1 ./internal/faulttest/               # short form
//	JETSAGA_SOAK=1 go test -count=1 -timeout 2h -v ./internal/faulttest/   # ≥ 5,000 sagas per scenario
//
// Each scenario prints a figures line (sagas started, committed,
// compensated, parked, faults injected, time to quiescence) with -v, and
// the run ends with a markdown table of all of them. When a scenario fails,
// the tail of every process's log is printed.
package faulttest
