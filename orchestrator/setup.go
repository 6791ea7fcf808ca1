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
	_, err := js.KeyValue(ctx, want.Bucket)
	switch {
	case errors.Is(err, jetstream.ErrBucketNotFound):
		if _, err = js.CreateKeyValue(ctx, want); errors.Is(err, jetstream.ErrBucketExists) {
			err = nil // created meanwhile by another instance
		}
	case err == nil:
		// Update the bucket's stream itself: UpdateKeyValue would rebuild
		// its configuration and try to turn the per-message TTLs off.
		var s jetstream.Stream
		if s, err = js.Stream(ctx, events.BucketStream(want.Bucket)); err == nil {
			cfg := s.CachedInfo().Config
			if cfg.Replicas != want.Replicas || cfg.MaxMsgsPerSubject != int64(want.History) {
				cfg.Replicas, cfg.MaxMsgsPerSubject = want.Replicas, int64(want.History)
				_, err = js.UpdateStream(ctx, cfg)
			}
		}
	}
	if err == nil {
		err = allowKeyTTLs(ctx, js, want.Bucket)
	}
	if err != nil {
		return fmt.Errorf("ensure bucket %s: %w", want.Bucket, err)
	}
	return nil
}

// allowKeyTTLs lets a bucket's stream take per-message TTLs, without subject
// delete markers: nobody needs to learn that a finished saga expired, and a
// marker would cost one more write per saga.
func allowKeyTTLs(ctx context.Context, js jetstream.JetStream, bucket string) error {
	s, err := js.Stream(ctx, events.BucketStream(bucket))
	if err != nil {
		return err
	}
	cfg := s.CachedInfo().Config
	if cfg.AllowMsgTTL {
		return nil
	}
	cfg.AllowMsgTTL = true
	_, err = js.UpdateStream(ctx, cfg)
	return err
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
