package dtmgateway

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jetsaga/jetsaga/events"
	"github.com/jetsaga/jetsaga/httpparticipant"
	"github.com/jetsaga/jetsaga/orchestrator"
)

// SagaName is the name of the sagas the gateway starts.
const SagaName = "dtm-saga"

// badRequest is an error answered 500 {"message": …}, as DTM answers bad
// requests; it names the field.
type badRequest struct{ msg string }

func (e *badRequest) Error() string { return e.msg }

func bad(field, format string, args ...any) error {
	return &badRequest{msg: field + ": " + fmt.Sprintf(format, args...)}
}

// submitReq is DTM's submit body, as far as sagas use it.
type submitReq struct {
	Gid            string
	TransType      string
	Steps          []stepReq
	Payloads       []string
	HasPayloads    bool
	CustomData     string
	Protocol       string
	WaitResult     bool
	TimeoutToFail  int64
	RequestTimeout int64
	RetryInterval  int64
	RetryLimit     int64
	BranchHeaders  map[string]string
}

type stepReq struct {
	Action, Compensate, Data string
	HasData                  bool
}

// customData is DTM's custom_data for sagas.
type customData struct {
	Concurrent bool               `json:"concurrent"`
	Orders     map[string][]int64 `json:"orders"`
}

// parseSubmit reads a submit body. Every field DTM's clients send is
// accepted, nulls included; unknown fields are ignored (as DTM does); a
// field of the wrong type is an error naming it.
func parseSubmit(body []byte) (*submitReq, error) {
	var top map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&top); err != nil {
		return nil, &badRequest{msg: "request body: not a JSON object: " + err.Error()}
	}
	if top == nil {
		return nil, &badRequest{msg: "request body: not a JSON object"}
	}
	r := &submitReq{}
	str := func(name string, dst *string) error {
		raw, ok := top[name]
		if !ok || isNull(raw) {
			return nil
		}
		if err := json.Unmarshal(raw, dst); err != nil {
			return bad(name, "must be a string, got %s", clip(raw))
		}
		return nil
	}
	num := func(name string, dst *int64) error {
		raw, ok := top[name]
		if !ok || isNull(raw) {
			return nil
		}
		if err := json.Unmarshal(raw, dst); err != nil {
			return bad(name, "must be an integer, got %s", clip(raw))
		}
		if *dst < 0 {
			return bad(name, "must not be negative, got %d", *dst)
		}
		return nil
	}
	boolean := func(name string, dst *bool) error {
		raw, ok := top[name]
		if !ok || isNull(raw) {
			return nil
		}
		if err := json.Unmarshal(raw, dst); err != nil {
			return bad(name, "must be true or false, got %s", clip(raw))
		}
		return nil
	}
	for _, err := range []error{
		str("gid", &r.Gid), str("trans_type", &r.TransType), str("protocol", &r.Protocol),
		boolean("wait_result", &r.WaitResult), num("timeout_to_fail", &r.TimeoutToFail),
		num("request_timeout", &r.RequestTimeout), num("retry_interval", &r.RetryInterval), num("retry_limit", &r.RetryLimit),
	} {
		if err != nil {
			return nil, err
		}
	}
	if raw, ok := top["custom_data"]; ok && !isNull(raw) {
		// A string holding JSON, as the clients send it; an object is
		// taken as well.
		if len(raw) > 0 && raw[0] == '{' {
			r.CustomData = string(raw)
		} else if err := json.Unmarshal(raw, &r.CustomData); err != nil {
			return nil, bad("custom_data", "must be a string holding a JSON object, got %s", clip(raw))
		}
	}
	if raw, ok := top["branch_headers"]; ok && !isNull(raw) {
		if err := json.Unmarshal(raw, &r.BranchHeaders); err != nil {
			return nil, bad("branch_headers", "must be an object of strings, got %s", clip(raw))
		}
	}
	if raw, ok := top["payloads"]; ok && !isNull(raw) {
		var ps []*string
		if err := json.Unmarshal(raw, &ps); err != nil {
			return nil, bad("payloads", "must be an array of strings, got %s", clip(raw))
		}
		r.HasPayloads = true
		for i, p := range ps {
			if p == nil {
				return nil, bad(fmt.Sprintf("payloads[%d]", i), "is null; send \"\" for no body")
			}
			r.Payloads = append(r.Payloads, *p)
		}
	}
	if raw, ok := top["steps"]; ok && !isNull(raw) {
		var steps []map[string]json.RawMessage
		if err := json.Unmarshal(raw, &steps); err != nil {
			return nil, bad("steps", "must be an array of objects {\"action\": url, \"compensate\": url}, got %s", clip(raw))
		}
		for i, s := range steps {
			var st stepReq
			for _, f := range []struct {
				name string
				dst  *string
			}{{"action", &st.Action}, {"compensate", &st.Compensate}, {"data", &st.Data}} {
				v, ok := s[f.name]
				if !ok || isNull(v) {
					continue
				}
				if err := json.Unmarshal(v, f.dst); err != nil {
					return nil, bad(fmt.Sprintf("steps[%d].%s", i, f.name), "must be a string, got %s", clip(v))
				}
				if f.name == "data" {
					st.HasData = true
				}
			}
			r.Steps = append(r.Steps, st)
		}
	}
	return r, nil
}

func isNull(raw json.RawMessage) bool { return len(raw) == 0 || string(bytes.TrimSpace(raw)) == "null" }

func clip(raw json.RawMessage) string {
	if len(raw) > 60 {
		return string(raw[:60]) + "…"
	}
	return string(raw)
}

// built is a submit turned into a jetsaga plan.
type built struct {
	plan *orchestrator.Plan
	req  *submitReq
}

// planInput is the saga's input: what the gateway needs back for /query.
type planInput struct {
	DTM struct {
		TransType  string `json:"trans_type"`
		Protocol   string `json:"protocol"`
		CustomData string `json:"custom_data,omitempty"`
		Options    string `json:"options,omitempty"`
	} `json:"dtm"`
}

// buildPlan checks a submit and builds its plan: one HTTP step per DTM
// step, named by its branch id, compensating a failed action as DTM does.
func (g *Gateway) buildPlan(r *submitReq, traceparent string) (*built, error) {
	if r.Gid == "" {
		return nil, bad("gid", "missing: get one from newGid")
	}
	if err := events.ValidToken(r.Gid); err != nil {
		return nil, bad("gid", "%q %v", r.Gid, err)
	}
	switch r.TransType {
	case "saga":
	case "":
		return nil, bad("trans_type", "missing (jetsaga runs \"saga\")")
	default:
		return nil, bad("trans_type", "%q is not supported by jetsaga: only sagas are", r.TransType)
	}
	switch r.Protocol {
	case "", "http":
	default:
		return nil, bad("protocol", "%q is not supported by jetsaga: only http is", r.Protocol)
	}
	if len(r.Steps) == 0 {
		return nil, bad("steps", "missing: a saga needs at least one step")
	}
	if len(r.Steps) > events.MaxSteps {
		return nil, bad("steps", "has %d steps, the limit is %d", len(r.Steps), events.MaxSteps)
	}
	if r.HasPayloads && len(r.Payloads) != len(r.Steps) {
		return nil, bad("payloads", "has %d entries for %d steps", len(r.Payloads), len(r.Steps))
	}
	if r.RetryLimit > 1000 {
		return nil, bad("retry_limit", "is %d, jetsaga's limit is 1000", r.RetryLimit)
	}
	if r.TimeoutToFail > 365*24*3600 || r.RequestTimeout > 24*3600 || r.RetryInterval > 24*3600 {
		return nil, bad("timeout_to_fail, request_timeout or retry_interval", "too large (seconds)")
	}
	for k := range r.BranchHeaders {
		if !httpparticipant.ValidHeaderName(k) {
			return nil, bad(fmt.Sprintf("branch_headers[%q]", k), "is not a valid header name")
		}
	}
	var cd customData
	if r.CustomData != "" {
		if err := json.Unmarshal([]byte(r.CustomData), &cd); err != nil {
			return nil, bad("custom_data", "is not a JSON object {\"concurrent\": bool, \"orders\": {…}}: %v", err)
		}
	}
	after, err := orders(cd, len(r.Steps))
	if err != nil {
		return nil, err
	}

	retry := events.DefaultRetry()
	if r.RetryLimit > 0 {
		retry.MaxAttempts = int(r.RetryLimit)
	}
	if r.RetryInterval > 0 {
		retry.InitialBackoffMS = r.RetryInterval * 1000
		retry.MaxBackoffMS = max(retry.MaxBackoffMS, retry.InitialBackoffMS)
	}
	requestTimeout := httpparticipant.DefaultRequestTimeout
	if r.RequestTimeout > 0 {
		requestTimeout = time.Duration(r.RequestTimeout) * time.Second
	}
	// A step's attempt lasts as long as its retry budget can: every try
	// timing out, every backoff at its longest, and some slack.
	stepTimeout := 5 * time.Second
	for n := 1; n <= retry.MaxAttempts; n++ {
		stepTimeout += requestTimeout
		if n < retry.MaxAttempts {
			stepTimeout += retry.Backoff(n)
		}
	}
	ongoingInterval := time.Duration(0)
	if r.RetryInterval > 0 {
		ongoingInterval = time.Duration(r.RetryInterval) * time.Second
	}

	in := planInput{}
	in.DTM.TransType, in.DTM.Protocol, in.DTM.CustomData = "saga", "http", r.CustomData
	plan := orchestrator.NewPlan(SagaName).ID(r.Gid).Input(in)
	if r.TimeoutToFail > 0 {
		plan.Deadline(time.Duration(r.TimeoutToFail) * time.Second)
	}
	if traceparent != "" {
		plan.TraceContext(traceparent, "")
	}
	for i, s := range r.Steps {
		f := fmt.Sprintf("steps[%d]", i)
		for _, u := range []struct{ name, url string }{{"action", s.Action}, {"compensate", s.Compensate}} {
			if u.url == "" {
				continue // DTM: an empty URL succeeds without a call
			}
			if _, err := httpparticipant.ParseURL(u.url); err != nil {
				return nil, bad(f+"."+u.name, "%v", err)
			}
			if g.cfg.Allow != nil {
				if err := g.cfg.Allow.Check(u.url); err != nil {
					return nil, bad(f+"."+u.name, "%v", err)
				}
			}
		}
		body := s.Data
		if r.HasPayloads {
			body = r.Payloads[i]
		}
		branch := fmt.Sprintf("%02d", i+1)
		pl := httpparticipant.Payload{Action: s.Action, Compensate: s.Compensate, Body: body, BranchID: branch,
			Headers: r.BranchHeaders, RequestTimeoutMS: requestTimeout.Milliseconds(),
			OngoingIntervalMS: ongoingInterval.Milliseconds(), OngoingLimitMS: stepTimeout.Milliseconds()}
		raw, err := pl.Encode()
		if err != nil {
			field := f
			if r.HasPayloads {
				field = fmt.Sprintf("payloads[%d]", i)
			}
			return nil, bad(field, "%v", err)
		}
		opts := []orchestrator.StepOption{orchestrator.CompensateFailed(),
			orchestrator.Retry(retry.MaxAttempts, time.Duration(retry.InitialBackoffMS)*time.Millisecond, time.Duration(retry.MaxBackoffMS)*time.Millisecond),
			orchestrator.Timeout(stepTimeout)}
		if after != nil {
			opts = append(opts, orchestrator.After(after[i]...))
		}
		plan.Step(branch, g.cfg.Participant, httpparticipant.ActionName, httpparticipant.CompensateName, raw, opts...)
	}
	start, err := plan.Build()
	if err != nil {
		if strings.Contains(err.Error(), ".after") {
			return nil, bad("custom_data.orders", "%v", err)
		}
		return nil, &badRequest{msg: "the saga is not valid: " + err.Error()}
	}
	if data, err := start.Encode(); err != nil {
		return nil, &badRequest{msg: "the saga is not valid: " + err.Error()}
	} else if len(data) > events.MaxMessageBytes {
		return nil, bad("payloads", "the saga's start message would be %d bytes, the limit is %d", len(data), events.MaxMessageBytes)
	}
	return &built{plan: plan, req: r}, nil
}

// orders turns DTM's custom_data into each step's predecessors (branch
// names), or nil for a sequential saga.
func orders(cd customData, n int) ([][]string, error) {
	if !cd.Concurrent {
		if len(cd.Orders) > 0 {
			return nil, bad("custom_data.orders", "given without \"concurrent\": true")
		}
		return nil, nil
	}
	after := make([][]string, n)
	for i := range after {
		after[i] = []string{}
	}
	keys := make([]string, 0, len(cd.Orders))
	for k := range cd.Orders {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		i, err := strconv.Atoi(k)
		if err != nil || i < 0 || i >= n {
			return nil, bad("custom_data.orders", "key %q is not a step index 0..%d", k, n-1)
		}
		seen := map[int64]bool{}
		for _, p := range cd.Orders[k] {
			if p < 0 || p >= int64(n) || p == int64(i) || seen[p] {
				return nil, bad(fmt.Sprintf("custom_data.orders[%q]", k), "%d is not another step index 0..%d, or is repeated", p, n-1)
			}
			seen[p] = true
			after[i] = append(after[i], fmt.Sprintf("%02d", p+1))
		}
	}
	return after, nil
}
