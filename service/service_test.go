package service_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/jetsaga/jetsaga/events"
	"github.com/jetsaga/jetsaga/internal/testenv"
	"github.com/jetsaga/jetsaga/orchestrator"
	"github.com/jetsaga/jetsaga/service"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// env is a NATS server with the streams, a coordinator, a scripted bank and
// the service.
type env struct {
	t  *testing.T
	nc *nats.Conn
	js jetstream.JetStream
}

// setup runs everything. The bank answers every command "succeeded" (or
// "compensated"), except: the credit of a saga whose id starts with "park"
// fails, and its compensation is "exhausted" until undo is set, which parks
// the saga.
func setup(t *testing.T, undo *atomic.Bool) *env {
	t.Helper()
	srv := testenv.NATS(t)
	nc, js := testenv.Connect(t, srv.URL())
	ctx := context.Background()
	if err := orchestrator.EnsureStreams(ctx, js, events.Default(), events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	c, err := orchestrator.NewCoordinator(orchestrator.Config{JetStream: js, Workers: 4, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(cctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("coordinator: %v", err)
		}
	})
	cons, err := js.CreateOrUpdateConsumer(ctx, events.Default().CommandsStream(), jetstream.ConsumerConfig{
		Durable: "bank", FilterSubject: events.Default().CommandFilter("bank"), AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		cmd, err := events.DecodeCommand(m.Data())
		if err != nil {
			_ = m.Term()
			return
		}
		status := events.Succeeded
		switch {
		case cmd.Op == events.OpUndo && strings.HasPrefix(cmd.SagaID, "park") && !undo.Load():
			status = events.Exhausted
		case cmd.Op == events.OpUndo:
			status = events.Compensated
		case cmd.Step == "credit" && strings.HasPrefix(cmd.SagaID, "park"):
			status = events.Failed
		}
		o := events.Outcome{V: events.Version, SagaID: cmd.SagaID, Participant: "bank", Step: cmd.Step, Op: cmd.Op,
			Attempt: cmd.Attempt, Status: status, Reason: "scripted"}
		data, _ := o.Encode()
		msg := nats.NewMsg(events.Default().Event("bank", cmd.SagaID))
		msg.Data = data
		msg.Header.Set(events.HeaderMsgID, events.OutcomeMsgID(&o, 0))
		if _, err := js.PublishMsg(context.Background(), msg); err != nil {
			_ = m.Nak()
			return
		}
		_ = m.Ack()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cc.Stop)

	client := orchestrator.NewClient(js, events.Default())
	t.Cleanup(client.Close)
	svc, err := service.Start(service.Config{Conn: nc, Client: client, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := svc.Stop(); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	// Requests go through a connection of their own, as a tool's would.
	cnc, _ := testenv.Connect(t, srv.URL())
	return &env{t: t, nc: cnc, js: js}
}

// call sends a request to endpoint and returns the reply's body, or the
// error code and description of an error reply.
func (e *env) call(endpoint string, body string) (data []byte, code, desc string) {
	e.t.Helper()
	msg, err := e.nc.Request(service.Subject(events.Default(), endpoint), []byte(body), 10*time.Second)
	if err != nil {
		e.t.Fatalf("request %s %s: %v", endpoint, body, err)
	}
	return msg.Data, msg.Header.Get(micro.ErrorCodeHeader), msg.Header.Get(micro.ErrorHeader)
}

// ok calls endpoint and decodes its reply into v, failing on an error reply.
func (e *env) ok(endpoint, body string, v any) {
	e.t.Helper()
	data, code, desc := e.call(endpoint, body)
	if code != "" {
		e.t.Fatalf("%s %s: error %s %s", endpoint, body, code, desc)
	}
	if v != nil {
		if err := json.Unmarshal(data, v); err != nil {
			e.t.Fatalf("%s: reply %s: %v", endpoint, data, err)
		}
	}
}

// waitStatus polls get until the saga has status want.
func (e *env) waitStatus(id string, want orchestrator.Status) *orchestrator.State {
	e.t.Helper()
	var st orchestrator.State
	testenv.CheckFor(e.t, 30*time.Second, 20*time.Millisecond, func() error {
		data, code, desc := e.call(service.EndpointGet, fmt.Sprintf(`{"id":%q}`, id))
		if code != "" {
			return fmt.Errorf("get %s: %s %s", id, code, desc)
		}
		if err := json.Unmarshal(data, &st); err != nil {
			return err
		}
		if st.Status != want {
			return fmt.Errorf("saga %s is %s, want %s", id, st.Status, want)
		}
		return nil
	})
	return &st
}

const plan = `{"name":"transfer","steps":[
 {"name":"debit","participant":"bank","action":"TransOut","compensation":"TransOutCompensate","payload":{"user_id":1}},
 {"name":"credit","participant":"bank","action":"TransIn","compensation":"TransInCompensate","payload":{"user_id":2}}]}`

func planWithID(id string) string {
	return `{"saga_id":"` + id + `",` + strings.TrimPrefix(plan, "{")
}

// TestServiceEndpoints: the micro service's endpoints over a real NATS
// connection: discovery, start, get, list, timeline and the operator's
// actions on parked sagas.
func TestServiceEndpoints(t *testing.T) {
	t.Parallel()
	var undo atomic.Bool
	e := setup(t, &undo)

	// Discovery, as `nats micro info jetsaga` does it.
	subj, err := micro.ControlSubject(micro.InfoVerb, service.DefaultName, "")
	if err != nil {
		t.Fatal(err)
	}
	msg, err := e.nc.Request(subj, nil, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var info micro.Info
	if err := json.Unmarshal(msg.Data, &info); err != nil {
		t.Fatal(err)
	}
	if info.Name != service.DefaultName || len(info.Endpoints) != len(service.Endpoints) {
		t.Fatalf("info %+v: want service %s with %d endpoints", info, service.DefaultName, len(service.Endpoints))
	}
	for _, ep := range info.Endpoints {
		if ep.Subject != "saga.api."+ep.Name || ep.QueueGroup != service.DefaultQueueGroup {
			t.Errorf("endpoint %s on %s in queue group %s, want saga.api.%s in %s", ep.Name, ep.Subject, ep.QueueGroup, ep.Name, service.DefaultQueueGroup)
		}
	}

	// Start without an id: one is chosen.
	var started service.Accepted
	e.ok(service.EndpointStart, plan, &started)
	if started.SagaID == "" || !started.Accepted {
		t.Fatalf("start: %+v", started)
	}
	st := e.waitStatus(started.SagaID, orchestrator.Committed)
	if st.Name != "transfer" || len(st.Steps) != 2 {
		t.Fatalf("state %+v", st)
	}
	var list service.ListResponse
	e.ok(service.EndpointList, `{"status":"committed"}`, &list)
	if len(list.Sagas) != 1 || list.Sagas[0].SagaID != started.SagaID || list.Sagas[0].Status != orchestrator.Committed {
		t.Fatalf("list: %+v", list)
	}
	var tl service.TimelineResponse
	e.ok(service.EndpointTimeline, fmt.Sprintf(`{"id":%q}`, started.SagaID), &tl)
	kinds := map[events.Kind]int{}
	for _, en := range tl.Entries {
		kinds[en.Kind]++
	}
	if kinds[events.KindStart] != 1 || kinds[events.KindCommand] != 2 || kinds[events.KindEvent] != 2 {
		t.Fatalf("timeline kinds %v, want 1 start, 2 commands, 2 outcomes: %+v", kinds, tl.Entries)
	}

	// Parked sagas, and the operator's actions on them.
	for _, id := range []string{"park-redrive", "park-skip", "park-resolve"} {
		e.ok(service.EndpointStart, planWithID(id), nil)
		e.waitStatus(id, orchestrator.Parked)
	}
	e.ok(service.EndpointList, `{"status":"parked","limit":2}`, &list)
	if len(list.Sagas) != 2 {
		t.Fatalf("list of parked sagas with limit 2: %+v", list)
	}
	undo.Store(true)
	e.ok(service.EndpointRedrive, `{"id":"park-redrive"}`, nil)
	e.waitStatus("park-redrive", orchestrator.Compensated)
	e.ok(service.EndpointSkip, `{"id":"park-skip","step":"debit","note":"refunded by hand"}`, nil)
	e.waitStatus("park-skip", orchestrator.Compensated)
	e.ok(service.EndpointResolve, `{"id":"park-resolve","note":"settled with the customer"}`, nil)
	if st := e.waitStatus("park-resolve", orchestrator.Compensated); st.Resolution != "settled with the customer" {
		t.Fatalf("resolved saga's resolution %q", st.Resolution)
	}
}

// TestServiceErrors: unknown ids, malformed requests and actions that do
// not fit are answered with micro's error headers and the codes the package
// documents; the description names what is wrong.
func TestServiceErrors(t *testing.T) {
	t.Parallel()
	var undo atomic.Bool
	e := setup(t, &undo)
	e.ok(service.EndpointStart, planWithID("done"), nil)
	e.waitStatus("done", orchestrator.Committed)

	for _, c := range []struct {
		endpoint, body, code, desc string
	}{
		{service.EndpointGet, `{"id":"nope"}`, service.CodeNotFound, "not found"},
		{service.EndpointTimeline, `{"id":"nope"}`, service.CodeNotFound, "not found"},
		{service.EndpointRedrive, `{"id":"nope"}`, service.CodeNotFound, "not found"},
		{service.EndpointSkip, `{"id":"nope","step":"debit"}`, service.CodeNotFound, "not found"},
		{service.EndpointResolve, `{"id":"nope","note":"x"}`, service.CodeNotFound, "not found"},
		{service.EndpointGet, `nope`, service.CodeBadRequest, "JSON object"},
		{service.EndpointGet, ``, service.CodeBadRequest, "JSON object"},
		{service.EndpointGet, `{"id":"a"`, service.CodeBadRequest, "malformed"},
		{service.EndpointGet, `{"id":"a"} {}`, service.CodeBadRequest, "after the JSON object"},
		{service.EndpointGet, `{"saga":"a"}`, service.CodeBadRequest, `unknown field "saga"`},
		{service.EndpointGet, `{"id":""}`, service.CodeBadRequest, "id: required"},
		{service.EndpointGet, `{"id":"a.b"}`, service.CodeBadRequest, "id:"},
		{service.EndpointGet, `{"id":7}`, service.CodeBadRequest, "malformed"},
		{service.EndpointList, `{"status":"sleeping"}`, service.CodeBadRequest, "status:"},
		{service.EndpointList, `{"limit":-1}`, service.CodeBadRequest, "limit:"},
		{service.EndpointStart, `[]`, service.CodeBadRequest, "JSON object"},
		{service.EndpointStart, `{"name":"x","steps":[]}`, service.CodeBadRequest, "steps"},
		{service.EndpointStart, `{"name":"x","bogus":1}`, service.CodeBadRequest, "invalid plan"},
		{service.EndpointStart, strings.Replace(planWithID("done"), `"user_id":2`, `"user_id":3`, 1), service.CodeConflict, "different plan"},
		{service.EndpointRedrive, `{"id":"done"}`, service.CodeConflict, "not parked"},
		{service.EndpointSkip, `{"id":"done"}`, service.CodeBadRequest, "step: required"},
		{service.EndpointResolve, `{"id":"done"}`, service.CodeBadRequest, "note: required"},
		{service.EndpointResolve, `{"id":"done","note":"x"}`, service.CodeConflict, "not parked"},
	} {
		data, code, desc := e.call(c.endpoint, c.body)
		if code != c.code || !strings.Contains(desc, c.desc) || len(data) != 0 {
			t.Errorf("%s %s: code %q desc %q body %q, want code %s and a description with %q", c.endpoint, c.body, code, desc, data, c.code, c.desc)
		}
	}
	// A start that was answered with an error started nothing.
	data, code, _ := e.call(service.EndpointList, `{}`)
	var list service.ListResponse
	if err := json.Unmarshal(data, &list); code != "" || err != nil || len(list.Sagas) != 1 {
		t.Fatalf("list after the errors: code %q, %v, %s", code, err, data)
	}
}
