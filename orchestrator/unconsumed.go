package orchestrator

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetsaga/jetsaga/events"
)

// consumerCheck notices commands addressed to a participant that no
// consumer of the commands stream reads (a typo in a plan, a participant
// never deployed): such a saga would otherwise wait for its step timeout in
// silence. It lists the stream's consumers at most every refreshEvery, in
// the background, and logs and counts the commands that none of them
// selects.
type consumerCheck struct {
	js     jetstream.JetStream
	ns     events.Namespace
	log    *slog.Logger
	count  *atomic.Uint64
	wg     *sync.WaitGroup
	every  time.Duration
	warnIn time.Duration

	mu         sync.Mutex
	filters    []string        // of every consumer, as last listed
	coverage   map[string]bool // covered(participant) under these filters
	refreshed  time.Time
	refreshing bool
	pending    map[string]uint64 // commands sent while a listing runs
	warned     map[string]time.Time
}

const (
	consumerRefreshEvery = 5 * time.Second
	unconsumedWarnEvery  = time.Minute
	maxWarnedEntries     = 1024
)

func newConsumerCheck(js jetstream.JetStream, ns events.Namespace, log *slog.Logger, count *atomic.Uint64, wg *sync.WaitGroup) *consumerCheck {
	return &consumerCheck{js: js, ns: ns, log: log, count: count, wg: wg,
		every: consumerRefreshEvery, warnIn: unconsumedWarnEvery,
		pending: map[string]uint64{}, warned: map[string]time.Time{}, coverage: map[string]bool{}}
}

// sent records a command published for participant.
func (k *consumerCheck) sent(participant string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.covered(participant) {
		return
	}
	if k.refreshing || time.Since(k.refreshed) >= k.every {
		k.pending[participant]++
		if !k.refreshing {
			k.refreshing = true
			k.wg.Add(1)
			go k.refresh()
		}
		return
	}
	k.unconsumed(participant, 1)
}

// covered reports whether a listed consumer selects participant's commands.
// Every command asks, so the answer is kept until the next listing.
func (k *consumerCheck) covered(participant string) bool {
	if c, ok := k.coverage[participant]; ok {
		return c
	}
	subject := k.ns.Command(participant, "x")
	c := false
	for _, f := range k.filters {
		if subjectMatches(f, subject) {
			c = true
			break
		}
	}
	if len(k.coverage) >= maxWarnedEntries {
		clear(k.coverage)
	}
	k.coverage[participant] = c
	return c
}

func (k *consumerCheck) refresh() {
	defer k.wg.Done()
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	var filters []string
	ok := true
	stream, err := k.js.Stream(ctx, k.ns.CommandsStream())
	if err != nil {
		k.log.Debug("coordinator: cannot read the commands stream", "stream", k.ns.CommandsStream(), "err", err)
		k.mu.Lock()
		k.refreshing, k.pending = false, map[string]uint64{}
		k.mu.Unlock()
		return
	}
	lister := stream.ListConsumers(ctx)
	for info := range lister.Info() {
		if info.Config.FilterSubject != "" {
			filters = append(filters, info.Config.FilterSubject)
		}
		filters = append(filters, info.Config.FilterSubjects...)
		if info.Config.FilterSubject == "" && len(info.Config.FilterSubjects) == 0 {
			filters = append(filters, ">")
		}
	}
	if err := lister.Err(); err != nil {
		k.log.Debug("coordinator: cannot list the consumers of the commands stream", "stream", k.ns.CommandsStream(), "err", err)
		ok = false
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.refreshing = false
	if !ok {
		k.pending = map[string]uint64{} // no verdict: the next command asks again
		return
	}
	k.filters, k.refreshed = filters, time.Now()
	clear(k.coverage)
	for p, n := range k.pending {
		if !k.covered(p) {
			k.unconsumed(p, n)
		}
	}
	k.pending = map[string]uint64{}
}

// unconsumed counts n commands for participant that no consumer reads and
// logs it, once a minute per participant at most. The lock is held.
func (k *consumerCheck) unconsumed(participant string, n uint64) {
	k.count.Add(n)
	if t, ok := k.warned[participant]; ok && time.Since(t) < k.warnIn {
		return
	}
	if len(k.warned) >= maxWarnedEntries {
		clear(k.warned)
	}
	k.warned[participant] = time.Now()
	k.log.Warn("coordinator: commands for a participant that no consumer of the commands stream reads; its sagas wait for their step timeout",
		"participant", participant, "stream", k.ns.CommandsStream(), "consumer", k.ns.ParticipantConsumer(participant))
}

// subjectMatches reports whether subject matches filter, with NATS
// wildcards ('*' one token, '>' the rest).
func subjectMatches(filter, subject string) bool {
	for {
		ft, frest, fmore := strings.Cut(filter, ".")
		if ft == ">" {
			return subject != ""
		}
		st, srest, smore := strings.Cut(subject, ".")
		if ft != "*" && ft != st {
			return false
		}
		if !fmore || !smore {
			return fmore == smore
		}
		filter, subject = frest, srest
	}
}
