package groupcommit

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetsaga/jetsaga/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func setup(t *testing.T, atomicAllowed bool) (jetstream.JetStream, jetstream.Stream) {
	t.Helper()
	srv := testenv.NATS(t, testenv.SyncAlways())
	_, js := testenv.Connect(t, srv.URL())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"},
		Storage: jetstream.FileStorage, AllowAtomicPublish: atomicAllowed})
	if err != nil {
		t.Fatal(err)
	}
	return js, s
}

// publishConcurrently has n callers publish one message each on t.<i>, at
// once, and returns the sequences and errors they got.
func publishConcurrently(p *Publisher, n int, header func(i int) nats.Header) ([]uint64, []error) {
	seqs, errs := make([]uint64, n), make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m := nats.NewMsg("t." + strconv.Itoa(i))
			m.Data = []byte(strconv.Itoa(i))
			if header != nil {
				for k, v := range header(i) {
					m.Header[k] = v
				}
			}
			<-start
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			seqs[i], errs[i] = p.Publish(ctx, m)
		}()
	}
	close(start)
	wg.Wait()
	return seqs, errs
}

// checkStored checks that every caller's sequence holds its own message.
func checkStored(t *testing.T, s jetstream.Stream, seqs []uint64, errs []error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i, seq := range seqs {
		if errs[i] != nil {
			continue
		}
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("message %d (seq %d): %v", i, seq, err)
		}
		if m.Subject != "t."+strconv.Itoa(i) || string(m.Data) != strconv.Itoa(i) {
			t.Fatalf("seq %d holds %s %q, want message %d", seq, m.Subject, m.Data, i)
		}
	}
}

func TestBatchesGatherConcurrentCallers(t *testing.T) {
	js, s := setup(t, true)
	p := New(js, Options{MinBatch: 2})
	defer p.Close()
	const n = 400
	seqs, errs := publishConcurrently(p, n, nil)
	for i, err := range errs {
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	checkStored(t, s, seqs, errs)
	st := p.Stats()
	if st.Messages != n || st.Batches == 0 || st.Rejected != 0 {
		t.Fatalf("stats %+v: want %d messages, some batches, none rejected", st, n)
	}
	t.Logf("%+v", st)
}

// A batch with one failing compare-and-set is rejected as a whole; every
// message is then published on its own and only the failing one fails, with
// the server's error.
func TestRejectedBatchFallsBackPerMessage(t *testing.T) {
	js, s := setup(t, true)
	p := New(js, Options{MinBatch: 2})
	defer p.Close()
	const n = 200
	seqs, errs := publishConcurrently(p, n, func(i int) nats.Header {
		if i%50 == 7 {
			// t.<i> has no message yet: expecting 5 fails.
			return nats.Header{jetstream.ExpectedLastSubjSeqHeader: []string{"5"}}
		}
		return nats.Header{jetstream.ExpectedLastSubjSeqHeader: []string{"0"}}
	})
	for i, err := range errs {
		var apiErr *jetstream.APIError
		switch {
		case i%50 == 7 && !(errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence):
			t.Fatalf("message %d: got %v, want wrong last sequence", i, err)
		case i%50 != 7 && err != nil:
			t.Fatalf("message %d: %v", i, err)
		}
	}
	checkStored(t, s, seqs, errs)
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != n-4 {
		t.Fatalf("stream holds %d messages, want %d", info.State.Msgs, n-4)
	}
}

// A stream that takes no atomic batches turns batching off at the first
// batch; nothing is lost.
func TestStreamWithoutAtomicBatches(t *testing.T) {
	js, s := setup(t, false)
	p := New(js, Options{MinBatch: 2})
	defer p.Close()
	seqs, errs := publishConcurrently(p, 100, nil)
	for i, err := range errs {
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	checkStored(t, s, seqs, errs)
	if st := p.Stats(); st.Batches != 0 || st.Messages != 100 {
		t.Fatalf("stats %+v", st)
	}
	if p.batching.Load() {
		t.Fatal("batching still on for a stream without atomic batches")
	}
}

func TestDirectPublisher(t *testing.T) {
	js, s := setup(t, true)
	p := New(js, Options{})
	seqs, errs := publishConcurrently(p, 50, nil)
	for i, err := range errs {
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	checkStored(t, s, seqs, errs)
	if st := p.Stats(); st.Batches != 0 || st.Messages != 50 {
		t.Fatalf("stats %+v", st)
	}
	p.Close()
	if _, err := p.Publish(context.Background(), nats.NewMsg("t.x")); !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: %v, want ErrClosed", err)
	}
}

func TestPublishAllIsOneCall(t *testing.T) {
	js, s := setup(t, true)
	p := New(js, Options{MinBatch: 2})
	defer p.Close()
	msgs := make([]*nats.Msg, 3)
	for i := range msgs {
		msgs[i] = nats.NewMsg(fmt.Sprintf("t.%d", i))
		msgs[i].Data = []byte(strconv.Itoa(i))
	}
	c, err := p.Submit(context.Background(), msgs...)
	if err != nil {
		t.Fatal(err)
	}
	seqs, err := c.Wait(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	checkStored(t, s, seqs, make([]error, 3))
	if st := p.Stats(); st.Batches != 1 || st.Batched != 3 {
		t.Fatalf("stats %+v: want the three messages in one batch", st)
	}
}

func TestPublishAfterCloseWithGroupCommit(t *testing.T) {
	js, _ := setup(t, true)
	p := New(js, Options{MinBatch: 2})
	p.Close()
	p.Close() // idempotent
	if _, err := p.Publish(context.Background(), nats.NewMsg("t.x")); !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: %v, want ErrClosed", err)
	}
}
