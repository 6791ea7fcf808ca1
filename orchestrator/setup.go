package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetsaga/jetsaga/events"
)

// EnsureStreams creates the sagas and commands streams and the state bucket
// of namespace ns, or updates them when their settings differ from opts. It
// is idempotent and sends no update when nothing changed (updating a stream
// while consumers are being created on it races inside nats-server 2.15).
// The coordinator calls it at start; `jetsaga coordinator` exposes the
// replica count.
func EnsureStreams(ctx context.Context, js jetstream.JetStream, ns events.Namespace, opts events.StreamOptions) error {
	for _, want := range []jetstream.StreamConfig{ns.SagasStreamConfig(opts), ns.CommandsStreamConfig(opts)} {
		if err := ensureStream(ctx, js, want); err != nil {
			return err
		}
	}
	want := ns.StateBucketConfig(opts)
	kv, err := js.KeyValue(ctx, want.Bucket)
	switch {
	case errors.Is(err, jetstream.ErrBucketNotFound):
		_, err = js.CreateKeyValue(ctx, want)
	case err == nil:
		var st jetstream.KeyValueStatus
		if st, err = kv.Status(ctx); err == nil {
			bs, ok := st.(*jetstream.KeyValueBucketStatus)
			if !ok || bs.StreamInfo().Config.Replicas != want.Replicas || bs.StreamInfo().Config.MaxMsgsPerSubject != int64(want.History) ||
				bs.LimitMarkerTTL() != want.LimitMarkerTTL {
				_, err = js.UpdateKeyValue(ctx, want)
			}
		}
	}
	if err != nil {
		return fmt.Errorf("ensure bucket %s: %w", want.Bucket, err)
	}
	return nil
}

func ensureStream(ctx context.Context, js jetstream.JetStream, want jetstream.StreamConfig) error {
	s, err := js.Stream(ctx, want.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		if _, err = js.CreateStream(ctx, want); errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return ensureStream(ctx, js, want) // created meanwhile by another instance
		}
	} else if err == nil && streamDiffers(s.CachedInfo().Config, want) {
		_, err = js.UpdateStream(ctx, want)
	}
	if err != nil {
		return fmt.Errorf("ensure stream %s: %w", want.Name, err)
	}
	return nil
}

// streamDiffers compares the settings jetsaga chooses.
func streamDiffers(have, want jetstream.StreamConfig) bool {
	return !slices.Equal(have.Subjects, want.Subjects) || have.MaxAge != want.MaxAge ||
		have.Replicas != want.Replicas || have.Duplicates != want.Duplicates ||
		have.Retention != want.Retention || have.Discard != want.Discard || have.Storage != want.Storage ||
		have.AllowMsgSchedules != want.AllowMsgSchedules || have.AllowAtomicPublish != want.AllowAtomicPublish ||
		have.AllowDirect != want.AllowDirect || have.Description != want.Description
}
