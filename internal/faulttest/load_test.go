package faulttest

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/jetsaga/jetsaga/examples/bank"
	"github.com/jetsaga/jetsaga/internal/invariants"
	"github.com/jetsaga/jetsaga/orchestrator"
)

// Load parameters.
const (
	// stepTimeout bounds each step's attempt: a step without an outcome by
	// then is compensated (or its compensation sent again), so that no
	// saga waits forever for a participant that is gone.
	stepTimeout = 3 * time.Second
	// waitTimeout bounds one load worker's wait for its saga; a saga still
	// running then is waited for again after the faults stop.
	waitTimeout = 20 * time.Second
	waitSlice   = 5 * time.Second
	// startTries bounds the publishes of one start (with startPause
	// between them) before it is recorded as unacknowledged.
	startTries = 40
	startPause = 250 * time.Millisecond
	startCall  = 5 * time.Second
)

// started is one saga of the load.
type started struct {
	tr invariants.Transfer
	// kind is what the load meant it to be: "ok", "abnormal" (TransIn
	// refuses the account) or "insufficient" (TransOut cannot debit).
	kind string

	mu      sync.Mutex
	began   time.Time
	latency time.Duration       // start to end as the load saw it; 0 if it did not wait to the end
	status  orchestrator.Status // "" until it settled
	done    bool                // settled (or an unacknowledged start that never became a saga)
}

func (x *started) setStatus(s orchestrator.Status) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.status, x.done = s, true
}

func (x *started) settled() bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.done
}

// load is the generator: concurrency workers each start a transfer, wait
// for its end, and start the next, until n transfers were started. Starts
// are paced at rate per second at most, so that the load lasts long enough
// for the faults to hit it.
type load struct {
	s           *system
	n           int
	concurrency int
	rate        float64
	seed        uint64

	issued atomic.Int64
	// startRetries counts publishes of a start that failed and were
	// tried again; waitTimeouts counts sagas the load gave up waiting for;
	// missedWakeups counts sagas that had settled while Client.Wait, for
	// waitSlice, had not noticed.
	startRetries, waitTimeouts, missedWakeups atomic.Int64
	mu                                        sync.Mutex
	sagas                                     []*started
	// onStart, when set, is called with every saga started (a scenario
	// that targets running sagas).
	onStart func(*started)
}

// run runs the load to its end (or until ctx ends) and returns the sagas.
func (l *load) run(ctx context.Context) []*started {
	tokens := make(chan struct{})
	pacerCtx, stopPacer := context.WithCancel(ctx)
	defer stopPacer()
	go func() {
		tick := time.NewTicker(time.Duration(float64(time.Second) / l.rate))
		defer tick.Stop()
		for {
			select {
			case <-pacerCtx.Done():
				close(tokens)
				return
			case <-tick.C:
				select {
				case tokens <- struct{}{}:
				case <-pacerCtx.Done():
				}
			}
		}
	}()
	var wg sync.WaitGroup
	for w := range l.concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(l.seed, uint64(w)))
			for ctx.Err() == nil && l.issued.Add(1) <= int64(l.n) {
				if _, ok := <-tokens; !ok {
					return
				}
				x := l.one(ctx, rng)
				if x == nil {
					return
				}
				l.mu.Lock()
				l.sagas = append(l.sagas, x)
				l.mu.Unlock()
				if l.onStart != nil {
					l.onStart(x)
				}
				if x.tr.Unacked {
					continue
				}
				l.wait(ctx, x)
			}
		}()
	}
	wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.sagas
}

// wait waits for x to settle, up to waitTimeout: with Client.Wait, in
// slices of waitSlice each followed by a look with Get, since Wait relies on
// a watch that a NATS restart interrupts for a while. A saga that Get found
// settled while Wait still waited counts as a missed wake-up.
func (l *load) wait(ctx context.Context, x *started) {
	deadline := time.Now().Add(waitTimeout)
	for ctx.Err() == nil && time.Now().Before(deadline) {
		c, cancel := context.WithTimeout(ctx, waitSlice)
		st, err := l.s.client.Wait(c, x.tr.ID)
		cancel()
		if err != nil {
			st, err = l.s.get(ctx, x.tr.ID)
			if err != nil || !(st.Status.Terminal() || st.Status == orchestrator.Parked) {
				continue
			}
			l.missedWakeups.Add(1)
		}
		x.setStatus(st.Status)
		x.mu.Lock()
		x.latency = time.Since(x.began)
		x.mu.Unlock()
		return
	}
	if ctx.Err() == nil {
		l.waitTimeouts.Add(1)
	}
}

// one starts a random transfer: mostly transfers that succeed (amounts from
// 0.01 to 50.00), a tenth to an abnormal account at bank-b (TransIn fails,
// TransOut is compensated) and a tenth larger than any balance (TransOut
// fails). Debits also fail when earlier transfers emptied the account.
func (l *load) one(ctx context.Context, rng *rand.Rand) *started {
	s := l.s
	n := len(s.initA)
	from := int64(1 + rng.IntN(n))
	normal := func() int64 { return int64(s.abnormal + 1 + rng.IntN(n-s.abnormal)) }
	x := &started{kind: "ok"}
	var to int64
	amount := bank.Cents(1 + rng.IntN(50_00))
	switch r := rng.Float64(); {
	case r < 0.1:
		x.kind, to = "abnormal", int64(1+rng.IntN(s.abnormal))
	case r < 0.2:
		x.kind, to = "insufficient", normal()
		amount = bank.Cents(10_000_00 + rng.IntN(10_000_00))
	default:
		to = normal()
	}
	id, err := uuid.NewV7()
	if err != nil {
		s.t.Errorf("saga id: %v", err)
		return nil
	}
	plan := bank.TransferPlan(id.String(), from, to, amount, orchestrator.Timeout(stepTimeout))
	x.began = time.Now()
	x.tr = invariants.Transfer{From: from, To: to, Amount: amount}
	// The load chooses the id, so publishing the start again is idempotent
	// (same message id; a duplicate is compared with the stored start): a
	// plan without an id would get a new one at each try, and a try whose
	// acknowledgement was lost would run a saga the load does not know.

	for try := 0; try < startTries; try++ {
		c, cancel := context.WithTimeout(ctx, startCall)
		x.tr.ID, err = s.client.Start(c, plan)
		cancel()
		if err == nil || x.tr.ID == "" || ctx.Err() != nil {
			break
		}
		l.startRetries.Add(1)
		select {
		case <-ctx.Done():
		case <-time.After(startPause):
		}
	}
	switch {
	case x.tr.ID == "":
		s.t.Errorf("transfer plan: %v", err)
		return nil
	case err != nil && !errors.Is(err, context.Canceled):
		s.t.Logf("start of %s never acknowledged: %v", x.tr.ID, err)
		x.tr.Unacked = true
	case err != nil:
		x.tr.Unacked = true
	}
	return x
}
