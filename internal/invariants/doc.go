// Package invariants checks, after a load of bank transfers (examples/bank),
// the invariants that DESIGN.md asks of every fault test. The benchmark
// engine (internal/bench) and the fault-injection suite
// (internal/faulttest) share it.
//
// # What it checks
//
// Given the two banks' pools, the balances before the load and the list of
// transfers started, [Check] reads each saga's final state itself (through
// an orchestrator.Client, by id) and the barrier rows of both banks, then
// verifies that:
//
//   - every start leads to a saga findable by its id, holding the plan that
//     was started (a start that was never acknowledged may have been lost: if
//     no saga has its id, nothing of it may exist in the banks either; with
//     Config.AllowExpired, a finished saga that a run longer than the
//     streams' max age let expire is checked against the status the load
//     saw, Transfer.Final, and its barrier rows);
//   - every saga is terminal: committed or compensated; parked only when the
//     caller allows it (Config.AllowParked), and then with a reason;
//   - the barrier rows agree with the final states: a committed saga's
//     debit and credit actions succeeded and were not compensated; a
//     compensated saga's steps either never took effect (action failed,
//     rejected, voided by its compensation, or absent) or were undone
//     (action succeeded and compensation committed); a step the coordinator
//     recorded as failed left no effect;
//   - no action ran after its compensation: a do row "voided" (written by a
//     compensation that found no action) has no balance effect;
//   - every account holds exactly what the committed sagas say (the initial
//     balance, minus the committed debits, plus the committed credits, plus
//     the effects of allowed parked sagas as their barrier rows record them),
//     so a committed saga applied each action exactly once and a compensated
//     one left no net effect;
//   - money is conserved: the sum of all balances is the initial sum, save
//     for money that allowed parked sagas hold in flight;
//   - no balance is negative;
//   - barrier rows of sagas that were not started (forged commands) took no
//     effect.
//
// # Use
//
//	rep, err := invariants.Check(ctx, invariants.Config{
//		Client: client, BankA: poolA, BankB: poolB,
//		InitialA: before.A, InitialB: before.B,
//		Transfers: started,
//	})
//	if err != nil { ... } // the check could not be carried out
//	if !rep.OK() { t.Fatal(rep.Violations) }
//
// Violations are human-readable sentences naming the saga, the bank and the
// account concerned; at most Config.MaxViolations are listed, and
// Report.ViolationCount counts them all.
package invariants
