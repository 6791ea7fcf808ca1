package participants

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	"github.com/jetsaga/jetsaga/internal/commandloop"
	"github.com/jetsaga/jetsaga/internal/groupcommit"
	"github.com/jetsaga/jetsaga/internal/telemetry"
	"github.com/jetsaga/jetsaga/outbox"
)

// ackTimeout bounds the double ack (and the rollback) after a commit; it is
// not tied to Run's context so that commands finished during shutdown are
// still acked.
const ackTimeout = 5 * time.Second

// Participant consumes one participant's step commands and runs the
// registered handlers. Create it with [New], register the handlers with
// [Register], then call [Participant.Run].
type Participant struct {
	cfg Config
	bar *barrier
	log *slog.Logger

	mu      sync.Mutex
	started bool
	actions map[string]*action

	// relay relays Outbox when Config.RelayEvents is set; Run sets it
	// before it starts any handler.
	relay *outbox.Relay

	// outcomes publishes outcomes (with group commit if
	// Config.AtomicBatchMin). Run sets it before it starts any handler.
	outcomes *groupcommit.Publisher

	// resendDelay is the delay of the nak of a command whose outcome
	// could not be sent; tests shorten it.
	resendDelay time.Duration

	// tracer records spans; nil without Config.TracerProvider.
	tracer trace.Tracer

	// afterCommit, set by tests, runs after a command's transaction
	// committed and before the message is acked (a test closes the NATS
	// connection there to simulate a crash).
	afterCommit func(msg jetstream.Msg)
}

// New checks cfg, fills in its defaults and returns a participant without
// touching the network or the database.
func New(cfg Config) (*Participant, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Participant{
		cfg:     c,
		bar:     newBarrier(c.BarrierSchema, c.BarrierTable),
		log:     c.Logger.With("participant", c.Name),
		actions: make(map[string]*action),

		resendDelay: resendDelay,
		tracer:      telemetry.Tracer(c.TracerProvider, tracerName),
	}, nil
}

// Name returns the participant's name.
func (p *Participant) Name() string { return p.cfg.Name }

// Outbox returns the outbox that handlers may write their own events to
// (Run relays it when Config.RelayEvents is set).
func (p *Participant) Outbox() *outbox.Outbox { return p.cfg.Outbox }

// wakeRelays tells the relays of the outboxes a committed step wrote to that
// rows are waiting: this participant's relay, woken in memory, and, through
// Outbox.Notify, any other relay of those outboxes in this process (and in
// others, for an Outbox configured with NotifyDB).
func (p *Participant) wakeRelays(w *outboxWrites) {
	if len(w.outboxes) == 0 {
		return
	}
	if p.relay != nil {
		// Also when the handler wrote through another Outbox value of
		// the same table (the package-level outbox.Write).
		p.relay.Wake()
	}
	for _, o := range w.outboxes {
		o.Notify()
	}
}

// ConsumerConfig returns the configuration of the durable consumer that Run
// creates or updates on the commands stream.
func (p *Participant) ConsumerConfig() jetstream.ConsumerConfig {
	return commandloop.ConsumerConfig(p.cfg.Namespace, p.cfg.Name, "jetsaga participant "+p.cfg.Name, p.cfg.settings())
}

// Run creates or updates the participant's durable consumer on the commands
// stream and handles commands, Concurrency at a time, until ctx is done. It
// also runs the outbox relay (when Config.RelayEvents is set) and the
// barrier cleanup (unless Config.BarrierRetention is negative).
//
// Shutdown is graceful: when ctx is done Run stops fetching, lets the
// handlers in flight (and the commands already fetched) finish, commit and
// ack — cancelling their context after Config.ShutdownTimeout — then stops
// the relay and the cleanup and returns nil. It returns an error if the
// consumer cannot be created, or if the NATS connection closes (after the
// same graceful stop). A Participant runs once.
func (p *Participant) Run(ctx context.Context) error {
	if err := p.claim(); err != nil {
		return err
	}
	stopBackground, err := p.startBackground(ctx)
	if err != nil {
		return err
	}
	defer stopBackground()
	// Participants may not read stream configurations: the publisher
	// learns from the first batch whether the sagas stream takes them.
	p.outcomes = groupcommit.New(p.cfg.JetStream, groupcommit.Options{MinBatch: p.cfg.AtomicBatchMin})
	defer p.outcomes.Close()
	loop := commandloop.Loop{Package: "participants", JetStream: p.cfg.JetStream, Stream: p.cfg.Namespace.CommandsStream(),
		Consumer: p.ConsumerConfig(), Settings: p.cfg.settings(), Logger: p.log, Ready: p.watchMetrics,
		Handle: func(_, workCtx context.Context, msg jetstream.Msg) { p.handle(workCtx, msg) }}
	return loop.Run(ctx)
}

// claim marks the participant as running, once.
func (p *Participant) claim() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.started {
		return ErrRunning
	}
	if len(p.actions) == 0 {
		return ErrNoHandlers
	}
	p.started = true
	return nil
}

// watchMetrics has Config.Metrics watch the consumer (and the outbox).
func (p *Participant) watchMetrics() error {
	m := p.cfg.Metrics
	if m == nil {
		return nil
	}
	if err := m.WatchConsumer(p.cfg.JetStream, p.cfg.Namespace.CommandsStream(), p.ConsumerConfig().Durable); err != nil {
		return errConfig("Metrics", "%v", err)
	}
	if p.cfg.RelayEvents {
		m.WatchOutbox(p.cfg.Pool, p.cfg.Outbox)
	}
	return nil
}

// startBackground starts the outbox relay (Config.RelayEvents) and the
// barrier cleanup; stop ends them and waits for them.
func (p *Participant) startBackground(ctx context.Context) (stop func(), err error) {
	var bg sync.WaitGroup
	bgCtx, stopBG := context.WithCancel(context.WithoutCancel(ctx))
	stop = func() {
		stopBG()
		bg.Wait()
	}
	if p.cfg.RelayEvents {
		rc := p.cfg.Relay
		rc.Outbox = p.cfg.Outbox
		if rc.OnError == nil {
			rc.OnError = func(err error) { p.log.Warn("outbox relay", "err", err) }
		}
		relay, err := outbox.NewRelay(p.cfg.Pool, p.cfg.JetStream, rc)
		if err != nil {
			stop()
			return nil, errConfig("Relay", "%v", err)
		}
		p.relay = relay
		bg.Add(1)
		go func() {
			defer bg.Done()
			if err := relay.Run(bgCtx); err != nil {
				p.log.Error("outbox relay stopped", "err", err)
			}
		}()
	}
	if p.cfg.BarrierRetention > 0 {
		bg.Add(1)
		go func() {
			defer bg.Done()
			p.cleanupLoop(bgCtx)
		}()
	}
	return stop, nil
}

// cleanupLoop prunes old barrier rows every CleanupInterval until ctx is
// done.
func (p *Participant) cleanupLoop(ctx context.Context) {
	for {
		n, err := p.bar.prune(ctx, p.cfg.Pool, time.Now().Add(-p.cfg.BarrierRetention), p.cfg.CleanupBatch)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			p.log.Warn("barrier cleanup failed; will try again", "err", err, "deleted", n)
		case n > 0:
			p.log.Info("barrier cleanup", "deleted", n, "retention", p.cfg.BarrierRetention)
		}
		t := time.NewTimer(p.cfg.CleanupInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}
