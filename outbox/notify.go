package outbox

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// notifyTimeout bounds one background pg_notify.
const notifyTimeout = 5 * time.Second

// notifier sends at most one pg_notify per interval, leading and trailing
// edge: the first call after a quiet interval sends at once, calls during
// the interval (or while a send is in flight) are folded into one send when
// the interval ends. A call is therefore always followed by a NOTIFY that
// commits after the call, so a relay woken by it sees the caller's rows.
type notifier struct {
	db       Execer
	channel  string
	interval time.Duration
	onError  func(error)

	mu       sync.Mutex
	armed    bool // a send is scheduled and has not started
	sending  bool // a send is in flight
	dirty    bool // notify called while sending
	closed   bool
	lastSent time.Time
	timer    *time.Timer
	wg       sync.WaitGroup // scheduled and in-flight sends
}

func (n *notifier) notify() {
	n.mu.Lock()
	defer n.mu.Unlock()
	switch {
	case n.closed, n.armed:
		// An armed send starts after this call: it covers it.
	case n.sending:
		n.dirty = true
	default:
		n.arm()
	}
}

// arm schedules a send at lastSent+interval (or now). n.mu is held.
func (n *notifier) arm() {
	delay := time.Until(n.lastSent.Add(n.interval))
	if delay < 0 {
		delay = 0
	}
	n.armed = true
	n.wg.Add(1)
	n.timer = time.AfterFunc(delay, n.send)
}

func (n *notifier) send() {
	defer n.wg.Done()
	n.mu.Lock()
	n.armed = false
	n.sending = true
	n.mu.Unlock()

	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), notifyTimeout)
	_, err := n.db.Exec(ctx, `SELECT pg_notify($1, '')`, n.channel)
	cancel()
	if err != nil && n.onError != nil {
		n.onError(fmt.Errorf("outbox: pg_notify %q: %w", n.channel, err))
	}

	n.mu.Lock()
	n.sending = false
	n.lastSent = start
	if n.dirty && !n.closed {
		n.dirty = false
		n.arm()
	}
	n.mu.Unlock()
}

func (n *notifier) close() {
	n.mu.Lock()
	n.closed = true
	if n.armed && n.timer.Stop() {
		n.armed = false
		n.wg.Done()
	}
	n.mu.Unlock()
	n.wg.Wait()
}
