package testenv

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetsaga/jetsaga/devenv"
)

// clusterReadyTimeout bounds the wait for a JetStream meta leader.
const clusterReadyTimeout = time.Minute

// NATSOption adjusts the options of a test's NATS server or cluster.
type NATSOption func(*devenv.NATSOptions)

// SyncAlways makes JetStream fsync every write ("sync_interval: always").
func SyncAlways() NATSOption {
	return func(o *devenv.NATSOptions) { o.SyncAlways = true }
}

// WithLog sends the server's log lines to t.Logf (shown when the test
// fails or with -v). Lines logged after the server is closed are dropped:
// t.Logf panics once the test has completed.
func WithLog(t testing.TB) NATSOption {
	return func(o *devenv.NATSOptions) {
		var done atomic.Bool
		// Registered before the server's Close, so it runs after it.
		t.Cleanup(func() { done.Store(true) })
		o.Logf = func(format string, args ...any) {
			if !done.Load() {
				t.Logf(format, args...)
			}
		}
	}
}

// NATS starts an embedded NATS server with JetStream stored in
// t.TempDir() on a random port, and closes it when the test ends.
func NATS(t testing.TB, opts ...NATSOption) *devenv.NATSServer {
	t.Helper()
	o := devenv.NATSOptions{StoreDir: t.TempDir()}
	for _, opt := range opts {
		opt(&o)
	}
	srv, err := devenv.StartNATS(o)
	if err != nil {
		t.Fatalf("testenv: start NATS: %v", err)
	}
	t.Cleanup(srv.Close)
	return srv
}

// Cluster starts an n-node NATS cluster with JetStream stored under
// t.TempDir(), waits until it has a JetStream meta leader, and closes it
// when the test ends. Connect to it with Connect(t, c.URLs()).
func Cluster(t testing.TB, n int, opts ...NATSOption) *devenv.Cluster {
	t.Helper()
	o := devenv.NATSOptions{StoreDir: t.TempDir()}
	for _, opt := range opts {
		opt(&o)
	}
	c, err := devenv.StartCluster(n, o)
	if err != nil {
		t.Fatalf("testenv: start NATS cluster: %v", err)
	}
	t.Cleanup(c.Close)
	ctx, cancel := context.WithTimeout(context.Background(), clusterReadyTimeout)
	defer cancel()
	if err := c.WaitJetStreamReady(ctx); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return c
}

// Connect connects to url (one URL or a comma-separated list) and returns
// the connection and a JetStream handle; the connection is closed when the
// test ends. The client reconnects forever, every 50ms, so it survives
// server restarts and node losses.
func Connect(t testing.TB, url string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(url,
		nats.Name(t.Name()),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(50*time.Millisecond),
		nats.ReconnectJitter(10*time.Millisecond, 10*time.Millisecond),
	)
	if err != nil {
		t.Fatalf("testenv: connect to NATS at %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("testenv: JetStream: %v", err)
	}
	return nc, js
}

// clusterRequestTimeout bounds one JetStream request of a test's setup on
// a cluster.
const clusterRequestTimeout = time.Minute

// ClusterContext returns a context for a test's own JetStream requests to
// a cluster (creating a replicated bucket, a put, a stream lookup): they
// wait up to a minute for an answer instead of nats.go's 5 s default. On a
// loaded machine (a full -race run on two cores) placing a stream and
// electing its leader can take longer than 5 s, and a test that does not
// expect a timeout should not fail on one.
func ClusterContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), clusterRequestTimeout)
	t.Cleanup(cancel)
	return ctx
}
