// Package jsretry waits out JetStream's not being ready: a server still
// starting, a cluster electing its leaders or missing a node for a moment.
// Services starting beside their servers (a deployment, a test cluster)
// wait for them instead of exiting; long-running consumers pull with
// settings that notice a pull lost in a partition within seconds
// (PullOptions).
package jsretry

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// JetStream API error codes that say the cluster is not ready (nats-server's
// errors.json): JSClusterNotAvailErr, and JSClusterNoPeersErrF, which is
// transient only for the reasons that change as nodes come and go.
const (
	codeClusterNotAvailable jetstream.ErrorCode = 10008
	codeNoPeers             jetstream.ErrorCode = 10005
)

// Reasons nats-server gives (selectPeerError) for "no suitable peers for
// placement" that pass: a peer it has not heard from or counts offline
// ("peer offline"), and one it has no information about yet, as after a
// restart ("miscellaneous issue", also given when a server's limit of
// replicated assets is reached — which an operator must see in the logs
// either way). The others (tags, storage, too few nodes for the replicas)
// are configuration errors.
var transientPlacement = []string{"peer offline", "miscellaneous issue"}

// Transient reports whether err is JetStream not answering yet (a timeout,
// no responders) or its cluster not ready (temporarily unavailable; no
// suitable peers because one is offline or not known yet).
func Transient(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse) {
		return true
	}
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return false
	}
	switch apiErr.ErrorCode {
	case codeClusterNotAvailable:
		return true
	case codeNoPeers:
		return slices.ContainsFunc(transientPlacement, func(r string) bool { return strings.Contains(apiErr.Description, r) })
	}
	return false
}

// Delays between tries: doubling from First up to Max.
const (
	First = 250 * time.Millisecond
	Max   = 5 * time.Second
)

// Do runs f until it succeeds, fails with an error that is not Transient,
// or ctx ends (then it returns f's last error, or ctx's if f never ran). Each
// transient failure is logged at WARN with msg and the delay before the
// next try.
func Do(ctx context.Context, log *slog.Logger, msg string, f func(context.Context) error) error {
	for delay := First; ; delay = min(2*delay, Max) {
		err := f(ctx)
		if err == nil || ctx.Err() != nil || !Transient(err) {
			return err
		}
		log.Warn(msg, "err", err, "in", delay)
		select {
		case <-ctx.Done():
			return err
		case <-time.After(delay):
		}
	}
}

// Pull settings for the long-running pull consumers (the coordinators',
// the participants'). A pull request waiting on a server is lost when that
// server is cut off from the consumer's leader (a partition) or the leader
// changes without a status; the client only pulls again once it misses two
// idle heartbeats. nats.go's defaults (30 s expiry, 15 s heartbeats) made a
// coordinator on a node cut off for 2–4 s idle for 30 s after the cut
// healed; these notice a lost pull within 4 s, for one pull request every
// 10 s and a heartbeat every 2 s per idle consumer.
const (
	PullExpiry    = 10 * time.Second
	PullHeartbeat = 2 * time.Second
)

// PullOptions are the options of such a consumer's Messages iterator, with
// at most maxMessages buffered.
func PullOptions(maxMessages int) []jetstream.PullMessagesOpt {
	return []jetstream.PullMessagesOpt{jetstream.PullMaxMessages(maxMessages),
		jetstream.PullExpiry(PullExpiry), jetstream.PullHeartbeat(PullHeartbeat)}
}
