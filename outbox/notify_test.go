package outbox

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/jetsaga/jetsaga/internal/testenv"
)

// countingExec counts the statements sent through it to a real database
// and can hold them until released.
type countingExec struct {
	Execer
	n    atomic.Int64
	hold chan struct{} // if set, each Exec waits for a receive
}

func (c *countingExec) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	c.n.Add(1)
	if c.hold != nil {
		<-c.hold
	}
	return c.Execer.Exec(ctx, sql, args...)
}

func waitCount(t *testing.T, c *countingExec, want int64) {
	t.Helper()
	testenv.CheckFor(t, waitTotal, waitStep, func() error {
		if n := c.n.Load(); n != want {
			return fmt.Errorf("%d notifies sent, want %d", n, want)
		}
		return nil
	})
}

// TestNotifyRateLimit: a burst of Notify calls sends one pg_notify at once
// and folds the rest into one at the end of the interval.
func TestNotifyRateLimit(t *testing.T) {
	t.Parallel()
	pool := testenv.Postgres(t)
	exec := &countingExec{Execer: pool}
	var notifyErrs atomic.Int64
	o, err := New(Config{NotifyDB: exec, NotifyInterval: time.Hour, OnNotifyError: func(error) { notifyErrs.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	for range 1000 {
		o.Notify()
	}
	waitCount(t, exec, 1)
	for range 1000 {
		o.Notify()
	}
	o.notifier.mu.Lock()
	pending := o.notifier.armed || o.notifier.dirty
	o.notifier.mu.Unlock()
	if !pending {
		t.Error("no trailing notify scheduled for the calls after the first send started")
	}
	o.Close() // drops the trailing one, an hour away
	if n := exec.n.Load(); n != 1 {
		t.Errorf("%d notifies sent for a burst within one interval, want 1", n)
	}
	if notifyErrs.Load() != 0 {
		t.Errorf("%d notify errors", notifyErrs.Load())
	}
	o.Notify() // after Close: nothing
	if n := exec.n.Load(); n != 1 {
		t.Errorf("Notify after Close sent a pg_notify")
	}
}

// TestNotifyTrailing: a Notify during a send in flight, or within the
// interval after it, is followed by another send.
func TestNotifyTrailing(t *testing.T) {
	t.Parallel()
	pool := testenv.Postgres(t)
	exec := &countingExec{Execer: pool, hold: make(chan struct{})}
	o, err := New(Config{NotifyDB: exec, NotifyInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	o.Notify()
	waitCount(t, exec, 1) // in flight, held
	o.Notify()            // must not be lost: the send in flight may have committed before this call's rows
	exec.hold <- struct{}{}
	waitCount(t, exec, 2)
	exec.hold <- struct{}{}
	o.Notify()
	waitCount(t, exec, 3)
	exec.hold <- struct{}{}
}

// TestNotifyErrorReported: a failing pg_notify reaches OnNotifyError.
func TestNotifyErrorReported(t *testing.T) {
	t.Parallel()
	pool := testenv.Postgres(t)
	errs := make(chan error, 1)
	o, err := New(Config{NotifyDB: pool, Channel: "c", OnNotifyError: func(err error) { errs <- err }})
	if err != nil {
		t.Fatal(err)
	}
	pool.Close() // every later Exec fails
	o.Notify()
	select {
	case err := <-errs:
		if err == nil || !strings.Contains(err.Error(), "pg_notify") {
			t.Fatalf("reported %v, want a pg_notify error", err)
		}
	case <-time.After(waitTotal):
		t.Fatal("no error reported")
	}
	o.Close()
}
