package dtmgateway

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetsaga/jetsaga/events"
	"github.com/jetsaga/jetsaga/httpparticipant"
)

// Defaults of [Config].
const (
	DefaultWaitTimeout  = 30 * time.Second
	DefaultMaxBodyBytes = 1 << 20
	DefaultListLimit    = 100
)

// ErrInvalidConfig matches every error returned by [New] for a bad field.
var ErrInvalidConfig = errors.New("dtmgateway: invalid configuration")

type configError struct{ field, problem string }

func (e *configError) Error() string {
	return fmt.Sprintf("dtmgateway: invalid configuration: %s: %s", e.field, e.problem)
}

func (e *configError) Is(target error) bool { return target == ErrInvalidConfig }

// Config configures a [Gateway]. JetStream is required.
type Config struct {
	// JetStream publishes starts and operator actions and reads states.
	// Required; the streams and the state bucket must exist (the
	// coordinator creates them).
	JetStream jetstream.JetStream
	// Namespace selects the deployment. Default events.Default().
	Namespace events.Namespace
	// Participant is the name of the HTTP participant that runs the steps.
	// Default httpparticipant.DefaultName.
	Participant string
	// Allow, when set, is checked at submit: a saga naming a URL outside
	// it is refused with an error naming the field, before anything
	// starts. Give it the HTTP participants' list (they refuse such URLs
	// anyway, but only once the saga runs). Default: any http(s) URL.
	Allow *httpparticipant.AllowList
	// WaitTimeout bounds how long a submit with wait_result waits for the
	// saga to end. Default [DefaultWaitTimeout].
	WaitTimeout time.Duration
	// MaxBodyBytes bounds a request body. Default [DefaultMaxBodyBytes].
	MaxBodyBytes int64
	// Logger receives errors. Default slog.Default().
	Logger *slog.Logger
}

func (cfg Config) withDefaults() (Config, error) {
	if cfg.JetStream == nil {
		return cfg, &configError{"JetStream", "is nil"}
	}
	cfg.Namespace = cfg.Namespace.OrDefault()
	if cfg.Participant == "" {
		cfg.Participant = httpparticipant.DefaultName
	}
	if err := events.ValidToken(cfg.Participant); err != nil {
		return cfg, &configError{"Participant", fmt.Sprintf("%q %v", cfg.Participant, err)}
	}
	switch {
	case cfg.WaitTimeout < 0:
		return cfg, &configError{"WaitTimeout", fmt.Sprintf("is negative (%s)", cfg.WaitTimeout)}
	case cfg.WaitTimeout == 0:
		cfg.WaitTimeout = DefaultWaitTimeout
	}
	switch {
	case cfg.MaxBodyBytes < 0:
		return cfg, &configError{"MaxBodyBytes", fmt.Sprintf("is negative (%d)", cfg.MaxBodyBytes)}
	case cfg.MaxBodyBytes == 0:
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return cfg, nil
}
