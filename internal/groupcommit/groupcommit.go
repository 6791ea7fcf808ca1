// Package groupcommit publishes JetStream messages into one stream, with
// group commit when asked for: the messages that callers hand over while an
// earlier commit is in flight are written together as one atomic batch
// (ADR-50, "Nats-Batch-*" headers), which the server applies all-or-nothing
// and which a file-store stream with sync_interval always persists with a
// handful of syncs instead of one per message. A batch the server rejects as
// a whole (a compare-and-set or duplicate-id check failing for one of its
// messages, a stream that does not allow atomic publishes) is published
// again message by message, so every caller gets its own message's
// acknowledgement or error, exactly as from a plain publish.
//
// Without group commit (Options.MinBatch 0, the default) a Publisher is a
// thin asynchronous publisher: each call's messages go out at once from the
// caller's goroutine.
//
// A batch holds messages of different callers. The server rejects a batch
// that writes one subject twice with an expected-last-subject-sequence check,
// so a caller must not hand over two checked messages on one subject at once;
// jetsaga's writers (one state write per saga at a time, one outcome per
// command) never do.
//
// What it measured (2-core VM, embedded nats-server 2.15.2, jetsaga bench at
// concurrency 64, README › Performance): an atomic batch on a one-replica
// file stream stages its messages in a store of its own, created and removed
// per batch, which costs more CPU than the syncs it saves at the 5–11
// messages per batch this load gathers; on three replicas the raft log
// already commits concurrent publishes together. Hence off by default.
package groupcommit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// Headers of an atomic batch (ADR-50).
const (
	hdrBatchID     = "Nats-Batch-Id"
	hdrBatchSeq    = "Nats-Batch-Sequence"
	hdrBatchCommit = "Nats-Batch-Commit"
)

const (
	// maxBatch is the most messages committed at once (the server allows
	// 1,000 by default).
	maxBatch = 256
	// commitTimeout bounds one commit.
	commitTimeout = 10 * time.Second
)

// errAtomicPublishDisabled is the server's error code for a stream that does
// not allow atomic batches.
const errAtomicPublishDisabled jetstream.ErrorCode = 10174

// ErrClosed is returned for messages handed over after Close.
var ErrClosed = errors.New("groupcommit: publisher closed")

// Options configure a Publisher.
type Options struct {
	// MinBatch is the fewest messages committed as one atomic batch; fewer
	// go one by one. 0 (the default): no group commit, every call's
	// messages are published at once. An atomic batch costs a one-replica
	// file stream about four syncs (it is staged in a store of its own), a
	// message published alone one; a replicated stream stages batches in
	// memory.
	MinBatch int
}

// Stats count what a Publisher did.
type Stats struct {
	Messages uint64 // messages stored
	Batches  uint64 // atomic batches committed
	Batched  uint64 // messages stored in them
	Rejected uint64 // batches rejected and published again one by one
}

// Publisher publishes into one stream. It is safe for concurrent use; Close
// stops it.
type Publisher struct {
	js       jetstream.JetStream
	nc       *nats.Conn
	opts     Options
	batching atomic.Bool // group commit is on and the stream takes batches
	calls    chan *Call
	done     chan struct{}
	stopped  sync.WaitGroup
	closeOne sync.Once
	// closing is held for reading while a call is handed over, and for
	// writing by Close, so that no call enters the queue after the loop
	// failed what it held.
	closing sync.RWMutex
	closed  bool

	messages, batches, batched, rejected atomic.Uint64
}

// Call is one caller's messages, committed together.
type Call struct {
	p       *Publisher
	msgs    []*nats.Msg
	seqs    []uint64
	err     error
	done    chan struct{}            // group commit: closed when committed
	futures []jetstream.PubAckFuture // without: the messages' acknowledgements
}

// New returns a Publisher over js.
func New(js jetstream.JetStream, opts Options) *Publisher {
	p := &Publisher{js: js, nc: js.Conn(), opts: opts, done: make(chan struct{})}
	if opts.MinBatch > 0 {
		p.batching.Store(true)
		p.calls = make(chan *Call, 1024)
		p.stopped.Add(1)
		go p.loop()
	}
	return p
}

// Close stops the publisher once the commit in flight ends; messages not yet
// committed fail with ErrClosed.
func (p *Publisher) Close() {
	p.closeOne.Do(func() {
		p.closing.Lock()
		p.closed = true
		p.closing.Unlock()
		close(p.done)
		p.stopped.Wait()
	})
}

// Stats returns the publisher's counters.
func (p *Publisher) Stats() Stats {
	return Stats{Messages: p.messages.Load(), Batches: p.batches.Load(), Batched: p.batched.Load(), Rejected: p.rejected.Load()}
}

// Publish stores m and returns its stream sequence, or the error a plain
// publish of m alone would have returned.
func (p *Publisher) Publish(ctx context.Context, m *nats.Msg) (uint64, error) {
	c, err := p.Submit(ctx, m)
	if err != nil {
		return 0, err
	}
	seqs, err := c.Wait(ctx)
	if err != nil {
		return 0, err
	}
	return seqs[0], nil
}

// Submit hands msgs over to be committed together and returns at once;
// Wait on the Call learns the outcome. The messages belong to the publisher
// until then.
func (p *Publisher) Submit(ctx context.Context, msgs ...*nats.Msg) (*Call, error) {
	c := &Call{p: p, msgs: msgs, seqs: make([]uint64, len(msgs))}
	if p.calls == nil || len(msgs) == 0 {
		select {
		case <-p.done:
			return nil, ErrClosed
		default:
		}
		for _, m := range msgs {
			f, err := p.js.PublishMsgAsync(m)
			if err != nil {
				return nil, err
			}
			c.futures = append(c.futures, f)
		}
		return c, nil
	}
	c.done = make(chan struct{})
	p.closing.RLock()
	defer p.closing.RUnlock()
	if p.closed {
		return nil, ErrClosed
	}
	select {
	case p.calls <- c:
		return c, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Wait returns the stream sequences of the call's messages, or the first
// error of any of them.
func (c *Call) Wait(ctx context.Context) ([]uint64, error) {
	if c.done == nil {
		c.p.await(ctx, c)
		return c.seqs, c.err
	}
	select {
	case <-c.done:
		return c.seqs, c.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// loop commits what callers handed over, one commit at a time: while one is
// in flight the next gathers.
func (p *Publisher) loop() {
	defer p.stopped.Done()
	var pending []*Call
	for {
		pending = pending[:0]
		select {
		case c := <-p.calls:
			pending = append(pending, c)
		case <-p.done:
			p.failQueued()
			return
		}
		n := len(pending[0].msgs)
	gather:
		for n < maxBatch {
			select {
			case c := <-p.calls:
				pending = append(pending, c)
				n += len(c.msgs)
			default:
				break gather
			}
		}
		p.commit(pending, n)
		for _, c := range pending {
			close(c.done)
		}
	}
}

func (p *Publisher) failQueued() {
	for {
		select {
		case c := <-p.calls:
			c.err = ErrClosed
			close(c.done)
		default:
			return
		}
	}
}

// commit stores the calls' n messages: as one atomic batch when there are
// enough of them and the stream takes batches, else (or when the batch is
// rejected) one by one.
func (p *Publisher) commit(calls []*Call, n int) {
	ctx, cancel := context.WithTimeout(context.Background(), commitTimeout)
	defer cancel()
	if n >= p.opts.MinBatch && n <= maxBatch && p.batching.Load() {
		last, err := p.commitBatch(ctx, calls, n)
		var apiErr *jetstream.APIError
		switch {
		case err == nil:
			seq := last - uint64(n)
			for _, c := range calls {
				for i := range c.seqs {
					seq++
					c.seqs[i] = seq
				}
			}
			p.messages.Add(uint64(n))
			p.batches.Add(1)
			p.batched.Add(uint64(n))
			return
		case errors.As(err, &apiErr):
			// One message failed a check, or the stream takes no batches:
			// nothing was stored; each message on its own says which.
			p.rejected.Add(1)
			if apiErr.ErrorCode == errAtomicPublishDisabled {
				p.batching.Store(false)
			}
		default:
			// Lost, or the connection failed: the batch may or may not be
			// stored. Each caller learns it could not be confirmed and
			// retries as after any lost acknowledgement.
			for _, c := range calls {
				c.err = err
			}
			return
		}
	}
	p.commitEach(ctx, calls)
}

// batchAck is the server's answer to a batch's commit message.
type batchAck struct {
	Seq   uint64              `json:"seq"`
	Batch string              `json:"batch"`
	Count int                 `json:"count"`
	Error *jetstream.APIError `json:"error"`
}

// commitBatch publishes the calls' n messages as one atomic batch and
// returns the stream sequence of the last. The batch headers it adds are
// removed again before it returns.
func (p *Publisher) commitBatch(ctx context.Context, calls []*Call, n int) (uint64, error) {
	id := nuid.Next()
	seq := 0
	defer func() {
		for _, c := range calls {
			for _, m := range c.msgs {
				m.Header.Del(hdrBatchID)
				m.Header.Del(hdrBatchSeq)
				m.Header.Del(hdrBatchCommit)
			}
		}
	}()
	var resp *nats.Msg
	for _, c := range calls {
		for _, m := range c.msgs {
			seq++
			if m.Header == nil {
				m.Header = nats.Header{}
			}
			m.Header.Set(hdrBatchID, id)
			m.Header.Set(hdrBatchSeq, strconv.Itoa(seq))
			if seq < n {
				if err := p.nc.PublishMsg(m); err != nil {
					return 0, err
				}
				continue
			}
			m.Header.Set(hdrBatchCommit, "1")
			var err error
			if resp, err = p.nc.RequestMsgWithContext(ctx, m); err != nil {
				return 0, err
			}
		}
	}
	var ack batchAck
	if err := json.Unmarshal(resp.Data, &ack); err != nil {
		return 0, fmt.Errorf("groupcommit: unreadable batch acknowledgement %q: %w", resp.Data, err)
	}
	if ack.Error != nil {
		return 0, ack.Error
	}
	if ack.Count != n || ack.Batch != id || ack.Seq < uint64(n) {
		return 0, fmt.Errorf("groupcommit: batch acknowledgement %q does not match the batch (%s, %d messages)", resp.Data, id, n)
	}
	return ack.Seq, nil
}

// commitEach publishes every message on its own, all at once, and waits for
// each acknowledgement.
func (p *Publisher) commitEach(ctx context.Context, calls []*Call) {
	for _, c := range calls {
		for _, m := range c.msgs {
			f, err := p.js.PublishMsgAsync(m)
			if err != nil {
				c.err = err
				break
			}
			c.futures = append(c.futures, f)
		}
	}
	for _, c := range calls {
		p.await(ctx, c)
	}
}

// await waits for the acknowledgements of c's messages published on their
// own and records them in c. The acknowledgements of a closed connection
// never come, so it checks for that too.
func (p *Publisher) await(ctx context.Context, c *Call) {
	var tick *time.Ticker
	for i, f := range c.futures {
		for done := false; !done; {
			select {
			case ack := <-f.Ok():
				c.seqs[i] = ack.Sequence
				p.messages.Add(1)
				done = true
				continue
			default:
			}
			if tick == nil {
				tick = time.NewTicker(100 * time.Millisecond)
				defer tick.Stop()
			}
			var err error
			select {
			case ack := <-f.Ok():
				c.seqs[i] = ack.Sequence
				p.messages.Add(1)
			case err = <-f.Err():
			case <-ctx.Done():
				err = ctx.Err()
			case <-tick.C:
				if !p.nc.IsClosed() {
					continue
				}
				err = nats.ErrConnectionClosed
			}
			if err != nil && c.err == nil {
				c.err = fmt.Errorf("publish %s: %w", f.Msg().Subject, err)
			}
			done = true
		}
	}
	c.futures = nil
}
