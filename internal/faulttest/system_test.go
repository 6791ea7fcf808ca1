package faulttest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetsaga/jetsaga/devenv"
	"github.com/jetsaga/jetsaga/events"
	"github.com/jetsaga/jetsaga/examples/bank"
	"github.com/jetsaga/jetsaga/internal/testenv"
	"github.com/jetsaga/jetsaga/orchestrator"
	"github.com/jetsaga/jetsaga/participants"
)

// Bounds of the set-up and of the waits after the load.
const (
	setupTimeout = 2 * time.Minute
	// drainTimeout bounds the wait for the consumers to have nothing left
	// to deliver: a command held by a killed participant comes back only
	// after the participant's AckWait (30s), an input held by a killed
	// coordinator after the coordinators' (30s too).
	drainTimeout = participants.DefaultAckWait + 30*time.Second
	logTail      = 40
	// testAppName is the application_name of the test's own sessions.
	testAppName = "jetsaga-faulttest"
	// participantsConcurrency is each bank's --concurrency.
	participantsConcurrency = 16
)

// system is one deployment under test: NATS (a single restartable server or
// a 3-node cluster), the two banks' databases, the coordinator and bank
// processes, and the test's own connection and client.
type system struct {
	t   *testing.T
	dir string // logs
	bin string // the jetsaga binary
	cfg deployment

	single    *devenv.NATSServer
	cluster   *devenv.Cluster
	partition *testenv.PartitionCluster // deployment.partitioned
	natsURL   string                    // what the services connect to

	js     jetstream.JetStream
	client *orchestrator.Client

	urlA, urlB   string
	pgA, pgB     *bankCluster // each bank's own cluster (deployment.ownPostgres)
	poolA, poolB *pgxpool.Pool
	initA, initB map[int64]bank.Cents
	abnormal     int // bank-b accounts 1..abnormal are abnormal

	coords       []*proc
	bankA, bankB *proc
}

// deployment is what a scenario runs on.
type deployment struct {
	cluster      bool // 3-node cluster, R3 streams and bucket
	partitioned  bool // the cluster's routes run through proxies the scenario can cut
	coordinators int  // default 1
	accounts     int  // per bank
	// ownPostgres gives each bank a PostgreSQL cluster of its own (that
	// the scenario may crash), instead of a database on the test binary's
	// shared cluster.
	ownPostgres bool
}

func (s *system) procs() []*proc {
	return append(append([]*proc(nil), s.coords...), s.bankA, s.bankB)
}

// bank returns the process of a bank by participant name.
func (s *system) bank(name string) *proc {
	if name == bank.BankA {
		return s.bankA
	}
	return s.bankB
}

// newSystem starts a deployment for t and stops it when t ends.
func newSystem(t *testing.T, bin string, d deployment, rng *rand.Rand) *system {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	if d.coordinators == 0 {
		d.coordinators = 1
	}
	s := &system{t: t, dir: t.TempDir(), bin: bin, cfg: d}
	replicas := 1
	if d.cluster {
		replicas = 3
	}
	switch {
	case d.cluster && d.partitioned:
		s.partition = testenv.NewPartitionCluster(t, 3, testenv.SyncAlways())
		s.natsURL = s.partition.URLs()
	case d.cluster:
		s.cluster = testenv.Cluster(t, 3, testenv.SyncAlways())
		s.natsURL = s.cluster.URLs()
	default:
		s.single = testenv.NATS(t, testenv.SyncAlways())
		s.natsURL = s.single.URL()
	}
	_, s.js = testenv.Connect(t, s.natsURL)

	if d.ownPostgres {
		s.pgA, s.pgB = newBankCluster(t, ctx, bank.BankA), newBankCluster(t, ctx, bank.BankB)
		s.urlA, s.urlB = s.pgA.url, s.pgB.url
	} else {
		s.urlA, s.urlB = testenv.PostgresURL(t), testenv.PostgresURL(t)
	}
	s.poolA, s.poolB = openPool(t, s.urlA), openPool(t, s.urlB)
	s.seed(ctx, d.accounts, rng)

	common := []string{"--nats-url", s.natsURL, "--connect-timeout", "20s", "--log-level", "info"}
	for i := range d.coordinators {
		args := append([]string{"coordinator", "--replicas", fmt.Sprint(replicas)}, common...)
		s.coords = append(s.coords, newProc(s.dir, bin, fmt.Sprintf("coordinator-%d", i+1), args...))
	}
	for _, b := range []struct {
		p    **proc
		name string
		url  string
	}{{&s.bankA, bank.BankA, s.urlA}, {&s.bankB, bank.BankB, s.urlB}} {
		*b.p = newProc(s.dir, bin, b.name, append([]string{"bank", "--participant", b.name, "--database-url", b.url,
			"--concurrency", fmt.Sprint(participantsConcurrency)}, common...)...)
	}
	t.Cleanup(func() {
		for _, p := range s.procs() {
			if err := p.kill(); err != nil {
				t.Error(err)
			}
		}
	})
	t.Cleanup(func() {
		if t.Failed() {
			for _, p := range s.procs() {
				t.Logf("--- last %d lines of %s's log (%s):\n%s", logTail, p.name, p.logPath, p.tail(logTail))
			}
		}
	})
	for _, p := range s.coords {
		if err := p.start(); err != nil {
			t.Fatal(err)
		}
	}
	// The coordinators create the streams and the bucket; the banks wait
	// for them and create their consumers.
	s.waitFor(ctx, "the coordinator's consumer", func(ctx context.Context) error {
		_, err := s.js.Consumer(ctx, events.Default().SagasStream(), events.Default().CoordinatorConsumer())
		return err
	})
	for _, p := range []*proc{s.bankA, s.bankB} {
		if err := p.start(); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{bank.BankA, bank.BankB} {
		s.waitFor(ctx, name+"'s consumer", func(ctx context.Context) error {
			_, err := s.js.Consumer(ctx, events.Default().CommandsStream(), events.Default().ParticipantConsumer(name))
			return err
		})
	}
	s.client = orchestrator.NewClient(s.js, events.Default())
	t.Cleanup(s.client.Close)
	return s
}

func openPool(t *testing.T, url string) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 4
	// Spared by pg_terminate_backend (scenario pg-terminate).
	cfg.ConnConfig.RuntimeParams["application_name"] = testAppName
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// seed migrates both banks and opens n accounts in each with random
// balances (100.00 to 1,000.00); the first tenth of bank-b's accounts are
// abnormal (TransIn refuses them).
func (s *system) seed(ctx context.Context, n int, rng *rand.Rand) {
	t := s.t
	s.initA, s.initB = map[int64]bank.Cents{}, map[int64]bank.Cents{}
	for id := int64(1); id <= int64(n); id++ {
		s.initA[id] = bank.Cents(100_00 + rng.IntN(900_01))
		s.initB[id] = bank.Cents(100_00 + rng.IntN(900_01))
	}
	for _, x := range []struct {
		pool *pgxpool.Pool
		init map[int64]bank.Cents
	}{{s.poolA, s.initA}, {s.poolB, s.initB}} {
		if err := participants.Migrate(ctx, x.pool); err != nil {
			t.Fatal(err)
		}
		if err := bank.Migrate(ctx, x.pool); err != nil {
			t.Fatal(err)
		}
		if err := bank.Seed(ctx, x.pool, x.init); err != nil {
			t.Fatal(err)
		}
	}
	s.abnormal = max(1, n/10)
	for id := 1; id <= s.abnormal; id++ {
		if err := bank.SetAbnormal(ctx, s.poolB, int64(id), true); err != nil {
			t.Fatal(err)
		}
	}
}

// waitFor polls f until it succeeds, failing the test when ctx ends first.
func (s *system) waitFor(ctx context.Context, what string, f func(context.Context) error) {
	s.t.Helper()
	var err error
	for {
		c, cancel := context.WithTimeout(ctx, 5*time.Second)
		err = f(c)
		cancel()
		if err == nil {
			return
		}
		select {
		case <-ctx.Done():
			s.t.Fatalf("waiting for %s: %v (%v)", what, err, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// ensureRunning restarts every service that is not running (after a
// scenario stopped injecting) and lists the exits nobody asked for.
func (s *system) ensureRunning() {
	s.t.Helper()
	for _, p := range s.procs() {
		_ = p.signal(sigCont) // a stopped process resumes; harmless otherwise
		if !p.running() {
			if err := p.start(); err != nil {
				s.t.Fatal(err)
			}
		}
	}
}

// surprises lists the processes that exited without being killed.
func (s *system) surprises() []string {
	var out []string
	for _, p := range s.procs() {
		out = append(out, p.surprises()...)
	}
	return out
}

// quiesce waits until every saga is terminal or parked (the system stopped
// moving) and returns their states, or fails the test after timeout.
func (s *system) quiesce(ts []*started, timeout time.Duration) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	work := make(chan *started)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var stuck []string
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for x := range work {
				if x.settled() {
					continue
				}
				st, err := s.settle(ctx, x)
				if err != nil {
					mu.Lock()
					stuck = append(stuck, err.Error())
					mu.Unlock()
					continue
				}
				x.setStatus(st)
			}
		}()
	}
	for _, x := range ts {
		work <- x
	}
	close(work)
	wg.Wait()
	if len(stuck) > 0 {
		s.t.Fatalf("%d sagas did not settle within %s; e.g.:\n%s\n%s", len(stuck), timeout,
			strings.Join(stuck[:min(len(stuck), 10)], "\n"), s.timeline(ctx, ts, stuck))
	}
}

// settle waits until one saga is terminal or parked. Wait watches the state
// bucket; the Get fallback covers a watch lost to a NATS restart.
func (s *system) settle(ctx context.Context, x *started) (orchestrator.Status, error) {
	var last string
	for ctx.Err() == nil {
		c, cancel := context.WithTimeout(ctx, 10*time.Second)
		st, err := s.client.Wait(c, x.tr.ID)
		cancel()
		if err == nil {
			return st.Status, nil
		}
		st, gerr := s.get(ctx, x.tr.ID)
		switch {
		case errors.Is(gerr, orchestrator.ErrNotFound) && x.tr.Unacked:
			return "", nil // the start never made it: nothing to wait for
		case gerr == nil && (st.Status.Terminal() || st.Status == orchestrator.Parked):
			return st.Status, nil
		case gerr == nil:
			last = fmt.Sprintf("saga %s is %s (%s)", x.tr.ID, st.Status, st.Reason)
		default:
			last = fmt.Sprintf("saga %s: %v", x.tr.ID, gerr)
		}
	}
	return "", errors.New(last)
}

// callTimeout bounds one request to NATS: a request in flight while the
// server restarts may never be answered, and would otherwise hang until the
// caller's (long) deadline.
const callTimeout = 5 * time.Second

// get reads a saga's state with its own deadline.
func (s *system) get(ctx context.Context, id string) (*orchestrator.State, error) {
	c, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	return s.client.Get(c, id)
}

// timeline renders the message history of the first stuck saga, to say
// where it stopped.
func (s *system) timeline(ctx context.Context, ts []*started, stuck []string) string {
	for _, x := range ts {
		if !strings.Contains(stuck[0], x.tr.ID) {
			continue
		}
		c, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		entries, err := s.client.Timeline(c, x.tr.ID)
		if err != nil {
			return fmt.Sprintf("timeline of %s: %v", x.tr.ID, err)
		}
		var b strings.Builder
		fmt.Fprintf(&b, "timeline of %s:\n", x.tr.ID)
		for _, e := range entries {
			fmt.Fprintf(&b, "  %s %-9s #%d %s\n", e.Time.Format("15:04:05.000"), e.Stream, e.Seq, e.Summary)
		}
		return b.String()
	}
	return ""
}

// drain waits until both banks' consumers and the coordinators' consumer
// have nothing left to deliver or to be acknowledged: late commands (held
// by a killed participant until its AckWait passed) have been handled
// before the invariants are checked, and the inputs a killed or stopped
// coordinator held (which come back after the coordinators' AckWait) have
// been applied before the live states are compared with the replayed ones:
// such an input no longer changes a terminal saga's status, but its state
// records it (e.g. as a rejection) all the same.
func (s *system) drain(timeout time.Duration) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	ns := events.Default()
	consumers := []struct{ stream, name string }{
		{ns.CommandsStream(), ns.ParticipantConsumer(bank.BankA)},
		{ns.CommandsStream(), ns.ParticipantConsumer(bank.BankB)},
		{ns.SagasStream(), ns.CoordinatorConsumer()},
	}
	s.waitFor(ctx, "the consumers to drain", func(ctx context.Context) error {
		for _, c := range consumers {
			cons, err := s.js.Consumer(ctx, c.stream, c.name)
			if err != nil {
				return err
			}
			info, err := cons.Info(ctx)
			if err != nil {
				return err
			}
			if info.NumPending != 0 || info.NumAckPending != 0 {
				return fmt.Errorf("%s: %d pending, %d awaiting ack", c.name, info.NumPending, info.NumAckPending)
			}
		}
		return nil
	})
}

// redrive redrives, as an operator would, every parked saga whose reason
// ok accepts, waits until they settle again, and returns how many there
// were. Sagas parked for another reason are left for the invariants to
// report.
func (s *system) redrive(ts []*started, ok func(string) bool, timeout time.Duration) int {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var again []*started
	for _, x := range ts {
		x.mu.Lock()
		parked := x.status == orchestrator.Parked
		x.mu.Unlock()
		if !parked {
			continue
		}
		st, err := s.client.Get(ctx, x.tr.ID)
		if err != nil {
			s.t.Fatal(err)
		}
		if !ok(st.Reason) {
			continue
		}
		err = s.client.Redrive(ctx, x.tr.ID)
		if errors.Is(err, orchestrator.ErrNotParked) {
			// Redriven meanwhile (the malformed scenario publishes
			// redrives too): it is no longer parked; wait for its end.
			x.mu.Lock()
			x.done = false
			x.mu.Unlock()
			again = append(again, x)
			continue
		}
		if err != nil {
			s.t.Fatalf("redrive %s: %v", x.tr.ID, err)
		}
		s.t.Logf("redriven: saga %s, parked because %s", x.tr.ID, st.Reason)
		// Wait returns at once while the saga is parked: first wait for
		// the coordinator to apply the redrive.
		s.waitFor(ctx, "the redrive of "+x.tr.ID, func(ctx context.Context) error {
			now, err := s.client.Get(ctx, x.tr.ID)
			if err != nil {
				return err
			}
			if now.Status == orchestrator.Parked && now.UpdatedMS == st.UpdatedMS {
				return fmt.Errorf("saga %s: redrive not applied yet", x.tr.ID)
			}
			return nil
		})
		x.mu.Lock()
		x.done = false
		x.mu.Unlock()
		again = append(again, x)
	}
	s.quiesce(again, timeout)
	return len(again)
}

// logParked logs the timeline of the first parked saga, to say why it
// parked.
func (s *system) logParked(ctx context.Context, t *testing.T, ts []*started) {
	for _, x := range ts {
		x.mu.Lock()
		parked := x.status == orchestrator.Parked
		x.mu.Unlock()
		if parked {
			t.Logf("a parked saga: %s", s.timeline(ctx, ts, []string{x.tr.ID}))
			return
		}
	}
}
