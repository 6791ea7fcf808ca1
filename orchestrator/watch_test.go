package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetsaga/jetsaga/internal/testenv"
)

// TestStopWatchReleasesTheWatcher: a watch stopped while its updates channel
// is full leaves the nats.go handler blocked on a send, its goroutine
// leaked, unless what it still delivers is read (a CI run's leak check
// caught one left by a stopped coordinator).
func TestStopWatchReleasesTheWatcher(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, js := testenv.Connect(t, testenv.NATS(t).URL())
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "watched"})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 600 { // more than the watcher's channel holds
		if _, err := kv.Put(ctx, fmt.Sprint("k", i), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	w, err := kv.WatchAll(ctx)
	if err != nil {
		t.Fatal(err)
	}
	<-w.Updates() // the watch is delivering; nobody reads the rest
	time.Sleep(200 * time.Millisecond)
	stopWatch(w)
	testenv.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		buf := make([]byte, 1<<20)
		if stacks := string(buf[:runtime.Stack(buf, true)]); strings.Contains(stacks, "jetstream.(*kvs).WatchFiltered") {
			return errors.New("the watcher's handler goroutine is still there")
		}
		return nil
	})
}
