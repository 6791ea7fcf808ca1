package orchestrator

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetsaga/jetsaga/events"
)

// Inputs are applied in stream order.
//
// JetStream delivers a consumer's messages in stream order, but not its
// redeliveries: a message held by a coordinator that crashed (or stalled, or
// nak'd it after an error), or by another coordinator instance, may come
// back after later messages of the same saga were delivered. Next is not
// commutative — a step's success and its timer tick lead to different
// states depending on which comes first — so a coordinator applying inputs in
// delivery order could write states that no fold of the stream gives.
//
// The state therefore records the stream sequence of the last input it
// includes (State.Seq). Before applying input S, a worker reads the sagas
// stream for the saga's inputs between State.Seq and S and applies those
// first, each as its own transition (written, then published); an input at or
// below State.Seq is already part of the state and is acknowledged without
// effect. Whatever order the inputs are delivered in, every state written is
// the fold of the stream up to its Seq, which is exactly what replay computes.

// msgReader reads a stream's messages by subject and sequence.
type msgReader struct {
	nc *nats.Conn
	// subject of the request and whether it is a direct get. On a
	// replicated stream every replica answers direct gets, and a follower may
	// lag behind the leader that delivered an input: there the reader asks
	// the leader (STREAM.MSG.GET), which has stored everything it delivered.
	subject string
	direct  bool
}

func newMsgReader(js jetstream.JetStream, stream string, replicas int) *msgReader {
	prefix := jetstream.DefaultAPIPrefix
	if o := js.Options(); o.Domain != "" {
		prefix = "$JS." + o.Domain + ".API."
	} else if o.APIPrefix != "" {
		prefix = o.APIPrefix
		if prefix[len(prefix)-1] != '.' {
			prefix += "."
		}
	}
	r := &msgReader{nc: js.Conn(), direct: replicas <= 1}
	if r.direct {
		r.subject = prefix + "DIRECT.GET." + stream
	} else {
		r.subject = prefix + "STREAM.MSG.GET." + stream
	}
	return r
}

// inputReader reads a saga's inputs from the sagas stream by sequence.
type inputReader struct {
	msgs *msgReader
	ns   events.Namespace
}

func newInputReader(js jetstream.JetStream, ns events.Namespace, replicas int) *inputReader {
	return &inputReader{msgs: newMsgReader(js, ns.SagasStream(), replicas), ns: ns}
}

// first returns the first input with a sequence in [from, below) that
// concerns the saga whose state is st (nil: no state yet), or nil if there
// is none.
//
// It reads literal subjects only — the filters a direct get answers from its
// subject index; a wildcard filter can make the server scan every message
// up to its next match — so it asks for the inputs that can change the
// state: the start alone while there is no state; then also its timer ticks,
// its operator actions and the outcomes of its plan's participants (Next
// ignores outcomes from anyone else, so their order does not matter).
func (r *inputReader) first(ctx context.Context, id string, st *State, from, below uint64) (*Input, error) {
	if from >= below {
		return nil, nil
	}
	subjects := []string{r.ns.Start(id)}
	if st != nil {
		subjects = append(subjects, r.ns.Tick(id), r.ns.Control(id))
		for _, p := range st.participants() {
			subjects = append(subjects, r.ns.Event(p, id))
		}
	}
	type found struct {
		m   *jetstream.RawStreamMsg
		err error
	}
	results := make(chan found, len(subjects))
	for _, subject := range subjects[1:] {
		go func() {
			m, err := r.next(ctx, subject, from, below)
			results <- found{m, err}
		}()
	}
	m, err := r.next(ctx, subjects[0], from, below)
	results <- found{m, err}
	var best *jetstream.RawStreamMsg
	var firstErr error
	for range subjects {
		f := <-results
		switch {
		case f.err != nil:
			firstErr = cmp.Or(firstErr, f.err)
		case f.m != nil && (best == nil || f.m.Sequence < best.Sequence):
			best = f.m
		}
	}
	if firstErr != nil {
		return nil, firstErr
	}
	if best == nil {
		return nil, nil
	}
	in, ok := decodeInput(r.ns, best.Subject, best.Header, best.Data, best.Sequence, best.Time)
	if !ok || in.SagaID != id {
		return nil, fmt.Errorf("message %d on %s is not an input of saga %s", best.Sequence, best.Subject, id)
	}
	return &in, nil
}

// readTimeout bounds one read: a reply lost with its connection must not
// hold the saga's worker for the whole operation.
const readTimeout = 2 * time.Second

// next returns the first input on subject with a sequence in [from,
// below), or nil.
func (r *inputReader) next(ctx context.Context, subject string, from, below uint64) (*jetstream.RawStreamMsg, error) {
	m, err := r.msgs.next(ctx, subject, from)
	if err != nil || m == nil || m.Sequence >= below {
		return nil, err
	}
	return m, nil
}

// next returns the first message on subject at or after sequence from, or
// nil if there is none.
func (r *msgReader) next(ctx context.Context, subject string, from uint64) (*jetstream.RawStreamMsg, error) {
	m, err := r.get(ctx, struct {
		Seq     uint64 `json:"seq"`
		NextFor string `json:"next_by_subj"`
	}{from, subject})
	if err != nil {
		return nil, fmt.Errorf("read %s from %d: %w", subject, from, err)
	}
	if m != nil && (m.Sequence < from || m.Subject != subject) {
		return nil, fmt.Errorf("read %s from %d: the server answered with message %d on %s", subject, from, m.Sequence, m.Subject)
	}
	return m, nil
}

// last returns the last message on subject, or nil if there is none.
func (r *msgReader) last(ctx context.Context, subject string) (*jetstream.RawStreamMsg, error) {
	m, err := r.get(ctx, struct {
		LastFor string `json:"last_by_subj"`
	}{subject})
	if err != nil {
		return nil, fmt.Errorf("read last of %s: %w", subject, err)
	}
	if m != nil && m.Subject != subject {
		return nil, fmt.Errorf("read last of %s: the server answered with message %d on %s", subject, m.Sequence, m.Subject)
	}
	return m, nil
}

// get sends one get request; nil if no message matches.
func (r *msgReader) get(ctx context.Context, request any) (*jetstream.RawStreamMsg, error) {
	req, err := json.Marshal(request)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, readTimeout)
	defer cancel()
	resp, err := r.nc.RequestWithContext(ctx, r.subject, req)
	if err != nil {
		return nil, err
	}
	if r.direct {
		return decodeDirectGet(resp)
	}
	return decodeMsgGet(resp)
}

// serverHeader is the value the server set for a header of a direct get's
// answer: it appends its own after the message's, and a publisher may have
// set the same names (a copied message, or a forged one).
func serverHeader(h nats.Header, name string) string {
	v := h.Values(name)
	if len(v) == 0 {
		return ""
	}
	return v[len(v)-1]
}

func decodeDirectGet(resp *nats.Msg) (*jetstream.RawStreamMsg, error) {
	if len(resp.Data) == 0 {
		if status := resp.Header.Get("Status"); status != "" {
			if status == "404" {
				return nil, nil
			}
			return nil, fmt.Errorf("direct get: %s %s", status, resp.Header.Get("Description"))
		}
	}
	seq, err := strconv.ParseUint(serverHeader(resp.Header, jetstream.SequenceHeader), 10, 64)
	if err != nil {
		return nil, fmt.Errorf("direct get: sequence header: %w", err)
	}
	ts, err := time.Parse(time.RFC3339Nano, serverHeader(resp.Header, jetstream.TimeStampHeaer))
	if err != nil {
		return nil, fmt.Errorf("direct get: time stamp header: %w", err)
	}
	return &jetstream.RawStreamMsg{Subject: serverHeader(resp.Header, jetstream.SubjectHeader), Sequence: seq,
		Header: resp.Header, Data: resp.Data, Time: ts}, nil
}

func decodeMsgGet(resp *nats.Msg) (*jetstream.RawStreamMsg, error) {
	var r struct {
		Error *jetstream.APIError `json:"error"`
		Msg   *struct {
			Subject string    `json:"subject"`
			Seq     uint64    `json:"seq"`
			Header  []byte    `json:"hdrs"`
			Data    []byte    `json:"data"`
			Time    time.Time `json:"time"`
		} `json:"message"`
	}
	if err := json.Unmarshal(resp.Data, &r); err != nil {
		return nil, fmt.Errorf("message get: %w", err)
	}
	if r.Error != nil {
		if r.Error.ErrorCode == jetstream.JSErrCodeMessageNotFound {
			return nil, nil
		}
		return nil, r.Error
	}
	if r.Msg == nil {
		return nil, errors.New("message get: empty response")
	}
	m := &jetstream.RawStreamMsg{Subject: r.Msg.Subject, Sequence: r.Msg.Seq, Data: r.Msg.Data, Time: r.Msg.Time}
	if len(r.Msg.Header) > 0 {
		h, err := nats.DecodeHeadersMsg(r.Msg.Header)
		if err != nil {
			return nil, fmt.Errorf("message get: headers: %w", err)
		}
		m.Header = h
	}
	return m, nil
}
