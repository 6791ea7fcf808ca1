// Package commandloop is what every kind of participant shares
// (participants' Go handlers, httpparticipant's URLs): the settings of its
// durable consumer on the commands stream, checked one way, and the loop
// that pulls commands and runs them a bounded number at a time, with
// progress acks and a graceful shutdown. What a participant does with one
// command is its own.
package commandloop

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetsaga/jetsaga/events"
	"github.com/jetsaga/jetsaga/internal/jsretry"
)

// MinAckWait is the shortest accepted AckWait: progress acks go every
// AckWait/3, which must stay well above a network round trip.
const MinAckWait = 100 * time.Millisecond

// iteratorRetry is the pause after an unexpected error from the message
// iterator.
const iteratorRetry = 100 * time.Millisecond

// Settings are a participant's consumer settings.
type Settings struct {
	// Concurrency is the number of commands run at once.
	Concurrency int
	// MaxAckPending bounds the commands delivered and not yet acked; 0
	// means 4 × Concurrency, and it is at least Concurrency.
	MaxAckPending int
	// AckWait is how long JetStream waits for an ack; at least MinAckWait.
	AckWait time.Duration
	// ShutdownTimeout bounds the wait for commands in flight once Run's
	// context is done; 0 means AckWait.
	ShutdownTimeout time.Duration
}

// FieldError names a setting that is wrong and says why.
type FieldError struct{ Field, Problem string }

func (e *FieldError) Error() string { return e.Field + " " + e.Problem }

// Fill checks s and fills in its defaults: concurrency and ackWait when
// they are 0, and the others as documented on Settings.
func (s *Settings) Fill(concurrency int, ackWait time.Duration) *FieldError {
	switch {
	case s.Concurrency < 0:
		return &FieldError{"Concurrency", fmt.Sprintf("is negative (%d)", s.Concurrency)}
	case s.Concurrency == 0:
		s.Concurrency = concurrency
	}
	switch {
	case s.AckWait < 0:
		return &FieldError{"AckWait", fmt.Sprintf("is negative (%s)", s.AckWait)}
	case s.AckWait == 0:
		s.AckWait = ackWait
	case s.AckWait < MinAckWait:
		return &FieldError{"AckWait", fmt.Sprintf("is %s, the minimum is %s", s.AckWait, MinAckWait)}
	}
	switch {
	case s.MaxAckPending < 0:
		return &FieldError{"MaxAckPending", fmt.Sprintf("is negative (%d)", s.MaxAckPending)}
	case s.MaxAckPending == 0:
		s.MaxAckPending = 4 * s.Concurrency
	case s.MaxAckPending < s.Concurrency:
		return &FieldError{"MaxAckPending", fmt.Sprintf("is %d, below Concurrency (%d): handlers would sit idle", s.MaxAckPending, s.Concurrency)}
	}
	switch {
	case s.ShutdownTimeout < 0:
		return &FieldError{"ShutdownTimeout", fmt.Sprintf("is negative (%s)", s.ShutdownTimeout)}
	case s.ShutdownTimeout == 0:
		s.ShutdownTimeout = s.AckWait
	}
	return nil
}

// ConsumerConfig is the durable consumer of participant name in ns, which
// every instance of the participant shares, whatever kind it is.
func ConsumerConfig(ns events.Namespace, name, description string, s Settings) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       ns.ParticipantConsumer(name),
		Description:   description,
		FilterSubject: ns.CommandFilter(name),
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       s.AckWait,
		// The participant ends a command's deliveries itself, by the
		// command's retry budget, and always answers it with an outcome.
		MaxDeliver:    -1,
		MaxAckPending: s.MaxAckPending,
	}
}

// Loop pulls a participant's commands and runs them.
type Loop struct {
	// Package prefixes the loop's own errors ("participants: …").
	Package   string
	JetStream jetstream.JetStream
	// Stream is the commands stream; Consumer the participant's consumer on
	// it (ConsumerConfig), created or updated by Run.
	Stream   string
	Consumer jetstream.ConsumerConfig
	Settings Settings
	Logger   *slog.Logger
	// Ready, if set, runs once the consumer exists, before the first
	// command is fetched; an error ends Run.
	Ready func() error
	// Handle runs one command. ctx is Run's; workCtx outlives it by
	// Settings.ShutdownTimeout, so that a command in flight at shutdown can
	// finish and be answered.
	Handle func(ctx, workCtx context.Context, msg jetstream.Msg)
}

// Run creates or updates the consumer and runs commands, Concurrency at a
// time, until ctx is done; then it stops fetching, lets the commands in
// flight finish (cancelling their workCtx after ShutdownTimeout) and
// returns nil. While JetStream is not ready (jsretry.Transient) it tries
// again to create the consumer. It returns nil at once if ctx ends before
// the consumer exists, and an error if the consumer cannot be created,
// Ready fails (its error as is) or consuming stops for another reason (the
// connection closed).
func (l *Loop) Run(ctx context.Context) error {
	var cons jetstream.Consumer
	err := jsretry.Do(ctx, l.Logger, l.Package+": JetStream not ready, trying again", func(ctx context.Context) (err error) {
		cons, err = l.JetStream.CreateOrUpdateConsumer(ctx, l.Stream, l.Consumer)
		return err
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped before it started: nothing to finish
		}
		return fmt.Errorf("%s: create consumer %s on stream %s: %w", l.Package, l.Consumer.Durable, l.Stream, err)
	}
	if l.Ready != nil {
		if err := l.Ready(); err != nil {
			return err
		}
	}
	// The client buffers up to MaxAckPending messages: the server delivers
	// no more than that unacked anyway, and a larger pull keeps a slow
	// fetch round trip out of the way of every command.
	iter, err := cons.Messages(append(jsretry.PullOptions(l.Settings.MaxAckPending),
		jetstream.WithMessagesErrOnMissingHeartbeat(false))...)
	if err != nil {
		return fmt.Errorf("%s: consume %s: %w", l.Package, l.Consumer.Durable, err)
	}
	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	stopTimer := context.AfterFunc(ctx, func() {
		t := time.AfterFunc(l.Settings.ShutdownTimeout, cancelWork)
		context.AfterFunc(workCtx, func() { t.Stop() })
	})
	defer stopTimer()
	stopIter := context.AfterFunc(ctx, iter.Drain)
	defer stopIter()

	sem := make(chan struct{}, l.Settings.Concurrency)
	var inflight sync.WaitGroup
	defer inflight.Wait()
	defer iter.Stop()
	for {
		sem <- struct{}{}
		msg, err := iter.Next()
		if err != nil {
			<-sem
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				if ctx.Err() == nil {
					return fmt.Errorf("%s: consuming stopped: %w", l.Package, err)
				}
				return nil
			}
			l.Logger.Warn("fetching commands", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(iteratorRetry):
			}
			continue
		}
		inflight.Add(1)
		go func() {
			defer func() {
				<-sem
				inflight.Done()
			}()
			l.Handle(ctx, workCtx, msg)
		}()
	}
}

// KeepAlive sends progress acks for msg every period until stopped.
func KeepAlive(msg jetstream.Msg, period time.Duration) (stop func()) {
	var mu sync.Mutex
	stopped := false
	var t *time.Timer
	t = time.AfterFunc(period, func() {
		mu.Lock()
		defer mu.Unlock()
		if stopped {
			return
		}
		_ = msg.InProgress()
		t.Reset(period)
	})
	return func() {
		mu.Lock()
		stopped = true
		t.Stop()
		mu.Unlock()
	}
}
