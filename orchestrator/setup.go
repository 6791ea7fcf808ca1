package orchestrator

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetsaga/jetsaga/events"
)

// EnsureStreams creates or updates the sagas and commands streams and the
// state bucket of namespace ns with the given options. It is idempotent; the
// coordinator calls it at start, and `jetsaga coordinator` exposes the
// replica count.
func EnsureStreams(ctx context.Context, js jetstream.JetStream, ns events.Namespace, opts events.StreamOptions) error {
	for _, cfg := range []jetstream.StreamConfig{ns.SagasStreamConfig(opts), ns.CommandsStreamConfig(opts)} {
		if _, err := js.CreateOrUpdateStream(ctx, cfg); err != nil {
			return fmt.Errorf("ensure stream %s: %w", cfg.Name, err)
		}
	}
	if _, err := js.CreateOrUpdateKeyValue(ctx, ns.StateBucketConfig(opts)); err != nil {
		return fmt.Errorf("ensure bucket %s: %w", ns.StateBucket(), err)
	}
	return nil
}
