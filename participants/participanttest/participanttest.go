package participanttest

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetsaga/jetsaga/events"
	"github.com/jetsaga/jetsaga/orchestrator"
)

// pollInterval is how often WaitOutcome looks at the stream.
const pollInterval = 10 * time.Millisecond

// CreateStreams creates the sagas and commands streams of ns (and the state
// bucket), or updates them only where they differ, exactly as a coordinator
// does at start (orchestrator.EnsureStreams). In production the
// orchestrator's deployment creates them; participants never do.
func CreateStreams(ctx context.Context, js jetstream.JetStream, ns events.Namespace, opts events.StreamOptions) error {
	if err := orchestrator.EnsureStreams(ctx, js, ns, opts); err != nil {
		return fmt.Errorf("participanttest: %w", err)
	}
	return nil
}

// SendOption adjusts [Send].
type SendOption func(*nats.Msg)

// WithMsgID replaces the command's Nats-Msg-Id. Use it to deliver a command
// again past JetStream's duplicate window, as a very late duplicate would
// arrive.
func WithMsgID(id string) SendOption {
	return func(m *nats.Msg) { m.Header.Set(events.HeaderMsgID, id) }
}

// WithHeader adds a header, e.g. events.HeaderTraceParent.
func WithHeader(key, value string) SendOption {
	return func(m *nats.Msg) { m.Header.Set(key, value) }
}

// Send publishes cmd as the coordinator does: on ns.Command(participant,
// saga), with Nats-Msg-Id events.CommandMsgID and the saga, step, op,
// attempt and participant headers. A zero Retry becomes
// events.DefaultRetry() and a zero Attempt 1.
func Send(ctx context.Context, js jetstream.JetStream, ns events.Namespace, cmd events.Command, opts ...SendOption) (*jetstream.PubAck, error) {
	cmd.V = events.Version
	if cmd.Retry == (events.RetryPolicy{}) {
		cmd.Retry = events.DefaultRetry()
	}
	if cmd.Attempt == 0 {
		cmd.Attempt = 1
	}
	m, err := ns.CommandMsg(&cmd, events.Trace{})
	if err != nil {
		return nil, fmt.Errorf("participanttest: %w", err)
	}
	for _, o := range opts {
		o(m)
	}
	ack, err := js.PublishMsg(ctx, m)
	if err != nil {
		return nil, fmt.Errorf("participanttest: publish command: %w", err)
	}
	return ack, nil
}

// Outcome is an outcome read from the sagas stream.
type Outcome struct {
	events.Outcome
	// Seq is its sequence in the sagas stream.
	Seq uint64
	// Header holds its NATS headers.
	Header nats.Header
}

// Outcomes returns, in stream order, every outcome that participant
// published about saga. A message on the outcome subject that does not
// decode is an error.
func Outcomes(ctx context.Context, js jetstream.JetStream, ns events.Namespace, participant, sagaID string) ([]Outcome, error) {
	return read(ctx, js, ns, ns.Event(participant, sagaID))
}

// AllOutcomes returns every outcome of every saga that participant
// published, in stream order.
func AllOutcomes(ctx context.Context, js jetstream.JetStream, ns events.Namespace, participant string) ([]Outcome, error) {
	return read(ctx, js, ns, ns.Event(participant, "*"))
}

func read(ctx context.Context, js jetstream.JetStream, ns events.Namespace, subject string) ([]Outcome, error) {
	s, err := js.Stream(ctx, ns.SagasStream())
	if err != nil {
		return nil, fmt.Errorf("participanttest: stream %s: %w", ns.SagasStream(), err)
	}
	var out []Outcome
	for seq := uint64(1); ; seq++ {
		m, err := s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("participanttest: read %s from %d: %w", subject, seq, err)
		}
		o, err := events.DecodeOutcome(m.Data)
		if err != nil {
			return nil, fmt.Errorf("participanttest: outcome at %d on %s: %w", m.Sequence, m.Subject, err)
		}
		out = append(out, Outcome{Outcome: o, Seq: m.Sequence, Header: m.Header})
		seq = m.Sequence
	}
}

// WaitOutcome waits until the outcome answering cmd (its saga, step, op and
// attempt) is in the sagas stream and returns it, or returns ctx's error.
func WaitOutcome(ctx context.Context, js jetstream.JetStream, ns events.Namespace, cmd events.Command) (Outcome, error) {
	attempt := cmd.Attempt
	if attempt == 0 {
		attempt = 1
	}
	for {
		os, err := Outcomes(ctx, js, ns, cmd.Participant, cmd.SagaID)
		if err != nil {
			return Outcome{}, err
		}
		for _, o := range os {
			if o.Step == cmd.Step && o.Op == cmd.Op && o.Attempt == attempt {
				return o, nil
			}
		}
		t := time.NewTimer(pollInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			return Outcome{}, fmt.Errorf("participanttest: no outcome for %s: %w",
				events.CommandMsgID(cmd.SagaID, cmd.Step, cmd.Op, attempt), ctx.Err())
		case <-t.C:
		}
	}
}
