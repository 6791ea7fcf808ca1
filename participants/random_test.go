package participants

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/jetsaga/jetsaga/events"
	"github.com/jetsaga/jetsaga/participants/participanttest"
)

// TestRandomDuplicatesAndReorderings sends 1,000 commands — actions and
// compensations of many steps, with duplicates (the same attempt past the
// duplicate window, or a later attempt) — in random order to a participant
// that runs 16 at a time. Whatever order they run in, the barrier fixes the
// result: a step's action is applied exactly when no compensation of it was
// sent (an earlier compensation makes it a hanging action, a later one undoes
// it), exactly once however often it was sent.
func TestRandomDuplicatesAndReorderings(t *testing.T) {
	t.Parallel()
	b := setup(t)
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, seed))

	const total = 1000
	const sources, sinks = 3, 5
	const initial = 1_000_000
	balances := map[string]int64{}
	for i := range sources {
		balances[fmt.Sprintf("src-%d", i)] = initial
	}
	for i := range sinks {
		balances[fmt.Sprintf("dst-%d", i)] = 0
	}
	b.l.seed(t, balances)

	type stepPlan struct {
		saga, step, action, account string
		amount                      int64
		dos, undos                  int
	}
	var steps []*stepPlan
	var cmds []events.Command
	var opts [][]participanttest.SendOption
	for len(cmds) < total {
		saga := fmt.Sprintf("saga-%d", len(steps))
		sp := &stepPlan{saga: saga, step: "withdraw", action: "Withdraw",
			account: fmt.Sprintf("src-%d", rng.IntN(sources)), amount: 1 + rng.Int64N(100)}
		if rng.IntN(2) == 0 {
			sp.step, sp.action, sp.account = "deposit", "Deposit", fmt.Sprintf("dst-%d", rng.IntN(sinks))
		}
		// 0-3 actions (at least one command in all), 0-2 compensations.
		sp.dos, sp.undos = rng.IntN(4), 0
		if rng.IntN(3) == 0 {
			sp.undos = 1 + rng.IntN(2)
		}
		if sp.dos+sp.undos == 0 {
			sp.dos = 1
		}
		steps = append(steps, sp)
		add := func(op events.Op, action string, n int) {
			attempt := 1
			for i := range n {
				c := cmd(saga, sp.step, op, action, sp.account, sp.amount)
				var o []participanttest.SendOption
				if i > 0 && rng.IntN(2) == 0 {
					attempt++ // the coordinator sent it again
				} else if i > 0 {
					// the same attempt again, past the duplicate window
					o = append(o, participanttest.WithMsgID(fmt.Sprintf("dup-%d", len(cmds))))
				}
				c.Attempt = attempt
				cmds = append(cmds, c)
				opts = append(opts, o)
			}
		}
		add(events.OpDo, sp.action, sp.dos)
		add(events.OpUndo, sp.action+CompensationSuffix, sp.undos)
	}
	order := rng.Perm(len(cmds))

	p := b.newParticipant(t, nil, nil)
	start(t, p)
	for _, i := range order {
		b.send(t, cmds[i], opts[i]...)
	}
	b.settled(t, p)

	want := map[string]int64{}
	for a, v := range balances {
		want[a] = v
	}
	outcomes, err := participanttest.AllOutcomes(t.Context(), b.js, b.ns, testName)
	if err != nil {
		t.Fatal(err)
	}
	type key struct {
		saga, step string
		op         events.Op
		attempt    int
	}
	got := map[key][]participanttest.Outcome{}
	for _, o := range outcomes {
		k := key{o.SagaID, o.Step, o.Op, o.Attempt}
		got[k] = append(got[k], o)
	}
	sent := map[key]bool{}
	for _, c := range cmds {
		sent[key{c.SagaID, c.Step, c.Op, c.Attempt}] = true
	}
	if len(outcomes) != len(sent) {
		t.Errorf("%d outcomes published for %d distinct commands (%d sent with duplicates)", len(outcomes), len(sent), len(cmds))
	}
	var actionsWon, compensationsRun, refused int64
	for _, sp := range steps {
		var doStatuses, undoReasons []string
		for k, os := range got {
			if k.saga != sp.saga {
				continue
			}
			if len(os) != 1 {
				t.Errorf("%+v: %d outcomes, want 1", k, len(os))
			}
			if !sent[k] {
				t.Errorf("%+v: outcome for a command never sent", k)
			}
			for _, o := range os {
				if o.Op == events.OpDo {
					doStatuses = append(doStatuses, string(o.Status)+":"+o.Reason)
				} else {
					undoReasons = append(undoReasons, string(o.Status)+":"+o.Reason)
				}
			}
		}
		applied := sp.dos > 0 && sp.undos == 0
		if applied {
			if sp.action == "Withdraw" {
				want[sp.account] -= sp.amount
			} else {
				want[sp.account] += sp.amount
			}
		}
		// All answers of one step tell the same story.
		ran := "succeeded:"
		comp := "compensated:"
		if sp.dos > 0 && sp.undos > 0 && len(doStatuses) > 0 && doStatuses[0] != ran {
			ran, comp = "failed:"+reasonHanging, "compensated:"+reasonNullNeverRan
		} else if sp.dos == 0 {
			comp = "compensated:" + reasonNullNeverRan
		}
		for _, s := range doStatuses {
			if s != ran {
				t.Errorf("%s: action outcomes %v, want all %q", sp.saga, doStatuses, ran)
				break
			}
		}
		for _, s := range undoReasons {
			if s != comp {
				t.Errorf("%s: compensation outcomes %v (actions %v), want all %q", sp.saga, undoReasons, doStatuses, comp)
				break
			}
		}
		if sp.dos > 0 && ran != "succeeded:" {
			refused++
		}
		if sp.dos > 0 && ran == "succeeded:" {
			actionsWon++
			if sp.undos > 0 {
				compensationsRun++
			}
		}
	}
	for a, v := range want {
		if g := b.l.balance(t, a); g != v {
			t.Errorf("balance of %s = %d, want %d", a, g, v)
		}
	}
	calls := b.l.calls["Withdraw"].Load() + b.l.calls["Deposit"].Load()
	comps := b.l.calls["WithdrawCompensate"].Load() + b.l.calls["DepositCompensate"].Load()
	if calls != actionsWon || comps != compensationsRun {
		t.Errorf("handlers ran %d actions and %d compensations, want %d and %d", calls, comps, actionsWon, compensationsRun)
	}
	t.Logf("%d commands (%d distinct) over %d steps: %d actions ran, %d of them compensated, %d refused as hanging",
		len(cmds), len(sent), len(steps), actionsWon, compensationsRun, refused)
}
