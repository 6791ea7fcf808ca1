package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetsaga/jetsaga/events"
	"github.com/jetsaga/jetsaga/internal/groupcommit"
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
	_, err := openOrCreateBucket(ctx, js, want)
	if err == nil {
		err = fitBucketStream(ctx, js, want.Bucket, &want)
	}
	if err != nil {
		return fmt.Errorf("ensure bucket %s: %w", want.Bucket, err)
	}
	return nil
}

// openOrCreateBucket returns the bucket cfg names, creating it if missing.
func openOrCreateBucket(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, cfg.Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		if kv, err = js.CreateKeyValue(ctx, cfg); errors.Is(err, jetstream.ErrBucketExists) {
			kv, err = js.KeyValue(ctx, cfg.Bucket) // created meanwhile by another instance
		}
	}
	return kv, err
}

// fitBucketStream makes a bucket's stream take per-message TTLs and atomic
// batches (the coordinator group-commits state writes), without
// subject delete markers (nobody needs to learn that a finished saga
// expired, and a marker would cost one more write per saga), and, if want is
// set, want's replicas and history. It updates the stream itself, in one
// update and only when something differs: UpdateKeyValue would rebuild the
// stream's configuration and try to turn the TTLs off, which JetStream
// refuses.
func fitBucketStream(ctx context.Context, js jetstream.JetStream, bucket string, want *jetstream.KeyValueConfig) error {
	s, err := js.Stream(ctx, events.BucketStream(bucket))
	if err != nil {
		return err
	}
	have := s.CachedInfo().Config
	cfg := have
	cfg.AllowMsgTTL, cfg.AllowAtomicPublish = true, true
	if want != nil {
		cfg.Replicas, cfg.MaxMsgsPerSubject = want.Replicas, int64(want.History)
	}
	if cfg.AllowMsgTTL == have.AllowMsgTTL && cfg.AllowAtomicPublish == have.AllowAtomicPublish &&
		cfg.Replicas == have.Replicas && cfg.MaxMsgsPerSubject == have.MaxMsgsPerSubject {
		return nil
	}
	_, err = js.UpdateStream(ctx, cfg)
	return err
}

// bucketStream returns the configuration of kv's stream.
func bucketStream(ctx context.Context, kv jetstream.KeyValue) (jetstream.StreamConfig, error) {
	st, err := kv.Status(ctx)
	if err != nil {
		return jetstream.StreamConfig{}, err
	}
	bs, ok := st.(*jetstream.KeyValueBucketStatus)
	if !ok {
		return jetstream.StreamConfig{}, fmt.Errorf("bucket %s: no stream status", kv.Bucket())
	}
	return bs.StreamInfo().Config, nil
}

// newPublisher returns a publisher into the stream configured by cfg that
// commits at least batchMin messages as one atomic batch (0: never), if
// the stream takes atomic batches.
func newPublisher(js jetstream.JetStream, cfg jetstream.StreamConfig, batchMin int) *groupcommit.Publisher {
	if !cfg.AllowAtomicPublish {
		batchMin = 0
	}
	return groupcommit.New(js, groupcommit.Options{MinBatch: batchMin})
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
