package testenv_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetsaga/jetsaga/devenv"
	"github.com/jetsaga/jetsaga/internal/testenv"
)

// helperEnv selects a helper mode when the test binary runs itself as a
// subprocess (see TestHelperProcess).
const helperEnv = "JETSAGA_TESTENV_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "no-main" {
		os.Exit(m.Run()) // a package that forgot testenv.Main
	}
	testenv.Main(m)
}

const (
	wait = 30 * time.Second
	poll = 20 * time.Millisecond
)

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	t.Cleanup(cancel)
	return ctx
}

func createStream(t *testing.T, js jetstream.JetStream, replicas int) jetstream.Stream {
	t.Helper()
	s, err := js.CreateStream(ctxFor(t), jetstream.StreamConfig{
		Name:     "ORDERS",
		Subjects: []string{"orders.>"},
		Storage:  jetstream.FileStorage,
		Replicas: replicas,
	})
	if err != nil {
		t.Fatalf("create stream: %v", err)
	}
	return s
}

func publishN(t *testing.T, js jetstream.JetStream, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		if _, err := js.Publish(ctxFor(t), "orders.new", []byte(strconv.Itoa(i))); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
}

// readAll reads every message of s in order. Right after a node loss a
// request can reach a leader that is gone and get no answer, or no
// responders: it reads again from the start, as a client would.
func readAll(t *testing.T, s jetstream.Stream) []string {
	t.Helper()
	var got []string
	testenv.CheckFor(t, wait, poll, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var err error
		got, err = tryReadAll(ctx, s)
		return err
	})
	return got
}

func tryReadAll(ctx context.Context, s jetstream.Stream) ([]string, error) {
	info, err := s.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("stream info: %w", err)
	}
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return nil, fmt.Errorf("consumer: %w", err)
	}
	var got []string
	for uint64(len(got)) < info.State.Msgs {
		batch, err := c.Fetch(int(info.State.Msgs)-len(got), jetstream.FetchContext(ctx))
		if err != nil {
			return nil, fmt.Errorf("fetch: %w", err)
		}
		for msg := range batch.Messages() {
			got = append(got, string(msg.Data()))
		}
		if err := batch.Error(); err != nil {
			return nil, fmt.Errorf("fetch: %w", err)
		}
	}
	return got, nil
}

func seq(from, n int) []string {
	var s []string
	for i := from; i < from+n; i++ {
		s = append(s, strconv.Itoa(i))
	}
	return s
}

func TestJetStreamRoundTrip(t *testing.T) {
	t.Parallel()
	srv := testenv.NATS(t)
	_, js := testenv.Connect(t, srv.URL())
	s := createStream(t, js, 1)
	const n = 25
	publishN(t, js, 0, n)

	// A durable consumer with explicit acks, as participants use.
	ctx := ctxFor(t)
	c, err := s.CreateConsumer(ctx, jetstream.ConsumerConfig{Durable: "worker", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatalf("create consumer: %v", err)
	}
	var got []string
	for len(got) < n {
		batch, err := c.Fetch(n-len(got), jetstream.FetchMaxWait(wait))
		if err != nil {
			t.Fatalf("fetch: %v", err)
		}
		for msg := range batch.Messages() {
			got = append(got, string(msg.Data()))
			if err := msg.DoubleAck(ctx); err != nil {
				t.Fatalf("ack: %v", err)
			}
		}
		if err := batch.Error(); err != nil {
			t.Fatalf("fetch: %v", err)
		}
	}
	if want := seq(0, n); !slices.Equal(got, want) {
		t.Fatalf("consumed %v, want %v", got, want)
	}
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatalf("consumer info: %v", err)
	}
	if info.NumAckPending != 0 || info.NumPending != 0 || info.AckFloor.Stream != n {
		t.Fatalf("consumer state after acking everything: pending %d, ack pending %d, ack floor %d; want 0, 0, %d",
			info.NumPending, info.NumAckPending, info.AckFloor.Stream, n)
	}
}

func TestRestartKeepsStreamAndClientReconnects(t *testing.T) {
	t.Parallel()
	srv := testenv.NATS(t)
	url, dir := srv.URL(), srv.StoreDir()
	nc, js := testenv.Connect(t, url)
	s := createStream(t, js, 1)
	const n = 10
	publishN(t, js, 0, n)

	if err := srv.Restart(); err != nil {
		t.Fatalf("restart: %v", err)
	}
	if srv.URL() != url || srv.StoreDir() != dir {
		t.Fatalf("restart moved the server: %s %s, was %s %s", srv.URL(), srv.StoreDir(), url, dir)
	}
	// The restart can be quicker than the client noticing it lost the
	// connection: wait for a reconnect, not only for "connected".
	testenv.CheckFor(t, wait, poll, func() error {
		if r := nc.Stats().Reconnects; r < 1 || !nc.IsConnected() {
			return fmt.Errorf("client not reconnected: %v, %d reconnects", nc.Status(), r)
		}
		return nil
	})
	publishN(t, js, n, 1)
	if got, want := readAll(t, s), seq(0, n+1); !slices.Equal(got, want) {
		t.Fatalf("stream after restart holds %v, want %v", got, want)
	}
}

func TestClusterSurvivesNodeLoss(t *testing.T) {
	t.Parallel()
	c := testenv.Cluster(t, 3)
	_, js := testenv.Connect(t, c.URLs())
	s := createStream(t, js, 3)
	const n = 5
	publishN(t, js, 0, n)

	// Lose the stream's leader: the worst node to lose.
	info, err := s.Info(ctxFor(t))
	if err != nil {
		t.Fatalf("stream info: %v", err)
	}
	if info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
		t.Fatalf("stream cluster info %+v, want a leader and 2 replicas", info.Cluster)
	}
	idx := slices.IndexFunc(c.Servers, func(s *devenv.NATSServer) bool { return s.Name() == info.Cluster.Leader })
	if idx < 0 {
		t.Fatalf("stream leader %q is not one of the cluster's servers", info.Cluster.Leader)
	}
	lost := c.Servers[idx]
	lost.Shutdown()

	// Publishing works again once a new leader is elected.
	testenv.CheckFor(t, wait, poll, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := js.Publish(ctx, "orders.new", []byte(strconv.Itoa(n)), jetstream.WithMsgID("after-loss"))
		return err
	})
	if got, want := readAll(t, s), seq(0, n+1); !slices.Equal(got, want) {
		t.Fatalf("stream after losing its leader holds %v, want %v", got, want)
	}

	// The node comes back and catches up.
	if err := lost.Start(); err != nil {
		t.Fatalf("restart node: %v", err)
	}
	testenv.CheckFor(t, wait, poll, func() error {
		info, err := s.Info(ctxFor(t))
		if err != nil {
			return err
		}
		if len(info.Cluster.Replicas) != 2 {
			return fmt.Errorf("%d replicas besides leader %s, want 2", len(info.Cluster.Replicas), info.Cluster.Leader)
		}
		for _, r := range info.Cluster.Replicas {
			if !r.Current || r.Offline {
				return fmt.Errorf("replica %s: current %t, offline %t", r.Name, r.Current, r.Offline)
			}
		}
		return nil
	})
	// The returned node serves the stream: ask it directly.
	_, jsLost := testenv.Connect(t, lost.URL())
	ls, err := jsLost.Stream(ctxFor(t), "ORDERS")
	if err != nil {
		t.Fatalf("stream via restarted node: %v", err)
	}
	if got, want := readAll(t, ls), seq(0, n+1); !slices.Equal(got, want) {
		t.Fatalf("stream via restarted node holds %v, want %v", got, want)
	}
}

func TestParallelTestsGetSeparateDatabases(t *testing.T) {
	// Each subtest writes its own row, waits until the other has written
	// too, then must still see only its own row.
	written := make(chan struct{}, 2)
	both := make(chan struct{})
	go func() {
		<-written
		<-written
		close(both)
	}()
	names := make(chan string, 2)
	// Parallel subtests start only when their parent's function returns:
	// group them so that the check below runs after both.
	t.Run("group", func(t *testing.T) {
		for _, name := range []string{"alpha", "beta"} {
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				pool := testenv.Postgres(t)
				ctx := ctxFor(t)
				if _, err := pool.Exec(ctx, "CREATE TABLE items (name text PRIMARY KEY)"); err != nil {
					t.Fatalf("create table: %v", err)
				}
				if _, err := pool.Exec(ctx, "INSERT INTO items VALUES ($1)", name); err != nil {
					t.Fatalf("insert: %v", err)
				}
				var db string
				if err := pool.QueryRow(ctx, "SELECT current_database()").Scan(&db); err != nil {
					t.Fatalf("current_database: %v", err)
				}
				names <- db
				written <- struct{}{}
				select {
				case <-both:
				case <-ctx.Done():
					t.Fatal("the other subtest never wrote its row: are parallel tests limited to 1 (-parallel)?")
				}
				rows, _ := pool.Query(ctx, "SELECT name FROM items")
				got, err := pgx.CollectRows(rows, pgx.RowTo[string])
				if err != nil {
					t.Fatalf("select: %v", err)
				}
				if !slices.Equal(got, []string{name}) {
					t.Fatalf("items = %v, want only [%s]", got, name)
				}
			})
		}
	})
	if t.Failed() {
		return
	}
	if a, b := <-names, <-names; a == b {
		t.Fatalf("both subtests used database %s", a)
	}
}

func TestPostgresIsDurable(t *testing.T) {
	t.Parallel()
	pool := testenv.Postgres(t)
	want := map[string]string{"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}
	for name, value := range want {
		var got string
		if err := pool.QueryRow(ctxFor(t), "SELECT current_setting($1)", name).Scan(&got); err != nil {
			t.Fatalf("show %s: %v", name, err)
		}
		if got != value {
			t.Errorf("%s = %s, want %s", name, got, value)
		}
	}
}

func TestSyncAlways(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		opts func(t *testing.T) []testenv.NATSOption
		want bool
	}{
		{"default", func(*testing.T) []testenv.NATSOption { return nil }, false},
		{"always", func(t *testing.T) []testenv.NATSOption {
			return []testenv.NATSOption{testenv.SyncAlways(), testenv.WithLog(t)}
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := testenv.NATS(t, tc.opts(t)...)
			v, err := srv.Server().Varz(&server.VarzOptions{})
			if err != nil {
				t.Fatalf("varz: %v", err)
			}
			if v.JetStream.Config == nil {
				t.Fatal("varz has no JetStream config")
			}
			if got := v.JetStream.Config.SyncAlways; got != tc.want {
				t.Fatalf("varz jetstream.config.sync_always = %t, want %t", got, tc.want)
			}
		})
	}
}

func TestCheckForReturnsOnceTrue(t *testing.T) {
	t.Parallel()
	calls := 0
	testenv.CheckFor(t, wait, time.Millisecond, func() error {
		calls++
		if calls < 3 {
			return errors.New("not yet")
		}
		return nil
	})
	if calls != 3 {
		t.Fatalf("f called %d times, want 3", calls)
	}
}

// TestHelperProcess is not a test: the tests below run the test binary with
// it in a helper mode.
func TestHelperProcess(t *testing.T) {
	switch os.Getenv(helperEnv) {
	case "no-main":
		testenv.Postgres(t) // must fail: nothing would stop the cluster
		fmt.Println("UNEXPECTED: got a database without testenv.Main")
	case "crash":
		pool := testenv.Postgres(t)
		var backend int
		if err := pool.QueryRow(ctxFor(t), "SELECT pg_backend_pid()").Scan(&backend); err != nil {
			t.Fatal(err)
		}
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", backend))
		if err != nil {
			t.Fatal(err)
		}
		st := string(stat)
		fields := strings.Fields(st[strings.LastIndexByte(st, ')')+1:]) // state, ppid, ...
		fmt.Printf("PIDS %d %s\n", backend, fields[1])
		// Die the way a test-timeout panic kills a test binary: an
		// unrecovered panic in a goroutine, so no cleanup and no Main epilogue
		// runs.
		go func() { panic("simulated test timeout") }()
		select {}
	}
}

// helper runs the test binary in a helper mode without DATABASE_URL.
func helper(t *testing.T, mode string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1", "-test.v")
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "DATABASE_URL=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, helperEnv+"="+mode)
	return cmd
}

func TestPostgresWithoutMainFails(t *testing.T) {
	t.Parallel()
	out, err := helper(t, "no-main").CombinedOutput()
	if err == nil {
		t.Fatalf("helper passed without testenv.Main:\n%s", out)
	}
	if want := "func TestMain(m *testing.M) { testenv.Main(m) }"; !strings.Contains(string(out), want) {
		t.Fatalf("helper output does not tell to add %q:\n%s", want, out)
	}
	if strings.Contains(string(out), "UNEXPECTED") {
		t.Fatalf("helper got a database:\n%s", out)
	}
}

// TestPostgresDiesWithCrashedTestBinary checks that the shared cluster does
// not outlive a test binary that dies without running its cleanups.
func TestPostgresDiesWithCrashedTestBinary(t *testing.T) {
	t.Parallel()
	cmd := helper(t, "crash")
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err == nil {
		t.Fatalf("crashing helper exited cleanly:\n%s", out.String())
	}
	var backend, postmaster int
	for _, line := range strings.Split(out.String(), "\n") {
		if _, err := fmt.Sscanf(line, "PIDS %d %d", &backend, &postmaster); err == nil {
			break
		}
	}
	if backend == 0 || postmaster == 0 {
		t.Fatalf("helper printed no pids:\n%s", out.String())
	}
	if !strings.Contains(out.String(), "simulated test timeout") {
		t.Fatalf("helper did not die of the panic:\n%s", out.String())
	}
	// The postmaster and a backend of the crashed binary's cluster must be
	// gone (the other children exit on postmaster death as the backend
	// does). A zombie counts as gone.
	testenv.CheckFor(t, wait, poll, func() error {
		for _, pid := range []int{postmaster, backend} {
			stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
			if err != nil {
				continue
			}
			if s := string(stat); !strings.HasPrefix(s[strings.LastIndexByte(s, ')'):], ") Z") {
				return fmt.Errorf("process %d of the crashed binary's cluster still runs: %s", pid, s)
			}
		}
		return nil
	})
}
