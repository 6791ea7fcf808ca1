package jsretry_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetsaga/jetsaga/internal/jsretry"
	"github.com/jetsaga/jetsaga/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// TestTransient: JetStream not answering and a cluster missing a node are
// transient; a request no cluster state can satisfy is not. The errors are
// the servers' own where a test can provoke them.
func TestTransient(t *testing.T) {
	t.Parallel()
	single := testenv.NATS(t)
	_, js1 := testenv.Connect(t, single.URL())
	c := testenv.Cluster(t, 3)
	_, js3 := testenv.Connect(t, c.URLs())
	ctx := testenv.ClusterContext(t) // a slow answer must not turn into a transient timeout

	_, r3OnOne := js1.CreateStream(ctx, jetstream.StreamConfig{Name: "R3", Subjects: []string{"r3.>"}, Replicas: 3})
	_, r5OnThree := js3.CreateStream(ctx, jetstream.StreamConfig{Name: "R5", Subjects: []string{"r5.>"}, Replicas: 5})
	_, missing := js3.Stream(ctx, "MISSING")
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"replicas 3 on one server", r3OnOne, false},
		{"replicas 5 on three servers", r5OnThree, false},
		{"stream not found", missing, false},
		{"a request's deadline", fmt.Errorf("create stream: %w", context.DeadlineExceeded), true},
		{"no responders", fmt.Errorf("x: %w", nats.ErrNoResponders), true},
		{"no stream response", jetstream.ErrNoStreamResponse, true},
		// The messages nats-server writes (errors.json; selectPeerError).
		{"cluster temporarily unavailable", &jetstream.APIError{Code: 503, ErrorCode: 10008, Description: "JetStream system temporarily unavailable"}, true},
		{"no peers, one offline", fmt.Errorf("ensure bucket: %w", &jetstream.APIError{Code: 400, ErrorCode: 10005,
			Description: "no suitable peers for placement, peer offline"}), true},
		{"no peers, one not known yet", &jetstream.APIError{Code: 400, ErrorCode: 10005,
			Description: "no suitable peers for placement, miscellaneous issue"}, true},
		{"no peers, tags", &jetstream.APIError{Code: 400, ErrorCode: 10005,
			Description: "no suitable peers for placement, tags not matched ['az:x']"}, false},
	} {
		if tc.err == nil {
			t.Errorf("%s: no error", tc.name)
			continue
		}
		if got := jsretry.Transient(tc.err); got != tc.want {
			t.Errorf("%s: Transient(%v) = %t, want %t", tc.name, tc.err, got, tc.want)
		}
	}
}

// TestDoWaitsForTheCluster: creating a stream while two nodes of three are
// down (no quorum: no meta leader) fails or does not answer; Do tries again,
// logging, and succeeds once the nodes are back. An error no retry can fix
// returns at once.
func TestDoWaitsForTheCluster(t *testing.T) {
	t.Parallel()
	c := testenv.Cluster(t, 3)
	_, js := testenv.Connect(t, c.URLs())
	var logs testenv.SyncBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))

	err := jsretry.Do(testenv.ClusterContext(t), log, "not ready", func(ctx context.Context) error {
		_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "R5", Subjects: []string{"r5.>"}, Replicas: 5})
		return err
	})
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) || apiErr.ErrorCode != 10005 || logs.String() != "" {
		t.Fatalf("replicas 5 on three servers: %v, logged %q; want error 10005 at once", err, logs.String())
	}

	c.Servers[1].Shutdown()
	c.Servers[2].Shutdown()
	go func() {
		// Bring the nodes back once Do has logged a failed try.
		for !strings.Contains(logs.String(), "not ready") {
			time.Sleep(20 * time.Millisecond)
		}
		for _, s := range c.Servers[1:] {
			if err := s.Start(); err != nil {
				t.Errorf("restart node: %v", err)
			}
		}
	}()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	tries := 0
	err = jsretry.Do(ctx, log, "not ready", func(ctx context.Context) error {
		tries++
		ctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "R3", Subjects: []string{"r3.>"}, Replicas: 3})
		return err
	})
	if err != nil {
		t.Fatalf("after %d tries: %v\n%s", tries, err, logs.String())
	}
	if tries < 2 {
		t.Fatalf("created at the first try without a quorum: the test proves nothing")
	}
	t.Logf("created after %d tries:\n%s", tries, logs.String())
}
