package faulttest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jetsaga/jetsaga/internal/invariants"
)

// Sizes of the short form (go test ./...) and of the long one
// (JETSAGA_SOAK=1).
const (
	shortSagas       = 300
	soakSagas        = 5000
	shortConcurrency = 16
	soakConcurrency  = 32
	// The load's pace: starts per second at most (the load lasts about
	// 15s in the short form, 2 minutes in the long one).
	shortRate       = 20.0
	soakRate        = 40.0
	accountsPerBank = 300
	shortQuiesce    = 2 * time.Minute
	soakQuiesce     = 10 * time.Minute
	// loadTimeout bounds the load phase of one scenario.
	shortLoadTimeout = 3 * time.Minute
	soakLoadTimeout  = 30 * time.Minute
)

// soak reports whether the long form runs.
func soak() bool { return os.Getenv("JETSAGA_SOAK") == "1" }

// injector injects one kind of fault at random moments until ctx ends,
// then leaves the system whole (every process it stopped restarted, every
// server it stopped started) and returns the number of faults injected. An
// error means it could not go on (the scenario fails).
type injector func(ctx context.Context, s *system, rng *rand.Rand) (int, error)

// scenario is one kind of fault.
type scenario struct {
	name   string
	deploy deployment
	inject injector
	// prepare, if set, runs before the load (e.g. to follow the sagas it
	// starts); verify, if set, runs after the invariants were checked.
	prepare func(s *system, l *load)
	verify  func(t *testing.T, s *system, sagas []*started, rep *invariants.Report)
	// parkedOK, if set, says which parked sagas the scenario makes
	// legitimate (by their reason): once the system is quiet the test
	// redrives them, as an operator would, and they must end like any
	// other. Any other parked saga is a violation.
	parkedOK func(reason string) bool
}

// figures are what a scenario prints.
type figures struct {
	scenario                       string
	started, unacked               int
	committed, compensated, parked int
	faults                         int
	voided                         int
	load, quiesce                  time.Duration
	violations                     int
	ok                             bool
	sagasPerSecond                 float64
	startRetries, waitTimeouts     int64
	missedWakeups                  int64
	redriven                       int
	pgSettings                     string
	p50, p99, maxLatency           time.Duration
	replay                         *replayCheck // nil: not compared
}

func (f figures) String() string {
	return fmt.Sprintf("%s: sagas started %d (unacknowledged %d), committed %d, compensated %d, parked %d (%d legitimately parked sagas redriven), faults injected %d, voided actions %d, load %s (%.0f sagas/s, %d start retries, %d waits given up, %d wake-ups missed by Client.Wait), latency p50 %s p99 %s max %s, time to quiescence %s, violations %d, replay %s",
		f.scenario, f.started, f.unacked, f.committed, f.compensated, f.parked, f.redriven, f.faults, f.voided,
		f.load.Round(100*time.Millisecond), f.sagasPerSecond, f.startRetries, f.waitTimeouts, f.missedWakeups,
		f.p50.Round(time.Millisecond), f.p99.Round(time.Millisecond), f.maxLatency.Round(time.Millisecond),
		f.quiesce.Round(10*time.Millisecond), f.violations, f.replay.column())
}

// Scenarios run at once: a scenario spends most of its time waiting (the
// load is paced; restarts, timeouts and AckWaits are waited out), so on
// CI's 2 cores four at a time keep the short form within about 3 minutes,
// where -parallel's default (GOMAXPROCS) would take far longer. The long
// form runs two at a time: its loads are heavier.
const (
	shortParallel = 4
	soakParallel  = 2
)

// TestFaults runs every scenario, shortParallel or soakParallel at a time
// (whatever -parallel says), in the order of scenarios(), and prints the
// table of their figures.
func TestFaults(t *testing.T) {
	bin := buildBinary(t, t.TempDir())
	var (
		mu    sync.Mutex
		table []figures
	)
	workers := shortParallel
	if soak() {
		workers = soakParallel
	}
	t.Run("scenario", func(t *testing.T) {
		todo := make(chan scenario)
		var wg sync.WaitGroup
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for sc := range todo {
					t.Run(sc.name, func(t *testing.T) {
						f := runScenario(t, bin, sc)
						mu.Lock()
						table = append(table, f)
						mu.Unlock()
					})
				}
			}()
		}
		for _, sc := range scenarios() {
			todo <- sc
		}
		close(todo)
		wg.Wait()
	})
	t.Log(renderTable(table))
}

// renderTable renders the figures of the scenarios that ran as markdown,
// preceded by the configuration they ran with.
func renderTable(table []figures) string {
	n, conc, rate := shortSagas, shortConcurrency, shortRate
	if soak() {
		n, conc, rate = soakSagas, soakConcurrency, soakRate
	}
	var b strings.Builder
	pg := "?"
	if len(table) > 0 {
		pg = table[0].pgSettings
	}
	fmt.Fprintf(&b, "\nConfiguration: services as separate processes of the jetsaga binary (1 coordinator unless stated, 2 banks, "+
		"--concurrency %d); NATS embedded in the test process, JetStream file storage, sync_interval always; "+
		"PostgreSQL 15 local, %s; load: %d sagas per scenario, at most %d in flight and %.0f started per second, "+
		"%d accounts per bank (a tenth of bank-b's abnormal), ≈80%% transfers that succeed, 10%% to abnormal accounts, "+
		"10%% insufficient balances; step timeout %s.\n\n", participantsConcurrency, pg, n, conc, rate, accountsPerBank, stepTimeout)
	b.WriteString("| scenario | NATS | sagas started | committed | compensated | parked | faults injected | voided actions | sagas/s | latency p50 / p99 / max | time to quiescence | invariants | replay |\n")
	b.WriteString("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |\n")
	for _, sc := range scenarios() {
		for _, f := range table {
			if f.scenario != sc.name {
				continue
			}
			verdict := "hold"
			if !f.ok {
				verdict = fmt.Sprintf("%d violations", f.violations)
			}
			nats := "1 node, R1"
			if sc.deploy.cluster {
				nats = "3 nodes, R3"
			}
			parked := fmt.Sprint(f.parked)
			if f.redriven > 0 {
				parked = fmt.Sprintf("%d (+%d redriven)", f.parked, f.redriven)
			}
			fmt.Fprintf(&b, "| %s | %s | %d | %d | %d | %s | %d | %d | %.0f | %s / %s / %s | %s | %s | %s |\n", f.scenario, nats,
				f.started, f.committed, f.compensated, parked, f.faults, f.voided, f.sagasPerSecond,
				f.p50.Round(time.Millisecond), f.p99.Round(time.Millisecond), f.maxLatency.Round(time.Millisecond),
				f.quiesce.Round(10*time.Millisecond), verdict, f.replay.column())
		}
	}
	return b.String()
}

// runScenario deploys the system, runs the load while injecting the fault,
// stops injecting, waits for quiescence, and checks every invariant.
func runScenario(t *testing.T, bin string, sc scenario) figures {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	sc.deploy.accounts = accountsPerBank
	s := newSystem(t, bin, sc.deploy, rng)

	n, conc, rate, quiesceTimeout, loadTimeout := shortSagas, shortConcurrency, shortRate, shortQuiesce, shortLoadTimeout
	if soak() {
		n, conc, rate, quiesceTimeout, loadTimeout = soakSagas, soakConcurrency, soakRate, soakQuiesce, soakLoadTimeout
	}
	l := &load{s: s, n: n, concurrency: conc, rate: rate, seed: seed}
	if sc.prepare != nil {
		sc.prepare(s, l)
	}
	loadCtx, stopLoad := context.WithTimeout(context.Background(), loadTimeout)
	defer stopLoad()
	injCtx, stopInjecting := context.WithCancel(context.Background())
	defer stopInjecting()
	var (
		faults int
		injErr error
	)
	injected := make(chan struct{})
	go func() {
		defer close(injected)
		faults, injErr = sc.inject(injCtx, s, rand.New(rand.NewPCG(seed, 2)))
	}()
	began := time.Now()
	sagas := l.run(loadCtx)
	loadTime := time.Since(began)
	if loadCtx.Err() != nil {
		t.Errorf("the load did not finish within %s: %d sagas started", loadTimeout, len(sagas))
	}
	stopInjecting()
	<-injected
	if injErr != nil {
		t.Fatalf("injecting faults: %v", injErr)
	}
	s.ensureRunning()
	stoppedAt := time.Now()
	s.quiesce(sagas, quiesceTimeout)
	quiet := time.Since(stoppedAt)
	redriven := 0
	if sc.parkedOK != nil {
		redriven = s.redrive(sagas, sc.parkedOK, quiesceTimeout)
	}
	s.drain(drainTimeout)

	transfers := make([]invariants.Transfer, len(sagas))
	for i, x := range sagas {
		transfers[i] = x.tr
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute+replayTimeout)
	defer cancel()
	// The system is quiet: the fold of the sagas stream must equal the
	// live state of every saga.
	replayed, err := s.compareReplay(ctx)
	switch {
	case err != nil:
		t.Errorf("comparing the replayed states with the live bucket: %v", err)
		replayed = &replayCheck{err: err}
	case replayed.differ > 0:
		t.Error(replayed.report)
	}
	var syncCommit, fsync string
	if err := s.poolA.QueryRow(ctx, `SELECT current_setting('synchronous_commit'), current_setting('fsync')`).Scan(&syncCommit, &fsync); err != nil {
		t.Fatal(err)
	}
	rep, err := invariants.Check(ctx, invariants.Config{Client: s.client, BankA: s.poolA, BankB: s.poolB,
		InitialA: s.initA, InitialB: s.initB, Transfers: transfers})
	if err != nil {
		t.Fatal(err)
	}
	f := figures{scenario: sc.name, started: len(sagas) - rep.NotStarted, committed: rep.Committed,
		compensated: rep.Compensated, parked: rep.Parked, faults: faults, voided: rep.VoidedActions,
		load: loadTime, quiesce: quiet, violations: rep.ViolationCount, ok: rep.OK(),
		startRetries: l.startRetries.Load(), waitTimeouts: l.waitTimeouts.Load(), missedWakeups: l.missedWakeups.Load(),
		redriven: redriven, pgSettings: "synchronous_commit=" + syncCommit + ", fsync=" + fsync, replay: replayed}
	for _, x := range sagas {
		if x.tr.Unacked {
			f.unacked++
		}
	}
	if loadTime > 0 {
		f.sagasPerSecond = float64(len(sagas)) / loadTime.Seconds()
	}
	f.p50, f.p99, f.maxLatency = latencies(sagas)
	t.Log(f)
	if slow := slowest(sagas); slow != nil {
		t.Logf("slowest saga (%s as the load saw it, started %s); %s", slow.latency.Round(time.Millisecond),
			slow.began.Format("15:04:05.000"), s.timeline(ctx, sagas, []string{slow.tr.ID}))
	}
	for _, x := range sagas {
		if x.latency == 0 && !x.tr.Unacked {
			t.Logf("a saga the load gave up waiting for after %s; %s", waitTimeout, s.timeline(ctx, sagas, []string{x.tr.ID}))
			break
		}
	}
	if err := rep.Err(); err != nil {
		t.Error(err)
		s.logParked(ctx, t, sagas)
	}
	for _, u := range s.surprises() {
		t.Errorf("unexpected exit: %s", u)
	}
	if faults == 0 {
		t.Errorf("no fault was injected while the load ran (%s)", loadTime)
	}
	if rep.Committed == 0 || rep.Compensated == 0 {
		t.Errorf("the load's mix did not show: %d committed, %d compensated", rep.Committed, rep.Compensated)
	}
	if sc.verify != nil {
		sc.verify(t, s, sagas, rep)
	}
	return f
}

// latencies are the 50th and 99th percentiles and the maximum of the
// latencies the load saw.
func latencies(sagas []*started) (p50, p99, most time.Duration) {
	var ls []time.Duration
	for _, x := range sagas {
		x.mu.Lock()
		if x.latency > 0 {
			ls = append(ls, x.latency)
		}
		x.mu.Unlock()
	}
	if len(ls) == 0 {
		return 0, 0, 0
	}
	sort.Slice(ls, func(i, j int) bool { return ls[i] < ls[j] })
	at := func(q float64) time.Duration { return ls[min(len(ls)-1, int(q*float64(len(ls))))] }
	return at(0.50), at(0.99), ls[len(ls)-1]
}

// slowest is the saga with the longest latency the load saw.
func slowest(sagas []*started) *started {
	var out *started
	for _, x := range sagas {
		if out == nil || x.latency > out.latency {
			out = x
		}
	}
	return out
}

// pause waits a random time in [lo, hi); false if ctx ended first.
func pause(ctx context.Context, rng *rand.Rand, lo, hi time.Duration) bool {
	d := lo + time.Duration(rng.Int64N(int64(hi-lo)))
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

// between returns a random duration in [lo, hi).
func between(rng *rand.Rand, lo, hi time.Duration) time.Duration {
	return lo + time.Duration(rng.Int64N(int64(hi-lo)))
}

func scenarios() []scenario {
	return []scenario{
		{name: "coordinator-kill", inject: killCoordinators},
		{name: "participant-kill", inject: killParticipants},
		{name: "two-coordinators", deploy: deployment{coordinators: 2}, inject: killCoordinators},
		{name: "nats-restart", inject: restartNATS},
		{name: "cluster-node-loss", deploy: deployment{cluster: true}, inject: loseClusterNodes},
		{name: "cluster-partition", deploy: deployment{cluster: true, partitioned: true}, inject: partitionClusterNodes},
		{name: "pg-terminate", inject: terminateBackends},
		{name: "duplicates", inject: duplicate, verify: verifyDuplicates},
		{name: "silent-participant", inject: silenceBankB, verify: verifyLateActionsRefused},
		malformedScenario(),
		{name: "pg-crash", deploy: deployment{ownPostgres: true}, inject: crashPostgres, verify: verifyCrashesSeen},
		{name: "zombie-coordinator", deploy: deployment{coordinators: 2}, inject: zombieCoordinator},
	}
}

// killCoordinators SIGKILLs a coordinator (one at a time, at random among
// them) every 0.5-2.5s and starts a new process after 0-1.5s.
func killCoordinators(ctx context.Context, s *system, rng *rand.Rand) (int, error) {
	n := 0
	for pause(ctx, rng, 500*time.Millisecond, 2500*time.Millisecond) {
		p := s.coords[rng.IntN(len(s.coords))]
		if err := p.kill(); err != nil {
			return n, err
		}
		n++
		time.Sleep(between(rng, 0, 1500*time.Millisecond))
		if err := p.start(); err != nil {
			return n, err
		}
	}
	return n, nil
}

// killParticipants SIGKILLs bank-a and bank-b in turn every 0.5-2.5s and
// starts a new process after 0-1.5s.
func killParticipants(ctx context.Context, s *system, rng *rand.Rand) (int, error) {
	n := 0
	for pause(ctx, rng, 500*time.Millisecond, 2500*time.Millisecond) {
		p := s.bankA
		if n%2 == 1 {
			p = s.bankB
		}
		if err := p.kill(); err != nil {
			return n, err
		}
		n++
		time.Sleep(between(rng, 0, 1500*time.Millisecond))
		if err := p.start(); err != nil {
			return n, err
		}
	}
	return n, nil
}
