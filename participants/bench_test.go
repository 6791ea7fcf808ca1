package participants

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetsaga/jetsaga/events"
	"github.com/jetsaga/jetsaga/internal/testenv"
	"github.com/jetsaga/jetsaga/outbox"
)

// benchAccounts spreads the benchmark's debits so that row locks on one
// account do not serialise them.
const benchAccounts = 1024

// BenchmarkSteps measures steps per second through the whole participant
// path: the commands are published (asynchronously) to JetStream, consumed,
// each runs in one PostgreSQL transaction (barrier, balance update, barrier
// result) and commits; the participant publishes its outcome and acks it, and
// the clock stops when every outcome is in the sagas stream. PostgreSQL runs with
// fsync on; JetStream with its default sync interval or with sync always.
func BenchmarkSteps(b *testing.B) {
	for _, sync := range []string{"default", "always"} {
		for _, c := range []int{1, 16, 64} {
			b.Run(fmt.Sprintf("sync=%s/c=%d", sync, c), func(b *testing.B) {
				var opts []testenv.NATSOption
				if sync == "always" {
					opts = append(opts, testenv.SyncAlways())
				}
				benchSteps(b, c, opts...)
			})
		}
	}
}

func benchSteps(b *testing.B, concurrency int, natsOpts ...testenv.NATSOption) {
	env := setup(b, natsOpts...)
	balances := make(map[string]int64, benchAccounts)
	for i := range benchAccounts {
		balances[fmt.Sprintf("acct-%d", i)] = 1 << 40
	}
	env.l.seed(b, balances)
	ob, err := outbox.New(outbox.Config{})
	if err != nil {
		b.Fatal(err)
	}
	p, err := New(Config{Name: testName, Pool: env.pool, JetStream: env.js, Outbox: ob, Concurrency: concurrency,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	env.l.register(p)
	start(b, p)
	// Warm up: the consumer exists and connections are open.
	warm := cmd("warm-up", "debit", events.OpDo, "Withdraw", "acct-0", 1)
	env.send(b, warm)
	env.wait(b, warm)

	// A publisher of its own, so that its async acks do not mix with the
	// participant's publishes.
	_, pub := testenv.Connect(b, env.srv.URL())
	stream, err := env.js.Stream(b.Context(), env.ns.SagasStream())
	if err != nil {
		b.Fatal(err)
	}
	cmds := make([][]byte, b.N)
	for i := range b.N {
		c := cmd(fmt.Sprintf("b-%d", i), "debit", events.OpDo, "Withdraw", fmt.Sprintf("acct-%d", i%benchAccounts), 1)
		if cmds[i], err = c.Encode(); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	began := time.Now()
	for i := range b.N {
		saga := fmt.Sprintf("b-%d", i)
		if _, err := pub.PublishAsync(env.ns.Command(testName, saga), cmds[i],
			jetstream.WithMsgID(events.CommandMsgID(saga, "debit", events.OpDo, 1))); err != nil {
			b.Fatal(err)
		}
	}
	want := uint64(b.N + 1) // and the warm-up's outcome
	for {
		info, err := stream.Info(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		if info.State.Msgs >= want {
			break
		}
		time.Sleep(2 * time.Millisecond)
	}
	elapsed := time.Since(began)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "steps/s")
	select {
	case <-pub.PublishAsyncComplete():
	case <-time.After(waitTotal):
		b.Fatal("command publishes not acked")
	}
}
