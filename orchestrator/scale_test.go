package orchestrator_test

import (
	"context"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetsaga/jetsaga/events"
	"github.com/jetsaga/jetsaga/examples/bank"
	"github.com/jetsaga/jetsaga/internal/testenv"
	"github.com/jetsaga/jetsaga/orchestrator"
)

// startMany starts n transfer sagas t-<i>, concurrently; every fifth fails
// on its credit step.
func (b *bundle) startMany(prefix string, n int) []string {
	b.t.Helper()
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("%s-%d", prefix, i)
	}
	b.parallel(ids, func(ctx context.Context, id string) error {
		_, err := b.client.Start(ctx, transferPlan(id))
		return err
	})
	return ids
}

func (b *bundle) parallel(ids []string, f func(context.Context, string) error) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute) // generous: CI runs packages side by side under -race
	defer cancel()
	work := make(chan string)
	errs := make(chan error, len(ids))
	var wg sync.WaitGroup
	for w := 0; w < 32; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := range work {
				if err := f(ctx, id); err != nil {
					errs <- fmt.Errorf("%s: %w", id, err)
				}
			}
		}()
	}
	for _, id := range ids {
		work <- id
	}
	close(work)
	wg.Wait()
	close(errs)
	for err := range errs {
		b.t.Fatal(err)
	}
}

func failEveryFifth(c events.Command) decision {
	var n int
	fmt.Sscanf(c.SagaID[strings.LastIndexByte(c.SagaID, '-')+1:], "%d", &n)
	if c.Op == events.OpDo && n%5 == 0 {
		return decision{status: events.Failed, reason: "account abnormal"}
	}
	return decision{}
}

// expectedCommands are the commands a transfer saga publishes, exactly.
func expectedCommands(id string) []string {
	var n int
	fmt.Sscanf(id[strings.LastIndexByte(id, '-')+1:], "%d", &n)
	if n%5 == 0 {
		return []string{id + "/credit/do/1", id + "/debit/do/1", id + "/debit/undo/2"}
	}
	return []string{id + "/credit/do/1", id + "/debit/do/1"}
}

// countedDuplicates is the duplicate window of the tests that count the
// commands in the stream. A coordinator that starts while a saga waits for
// an outcome publishes the saga's pending commands again (it cannot know
// whether its predecessor did), and only the window makes that a no-op: on a
// loaded machine (TestCoordinatorKilledRepeatedly took 266 s in a -race run
// beside two busy loops) a bank can answer a command more than the default
// 2 minutes after it was first published, and the stream then holds it twice
// — harmless to the barrier, but not the "exactly once" these tests count.
const countedDuplicates = time.Hour

// countCommands makes the bundle's streams keep message ids for
// countedDuplicates; coordinators started with it keep them so.
func (b *bundle) countCommands() func(*orchestrator.Config) {
	b.t.Helper()
	streams := events.StreamOptions{Duplicates: countedDuplicates}
	if err := orchestrator.EnsureStreams(context.Background(), b.js, events.Default(), streams); err != nil {
		b.t.Fatal(err)
	}
	return func(c *orchestrator.Config) { c.Streams = streams }
}

// checkAll waits for every saga to end as expected and checks that the
// commands stream holds exactly the commands each saga needed, once (the
// bundle's streams made with countCommands).
func (b *bundle) checkAll(ids []string) {
	b.t.Helper()
	b.parallel(ids, func(ctx context.Context, id string) error {
		st, err := b.client.Wait(ctx, id)
		if err != nil {
			return err
		}
		want := orchestrator.Committed
		if len(expectedCommands(id)) == 3 {
			want = orchestrator.Compensated
		}
		if st.Status != want {
			return fmt.Errorf("status %s (%s), want %s", st.Status, st.Reason, want)
		}
		return nil
	})
	got := map[string][]string{}
	ctx := context.Background()
	s, err := b.js.Stream(ctx, events.Default().CommandsStream())
	if err != nil {
		b.t.Fatal(err)
	}
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		b.t.Fatal(err)
	}
	info, _ := s.Info(ctx)
	for i := uint64(0); i < info.State.Msgs; i++ {
		m, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			b.t.Fatal(err)
		}
		id := m.Headers().Get(events.HeaderSagaID)
		got[id] = append(got[id], m.Headers().Get(events.HeaderMsgID))
	}
	for _, id := range ids {
		sort.Strings(got[id])
		if want := expectedCommands(id); !reflect.DeepEqual(got[id], want) {
			b.t.Fatalf("saga %s: commands %v, want %v", id, got[id], want)
		}
	}
}

// TestTwoCoordinators: two instances share the consumer; 2,000 sagas all end
// as expected, and no command is published twice or for nothing. Then the
// state bucket is rebuilt from the stream and compared key by key.
func TestTwoCoordinators(t *testing.T) {
	t.Parallel()
	s1, s2 := runTwoCoordinators(t, "two", 2000)
	if s1.Applied == 0 || s2.Applied == 0 {
		t.Fatal("one coordinator did no work")
	}
}

// TestTwoCoordinatorsGroupCommit: two coordinators with group commit on
// share the sagas; their state writes (compare-and-set inside atomic
// batches, a lost one rejecting the whole batch) and commands go out in
// batches, and every saga ends as it must, the live bucket equal to replay.
func TestTwoCoordinatorsGroupCommit(t *testing.T) {
	t.Parallel()
	s1, s2 := runTwoCoordinators(t, "gc", 1000, func(c *orchestrator.Config) { c.AtomicBatchMin = 2 })
	if s1.Batches+s2.Batches == 0 {
		t.Fatal("no atomic batch was committed")
	}
}

// runTwoCoordinators runs n sagas (300 with -short) through two
// coordinators configured by options, one participant failing every fifth
// credit; it checks every saga's end and that replay equals the live bucket,
// and returns the coordinators' stats.
func runTwoCoordinators(t *testing.T, name string, n int, options ...func(*orchestrator.Config)) (orchestrator.Stats, orchestrator.Stats) {
	b := setup(t)
	options = append([]func(*orchestrator.Config){b.countCommands()}, options...)
	_, js1 := testenv.Connect(t, b.srv.URL())
	_, js2 := testenv.Connect(t, b.srv.URL())
	_, c1 := b.runCoordinator(js1, options...)
	_, c2 := b.runCoordinator(js2, options...)
	b.respond("bank-a", ok)
	b.respond("bank-b", failEveryFifth)
	if testing.Short() {
		n = 300
	}
	b.checkAll(b.startMany(name, n))
	s1, s2 := c1.Stats(), c2.Stats()
	t.Logf("coordinator 1: %+v", s1)
	t.Logf("coordinator 2: %+v", s2)
	b.compareReplay()
	return s1, s2
}

// compareReplay rebuilds the state into a new bucket and compares it with
// the live one, key by key.
func (b *bundle) compareReplay() {
	b.t.Helper()
	assertLiveEqualsReplay(b.t, b.js)
}

// TestCoordinatorKilledRepeatedly: the coordinator's connection is closed
// under it again and again during 1,000 bank transfers; each restart resumes
// from the stream, every saga ends exactly as expected (and publishes
// exactly the commands it needs), and every balance is exactly right.
func TestCoordinatorKilledRepeatedly(t *testing.T) {
	t.Parallel()
	b := setup(t)
	counted := b.countCommands()
	srv := b.srv
	accounts := map[int64]bank.Cents{}
	for id := int64(1); id <= 10; id++ {
		accounts[id] = 1_000_000_00
	}
	k := b.runBanks(accounts)
	if err := bank.SetAbnormal(context.Background(), k.b, 10, true); err != nil {
		t.Fatal(err)
	}
	n := 1000
	if testing.Short() {
		n = 200
	}
	done := make(chan struct{})
	kills := 0
	var wg sync.WaitGroup
	// Stopped before the servers are, also when the test fails early (a
	// killer still connecting after the test ended made the run panic).
	stopKilling := sync.OnceFunc(func() { close(done); wg.Wait() })
	t.Cleanup(stopKilling)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			nc, js := testenv.Connect(t, srv.URL())
			stop, c := b.startCoordinator(js, counted)
			// Each incarnation lives 150 ms and until it has handled a few
			// inputs: on a loaded machine its start can take most of
			// 150 ms, and killing it before it does anything made the
			// sagas outlast the test's 5 minutes (-race, 4 busy loops).
			born := time.Now()
			for time.Since(born) < 150*time.Millisecond || c.Stats().Processed < 20 {
				select {
				case <-done:
					return
				case <-time.After(10 * time.Millisecond):
				}
			}
			nc.Close() // the crash: in-flight work is cut off mid-way
			_ = stop() // it reports the closed connection
			kills++
		}
	}()
	ids := make([]string, n)
	wantA, wantB := map[int64]bank.Cents{}, map[int64]bank.Cents{}
	for id, c := range accounts {
		wantA[id], wantB[id] = c, c
	}
	plans := map[string]*orchestrator.Plan{}
	for i := range ids {
		ids[i] = fmt.Sprintf("kill-%d", i)
		from, to := int64(1+i%9), int64(1+(i*7)%9)
		if i%5 == 0 {
			to = 10 // abnormal: TransIn fails, TransOut is compensated
		} else {
			wantA[from] -= 1_00
			wantB[to] += 1_00
		}
		plans[ids[i]] = bank.TransferPlan(ids[i], from, to, 1_00)
	}
	b.parallel(ids, func(ctx context.Context, id string) error {
		_, err := b.client.Start(ctx, plans[id])
		return err
	})
	b.checkAll(ids)
	stopKilling()
	t.Logf("%d sagas, coordinator killed %d times", n, kills)
	if kills == 0 {
		t.Fatal("no kill happened")
	}
	for id := int64(1); id <= 10; id++ {
		if a, bb := k.balances(t, id); a != wantA[id] || bb != wantB[id] {
			t.Fatalf("account %d: A %s (want %s), B %s (want %s)", id, a, wantA[id], bb, wantB[id])
		}
	}
	if got := k.total(t); got != 20*1_000_000_00 {
		t.Fatalf("money not conserved: %s", got)
	}
	b.compareReplay()
}
