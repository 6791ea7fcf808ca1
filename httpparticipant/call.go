package httpparticipant

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/nats-io/nats.go"

	"github.com/jetsaga/jetsaga/events"
)

// DTM's result words, found anywhere in a response body.
const (
	resultFailure = "FAILURE"
	resultOngoing = "ONGOING"
)

type class int

const (
	classSuccess class = iota
	classFailure
	classOngoing
	classTransient
)

// request is one call to make.
type request struct {
	url     string
	op      string // ActionName or CompensateName
	payload *Payload
	header  nats.Header // the command's headers (trace context)
}

type answer struct {
	class  class
	status int
	body   string
	err    error
}

func (a answer) describe() string {
	if a.err != nil {
		return a.err.Error()
	}
	body := strings.TrimSpace(a.body)
	if body == "" {
		return fmt.Sprintf("HTTP %d", a.status)
	}
	return fmt.Sprintf("HTTP %d: %s", a.status, body)
}

// Classify says what DTM makes of an answer: 425 or a body containing
// ONGOING: ask again later; 409 or a body containing FAILURE: failed; any
// other status but 200: an error; 200: success. In that order, as DTM.
func classify(status int, body []byte) class {
	switch {
	case status == http.StatusTooEarly || bytes.Contains(body, []byte(resultOngoing)):
		return classOngoing
	case status == http.StatusConflict || bytes.Contains(body, []byte(resultFailure)):
		return classFailure
	case status != http.StatusOK:
		return classTransient
	}
	return classSuccess
}

// call makes one request as DTM v1.19 does: POST (GET without a body)
// url?gid=&trans_type=saga&branch_id=&op=, the payload's body unchanged,
// Content-Type and Accept application/json, the W3C trace context, then
// the branch headers.
func (p *Participant) call(ctx context.Context, j *job, r request) answer {
	u, err := url.Parse(r.url)
	if err != nil {
		return answer{class: classTransient, err: err}
	}
	branch := r.payload.BranchID
	if branch == "" {
		branch = j.cmd.Step
	}
	q := u.Query()
	q.Set("gid", j.cmd.SagaID)
	q.Set("trans_type", "saga")
	q.Set("branch_id", branch)
	q.Set("op", r.op)
	u.RawQuery = q.Encode()

	timeout := durationMS(r.payload.RequestTimeoutMS, p.cfg.RequestTimeout)
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	method := http.MethodPost
	var body io.Reader
	if r.payload.Body == "" {
		method = http.MethodGet
	} else {
		body = strings.NewReader(r.payload.Body)
	}
	req, err := http.NewRequestWithContext(cctx, method, u.String(), body)
	if err != nil {
		return answer{class: classTransient, err: err}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	if r.header != nil {
		for _, k := range []string{events.HeaderTraceParent, events.HeaderTraceState} {
			if v := r.header.Get(k); v != "" {
				req.Header.Set(strings.ToLower(k), v)
			}
		}
	}
	for k, v := range r.payload.Headers {
		req.Header.Set(k, v)
	}
	p.stats.calls.Add(1)
	resp, err := p.client.Do(req)
	if err != nil {
		if ctx.Err() == nil && cctx.Err() != nil {
			err = fmt.Errorf("%s %s: no answer within the request timeout of %s", method, redactQuery(u), timeout)
		}
		return answer{class: classTransient, err: err}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, p.cfg.MaxResponseBytes))
	// Drain a little more so that the connection can be reused.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return answer{class: classTransient, status: resp.StatusCode, err: fmt.Errorf("reading the answer of %s: %v", redactQuery(u), err)}
	}
	return answer{class: classify(resp.StatusCode, data), status: resp.StatusCode, body: string(data)}
}

func redactQuery(u *url.URL) string {
	c := *u
	c.RawQuery = ""
	c.User = nil
	return c.String()
}
