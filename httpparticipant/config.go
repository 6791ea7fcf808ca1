package httpparticipant

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetsaga/jetsaga/events"
	"github.com/jetsaga/jetsaga/internal/commandloop"
)

// Defaults of [Config].
const (
	DefaultConcurrency      = 32
	DefaultAckWait          = 30 * time.Second
	DefaultRequestTimeout   = 3 * time.Second // DTM's default
	DefaultOngoingInterval  = time.Second
	DefaultOngoingLimit     = time.Minute
	DefaultMaxResponseBytes = 64 << 10
)

// ErrInvalidConfig matches every error returned by [New] for a bad field.
var ErrInvalidConfig = errors.New("httpparticipant: invalid configuration")

type configError struct{ field, problem string }

func (e *configError) Error() string {
	return fmt.Sprintf("httpparticipant: invalid configuration: %s: %s", e.field, e.problem)
}

func (e *configError) Is(target error) bool { return target == ErrInvalidConfig }

func errConfig(field, format string, args ...any) error {
	return &configError{field: field, problem: fmt.Sprintf(format, args...)}
}

// Config configures a [Participant]. JetStream and Allow are required;
// every other field has a default.
type Config struct {
	// Name is the participant name that HTTP steps' plans give. Default
	// [DefaultName] ("http").
	Name string
	// JetStream consumes the commands and publishes the outcomes. Required.
	// The streams must exist; the participant creates or updates only its
	// durable consumer, which every instance of the same Name shares.
	JetStream jetstream.JetStream
	// Namespace selects the subjects and streams. Default events.Default().
	Namespace events.Namespace
	// Allow lists the URLs steps may call (hosts or URL prefixes, see
	// [AllowList]); redirects are followed only within it. Required: a
	// command for any other URL is rejected without a call.
	Allow *AllowList
	// Concurrency is the number of commands handled at the same time (HTTP
	// calls in flight, and services being asked again after ONGOING).
	// Default [DefaultConcurrency].
	Concurrency int
	// MaxAckPending bounds the commands delivered and not yet acked. Default
	// 4 × Concurrency; at least Concurrency.
	MaxAckPending int
	// AckWait is how long JetStream waits for an ack before it delivers a
	// command again; calls are kept alive with progress acks every
	// AckWait/3. Default [DefaultAckWait]; at least 100ms.
	AckWait time.Duration
	// RequestTimeout bounds a call whose step sets no request timeout.
	// Default [DefaultRequestTimeout] (3 s, as DTM).
	RequestTimeout time.Duration
	// OngoingInterval is the pause before asking again a service that
	// answered ONGOING, for steps that set none. Default
	// [DefaultOngoingInterval].
	OngoingInterval time.Duration
	// OngoingLimit bounds how long one command keeps asking a service that
	// answers ONGOING, for steps that set none. Default [DefaultOngoingLimit].
	OngoingLimit time.Duration
	// MaxResponseBytes is how much of a response body is read (to find
	// FAILURE or ONGOING in it). Default [DefaultMaxResponseBytes].
	MaxResponseBytes int64
	// Transport makes the calls. Default: a clone of
	// http.DefaultTransport keeping up to Concurrency idle connections per
	// host.
	Transport http.RoundTripper
	// ShutdownTimeout bounds the wait for calls in flight once Run's
	// context is done; after it they are cancelled and their commands
	// delivered again later. Default AckWait.
	ShutdownTimeout time.Duration
	// Logger receives the participant's logs. Default slog.Default().
	Logger *slog.Logger
}

func (cfg Config) withDefaults() (Config, error) {
	if cfg.Name == "" {
		cfg.Name = DefaultName
	}
	if err := events.ValidToken(cfg.Name); err != nil {
		return cfg, errConfig("Name", "%q %v", cfg.Name, err)
	}
	if cfg.JetStream == nil {
		return cfg, errConfig("JetStream", "is nil")
	}
	if cfg.Allow.Empty() {
		return cfg, errConfig("Allow", "is empty: list the hosts or URL prefixes that steps may call")
	}
	cfg.Namespace = cfg.Namespace.OrDefault()
	loop := cfg.settings()
	if err := loop.Fill(DefaultConcurrency, DefaultAckWait); err != nil {
		return cfg, errConfig(err.Field, "%s", err.Problem)
	}
	cfg.Concurrency, cfg.AckWait, cfg.MaxAckPending, cfg.ShutdownTimeout = loop.Concurrency, loop.AckWait, loop.MaxAckPending, loop.ShutdownTimeout
	for _, d := range []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"RequestTimeout", &cfg.RequestTimeout, DefaultRequestTimeout},
		{"OngoingInterval", &cfg.OngoingInterval, DefaultOngoingInterval},
		{"OngoingLimit", &cfg.OngoingLimit, DefaultOngoingLimit},
	} {
		switch {
		case *d.v < 0:
			return cfg, errConfig(d.name, "is negative (%s)", *d.v)
		case *d.v == 0:
			*d.v = d.def
		}
	}
	switch {
	case cfg.MaxResponseBytes < 0:
		return cfg, errConfig("MaxResponseBytes", "is negative (%d)", cfg.MaxResponseBytes)
	case cfg.MaxResponseBytes == 0:
		cfg.MaxResponseBytes = DefaultMaxResponseBytes
	}
	if cfg.Transport == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConns = max(t.MaxIdleConns, cfg.Concurrency*4)
		t.MaxIdleConnsPerHost = cfg.Concurrency
		cfg.Transport = t
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return cfg, nil
}

// settings are the consumer settings in cfg.
func (cfg Config) settings() commandloop.Settings {
	return commandloop.Settings{Concurrency: cfg.Concurrency, MaxAckPending: cfg.MaxAckPending,
		AckWait: cfg.AckWait, ShutdownTimeout: cfg.ShutdownTimeout}
}
