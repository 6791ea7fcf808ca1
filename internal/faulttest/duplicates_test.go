package faulttest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetsaga/jetsaga/events"
	"github.com/jetsaga/jetsaga/internal/invariants"
)

// copiesPerRound is how many messages of each stream one round copies.
const copiesPerRound = 3

// duplicate republishes, every 50-150ms, copies of random commands (from
// the commands stream) and of random outcomes and starts (from the sagas
// stream) under NEW message ids, so that JetStream's duplicate window does
// not drop them: the participants' barrier and the state machine must.
// Copies are of any age: commands already answered, attempts long replaced,
// actions whose compensation ran.
func duplicate(ctx context.Context, s *system, rng *rand.Rand) (int, error) {
	ns := events.Default()
	n := 0
	for pause(ctx, rng, 50*time.Millisecond, 150*time.Millisecond) {
		for _, src := range []struct {
			stream string
			kinds  []events.Kind
		}{
			{ns.CommandsStream(), []events.Kind{events.KindCommand}},
			{ns.SagasStream(), []events.Kind{events.KindEvent, events.KindStart}},
		} {
			c, err := copyRandom(ctx, s.js, src.stream, src.kinds, rng, n)
			n += c
			if err != nil && ctx.Err() == nil {
				return n, err
			}
		}
	}
	return n, nil
}

// copyRandom republishes up to copiesPerRound random messages of stream
// whose subject is of one of kinds.
func copyRandom(ctx context.Context, js jetstream.JetStream, stream string, kinds []events.Kind, rng *rand.Rand, serial int) (int, error) {
	ns := events.Default()
	c, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, err := js.Stream(c, stream)
	if err != nil {
		return 0, fmt.Errorf("stream %s: %w", stream, err)
	}
	info, err := st.Info(c)
	if err != nil {
		return 0, err
	}
	first, last := info.State.FirstSeq, info.State.LastSeq
	if last < first || last == 0 {
		return 0, nil
	}
	n := 0
	for range copiesPerRound {
		seq := first + rng.Uint64N(last-first+1)
		raw, err := st.GetMsg(c, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return n, fmt.Errorf("get %s #%d: %w", stream, seq, err)
		}
		sub, err := ns.Parse(raw.Subject)
		if err != nil || !hasKind(kinds, sub.Kind) {
			continue
		}
		m := nats.NewMsg(raw.Subject)
		m.Data = raw.Data
		for k, v := range raw.Header {
			if strings.HasPrefix(k, "Jetsaga-") || k == events.HeaderTraceParent || k == events.HeaderTraceState {
				m.Header[k] = v
			}
		}
		m.Header.Set(events.HeaderMsgID, fmt.Sprintf("%s/copy-%d-%d", raw.Header.Get(events.HeaderMsgID), serial, n))
		if _, err := js.PublishMsg(c, m); err != nil {
			return n, fmt.Errorf("republish %s: %w", raw.Subject, err)
		}
		n++
	}
	return n, nil
}

func hasKind(kinds []events.Kind, k events.Kind) bool {
	for _, x := range kinds {
		if x == k {
			return true
		}
	}
	return false
}

// verifyDuplicates checks that the copies reached the banks and were
// recognised there, not just lost on the way.
func verifyDuplicates(t *testing.T, s *system, _ []*started, _ *invariants.Report) {
	for _, p := range []*proc{s.bankA, s.bankB} {
		actions := p.count("duplicate action skipped")
		undos := p.count("duplicate compensation skipped")
		t.Logf("%s skipped %d duplicate actions and %d duplicate compensations", p.name, actions, undos)
		if actions == 0 {
			t.Errorf("%s recognised no duplicate action: the copies did not reach it", p.name)
		}
	}
}
