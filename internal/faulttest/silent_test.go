package faulttest

import (
	"context"
	"math/rand/v2"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/jetsaga/jetsaga/events"
	"github.com/jetsaga/jetsaga/examples/bank"
	"github.com/jetsaga/jetsaga/internal/invariants"
	"github.com/jetsaga/jetsaga/participants"
)

const sigCont = syscall.SIGCONT

// silence is how long bank-b stays silent: well past the step timeout, so
// that credits time out and are compensated, and well within the
// compensation's budget (DefaultRetry: 10 sends, one per step timeout), so
// that no saga parks.
const silence = stepTimeout*5/2 + 500*time.Millisecond

// silenceBankB makes bank-b stop answering, in turn:
//   - frozen (SIGSTOP) until JetStream has delivered it commands it cannot
//     acknowledge, then killed and kept down for `silence`, then restarted:
//     the commands the dead process held come back only after its AckWait
//     (30s), long after their sagas compensated; the compensation ran first
//     (a null compensation that voids the action), so these late actions
//     must be refused;
//   - frozen (SIGSTOP) for `silence`, then resumed (SIGCONT): its handlers
//     in flight commit after the coordinator gave up on them, and the
//     compensations that follow must undo them.
//
// Every silence stalls the load, so the short form has one of each (after
// 0.5-1.5s of load), the long form one every 10-20s.
func silenceBankB(ctx context.Context, s *system, rng *rand.Rand) (int, error) {
	n := 0
	lo, hi, limit := 500*time.Millisecond, 1500*time.Millisecond, 2
	if soak() {
		lo, hi, limit = 10*time.Second, 20*time.Second, 0
	}
	for (limit == 0 || n < limit) && pause(ctx, rng, lo, hi) {
		if err := s.bankB.signal(syscall.SIGSTOP); err != nil {
			return n, err
		}
		n++
		if n%2 == 0 {
			time.Sleep(silence)
			if err := s.bankB.signal(sigCont); err != nil {
				return n, err
			}
			continue
		}
		began := time.Now()
		if err := s.waitHeld(bank.BankB, silence); err != nil {
			return n, err
		}
		if err := s.bankB.kill(); err != nil {
			return n, err
		}
		time.Sleep(max(silence-time.Since(began), time.Second))
		if err := s.bankB.start(); err != nil {
			return n, err
		}
	}
	return n, nil
}

// minHeld is how many commands a frozen bank-b should hold before it is
// killed.
const minHeld = 5

// waitHeld waits up to timeout until participant's consumer has minHeld
// commands delivered and not acknowledged (held by a frozen process).
func (s *system) waitHeld(participant string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		cons, err := s.js.Consumer(ctx, events.Default().CommandsStream(), events.Default().ParticipantConsumer(participant))
		if err != nil {
			return err
		}
		info, err := cons.Info(ctx)
		if err != nil {
			return err
		}
		if info.NumAckPending >= minHeld {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil // nothing came: kill it anyway
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// verifyLateActionsRefused checks that the barrier did its job: some credits
// were voided by their compensation, and late actions of such sagas arrived
// and were refused (their outcome says so), without effect — which the
// invariants already proved for every voided row.
func verifyLateActionsRefused(t *testing.T, s *system, _ []*started, rep *invariants.Report) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rows, err := s.poolB.Query(ctx, `SELECT saga_id FROM `+participants.DefaultBarrierTable+`
WHERE step = 'credit' AND op = 'do' AND status = 'voided' LIMIT 200`)
	if err != nil {
		t.Fatal(err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	refused := 0
	for _, id := range ids {
		entries, err := s.client.Timeline(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if strings.Contains(e.Summary, "hanging action") {
				refused++
			}
		}
	}
	t.Logf("%d credits voided by their compensation; %d late actions of %d of them refused by the barrier",
		rep.VoidedActions, refused, len(ids))
	if rep.VoidedActions == 0 || len(ids) == 0 {
		t.Errorf("no action was voided by its compensation: bank-b was never silent while holding a credit")
	}
	if refused == 0 {
		t.Errorf("no late action was refused: none of the %d voided credits arrived after its compensation", len(ids))
	}
}
