// Package faulttest is jetsaga's fault-injection suite (test files only).
// It runs the bank-transfer example as a real deployment — the coordinator
// and both banks as separate processes of the jetsaga binary, NATS
// JetStream on disk (embedded in the test process, restartable, or a
// 3-node cluster), PostgreSQL with one database per bank (or one cluster
// per bank) — puts a mixed load on it, injects one kind of fault at random
// moments while the load runs, waits for every saga to end and every
// consumer to drain, checks every invariant of DESIGN.md with
// internal/invariants, and compares the state rebuilt from the sagas
// stream (`jetsaga replay --compare`) with the live bucket: no saga may
// differ.
//
// # Scenarios
//
//   - coordinator-kill: SIGKILL the coordinator repeatedly, restart it;
//   - participant-kill: SIGKILL bank-a or bank-b repeatedly, restart it;
//   - two-coordinators: two coordinators share the work; kill one at a time;
//   - nats-restart: restart the NATS server on its store mid-load;
//   - cluster-node-loss: 3-node cluster, R3 streams and bucket; stop one
//     node, bring it back, then another;
//   - cluster-partition: 3-node cluster, R3, its routes through proxies;
//     cut one node off from the other two for 2-4s (the services connected
//     to it stay connected), join it again, then another;
//   - pg-terminate: pg_terminate_backend on the banks' connections;
//   - duplicates: copies of commands, outcomes and starts under new
//     message ids (past JetStream's duplicate window);
//   - silent-participant: bank-b stops answering (SIGSTOP, or killed and
//     kept down) for longer than the step timeout; its late actions must be
//     refused by the barrier;
//   - malformed: bad JSON, unknown versions, wrong participants, huge
//     payloads, forged outcomes and commands for unknown actions on every
//     subject;
//   - pg-crash: each bank on a PostgreSQL cluster of its own; crash one
//     (`pg_ctl stop -m immediate`), start it again 1-4s later (crash
//     recovery), the other bank's next; after each restart the bank must
//     commit steps again;
//   - zombie-coordinator: two coordinators; SIGSTOP one for longer than a
//     step timeout (bank-b stopped meanwhile for about a step timeout, so
//     that timeouts and late outcomes race) while the other goes on, then
//     SIGKILL it and start a fresh one; the inputs it held come back after
//     the coordinators' AckWait, behind later inputs of their sagas.
//
// What "faults injected" counts: processes killed (and restarted), server
// restarts, cluster nodes stopped, cluster nodes cut off, PostgreSQL
// sessions terminated, messages copied, silences (kills and stops) of
// bank-b, malformed messages published, PostgreSQL crashes and zombie
// coordinators, respectively.
//
// # Replay
//
// Once the system is quiet, the suite runs `jetsaga replay --compare
// --json` against the scenario's NATS: every saga's state folded from the
// sagas stream (into the scratch bucket) must equal its live state. When
// some differ, the scenario fails with their ids and, for the first few,
// both states (live as `jetsaga status --json` shows it, with the saga's
// timeline; replayed as the scratch bucket holds it) and the fields in
// which they differ.
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
// Scenarios run four at a time in the short form, two in the long one,
// whatever -parallel says (they mostly wait: on a 2-core machine the short
// form takes about 2.5 minutes under -race). Filter them by name:
//
//	go test -race -count=1 -run 'TestFaults/scenario/pg-crash$' ./internal/faulttest/
//
// Each scenario prints a figures line (sagas started, committed,
// compensated, parked, faults injected, time to quiescence, replay) with
// -v, and the run ends with a markdown table of all of them. When a scenario fails,
// the tail of every process's log is printed.
package faulttest
