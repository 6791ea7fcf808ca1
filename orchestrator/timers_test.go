package orchestrator

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetsaga/jetsaga/events"
	"github.com/jetsaga/jetsaga/internal/groupcommit"
	"github.com/jetsaga/jetsaga/internal/testenv"
)

// TestTimerIndex: the timers of unfinished sagas, read from the bucket's
// entries, fire once each with the id of the state that holds them; a
// finished saga's timer leaves the index and its queue; run wakes for an
// earlier timer and stops with its context.
func TestTimerIndex(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, js := testenv.Connect(t, testenv.NATS(t).URL())
	ns := events.Default()
	if err := EnsureStreams(ctx, js, ns, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	sagas, err := js.Stream(ctx, ns.SagasStream())
	if err != nil {
		t.Fatal(err)
	}
	ticks := groupcommit.New(js, groupcommit.Options{})
	defer ticks.Close()
	c := &Coordinator{ns: ns, log: slog.New(slog.DiscardHandler)}
	x := newTimerIndex(c)
	entry := func(id string, status Status, timerMS int64, rev uint64) kvEntry {
		data, err := encodeState(&State{V: stateVersion, SagaID: id, Name: "n", Status: status, TimerMS: timerMS})
		if err != nil {
			t.Fatal(err)
		}
		return kvEntry{key: id, value: data, op: jetstream.KeyValuePut, rev: rev}
	}
	tickIDs := func(id string) []string {
		t.Helper()
		var got []string
		for seq := uint64(1); ; seq++ {
			m, err := sagas.GetMsg(ctx, seq)
			if err != nil {
				return got
			}
			if m.Subject == ns.Tick(id) {
				got = append(got, m.Header.Get(events.HeaderMsgID))
			}
		}
	}
	now := time.Now().UnixMilli()
	past, future := now-1000, now+time.Hour.Milliseconds()

	x.begin()
	x.apply(entry("past", Running, past, 3), true)
	x.apply(entry("parked", Parked, past, 4), true)
	x.apply(entry("done", Committed, 0, 5), true)
	x.apply(entry("future", Compensating, future, 6), true)
	x.loaded()
	// Sagas that set a timer and finish: gone from the map and the queue.
	for i := range 1000 {
		id := fmt.Sprint("s", i)
		x.apply(entry(id, Running, now+time.Minute.Milliseconds(), 1), false)
		x.apply(entry(id, Committed, 0, 2), false)
	}
	x.apply(kvEntry{key: "future", op: jetstream.KeyValueDelete, rev: 7}, false)
	x.apply(entry("future", Running, future, 8), false)
	if len(x.timers) != 3 || len(x.queue) != 3 {
		t.Fatalf("%d timers, %d queued; want 3 and 3", len(x.timers), len(x.queue))
	}

	if next := x.fire(ctx, ticks); next != future {
		t.Errorf("next timer at %d, want %d", next, future)
	}
	if got, want := fmt.Sprint(tickIDs("past")), fmt.Sprint([]string{events.TickMsgID("past", past, 3)}); got != want {
		t.Errorf("ticks of past: %v, want %v", got, want)
	}
	if got := tickIDs("parked"); len(got) != 1 {
		t.Errorf("ticks of a parked saga's timer: %v, want one", got)
	}
	// A later state with the same timer: fired already.
	x.apply(entry("past", Running, past, 9), false)
	x.fire(ctx, ticks)
	if n := c.Stats().Timers; n != 2 {
		t.Errorf("%d timers fired, want 2", n)
	}
	// The timer cleared, then set again for the same time: a new tick.
	x.apply(entry("past", Running, 0, 10), false)
	x.apply(entry("past", Running, past, 11), false)
	x.fire(ctx, ticks)
	if got := tickIDs("past"); len(got) != 2 || got[1] != events.TickMsgID("past", past, 11) {
		t.Errorf("ticks of past: %v, want a second one for revision 11", got)
	}

	// run: an earlier timer wakes it; it returns when its context ends.
	rctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		x.run(rctx, ticks)
	}()
	x.mu.Lock()
	x.set("soon", time.Now().UnixMilli()+50, 12)
	x.mu.Unlock()
	testenv.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if got := tickIDs("soon"); len(got) != 1 {
			return fmt.Errorf("ticks of soon: %v", got)
		}
		return nil
	})
	stop()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return when its context ended")
	}
}
