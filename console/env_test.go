package console_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetsaga/jetsaga/console"
	"github.com/jetsaga/jetsaga/events"
	"github.com/jetsaga/jetsaga/internal/testenv"
	"github.com/jetsaga/jetsaga/orchestrator"
)

func TestMain(m *testing.M) { testenv.Main(m) }

const (
	waitTotal = 30 * time.Second
	waitStep  = 20 * time.Millisecond
)

// env is a deployment on an embedded NATS server with a coordinator, fake
// participants that answer by the saga id's prefix (see answer) and a
// console served over HTTP on loopback.
type env struct {
	t      *testing.T
	js     jetstream.JetStream
	client *orchestrator.Client
	srv    *httptest.Server
	url    string
	sent   atomic.Int64 // commands answered
}

func newEnv(t *testing.T, cfg console.Config) *env {
	t.Helper()
	srv := testenv.NATS(t)
	_, js := testenv.Connect(t, srv.URL())
	ctx := context.Background()
	if err := orchestrator.EnsureStreams(ctx, js, events.Default(), events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, js: js}
	e.coordinator()
	for _, p := range []string{"bank-a", "bank-b", "post"} {
		e.participant(p)
	}
	e.client = orchestrator.NewClient(js, events.Default())
	t.Cleanup(e.client.Close)
	cfg.Client = e.client
	c, err := console.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.srv = httptest.NewServer(c)
	e.url = e.srv.URL
	t.Cleanup(func() { e.srv.Close(); c.Close() })
	return e
}

func (e *env) coordinator() {
	c, err := orchestrator.NewCoordinator(orchestrator.Config{JetStream: e.js, Namespace: events.Default(), Workers: 4,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	e.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			e.t.Errorf("coordinator: %v", err)
		}
	})
}

// answer is how the fake participants answer, by the saga id's prefix:
// "comp-" sagas fail their credit (the debit is compensated); "late-" sagas
// never answer their credit (it times out after a second, then both steps
// are compensated); "park-" sagas exhaust their retriable "send" step at its
// first attempt (the saga parks) and succeed at the next (a redrive
// commits it); everything else succeeds.
func answer(cmd events.Command) (status events.Status, reason string, drop bool) {
	if cmd.Op == events.OpUndo {
		return events.Compensated, "", false
	}
	switch {
	case strings.HasPrefix(cmd.SagaID, "comp-") && cmd.Step == "credit":
		return events.Failed, "account 2 is frozen", false
	case strings.HasPrefix(cmd.SagaID, "late-") && cmd.Step == "credit":
		return "", "", true
	case strings.HasPrefix(cmd.SagaID, "park-") && cmd.Step == "send" && cmd.Attempt == 1:
		return events.Exhausted, "post office closed: 10 tries failed", false
	}
	return events.Succeeded, "", false
}

// participant answers the commands for p until the test ends.
func (e *env) participant(p string) {
	ctx := context.Background()
	cons, err := e.js.CreateOrUpdateConsumer(ctx, events.Default().CommandsStream(), jetstream.ConsumerConfig{
		Durable: "test_" + p, FilterSubject: events.Default().CommandFilter(p), AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		e.t.Fatal(err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		cmd, err := events.DecodeCommand(m.Data())
		if err != nil {
			_ = m.Term()
			return
		}
		status, reason, drop := answer(cmd)
		if drop {
			_ = m.Ack()
			return
		}
		o := events.Outcome{V: 1, SagaID: cmd.SagaID, Participant: p, Step: cmd.Step, Op: cmd.Op, Attempt: cmd.Attempt,
			Status: status, Reason: reason}
		if status == events.Succeeded {
			o.Result = []byte(fmt.Sprintf(`{"tx":"%s-%s"}`, p, cmd.Step))
		}
		data, _ := o.Encode()
		msg := nats.NewMsg(events.Default().Event(p, cmd.SagaID))
		msg.Data = data
		msg.Header.Set(events.HeaderMsgID, events.OutcomeMsgID(&o, 0))
		if _, err := e.js.PublishMsg(ctx, msg); err != nil {
			_ = m.Nak()
			return
		}
		e.sent.Add(1)
		_ = m.Ack()
	})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(cc.Stop)
}

// transfer starts a two-step transfer, debit on bank-a then credit on
// bank-b (one-second timeout).
func (e *env) transfer(id string) {
	e.t.Helper()
	plan := orchestrator.NewPlan("transfer").ID(id).
		Step("debit", "bank-a", "TransOut", "TransOutCompensate", map[string]any{"user_id": 1, "amount": "30.00"}).
		Step("credit", "bank-b", "TransIn", "TransInCompensate", map[string]any{"user_id": 2, "amount": "30.00"},
			orchestrator.Timeout(time.Second))
	if _, err := e.client.Start(context.Background(), plan); err != nil {
		e.t.Fatal(err)
	}
}

// shipment starts a compensable reservation, then a retriable send that
// waits for it, beside a notification that waits for nothing.
func (e *env) shipment(id string) {
	e.t.Helper()
	plan := orchestrator.NewPlan("ship").ID(id).Input(map[string]any{"order": 7}).
		Step("reserve", "bank-a", "Reserve", "Release", map[string]any{"sku": "a-1"}).
		Pivot("charge", "bank-b", "Charge", map[string]any{"amount": "5.00"}).
		Retriable("send", "post", "Send", map[string]any{"to": "Main St 1"}).
		Retriable("notify", "post", "Notify", nil, orchestrator.After("charge"))
	if _, err := e.client.Start(context.Background(), plan); err != nil {
		e.t.Fatal(err)
	}
}

// wait waits until the saga has status.
func (e *env) wait(id string, status orchestrator.Status) {
	e.t.Helper()
	testenv.CheckFor(e.t, waitTotal, waitStep, func() error {
		st, err := e.client.Get(context.Background(), id)
		if err != nil {
			return err
		}
		if st.Status != status {
			return fmt.Errorf("saga %s is %s, want %s", id, st.Status, status)
		}
		return nil
	})
}

// standard starts a committed, a compensated, a timed-out (compensated) and
// a parked saga and waits for them to end (or park).
func (e *env) standard() {
	e.t.Helper()
	e.transfer("ok-1")
	e.transfer("comp-1")
	e.transfer("late-1")
	e.shipment("park-1")
	e.wait("ok-1", orchestrator.Committed)
	e.wait("comp-1", orchestrator.Compensated)
	e.wait("late-1", orchestrator.Compensated)
	e.wait("park-1", orchestrator.Parked)
	// The console's pages read its index, which follows the bucket's watch:
	// it can be a moment behind the direct reads above.
	testenv.CheckFor(e.t, waitTotal, waitStep, func() error {
		resp, err := http.Get(e.url + "/")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		for status, n := range map[orchestrator.Status]int{orchestrator.Committed: 1, orchestrator.Compensated: 2, orchestrator.Parked: 1} {
			if !strings.Contains(string(body), fmt.Sprintf(`data-status="%s"><span class="n">%d</span>`, status, n)) {
				return fmt.Errorf("the overview does not count %d %s saga(s) yet", n, status)
			}
		}
		return nil
	})
}

// browserless is an HTTP client with a cookie jar that does not follow
// redirects.
func browserless(t *testing.T) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Jar: jar, Timeout: waitTotal, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}
}
