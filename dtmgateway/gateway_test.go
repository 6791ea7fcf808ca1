package dtmgateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jetsaga/jetsaga/dtmgateway"
	"github.com/jetsaga/jetsaga/events"
	"github.com/jetsaga/jetsaga/httpparticipant"
	"github.com/jetsaga/jetsaga/internal/testenv"
	"github.com/jetsaga/jetsaga/orchestrator"
)

var quiet = slog.New(slog.DiscardHandler)

// bank is a loopback service whose paths answer from a script (the last
// answer forever), recording the calls.
type bank struct {
	*httptest.Server
	mu      sync.Mutex
	calls   []string // "<path> <branch_id> <op>"
	headers []http.Header
	script  map[string][]int
}

func newBank(t *testing.T) *bank {
	b := &bank{script: map[string][]int{}}
	b.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		b.mu.Lock()
		b.calls = append(b.calls, r.URL.Path+" "+q.Get("branch_id")+" "+q.Get("op"))
		b.headers = append(b.headers, r.Header.Clone())
		code := 200
		if s := b.script[r.URL.Path]; len(s) > 0 {
			code = s[0]
			if len(s) > 1 {
				b.script[r.URL.Path] = s[1:]
			}
		}
		b.mu.Unlock()
		switch code {
		case 200:
			_, _ = io.WriteString(w, `{"dtm_result":"SUCCESS"}`)
		case 409:
			w.WriteHeader(409)
			_, _ = io.WriteString(w, `{"dtm_result":"FAILURE","message":"refused"}`)
		default:
			w.WriteHeader(code)
		}
	}))
	t.Cleanup(b.Close)
	return b
}

func (b *bank) set(path string, codes ...int) {
	b.mu.Lock()
	b.script[path] = codes
	b.mu.Unlock()
}

func (b *bank) log() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Join(b.calls, "\n")
}

type env struct {
	url  string // the gateway's
	bank *bank
}

func setup(t *testing.T) *env {
	t.Helper()
	srv := testenv.NATS(t)
	_, js := testenv.Connect(t, srv.URL())
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	if err := orchestrator.EnsureStreams(ctx, js, events.Default(), events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	coord, err := orchestrator.NewCoordinator(orchestrator.Config{JetStream: js, SkipEnsureStreams: true, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	b := newBank(t)
	allow := httpparticipant.MustAllow(b.URL + "/api/")
	p, err := httpparticipant.New(httpparticipant.Config{JetStream: js, Allow: allow, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	wg.Add(2)
	go func() { defer wg.Done(); _ = coord.Run(ctx) }()
	go func() { defer wg.Done(); _ = p.Run(ctx) }()
	g, err := dtmgateway.New(dtmgateway.Config{JetStream: js, Allow: allow, WaitTimeout: 20 * time.Second, MaxBodyBytes: 64 << 10, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(g.Handler())
	t.Cleanup(func() { hs.Close(); g.Close() })
	return &env{url: hs.URL, bank: b}
}

func (e *env) do(t *testing.T, method, route, body string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(method, e.url+route, strings.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v map[string]any
	data, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatalf("%s %s: %d %q is not JSON", method, route, resp.StatusCode, data)
	}
	return resp.StatusCode, v
}

func (e *env) gid(t *testing.T) string {
	code, v := e.do(t, "GET", "/api/dtmsvr/newGid", "")
	if code != 200 || v["dtm_result"] != "SUCCESS" || v["gid"] == "" {
		t.Fatalf("newGid: %d %v", code, v)
	}
	return v["gid"].(string)
}

// transfer is the tutorial's saga as DTM's Python client posts it: its
// whole object, nulls included.
func (e *env) transfer(gid string, mod func(m map[string]any)) string {
	m := map[string]any{"gid": gid, "trans_type": "saga", "custom_data": nil,
		"steps": []map[string]string{
			{"action": e.bank.URL + "/api/TransOutSaga", "compensate": e.bank.URL + "/api/TransOutCompensate"},
			{"action": e.bank.URL + "/api/TransInSaga", "compensate": e.bank.URL + "/api/TransInCompensate"}},
		"payloads": []string{`{"amount": 30}`, `{"amount": 30}`}, "query_prepared": nil, "protocol": nil,
		"wait_result": false, "timeout_to_fail": 0, "request_timeout": 8, "retry_interval": 0,
		"passthrough_headers": []string{}, "branch_headers": map[string]string{}, "concurrent": false}
	if mod != nil {
		mod(m)
	}
	b, _ := json.Marshal(m)
	return string(b)
}

// status polls /query until the saga has a DTM status in want.
func (e *env) status(t *testing.T, gid string, want ...string) map[string]any {
	t.Helper()
	var last map[string]any
	testenv.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		code, v := e.do(t, "GET", "/api/dtmsvr/query?gid="+gid, "")
		if code != 200 {
			return fmt.Errorf("query: %d %v", code, v)
		}
		last = v
		tr, _ := v["transaction"].(map[string]any)
		if tr == nil {
			return fmt.Errorf("no transaction yet")
		}
		for _, w := range want {
			if tr["status"] == w {
				return nil
			}
		}
		return fmt.Errorf("status %v, want %v", tr["status"], want)
	})
	return last
}

func TestSubmitQueryAndResubmit(t *testing.T) {
	e := setup(t)
	gid := e.gid(t)
	code, v := e.do(t, "POST", "/api/dtmsvr/submit", e.transfer(gid, nil))
	if code != 200 || v["dtm_result"] != "SUCCESS" {
		t.Fatalf("submit: %d %v", code, v)
	}
	q := e.status(t, gid, dtmgateway.StatusSucceed)
	tr := q["transaction"].(map[string]any)
	if tr["trans_type"] != "saga" || tr["jetsaga_status"] != "committed" || tr["finish_time"] == nil {
		t.Errorf("transaction %v", tr)
	}
	var got []string
	for _, b := range q["branches"].([]any) {
		m := b.(map[string]any)
		got = append(got, fmt.Sprint(m["branch_id"], " ", m["op"], " ", m["status"], " ", strings.TrimPrefix(m["url"].(string), e.bank.URL)))
	}
	want := "01 compensate prepared /api/TransOutCompensate|01 action succeed /api/TransOutSaga|02 compensate prepared /api/TransInCompensate|02 action succeed /api/TransInSaga"
	if strings.Join(got, "|") != want {
		t.Errorf("branches:\n got %s\nwant %s", strings.Join(got, "|"), want)
	}
	if e.bank.log() != "/api/TransOutSaga 01 action\n/api/TransInSaga 02 action" {
		t.Errorf("calls:\n%s", e.bank.log())
	}
	// A finished gid cannot be submitted again.
	code, v = e.do(t, "POST", "/api/dtmsvr/submit", e.transfer(gid, nil))
	if code != 409 || v["dtm_result"] != "FAILURE" || !strings.Contains(v["message"].(string), "succeed") {
		t.Fatalf("resubmit of a finished saga: %d %v", code, v)
	}
	// A running one is accepted again, once.
	e.bank.set("/api/TransInSaga", 425, 425, 425, 425, 425, 200)
	gid2 := e.gid(t)
	body := e.transfer(gid2, func(m map[string]any) { m["retry_interval"] = 1 })
	for i := 0; i < 2; i++ {
		if code, v := e.do(t, "POST", "/api/dtmsvr/submit", body); code != 200 {
			t.Fatalf("submit %d: %d %v", i, code, v)
		}
	}
	// The same gid with another saga is refused.
	if code, v := e.do(t, "POST", "/api/dtmsvr/submit", e.transfer(gid2, func(m map[string]any) { m["payloads"] = []string{"{}", "{}"} })); code != 409 {
		t.Fatalf("a different saga under a running gid: %d %v", code, v)
	}
	e.status(t, gid2, dtmgateway.StatusSucceed)
	if n := strings.Count(e.bank.log(), "TransOutSaga 01"); n != 2 {
		t.Errorf("TransOutSaga called %d times for two sagas:\n%s", n, e.bank.log())
	}
}

// wait_result: 200 when the saga committed; 409 FAILURE with the reason when
// it rolled back. A failed action is compensated too, in reverse order.
func TestWaitResultAndRollback(t *testing.T) {
	e := setup(t)
	code, v := e.do(t, "POST", "/api/dtmsvr/submit", e.transfer(e.gid(t), func(m map[string]any) { m["wait_result"] = true }))
	if code != 200 {
		t.Fatalf("wait_result on a good saga: %d %v", code, v)
	}
	e.bank.set("/api/TransInSaga", 409)
	gid := e.gid(t)
	code, v = e.do(t, "POST", "/api/dtmsvr/submit", e.transfer(gid, func(m map[string]any) { m["wait_result"] = true }))
	if code != 409 || v["dtm_result"] != "FAILURE" || !strings.Contains(v["message"].(string), "refused") {
		t.Fatalf("wait_result on a failing saga: %d %v", code, v)
	}
	q := e.status(t, gid, dtmgateway.StatusFailed)
	if r := q["transaction"].(map[string]any)["rollback_reason"]; !strings.Contains(fmt.Sprint(r), "refused") {
		t.Errorf("rollback_reason %v", r)
	}
	log := e.bank.log()
	want := "/api/TransOutSaga 01 action\n/api/TransInSaga 02 action\n/api/TransInCompensate 02 compensate\n/api/TransOutCompensate 01 compensate"
	if !strings.HasSuffix(log, want) {
		t.Errorf("calls:\n%s\nwant the end:\n%s", log, want)
	}
}

// custom_data orders: steps 0 and 1 beside each other, 2 after both; branch
// headers reach every call.
func TestConcurrentOrdersAndBranchHeaders(t *testing.T) {
	e := setup(t)
	gid := e.gid(t)
	body := e.transfer(gid, func(m map[string]any) {
		steps := m["steps"].([]map[string]string)
		m["steps"] = append(steps, map[string]string{"action": e.bank.URL + "/api/Last", "compensate": e.bank.URL + "/api/LastCompensate"})
		m["payloads"] = []string{"{}", "{}", "{}"}
		m["custom_data"] = `{"concurrent":true,"orders":{"2":[0,1]}}`
		m["branch_headers"] = map[string]string{"X-Tenant": "t7"}
		m["wait_result"] = true
	})
	if code, v := e.do(t, "POST", "/api/dtmsvr/submit", body); code != 200 {
		t.Fatalf("submit: %d %v", code, v)
	}
	lines := strings.Split(e.bank.log(), "\n")
	if len(lines) != 3 || lines[2] != "/api/Last 03 action" {
		t.Fatalf("calls:\n%s", e.bank.log())
	}
	e.bank.mu.Lock()
	defer e.bank.mu.Unlock()
	for _, h := range e.bank.headers {
		if h.Get("X-Tenant") != "t7" || !strings.HasPrefix(h.Get("Traceparent"), "00-") {
			t.Errorf("headers %v", h)
		}
	}
}

// Bad requests: 500 {"message"} naming the field, and nothing started.
func TestBadRequestsNameTheFieldAndStartNothing(t *testing.T) {
	e := setup(t)
	other := newBank(t)
	for _, c := range []struct {
		name, want string
		body       func(gid string) string
	}{
		{"malformed JSON", "request body", func(string) string { return `{"gid":` }},
		{"missing gid", "gid: missing", func(string) string { return e.transfer("", nil) }},
		{"gid with a dot", "gid:", func(string) string { return e.transfer("a.b", nil) }},
		{"missing steps", "steps: missing", func(g string) string {
			return e.transfer(g, func(m map[string]any) { delete(m, "steps"); delete(m, "payloads") })
		}},
		{"payload count", "payloads: has 1 entries for 2 steps", func(g string) string {
			return e.transfer(g, func(m map[string]any) { m["payloads"] = []string{"{}"} })
		}},
		{"non-HTTP URL", "steps[1].compensate", func(g string) string {
			return e.transfer(g, func(m map[string]any) { m["steps"].([]map[string]string)[1]["compensate"] = "ftp://bank/x" })
		}},
		{"URL outside the list", "steps[0].action", func(g string) string {
			return e.transfer(g, func(m map[string]any) { m["steps"].([]map[string]string)[0]["action"] = other.URL + "/api/x" })
		}},
		{"oversized body", "larger than", func(g string) string {
			return e.transfer(g, func(m map[string]any) { m["payloads"] = []string{strings.Repeat("x", 70<<10), "{}"} })
		}},
		{"tcc", `trans_type: "tcc" is not supported`, func(g string) string {
			return e.transfer(g, func(m map[string]any) { m["trans_type"] = "tcc" })
		}},
		{"wrong type", "retry_limit: must be an integer", func(g string) string {
			return e.transfer(g, func(m map[string]any) { m["retry_limit"] = "3" })
		}},
		{"orders out of range", "custom_data.orders", func(g string) string {
			return e.transfer(g, func(m map[string]any) { m["custom_data"] = `{"concurrent":true,"orders":{"5":[0]}}` })
		}},
		{"orders with a cycle", "custom_data.orders", func(g string) string {
			return e.transfer(g, func(m map[string]any) { m["custom_data"] = `{"concurrent":true,"orders":{"0":[1],"1":[0]}}` })
		}},
		{"bad header", "branch_headers", func(g string) string {
			return e.transfer(g, func(m map[string]any) { m["branch_headers"] = map[string]string{"a b": "1"} })
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			gid := e.gid(t)
			code, v := e.do(t, "POST", "/api/dtmsvr/submit", c.body(gid))
			if code != 500 || !strings.Contains(fmt.Sprint(v["message"]), c.want) {
				t.Fatalf("%d %v, want 500 with %q", code, v, c.want)
			}
			if code, q := e.do(t, "GET", "/api/dtmsvr/query?gid="+gid, ""); code != 200 || q["transaction"] != nil {
				t.Fatalf("query after a refused submit: %d %v", code, q)
			}
		})
	}
	if other.log() != "" || e.bank.log() != "" {
		t.Fatalf("calls were made: %s %s", other.log(), e.bank.log())
	}
	for route, want := range map[string]string{"/api/dtmsvr/prepare": "not supported by jetsaga", "/api/dtmsvr/query": "no gid specified"} {
		if code, v := e.do(t, "GET", route, ""); code != 500 || !strings.Contains(fmt.Sprint(v["message"]), want) {
			t.Errorf("%s: %d %v", route, code, v)
		}
	}
	if code, v := e.do(t, "GET", "/api/ping", ""); code != 200 || v["msg"] != "pong" {
		t.Errorf("ping: %d %v", code, v)
	}
}

// all: newest first, paged by next_position, filtered by status; a saga
// parked while compensating is redriven by resetNextCronTime and ended by
// forceStop.
func TestAllAndOperatorRoutes(t *testing.T) {
	e := setup(t)
	var gids []string
	for i := 0; i < 3; i++ {
		gids = append(gids, e.gid(t))
		if code, v := e.do(t, "POST", "/api/dtmsvr/submit", e.transfer(gids[i], func(m map[string]any) { m["wait_result"] = true })); code != 200 {
			t.Fatalf("submit: %d %v", code, v)
		}
	}
	var seen []string
	pos := ""
	for range 4 {
		code, v := e.do(t, "GET", "/api/dtmsvr/all?limit=2&status=succeed&position="+pos, "")
		if code != 200 {
			t.Fatalf("all: %d %v", code, v)
		}
		for _, tr := range v["transactions"].([]any) {
			seen = append(seen, tr.(map[string]any)["gid"].(string))
		}
		if pos = v["next_position"].(string); pos == "" {
			break
		}
	}
	if fmt.Sprint(seen) != fmt.Sprint([]string{gids[2], gids[1], gids[0]}) {
		t.Errorf("all: %v, want %v", seen, []string{gids[2], gids[1], gids[0]})
	}
	if _, v := e.do(t, "GET", "/api/dtmsvr/all?status=failed", ""); len(v["transactions"].([]any)) != 0 {
		t.Errorf("all failed: %v", v)
	}

	// A compensation that keeps failing spends retry_limit: parked.
	e.bank.set("/api/TransInSaga", 409)
	e.bank.set("/api/TransOutCompensate", 500)
	gid := e.gid(t)
	if code, v := e.do(t, "POST", "/api/dtmsvr/submit", e.transfer(gid, func(m map[string]any) { m["retry_limit"] = 2 })); code != 200 {
		t.Fatalf("submit: %d %v", code, v)
	}
	testenv.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		_, v := e.do(t, "GET", "/api/dtmsvr/query?gid="+gid, "")
		if tr, _ := v["transaction"].(map[string]any); tr == nil || tr["parked"] != true || tr["status"] != dtmgateway.StatusAborting {
			return fmt.Errorf("not parked: %v", v["transaction"])
		}
		return nil
	})
	e.bank.set("/api/TransOutCompensate", 500, 200)
	if code, v := e.do(t, "POST", "/api/dtmsvr/resetNextCronTime", `{"gid":"`+gid+`"}`); code != 200 {
		t.Fatalf("resetNextCronTime: %d %v", code, v)
	}
	e.status(t, gid, dtmgateway.StatusFailed)
	if code, v := e.do(t, "POST", "/api/dtmsvr/forceStop", `{"gid":"`+gid+`"}`); code != 409 {
		t.Fatalf("forceStop of a failed saga: %d %v", code, v)
	}

	e.bank.set("/api/TransOutCompensate", 500)
	gid = e.gid(t)
	if code, v := e.do(t, "POST", "/api/dtmsvr/submit", e.transfer(gid, func(m map[string]any) { m["retry_limit"] = 1 })); code != 200 {
		t.Fatalf("submit: %d %v", code, v)
	}
	testenv.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		_, v := e.do(t, "GET", "/api/dtmsvr/query?gid="+gid, "")
		if tr, _ := v["transaction"].(map[string]any); tr == nil || tr["parked"] != true {
			return fmt.Errorf("not parked: %v", v["transaction"])
		}
		return nil
	})
	if code, v := e.do(t, "POST", "/api/dtmsvr/forceStop", `{"gid":"`+gid+`"}`); code != 200 {
		t.Fatalf("forceStop: %d %v", code, v)
	}
	e.status(t, gid, dtmgateway.StatusFailed)
}
