package orchestrator

import (
	"context"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// stateFollower keeps something about every saga from a watch of the state
// bucket: the bucket's current values first, then every state written.
// Its methods are called from one goroutine.
type stateFollower interface {
	// begin: a watch starts; the bucket's current values follow.
	begin()
	// apply records one entry; initial: one of the current values.
	apply(e jetstream.KeyValueEntry, initial bool)
	// loaded: every current value was applied.
	loaded()
}

// stateFollowers feeds one watch to several followers.
type stateFollowers []stateFollower

func (fs stateFollowers) begin() {
	for _, f := range fs {
		f.begin()
	}
}

func (fs stateFollowers) apply(e jetstream.KeyValueEntry, initial bool) {
	for _, f := range fs {
		f.apply(e, initial)
	}
}

func (fs stateFollowers) loaded() {
	for _, f := range fs {
		f.loaded()
	}
}

// followStates watches the state bucket for f until ctx is done, anew
// whenever the connection comes back (a watch may have missed writes
// meanwhile) or the watch ends.
func followStates(ctx context.Context, js jetstream.JetStream, kv jetstream.KeyValue, log *slog.Logger, f stateFollower) {
	nc := js.Conn()
	connected := nc.StatusChanged(nats.CONNECTED)
	defer nc.RemoveStatusListener(connected)
	for ctx.Err() == nil {
		w, err := kv.WatchAll(ctx)
		if err != nil {
			if ctx.Err() == nil {
				log.Debug("coordinator: cannot watch the state bucket; trying again", "err", err)
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
			continue
		}
		followWatch(ctx, w, connected, f)
		stopWatch(w)
	}
}

// followWatch applies the watch's entries to f until ctx is done, the watch
// ends or the connection comes back.
func followWatch(ctx context.Context, w jetstream.KeyWatcher, connected <-chan nats.Status, f stateFollower) {
	f.begin()
	loading := true
	for {
		select {
		case <-ctx.Done():
			return
		case <-connected:
			return
		case e, ok := <-w.Updates():
			if !ok {
				select { // the watch ended: pause before the next
				case <-ctx.Done():
				case <-time.After(time.Second):
				}
				return
			}
			if e == nil { // the end of the current values
				if loading {
					loading = false
					f.loaded()
				}
				continue
			}
			f.apply(e, loading)
		}
	}
}

// stopWatch stops w and reads what it still delivers until it closes: the
// nats.go watcher's handler blocks while its updates channel is full, and a
// handler blocked when nobody reads any more would keep its goroutine
// forever. It gives up after a few seconds, should the channel never close.
func stopWatch(w jetstream.KeyWatcher) {
	_ = w.Stop()
	giveUp := time.After(5 * time.Second)
	for {
		select {
		case _, ok := <-w.Updates():
			if !ok {
				return
			}
		case <-giveUp:
			return
		}
	}
}
