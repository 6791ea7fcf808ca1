package orchestrator

import (
	"container/heap"
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetsaga/jetsaga/internal/groupcommit"
)

// timerIndex fires the sagas' timers. A saga's pending timer is its state's
// timer_ms: nothing else stores it. Every coordinator instance follows the
// state bucket (followStates) and keeps the due time of every unfinished
// saga that has a timer; when one falls due by its clock it publishes the
// saga's tick, with a message id made of the saga, the due time and the
// revision of the state that holds the timer (events.TickMsgID), so that
// the ticks several instances publish for one timer are one message. A tick
// published is stored in the sagas stream and applied like any input, so a
// timer is not fired again while its state is unchanged; a tick published
// twice (instances seeing different revisions, a restart) is an input that
// changes nothing (Next ignores a tick for a timer that moved).
//
// Timers thus cost no message of their own until they fire: a saga that
// finishes before its step timeouts, the usual case, writes nothing for
// them. They fire while at least one coordinator runs; while none does,
// nothing could act on them anyway, and the first one to start fires every
// timer that fell due meanwhile once it has read the bucket.
type timerIndex struct {
	c    *Coordinator
	wake chan struct{} // a timer earlier than the one waited for

	mu     sync.Mutex
	timers map[string]*sagaTimer // by saga id
	queue  timerQueue            // the timers not fired, earliest first

	initial map[string]*sagaTimer // the current values of a new watch, being read
}

type sagaTimer struct {
	saga  string
	dueMS int64
	rev   uint64 // bucket revision of the state that holds it
	fired bool   // its tick is stored
	atMS  int64  // when to fire it: its due time, or when to try again
	index int    // in queue; -1 when not there
}

func newTimerIndex(c *Coordinator) *timerIndex {
	return &timerIndex{c: c, wake: make(chan struct{}, 1), timers: map[string]*sagaTimer{}}
}

// begin, apply and loaded make the index a stateFollower.
func (x *timerIndex) begin() { x.initial = map[string]*sagaTimer{} }

func (x *timerIndex) apply(e jetstream.KeyValueEntry, initial bool) {
	var due int64
	if e.Operation() == jetstream.KeyValuePut {
		due = pendingTimer(e.Value())
	}
	if initial {
		if due == 0 {
			delete(x.initial, e.Key())
		} else {
			x.initial[e.Key()] = &sagaTimer{saga: e.Key(), dueMS: due, rev: e.Revision(), atMS: due, index: -1}
		}
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	x.set(e.Key(), due, e.Revision())
}

func (x *timerIndex) loaded() {
	x.mu.Lock()
	defer x.mu.Unlock()
	old := x.timers
	x.timers, x.initial = x.initial, nil
	x.queue = x.queue[:0]
	for id, t := range x.timers {
		if o, ok := old[id]; ok && o.dueMS == t.dueMS && o.fired {
			t.fired = true
			continue
		}
		t.index = len(x.queue)
		x.queue = append(x.queue, t)
	}
	heap.Init(&x.queue)
	x.signal()
}

// set records saga id's timer, due at dueMS (0: none) in the state of
// revision rev. x.mu is held.
func (x *timerIndex) set(id string, dueMS int64, rev uint64) {
	t, had := x.timers[id]
	switch {
	case dueMS == 0:
		if had {
			x.unqueue(t)
			delete(x.timers, id)
		}
	case had && t.dueMS == dueMS:
		t.rev = rev // the same timer in a later state: fired or not, it stays so
	default:
		if !had {
			t = &sagaTimer{saga: id, index: -1}
			x.timers[id] = t
		}
		t.dueMS, t.rev, t.fired, t.atMS = dueMS, rev, false, dueMS
		x.enqueue(t)
		if x.queue[0] == t {
			x.signal()
		}
	}
}

// enqueue puts t in the queue, or moves it to its place there.
func (x *timerIndex) enqueue(t *sagaTimer) {
	if t.index >= 0 {
		heap.Fix(&x.queue, t.index)
		return
	}
	heap.Push(&x.queue, t)
}

func (x *timerIndex) unqueue(t *sagaTimer) {
	if t.index >= 0 {
		heap.Remove(&x.queue, t.index)
	}
}

func (x *timerIndex) signal() {
	select {
	case x.wake <- struct{}{}:
	default:
	}
}

// pendingTimer returns the due time of the timer an encoded state holds, 0
// if none or if the saga is finished. A finished saga's state, the most
// common in a bucket, is recognised from its head without decoding it.
func pendingTimer(data []byte) int64 {
	if status, _, ok := stateHead(data); !ok || status.Terminal() {
		return 0
	}
	var s struct {
		TimerMS int64 `json:"timer_ms"`
	}
	if json.Unmarshal(data, &s) != nil {
		return 0
	}
	return s.TimerMS
}

// retryFire is how long a timer whose tick could not be published waits
// before the next try.
const retryFire = time.Second

// run fires the timers that fall due until ctx is done, publishing the
// ticks through ticks.
func (x *timerIndex) run(ctx context.Context, ticks *groupcommit.Publisher) {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		next := x.fire(ctx, ticks)
		wait := time.Minute
		if next != 0 {
			wait = max(time.Until(time.UnixMilli(next)), 0)
		}
		t.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-x.wake:
		case <-t.C:
		}
	}
}

// fire publishes the ticks of the timers due now and returns when the next
// one falls due (0: none).
func (x *timerIndex) fire(ctx context.Context, ticks *groupcommit.Publisher) (next int64) {
	type firing struct {
		saga  string
		dueMS int64
		rev   uint64
		call  *groupcommit.Call
		err   error
	}
	now := time.Now().UnixMilli()
	var due []firing
	x.mu.Lock()
	for len(x.queue) > 0 && x.queue[0].atMS <= now {
		t := heap.Pop(&x.queue).(*sagaTimer)
		due = append(due, firing{saga: t.saga, dueMS: t.dueMS, rev: t.rev})
	}
	x.mu.Unlock()
	if len(due) > 0 {
		wctx, cancel := context.WithTimeout(ctx, opTimeout)
		for i := range due {
			f := &due[i]
			var m *nats.Msg
			if m, f.err = x.c.ns.TickMsg(f.saga, f.dueMS, f.rev); f.err == nil {
				f.call, f.err = ticks.Submit(wctx, m)
			}
		}
		var failed int
		var firstErr error
		for i := range due {
			f := &due[i]
			if f.err == nil {
				_, f.err = f.call.Wait(wctx)
			}
			if f.err != nil {
				failed++
				firstErr = f.err
			}
		}
		cancel()
		x.mu.Lock()
		for _, f := range due {
			t, ok := x.timers[f.saga]
			if !ok || t.dueMS != f.dueMS || t.index >= 0 {
				continue // changed meanwhile
			}
			if f.err != nil {
				t.atMS = now + retryFire.Milliseconds()
				x.enqueue(t)
				continue
			}
			t.fired = true
		}
		x.mu.Unlock()
		x.c.stats.timers.Add(uint64(len(due) - failed))
		if failed > 0 && ctx.Err() == nil {
			x.c.log.Warn("coordinator: could not publish the ticks of due timers; trying again", "timers", failed, "in", retryFire, "err", firstErr)
		}
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if len(x.queue) > 0 {
		next = x.queue[0].atMS
	}
	return next
}

// timerQueue is a min-heap of timers by the time to fire them.
type timerQueue []*sagaTimer

func (q timerQueue) Len() int           { return len(q) }
func (q timerQueue) Less(i, j int) bool { return q[i].atMS < q[j].atMS }
func (q timerQueue) Swap(i, j int) {
	q[i], q[j] = q[j], q[i]
	q[i].index, q[j].index = i, j
}
func (q *timerQueue) Push(v any) {
	t := v.(*sagaTimer)
	t.index = len(*q)
	*q = append(*q, t)
}
func (q *timerQueue) Pop() any {
	old := *q
	t := old[len(old)-1]
	old[len(old)-1] = nil
	t.index = -1
	*q = old[:len(old)-1]
	return t
}
