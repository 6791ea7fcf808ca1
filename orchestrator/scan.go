package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetsaga/jetsaga/internal/jsretry"
)

// errNoProgress: a fetch returned nothing although the consumer had
// messages pending (its leader moved, or the server it lived on is gone).
var errNoProgress = errors.New("no progress")

// scanAbort wraps an error of the caller's function, which scan returns
// as it is instead of reading again.
type scanAbort struct{ err error }

func (a scanAbort) Error() string { return a.err.Error() }
func (a scanAbort) Unwrap() error { return a.err }

// scan calls f for every message of a stream that matches filters, in
// stream order, up to the last message present when it starts.
//
// It rides out a cluster losing a node or electing leaders, which an
// operator's replay meets in the very incident it is run for: a read that
// JetStream does not answer is started again, with a new consumer, from
// the message after the last one f was given, until ctx ends. Each message
// is given to f once; an error of f ends the scan.
func scan(ctx context.Context, js jetstream.JetStream, stream string, filters []string, f func(jetstream.Msg) error) error {
	r := &scanner{js: js, stream: stream, filters: filters, f: f, next: 1}
	for delay := 100 * time.Millisecond; ; delay = min(2*delay, 2*time.Second) {
		err := r.read(ctx)
		var abort scanAbort
		switch {
		case err == nil:
			return nil
		case errors.As(err, &abort):
			return abort.err
		case ctx.Err() != nil || !retryableRead(err):
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (reading again after: %v)", ctx.Err(), err)
		case <-time.After(delay):
		}
	}
}

// retryableRead reports whether a failed read may succeed from a new
// consumer: JetStream not answering, or the consumer gone with its server.
func retryableRead(err error) bool {
	return jsretry.Transient(err) || errors.Is(err, errNoProgress) ||
		errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrConsumerDeleted) ||
		errors.Is(err, jetstream.ErrNoHeartbeat) || errors.Is(err, nats.ErrConnectionReconnecting)
}

// scanner is scan's position: the next stream sequence to give f, and the
// last one to read (the stream's last message when the scan began).
type scanner struct {
	js      jetstream.JetStream
	stream  string
	filters []string
	f       func(jetstream.Msg) error
	next    uint64
	end     uint64 // 0 until the stream's info was read
}

// read reads from r.next to r.end with one ephemeral consumer.
func (r *scanner) read(ctx context.Context) error {
	s, err := r.js.Stream(ctx, r.stream)
	if err != nil {
		return fmt.Errorf("stream %s: %w", r.stream, err)
	}
	if r.end == 0 {
		r.end = s.CachedInfo().State.LastSeq
	}
	if r.next > r.end {
		return nil
	}
	cfg := jetstream.ConsumerConfig{
		FilterSubjects:    r.filters,
		AckPolicy:         jetstream.AckNonePolicy,
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       r.next,
		InactiveThreshold: time.Minute,
		MemoryStorage:     true,
	}
	cons, err := s.CreateConsumer(ctx, cfg)
	if err != nil {
		return fmt.Errorf("read %s: %w", r.stream, err)
	}
	defer func() { _ = s.DeleteConsumer(context.WithoutCancel(ctx), cons.CachedInfo().Name) }()
	for pending := cons.CachedInfo().NumPending; pending > 0; {
		batch, err := cons.Fetch(int(min(pending, 1000)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return fmt.Errorf("read %s: %w", r.stream, err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			meta, err := m.Metadata()
			if err != nil {
				return scanAbort{err}
			}
			if meta.Sequence.Stream > r.end {
				return nil
			}
			if err := r.f(m); err != nil {
				return scanAbort{err}
			}
			r.next = meta.Sequence.Stream + 1
			pending = meta.NumPending
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return fmt.Errorf("read %s: %w", r.stream, err)
		}
		if n == 0 {
			return fmt.Errorf("read %s: %w with %d messages pending", r.stream, errNoProgress, pending)
		}
	}
	return nil
}
