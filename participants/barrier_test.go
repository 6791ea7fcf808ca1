package participants

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/jetsaga/jetsaga/events"
	"github.com/jetsaga/jetsaga/participants/participanttest"
)

// The sub-transaction barrier cases of DTM, each through the full path:
// command in JetStream → participant → outcome in the sagas stream.

func TestDoSucceeds(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.l.seed(t, map[string]int64{"alice": 100})
	p := b.newParticipant(t, nil, nil)
	start(t, p)

	c := cmd("s1", "debit", events.OpDo, "Withdraw", "alice", 30)
	b.send(t, c, participanttest.WithHeader(events.HeaderTraceParent, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"))
	o := b.wait(t, c)
	if o.Status != events.Succeeded || o.Participant != testName || o.SagaID != "s1" {
		t.Fatalf("outcome = %+v, want succeeded from %s for s1", o.Outcome, testName)
	}
	var res struct {
		Account string `json:"account"`
		Moved   int64  `json:"moved"`
	}
	if err := json.Unmarshal(o.Result, &res); err != nil || res.Account != "alice" || res.Moved != 30 {
		t.Fatalf("result = %s (%v), want the handler's result", o.Result, err)
	}
	wantHeaders := map[string]string{
		events.HeaderMsgID:       "s1/debit/do/1/succeeded",
		events.HeaderSagaID:      "s1",
		events.HeaderStep:        "debit",
		events.HeaderOp:          "do",
		events.HeaderAttempt:     "1",
		events.HeaderParticipant: testName,
		events.HeaderTraceParent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
	}
	for k, v := range wantHeaders {
		if got := o.Header.Get(k); got != v {
			t.Errorf("header %s = %q, want %q", k, got, v)
		}
	}
	if got := b.l.balance(t, "alice"); got != 70 {
		t.Fatalf("balance = %d, want 70", got)
	}
	r, ok := b.barrierRow(t, "s1", "debit", events.OpDo)
	if !ok || r.status != statusSucceeded || !strings.Contains(string(r.result), `"moved": 30`) {
		t.Fatalf("barrier row = %+v (found %v), want succeeded with the result", r, ok)
	}
	b.settled(t, p)
}

func TestDuplicateDo(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.l.seed(t, map[string]int64{"alice": 100})
	p := b.newParticipant(t, nil, nil)
	start(t, p)

	c := cmd("s1", "debit", events.OpDo, "Withdraw", "alice", 30)
	b.send(t, c)
	first := b.wait(t, c)
	b.settled(t, p)

	// The same command again, past JetStream's duplicate window (a fresh
	// Nats-Msg-Id): the barrier skips it and re-sends the same outcome,
	// whose id JetStream drops.
	b.send(t, c, participanttest.WithMsgID("late-duplicate"))
	b.settled(t, p)
	// The coordinator sends the step again after a timeout (attempt 2):
	// skipped too, answered under attempt 2 with the stored result.
	c2 := c
	c2.Attempt = 2
	b.send(t, c2)
	second := b.wait(t, c2)
	b.settled(t, p)

	if got := b.l.calls["Withdraw"].Load(); got != 1 {
		t.Fatalf("Withdraw ran %d times, want 1", got)
	}
	if got := b.l.balance(t, "alice"); got != 70 {
		t.Fatalf("balance = %d, want 70", got)
	}
	if second.Status != events.Succeeded || !sameJSON(second.Result, first.Result) {
		t.Fatalf("attempt 2 outcome = %s %s, want succeeded with %s", second.Status, second.Result, first.Result)
	}
	if os := b.outcomes(t, "s1"); len(os) != 2 {
		t.Fatalf("%d outcomes published, want 2 (attempt 1 once, attempt 2 once): %+v", len(os), os)
	}
}

func TestDuplicateUndo(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.l.seed(t, map[string]int64{"alice": 100})
	p := b.newParticipant(t, nil, nil)
	start(t, p)

	do := cmd("s1", "debit", events.OpDo, "Withdraw", "alice", 30)
	b.send(t, do)
	b.wait(t, do)
	undo := cmd("s1", "debit", events.OpUndo, "WithdrawCompensate", "alice", 30)
	b.send(t, undo)
	if o := b.wait(t, undo); o.Status != events.Compensated || o.Reason != "" {
		t.Fatalf("undo outcome = %+v, want compensated (a real compensation, no reason)", o.Outcome)
	}
	b.send(t, undo, participanttest.WithMsgID("late-duplicate"))
	undo2 := undo
	undo2.Attempt = 2
	b.send(t, undo2)
	if o := b.wait(t, undo2); o.Status != events.Compensated {
		t.Fatalf("duplicate undo outcome = %+v, want compensated", o.Outcome)
	}
	b.settled(t, p)

	if got := b.l.calls["WithdrawCompensate"].Load(); got != 1 {
		t.Fatalf("WithdrawCompensate ran %d times, want 1", got)
	}
	if got := b.l.balance(t, "alice"); got != 100 {
		t.Fatalf("balance = %d, want 100", got)
	}
	if os := b.outcomes(t, "s1"); len(os) != 3 {
		t.Fatalf("%d outcomes, want 3 (do, undo, undo attempt 2)", len(os))
	}
}

func TestUndoBeforeDo(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.l.seed(t, map[string]int64{"alice": 100})
	p := b.newParticipant(t, nil, nil)
	start(t, p)

	// The compensation overtakes its action (the action timed out in the
	// coordinator's view, say): null compensation.
	undo := cmd("s1", "debit", events.OpUndo, "WithdrawCompensate", "alice", 30)
	b.send(t, undo)
	o := b.wait(t, undo)
	if o.Status != events.Compensated || o.Reason != reasonNullNeverRan {
		t.Fatalf("undo outcome = %+v, want compensated with reason %q", o.Outcome, reasonNullNeverRan)
	}
	// The late action is refused: hanging.
	do := cmd("s1", "debit", events.OpDo, "Withdraw", "alice", 30)
	b.send(t, do)
	o = b.wait(t, do)
	if o.Status != events.Failed || o.Reason != reasonHanging {
		t.Fatalf("late do outcome = %+v, want failed with reason %q", o.Outcome, reasonHanging)
	}
	b.settled(t, p)

	if n := b.l.calls["Withdraw"].Load() + b.l.calls["WithdrawCompensate"].Load(); n != 0 {
		t.Fatalf("handlers ran %d times, want 0", n)
	}
	if got := b.l.balance(t, "alice"); got != 100 {
		t.Fatalf("balance = %d, want 100", got)
	}
	if r, _ := b.barrierRow(t, "s1", "debit", events.OpDo); r.status != statusVoided {
		t.Fatalf("do row status = %q, want %q", r.status, statusVoided)
	}
}

func TestFailedDoThenUndo(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.l.seed(t, map[string]int64{"alice": 10})
	p := b.newParticipant(t, nil, nil)
	start(t, p)

	do := cmd("s1", "debit", events.OpDo, "Withdraw", "alice", 30)
	b.send(t, do)
	o := b.wait(t, do)
	if o.Status != events.Failed || !strings.Contains(o.Reason, "insufficient balance") {
		t.Fatalf("do outcome = %+v, want failed: insufficient balance", o.Outcome)
	}
	undo := cmd("s1", "debit", events.OpUndo, "WithdrawCompensate", "alice", 30)
	b.send(t, undo)
	o = b.wait(t, undo)
	if want := fmt.Sprintf(reasonNullFailedFmt, statusFailed); o.Status != events.Compensated || o.Reason != want {
		t.Fatalf("undo outcome = %+v, want compensated with reason %q", o.Outcome, want)
	}
	b.settled(t, p)
	if got := b.l.calls["WithdrawCompensate"].Load(); got != 0 {
		t.Fatalf("the compensation ran %d times after a failed action, want 0", got)
	}
	if got := b.l.balance(t, "alice"); got != 10 {
		t.Fatalf("balance = %d, want 10", got)
	}
}

// TestFailRollsBackTheHandler checks the savepoint: a handler that wrote and
// then failed leaves nothing behind, yet the failure itself commits.
func TestFailRollsBackTheHandler(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.l.seed(t, map[string]int64{"alice": 100, "bob": 0})
	p := b.newParticipant(t, nil, nil)
	// Deposit to bob first, then fail: the deposit must not survive.
	Register(p, "CreditThenFail", Step[move]{Do: func(ctx context.Context, tx pgx.Tx, info StepInfo, m move) (any, error) {
		if err := credit(ctx, tx, m); err != nil {
			return nil, err
		}
		return nil, Fail("changed my mind")
	}})
	start(t, p)
	c := cmd("s1", "s", events.OpDo, "CreditThenFail", "bob", 5)
	b.send(t, c)
	if o := b.wait(t, c); o.Status != events.Failed || o.Reason != "changed my mind" {
		t.Fatalf("outcome = %+v, want failed: changed my mind", o.Outcome)
	}
	if got := b.l.balance(t, "bob"); got != 0 {
		t.Fatalf("bob's balance = %d after a failed step, want 0", got)
	}
	if r, ok := b.barrierRow(t, "s1", "s", events.OpDo); !ok || r.status != statusFailed || r.reason == nil || *r.reason != "changed my mind" {
		t.Fatalf("barrier row = %+v, want failed with the reason", r)
	}
}

// TestConcurrentDoAndUndo races the action and the compensation of one
// step in two goroutines, many times: exactly one order wins each time and
// the balance is unchanged in the end either way.
func TestConcurrentDoAndUndo(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const iterations = 200
	const amount = 7
	b.l.seed(t, map[string]int64{"alice": iterations * amount})
	p := b.newParticipant(t, nil, nil)
	// Keep the action open a little so that the compensation often
	// arrives while it runs.
	b.l.setHook(func(ctx context.Context, info StepInfo) error {
		if info.Op == events.OpDo {
			time.Sleep(time.Duration(rand.IntN(2000)) * time.Microsecond)
		}
		return nil
	})
	ctx := t.Context()
	doWon, undoWon := 0, 0
	for i := range iterations {
		saga := fmt.Sprintf("race-%d", i)
		do := cmd(saga, "debit", events.OpDo, "Withdraw", "alice", amount)
		undo := cmd(saga, "debit", events.OpUndo, "WithdrawCompensate", "alice", amount)
		var wg sync.WaitGroup
		var vDo, vUndo verdict
		run := func(c events.Command, seq uint64, v *verdict) {
			defer wg.Done()
			time.Sleep(time.Duration(rand.IntN(1500)) * time.Microsecond)
			*v = p.runCommand(ctx, &job{seq: seq, delivered: 1, cmd: &c, budget: c.Retry})
		}
		wg.Add(2)
		go run(do, uint64(2*i+1), &vDo)
		go run(undo, uint64(2*i+2), &vUndo)
		wg.Wait()
		if vDo.kind != vCommitted || vUndo.kind != vCommitted || vDo.out == nil || vUndo.out == nil {
			t.Fatalf("%s: verdicts do %+v, undo %+v; want both committed, each with its outcome", saga, vDo, vUndo)
		}
		doRow, _ := b.barrierRow(t, saga, "debit", events.OpDo)
		undoRow, _ := b.barrierRow(t, saga, "debit", events.OpUndo)
		switch doRow.status {
		case statusSucceeded:
			doWon++
			if vDo.out.Status != events.Succeeded || vUndo.out.Status != events.Compensated || vUndo.out.Reason != "" {
				t.Fatalf("%s: the action won but the outcomes are do %+v, undo %+v", saga, vDo.out, vUndo.out)
			}
			if undoRow.reason != nil {
				t.Fatalf("%s: the action won but the compensation was a null one (%q)", saga, *undoRow.reason)
			}
		case statusVoided:
			undoWon++
			if undoRow.reason == nil || *undoRow.reason != reasonNullNeverRan {
				t.Fatalf("%s: the compensation won but its row says %v", saga, undoRow.reason)
			}
			if vDo.out.Status != events.Failed || vDo.out.Reason != reasonHanging || vUndo.out.Reason != reasonNullNeverRan {
				t.Fatalf("%s: the compensation won but the outcomes are do %+v, undo %+v", saga, vDo.out, vUndo.out)
			}
		default:
			t.Fatalf("%s: do row status %q", saga, doRow.status)
		}
	}
	t.Logf("the action won %d races, the compensation %d", doWon, undoWon)
	if doWon == 0 || undoWon == 0 {
		t.Fatalf("only one order happened (action first %d, compensation first %d): the race was not exercised", doWon, undoWon)
	}
	if got := b.l.balance(t, "alice"); got != iterations*amount {
		t.Fatalf("balance = %d, want %d", got, iterations*amount)
	}
	if got, want := b.l.calls["WithdrawCompensate"].Load(), int64(doWon); got != want {
		t.Fatalf("the compensation ran %d times, want %d (once per race the action won)", got, want)
	}
}

// sameJSON reports whether a and b hold the same JSON value (the barrier
// stores results as jsonb, which does not keep key order).
func sameJSON(a, b []byte) bool {
	var va, vb any
	if json.Unmarshal(a, &va) != nil || json.Unmarshal(b, &vb) != nil {
		return false
	}
	ja, _ := json.Marshal(va)
	jb, _ := json.Marshal(vb)
	return string(ja) == string(jb)
}

// TestFailAfterAFailedStatement: a handler may turn a failed statement (here
// a check violation, which aborts the transaction) into a business failure.
func TestFailAfterAFailedStatement(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.l.seed(t, map[string]int64{"alice": 10})
	p := b.newParticipant(t, nil, nil)
	Register(p, "Overdraw", Step[move]{Do: func(ctx context.Context, tx pgx.Tx, info StepInfo, m move) (any, error) {
		_, err := tx.Exec(ctx, `UPDATE ledger SET balance = balance - $2 WHERE account = $1`, m.Account, m.Amount)
		if isCheckViolation(err) {
			return nil, Failf("account %s would go negative", m.Account)
		}
		return nil, err
	}})
	start(t, p)
	c := cmd("s1", "s", events.OpDo, "Overdraw", "alice", 30)
	b.send(t, c)
	if o := b.wait(t, c); o.Status != events.Failed || o.Reason != "account alice would go negative" {
		t.Fatalf("outcome = %+v, want failed", o.Outcome)
	}
	if got := b.l.balance(t, "alice"); got != 10 {
		t.Fatalf("balance = %d, want 10", got)
	}
	b.settled(t, p)
}

func isCheckViolation(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23514"
}
