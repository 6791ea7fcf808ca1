package httpparticipant_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetsaga/jetsaga/events"
	"github.com/jetsaga/jetsaga/httpparticipant"
	"github.com/jetsaga/jetsaga/internal/testenv"
	"github.com/jetsaga/jetsaga/orchestrator"
)

var quiet = slog.New(slog.DiscardHandler)

// call is one request the service received.
type call struct {
	Method, Path, Body string
	Query              map[string]string
	Header             http.Header
}

// service is a real HTTP server on loopback whose answers a test scripts
// per path: each path answers from its list in turn, the last one forever.
type service struct {
	*httptest.Server
	mu      sync.Mutex
	calls   []call
	answers map[string][]reply
}

type reply struct {
	status int
	body   string
	delay  time.Duration
}

var ok = reply{200, `{"dtm_result":"SUCCESS"}`, 0}

func newService(t *testing.T) *service {
	s := &service{answers: map[string][]reply{}}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		q := map[string]string{}
		for k, v := range r.URL.Query() {
			q[k] = v[0]
		}
		s.mu.Lock()
		s.calls = append(s.calls, call{r.Method, r.URL.Path, string(body), q, r.Header.Clone()})
		a := ok
		if list := s.answers[r.URL.Path]; len(list) > 0 {
			a = list[0]
			if len(list) > 1 {
				s.answers[r.URL.Path] = list[1:]
			}
		}
		s.mu.Unlock()
		if a.delay > 0 {
			select {
			case <-time.After(a.delay):
			case <-r.Context().Done():
				return
			}
		}
		if strings.HasPrefix(a.body, "redirect:") {
			http.Redirect(w, r, strings.TrimPrefix(a.body, "redirect:"), http.StatusFound)
			return
		}
		w.WriteHeader(a.status)
		_, _ = io.WriteString(w, a.body)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *service) script(path string, replies ...reply) {
	s.mu.Lock()
	s.answers[path] = replies
	s.mu.Unlock()
}

func (s *service) paths() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, c := range s.calls {
		out = append(out, c.Path)
	}
	return out
}

func (s *service) callsTo(path string) []call {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []call
	for _, c := range s.calls {
		if c.Path == path {
			out = append(out, c)
		}
	}
	return out
}

type env struct {
	js     jetstream.JetStream
	client *orchestrator.Client
	svc    *service
	part   *httpparticipant.Participant
}

// setup runs a coordinator and an HTTP participant that may call svc.
func setup(t *testing.T, tune func(*httpparticipant.Config)) *env {
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
	svc := newService(t)
	cfg := httpparticipant.Config{JetStream: js, Allow: httpparticipant.MustAllow(svc.URL + "/api"), Logger: quiet}
	if tune != nil {
		tune(&cfg)
	}
	p, err := httpparticipant.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	wg.Add(2)
	go func() { defer wg.Done(); _ = coord.Run(ctx) }()
	go func() {
		defer wg.Done()
		if err := p.Run(ctx); err != nil {
			t.Errorf("participant: %v", err)
		}
	}()
	client := orchestrator.NewClient(js, events.Default())
	t.Cleanup(client.Close)
	return &env{js: js, client: client, svc: svc, part: p}
}

// step is an HTTP step of the bank tutorial, numbered n from 1.
func (e *env) step(n int, name, body string, mod func(*httpparticipant.Payload)) (string, json.RawMessage) {
	pl := httpparticipant.Payload{Action: e.svc.URL + "/api/" + name, Compensate: e.svc.URL + "/api/" + name + "Compensate",
		Body: body, BranchID: "0" + string(rune('0'+n)), Headers: map[string]string{"X-Tenant": "t1"}}
	if mod != nil {
		mod(&pl)
	}
	raw, err := pl.Encode()
	if err != nil {
		panic(err)
	}
	return pl.BranchID, raw
}

func (e *env) run(t *testing.T, plan *orchestrator.Plan) *orchestrator.State {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	id, err := e.client.Start(ctx, plan)
	if err != nil {
		t.Fatal(err)
	}
	st, err := e.client.Wait(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func httpStep(p *orchestrator.Plan, name string, raw json.RawMessage, opts ...orchestrator.StepOption) *orchestrator.Plan {
	opts = append([]orchestrator.StepOption{orchestrator.CompensateFailed(), orchestrator.Retry(3, 10*time.Millisecond, 50*time.Millisecond)}, opts...)
	return p.Step(name, httpparticipant.DefaultName, httpparticipant.ActionName, httpparticipant.CompensateName, raw, opts...)
}

// The calls are DTM's: method, query, body unchanged, headers.
func TestCallsLikeDTM(t *testing.T) {
	e := setup(t, nil)
	n1, p1 := e.step(1, "TransOut", `{"amount": 30}`, nil)
	n2, p2 := e.step(2, "TransIn", "", nil)
	plan := orchestrator.NewPlan("dtm").ID("gid-1").TraceContext("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "")
	httpStep(plan, n1, p1)
	httpStep(plan, n2, p2)
	if st := e.run(t, plan); st.Status != orchestrator.Committed {
		t.Fatalf("saga %s: %s", st.Status, st.Reason)
	}
	out := e.svc.callsTo("/api/TransOut")
	if len(out) != 1 {
		t.Fatalf("TransOut called %d times", len(out))
	}
	c := out[0]
	if c.Method != "POST" || c.Body != `{"amount": 30}` {
		t.Errorf("TransOut: %s with body %q", c.Method, c.Body)
	}
	want := map[string]string{"gid": "gid-1", "trans_type": "saga", "branch_id": "01", "op": "action"}
	for k, v := range want {
		if c.Query[k] != v {
			t.Errorf("query %s = %q, want %q (%v)", k, c.Query[k], v, c.Query)
		}
	}
	for k, v := range map[string]string{"Content-Type": "application/json", "Accept": "application/json", "X-Tenant": "t1",
		"Traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"} {
		if got := c.Header.Get(k); got != v {
			t.Errorf("header %s = %q, want %q", k, got, v)
		}
	}
	in := e.svc.callsTo("/api/TransIn")
	if len(in) != 1 || in[0].Method != "GET" || in[0].Query["branch_id"] != "02" {
		t.Errorf("TransIn: %+v", in)
	}
}

// A failed action (FAILURE in a 200 body) is compensated, before the earlier
// step, as DTM does; a compensation answering FAILURE is retried.
func TestFailedActionCompensatedAndCompensationRetried(t *testing.T) {
	e := setup(t, nil)
	e.svc.script("/api/TransIn", reply{200, `{"dtm_result":"FAILURE","message":"account frozen"}`, 0})
	e.svc.script("/api/TransOutCompensate", reply{409, `{"dtm_result":"FAILURE"}`, 0}, ok)
	n1, p1 := e.step(1, "TransOut", `{"amount":30}`, nil)
	n2, p2 := e.step(2, "TransIn", `{"amount":30}`, nil)
	plan := orchestrator.NewPlan("dtm")
	httpStep(plan, n1, p1)
	httpStep(plan, n2, p2)
	st := e.run(t, plan)
	if st.Status != orchestrator.Compensated || !strings.Contains(st.Reason, "account frozen") {
		t.Fatalf("saga %s: %s", st.Status, st.Reason)
	}
	want := "/api/TransOut /api/TransIn /api/TransInCompensate /api/TransOutCompensate /api/TransOutCompensate"
	if got := strings.Join(e.svc.paths(), " "); got != want {
		t.Fatalf("calls:\n got %s\nwant %s", got, want)
	}
	if c := e.svc.callsTo("/api/TransInCompensate")[0]; c.Query["op"] != "compensate" || c.Query["branch_id"] != "02" {
		t.Errorf("compensation query %v", c.Query)
	}
}

// ONGOING (425, or in the body) is asked again after the interval without
// spending the retry budget; errors spend it, and a spent budget makes the
// action unknown: compensated.
func TestOngoingNotCountedErrorsExhaust(t *testing.T) {
	e := setup(t, nil)
	e.svc.script("/api/TransOut", reply{425, "", 0}, reply{200, `{"dtm_result":"ONGOING"}`, 0}, reply{425, "", 0}, reply{425, "", 0}, ok)
	e.svc.script("/api/TransIn", reply{503, "busy", 0})
	n1, p1 := e.step(1, "TransOut", `{}`, func(p *httpparticipant.Payload) { p.OngoingIntervalMS = 10 })
	n2, p2 := e.step(2, "TransIn", `{}`, nil)
	plan := orchestrator.NewPlan("dtm")
	httpStep(plan, n1, p1, orchestrator.Retry(2, 10*time.Millisecond, 10*time.Millisecond))
	httpStep(plan, n2, p2, orchestrator.Retry(2, 10*time.Millisecond, 10*time.Millisecond))
	st := e.run(t, plan)
	if st.Status != orchestrator.Compensated || !strings.Contains(st.Reason, "retry budget spent: 2 deliveries") || !strings.Contains(st.Reason, "HTTP 503: busy") {
		t.Fatalf("saga %s: %s", st.Status, st.Reason)
	}
	if n := len(e.svc.callsTo("/api/TransOut")); n != 5 {
		t.Errorf("TransOut called %d times, want 5 (4 ONGOING, then success)", n)
	}
	if n := len(e.svc.callsTo("/api/TransIn")); n != 2 {
		t.Errorf("TransIn called %d times, want 2 (its budget)", n)
	}
	if n := len(e.svc.callsTo("/api/TransInCompensate")); n != 1 {
		t.Errorf("TransInCompensate called %d times, want 1", n)
	}
}

// A URL outside the allowed list is never called: the step is rejected
// (the saga compensates what ran); a redirect out of the list is refused.
func TestURLsOutsideTheAllowedListAreNotCalled(t *testing.T) {
	e := setup(t, nil)
	other := newService(t)
	n1, p1 := e.step(1, "TransOut", `{}`, nil)
	n2, p2 := e.step(2, "TransIn", `{}`, func(p *httpparticipant.Payload) { p.Action = other.URL + "/api/TransIn" })
	plan := orchestrator.NewPlan("dtm")
	httpStep(plan, n1, p1)
	httpStep(plan, n2, p2)
	st := e.run(t, plan)
	if st.Status != orchestrator.Compensated || !strings.Contains(st.Reason, "not in the allowed URLs") {
		t.Fatalf("saga %s: %s", st.Status, st.Reason)
	}
	if len(other.paths()) != 0 {
		t.Fatalf("a URL outside the list was called: %v", other.paths())
	}
	if got := e.svc.callsTo("/api/TransOutCompensate"); len(got) != 1 {
		t.Fatalf("TransOut compensated %d times", len(got))
	}

	e.svc.script("/api/Hop", reply{0, "redirect:" + other.URL + "/api/TransIn", 0})
	_, p3 := e.step(1, "Hop", `{}`, nil)
	plan = orchestrator.NewPlan("dtm")
	httpStep(plan, "01", p3, orchestrator.Retry(1, 0, 0))
	st = e.run(t, plan)
	if st.Status != orchestrator.Compensated || !strings.Contains(st.Reason, "redirect refused") {
		t.Fatalf("saga %s: %s", st.Status, st.Reason)
	}
	if len(other.paths()) != 0 {
		t.Fatalf("a redirect left the list: %v", other.paths())
	}
}

// A call in flight when the participant is stopped is finished and
// answered: the saga commits with one call.
func TestGracefulShutdown(t *testing.T) {
	srv := testenv.NATS(t)
	_, js := testenv.Connect(t, srv.URL())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := orchestrator.EnsureStreams(ctx, js, events.Default(), events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	svc := newService(t)
	svc.script("/api/Slow", reply{200, "{}", 300 * time.Millisecond})
	p, err := httpparticipant.New(httpparticipant.Config{JetStream: js, Allow: httpparticipant.MustAllow(svc.URL), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	pctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- p.Run(pctx) }()
	client := orchestrator.NewClient(js, events.Default())
	defer client.Close()
	raw, _ := httpparticipant.Payload{Action: svc.URL + "/api/Slow", Compensate: svc.URL + "/api/SlowC"}.Encode()
	id, err := client.Start(ctx, httpStep(orchestrator.NewPlan("dtm"), "01", raw))
	if err != nil {
		t.Fatal(err)
	}
	coord, _ := orchestrator.NewCoordinator(orchestrator.Config{JetStream: js, SkipEnsureStreams: true, Logger: quiet})
	cctx, stopCoord := context.WithCancel(ctx)
	cdone := make(chan struct{})
	go func() { _ = coord.Run(cctx); close(cdone) }()
	defer func() { stopCoord(); <-cdone }()
	testenv.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		if len(svc.paths()) == 0 {
			return errors.New("not called yet")
		}
		return nil
	})
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	st, err := client.Wait(ctx, id)
	if err != nil || st.Status != orchestrator.Committed {
		t.Fatalf("saga %v, %v", st, err)
	}
	if n := len(svc.paths()); n != 1 {
		t.Fatalf("called %d times", n)
	}
}

func TestConfigErrorsNameTheField(t *testing.T) {
	_, err := httpparticipant.New(httpparticipant.Config{})
	if !errors.Is(err, httpparticipant.ErrInvalidConfig) || !strings.Contains(err.Error(), "JetStream") {
		t.Fatalf("err = %v", err)
	}
	srv := testenv.NATS(t)
	_, js := testenv.Connect(t, srv.URL())
	_, err = httpparticipant.New(httpparticipant.Config{JetStream: js})
	if !errors.Is(err, httpparticipant.ErrInvalidConfig) || !strings.Contains(err.Error(), "Allow") {
		t.Fatalf("err = %v", err)
	}
	_, err = httpparticipant.New(httpparticipant.Config{JetStream: js, Allow: httpparticipant.MustAllow("svc"), Name: "a.b"})
	if !strings.Contains(err.Error(), "Name") {
		t.Fatalf("err = %v", err)
	}
}

// Commands that cannot be carried out are answered rejected without a
// call: an unreadable one anonymously on its subject's saga, a bad payload
// for its step.
func TestPoisonCommandsAreRejected(t *testing.T) {
	e := setup(t, nil)
	ctx := context.Background()
	ns := events.Default()
	publish := func(saga string, data []byte) {
		t.Helper()
		if _, err := e.js.Publish(ctx, ns.Command(httpparticipant.DefaultName, saga), data); err != nil {
			t.Fatal(err)
		}
	}
	outcome := func(saga string) events.Outcome {
		t.Helper()
		var o events.Outcome
		testenv.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
			stream, err := e.js.Stream(ctx, ns.SagasStream())
			if err != nil {
				return err
			}
			m, err := stream.GetLastMsgForSubject(ctx, ns.Event(httpparticipant.DefaultName, saga))
			if err != nil {
				return err
			}
			o, err = events.DecodeOutcome(m.Data)
			return err
		})
		return o
	}
	publish("s1", []byte("{not json"))
	if o := outcome("s1"); o.Status != events.Rejected || o.Step != "" || !strings.Contains(o.Reason, "undecodable") {
		t.Fatalf("unreadable command: %+v", o)
	}
	cmd := events.Command{V: events.Version, SagaID: "s2", Participant: httpparticipant.DefaultName, Step: "01", Op: events.OpDo,
		Attempt: 1, Action: httpparticipant.ActionName, Payload: json.RawMessage(`{"action":"gopher://x/y"}`), Retry: events.DefaultRetry()}
	data, err := cmd.Encode()
	if err != nil {
		t.Fatal(err)
	}
	publish("s2", data)
	if o := outcome("s2"); o.Status != events.Rejected || o.Step != "01" || !strings.Contains(o.Reason, "payload.action") {
		t.Fatalf("bad payload: %+v", o)
	}
	if len(e.svc.paths()) != 0 || e.part.Stats().Rejected != 2 {
		t.Fatalf("calls %v, stats %+v", e.svc.paths(), e.part.Stats())
	}
}
