package events

import (
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// StreamOptions are the deployment settings of the streams and the state
// bucket. The zero value is the development default.
type StreamOptions struct {
	// Replicas of every stream and of the bucket. Default 1; use 3 in production.
	Replicas int
	// MaxAge of the streams' messages. It bounds how far back `jetsaga replay`
	// and saga timelines reach, so keep it longer than any saga lives. A
	// finished saga's state leaves the state bucket a little after its
	// messages (orchestrator.FinishedStateTTL). Default 7 days.
	MaxAge time.Duration
	// Duplicates is the JetStream duplicate window, inside which a message
	// published again with the same Nats-Msg-Id is dropped. Default 2 minutes.
	// The participant barrier and the state machine make duplicates beyond it
	// harmless.
	Duplicates time.Duration
}

// Defaults for StreamOptions.
const (
	DefaultMaxAge     = 7 * 24 * time.Hour
	DefaultDuplicates = 2 * time.Minute
)

func (o StreamOptions) withDefaults() StreamOptions {
	if o.Replicas <= 0 {
		o.Replicas = 1
	}
	if o.MaxAge <= 0 {
		o.MaxAge = DefaultMaxAge
	}
	if o.Duplicates <= 0 {
		o.Duplicates = DefaultDuplicates
	}
	return o
}

func (n Namespace) suffix() string {
	if n.prefix == DefaultPrefix {
		return ""
	}
	return "_" + strings.ToUpper(n.prefix)
}

// SagasStream is the name of the stream of saga inputs: starts, outcome
// events, ticks, operator actions (and the pending timers). "SAGAS" for the
// default prefix, "SAGAS_<PREFIX>" otherwise.
func (n Namespace) SagasStream() string { return "SAGAS" + n.suffix() }

// CommandsStream is the name of the stream of step commands: "SAGA_CMDS" for
// the default prefix, "SAGA_CMDS_<PREFIX>" otherwise.
func (n Namespace) CommandsStream() string { return "SAGA_CMDS" + n.suffix() }

// StateBucket is the name of the key-value bucket of saga states,
// "<prefix>_state".
func (n Namespace) StateBucket() string { return n.prefix + "_state" }

// CoordinatorConsumer is the name of the durable consumer that every
// coordinator instance shares.
func (n Namespace) CoordinatorConsumer() string { return n.prefix + "_coordinator" }

// ParticipantConsumer is the name of participant's durable consumer.
func (n Namespace) ParticipantConsumer(participant string) string {
	return n.prefix + "_participant_" + participant
}

// SagasStreamConfig is the configuration of the sagas stream. It allows
// atomic batch publishes, and message schedules, which earlier versions'
// timers were (a schedule they left still fires).
func (n Namespace) SagasStreamConfig(o StreamOptions) jetstream.StreamConfig {
	o = o.withDefaults()
	return jetstream.StreamConfig{
		Name:        n.SagasStream(),
		Description: "jetsaga saga inputs: starts, outcomes, timers, operator actions",
		Subjects: []string{
			n.prefix + ".start.*", n.prefix + ".evt.*.*", n.prefix + ".tick.*",
			n.prefix + ".ctl.*", n.prefix + ".sched.*",
		},
		Retention:          jetstream.LimitsPolicy,
		Discard:            jetstream.DiscardOld,
		MaxAge:             o.MaxAge,
		Storage:            jetstream.FileStorage,
		Replicas:           o.Replicas,
		Duplicates:         o.Duplicates,
		AllowMsgSchedules:  true,
		AllowAtomicPublish: true,
		AllowDirect:        true,
	}
}

// CommandsStreamConfig is the configuration of the commands stream.
func (n Namespace) CommandsStreamConfig(o StreamOptions) jetstream.StreamConfig {
	o = o.withDefaults()
	return jetstream.StreamConfig{
		Name:               n.CommandsStream(),
		Description:        "jetsaga step commands to participants",
		Subjects:           []string{n.prefix + ".cmd.*.*"},
		Retention:          jetstream.LimitsPolicy,
		Discard:            jetstream.DiscardOld,
		MaxAge:             o.MaxAge,
		Storage:            jetstream.FileStorage,
		Replicas:           o.Replicas,
		Duplicates:         o.Duplicates,
		AllowAtomicPublish: true,
		AllowDirect:        true,
	}
}

// StateBucketConfig is the configuration of the saga state bucket. Its keys
// are saga ids; its values are the coordinator's encoded states. The
// orchestrator also lets the bucket's stream (BucketStream) take
// per-message TTLs, without subject delete markers: a finished saga's state
// is written with a TTL, so the bucket holds running and parked sagas, and
// finished ones only a little longer than the streams keep their messages.
func (n Namespace) StateBucketConfig(o StreamOptions) jetstream.KeyValueConfig {
	o = o.withDefaults()
	return jetstream.KeyValueConfig{
		Bucket:      n.StateBucket(),
		Description: "jetsaga saga states, one key per saga",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    o.Replicas,
	}
}

// BucketStream is the name of the stream behind a key-value bucket.
func BucketStream(bucket string) string { return "KV_" + bucket }
