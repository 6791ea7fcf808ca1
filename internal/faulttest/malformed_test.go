package faulttest

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/jetsaga/jetsaga/events"
	"github.com/jetsaga/jetsaga/examples/bank"
	"github.com/jetsaga/jetsaga/internal/invariants"
	"github.com/jetsaga/jetsaga/orchestrator"
)

// hugeBytes is the size of the "huge" payloads: past events.MaxMessageBytes
// (256 KiB), within NATS's 1 MiB max_payload, so JetStream stores them and
// jetsaga must refuse them.
const hugeBytes = 300 << 10

// expectation is what an injected message must have led to, checked once
// the system is quiet.
type expectation struct {
	what  string
	check func(ctx context.Context, s *system) error
}

// malformed follows the running sagas and collects the expectations of
// the messages it injected.
type malformed struct {
	mu      sync.Mutex
	running []string // ids of the latest sagas started
	expect  []expectation
	kinds   map[string]int
	// atStartCount counts the messages atStart injected (faults too);
	// startedCount the sagas seen starting.
	atStartCount, startedCount int
}

func malformedScenario() scenario {
	m := &malformed{kinds: map[string]int{}}
	return scenario{
		name: "malformed",
		prepare: func(s *system, l *load) {
			l.onStart = func(x *started) {
				if x.tr.Unacked {
					return
				}
				m.mu.Lock()
				m.running = append(m.running, x.tr.ID)
				if len(m.running) > 64 {
					m.running = m.running[len(m.running)-64:]
				}
				m.startedCount++
				first := m.startedCount%atStartEvery == 0
				m.mu.Unlock()
				if first {
					m.atStart(s, x.tr.ID)
				}
			}
		},
		inject: m.inject,
		verify: m.verify,
		// Legitimately parked here: an unreadable command (injected) that a
		// participant answers while that participant's compensation of the
		// saga is in flight. The anonymous rejection does not say which
		// command could not be read, so the coordinator cannot rule out
		// that the compensation itself is unreadable, and parks the saga
		// for an operator rather than loop.
		parkedOK: func(reason string) bool { return strings.Contains(reason, "an unreadable command was rejected") },
	}
}

// atStartEvery: one saga in so many gets an unreadable command on bank-a's
// subject right after its start, while its debit is about to run: the
// anonymous rejection then meets the debit in flight, whose real command
// runs too (the regression of orchestrator.TestNextAnonymousRejection).
const atStartEvery = 8

// atStart publishes an unreadable command for saga id to bank-a at once.
func (m *malformed) atStart(s *system, id string) {
	const name = "command: not JSON, right after the start"
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := s.js.PublishMsg(ctx, msg(events.Default().Command(bank.BankA, id), []byte("{]"))); err != nil {
		s.t.Errorf("%s: %v", name, err)
		return
	}
	exp := answered(id, bank.BankA, 0)
	exp.what = name + " of saga " + id
	m.mu.Lock()
	m.kinds[name]++
	m.atStartCount++
	m.expect = append(m.expect, exp)
	m.mu.Unlock()
}

// latest returns the id of the saga started last (most likely running).
func (m *malformed) latest() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.running) == 0 {
		return ""
	}
	return m.running[len(m.running)-1]
}

// inject publishes one malformed message every 50-250ms, of a random kind,
// on every subject the system consumes.
func (m *malformed) inject(ctx context.Context, s *system, rng *rand.Rand) (int, error) {
	n := 0
	kinds := m.injections()
	for pause(ctx, rng, 50*time.Millisecond, 250*time.Millisecond) {
		target := m.latest()
		if target == "" {
			continue
		}
		k := kinds[rng.IntN(len(kinds))]
		msg, exp := k.build(target)
		c, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := s.js.PublishMsg(c, msg)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			return n, fmt.Errorf("publish %s on %s: %w", k.name, msg.Subject, err)
		}
		n++
		m.mu.Lock()
		m.kinds[k.name]++
		if exp.check != nil {
			exp.what = k.name + " on " + msg.Subject
			m.expect = append(m.expect, exp)
		}
		m.mu.Unlock()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return n + m.atStartCount, nil
}

type injection struct {
	name  string
	build func(running string) (*nats.Msg, expectation)
}

// msg builds a message with a fresh, unique message id.
func msg(subject string, data []byte) *nats.Msg {
	m := nats.NewMsg(subject)
	m.Data = data
	m.Header.Set(events.HeaderMsgID, "malformed/"+uuid.NewString())
	return m
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// withV returns v's JSON with its "v" replaced.
func withV(v any, version int) []byte {
	var m map[string]any
	if err := json.Unmarshal(mustJSON(v), &m); err != nil {
		panic(err)
	}
	m["v"] = version
	return mustJSON(m)
}

func huge() []byte {
	return []byte(`{"v":1,"junk":"` + strings.Repeat("x", hugeBytes) + `"}`)
}

func (m *malformed) injections() []injection {
	ns := events.Default()
	start := func(id string) events.Start {
		st, err := bank.TransferPlan(id, 1, 1, 1_00).Build()
		if err != nil {
			panic(err)
		}
		return st
	}
	outcome := func(saga, participant, step string) events.Outcome {
		return events.Outcome{V: events.Version, SagaID: saga, Participant: participant, Step: step, Op: events.OpDo,
			Attempt: 1, Status: events.Failed, Reason: "forged"}
	}
	command := func(saga, participant, step, action string, attempt int) events.Command {
		return events.Command{V: events.Version, SagaID: saga, Participant: participant, Step: step, Op: events.OpDo,
			Attempt: attempt, Action: action, Payload: mustJSON(bank.TransferReq{UserID: 1, Amount: 1}), Retry: events.DefaultRetry()}
	}
	return []injection{
		// Starts: each on a fresh id, which must end rejected.
		{"start: not JSON", func(string) (*nats.Msg, expectation) {
			id := uuid.NewString()
			return msg(ns.Start(id), []byte(`{"v":1,"saga_id":`)), rejectedStart(id)
		}},
		{"start: unknown version", func(string) (*nats.Msg, expectation) {
			id := uuid.NewString()
			return msg(ns.Start(id), withV(start(id), 99)), rejectedStart(id)
		}},
		{"start: huge", func(string) (*nats.Msg, expectation) {
			id := uuid.NewString()
			return msg(ns.Start(id), huge()), rejectedStart(id)
		}},
		{"start: saga id differs from the subject's", func(string) (*nats.Msg, expectation) {
			id := uuid.NewString()
			return msg(ns.Start(id), mustJSON(start(uuid.NewString()))), rejectedStart(id)
		}},
		// Outcomes for a running saga: rejected and recorded in the saga.
		{"outcome: not JSON", func(r string) (*nats.Msg, expectation) {
			return msg(ns.Event(bank.BankA, r), []byte("not json")), recorded(r, events.KindEvent)
		}},
		{"outcome: unknown version", func(r string) (*nats.Msg, expectation) {
			return msg(ns.Event(bank.BankB, r), withV(outcome(r, bank.BankB, "credit"), 7)), recorded(r, events.KindEvent)
		}},
		{"outcome: huge", func(r string) (*nats.Msg, expectation) {
			return msg(ns.Event(bank.BankB, r), huge()), recorded(r, events.KindEvent)
		}},
		{"outcome: participant differs from the subject's", func(r string) (*nats.Msg, expectation) {
			return msg(ns.Event(bank.BankA, r), mustJSON(outcome(r, bank.BankB, "credit"))), recorded(r, events.KindEvent)
		}},
		{"outcome: forged by the wrong participant", func(r string) (*nats.Msg, expectation) {
			// bank-b claims that bank-a's debit failed.
			return msg(ns.Event(bank.BankB, r), mustJSON(outcome(r, bank.BankB, "debit"))), recorded(r, events.KindEvent)
		}},
		{"outcome: unknown step", func(r string) (*nats.Msg, expectation) {
			return msg(ns.Event(bank.BankA, r), mustJSON(outcome(r, bank.BankA, "nosuchstep"))), recorded(r, events.KindEvent)
		}},
		{"outcome: unknown saga", func(string) (*nats.Msg, expectation) {
			id := uuid.NewString()
			return msg(ns.Event(bank.BankA, id), mustJSON(outcome(id, bank.BankA, "debit"))), expectation{}
		}},
		// Timers and operator actions for a running saga.
		{"tick: not JSON", func(r string) (*nats.Msg, expectation) {
			return msg(ns.Tick(r), []byte("{")), recorded(r, events.KindTick)
		}},
		{"control: not JSON", func(r string) (*nats.Msg, expectation) {
			return msg(ns.Control(r), []byte("[]")), recorded(r, events.KindControl)
		}},
		{"control: not parked", func(r string) (*nats.Msg, expectation) {
			// A redrive, not a resolve: should the saga happen to be
			// parked, a redrive is what the test would do anyway, while a
			// resolve would vouch for a half-done saga.
			ctl := events.Control{V: events.Version, SagaID: r, Action: events.Redrive, ID: uuid.NewString(), Note: "forged"}
			exp := recorded(r, events.KindControl)
			rejected := exp.check
			exp.check = func(ctx context.Context, s *system) error {
				err := rejected(ctx, s)
				if err == nil {
					return nil
				}
				// The one case where it is not rejected: the saga was parked
				// (legitimately, see parkedOK) and the redrive applied.
				st, gerr := s.client.Get(ctx, r)
				if gerr == nil && st.Status.Terminal() && hasStuckHistory(st) {
					return nil
				}
				return err
			}
			return msg(ns.Control(r), mustJSON(ctl)), exp
		}},
		// Commands to the participants.
		{"command: not JSON", func(r string) (*nats.Msg, expectation) {
			return msg(ns.Command(bank.BankA, r), []byte("}")), answered(r, bank.BankA, 0)
		}},
		{"command: huge", func(r string) (*nats.Msg, expectation) {
			return msg(ns.Command(bank.BankB, r), huge()), answered(r, bank.BankB, 0)
		}},
		{"command: unknown version", func(r string) (*nats.Msg, expectation) {
			return msg(ns.Command(bank.BankA, r), withV(command(r, bank.BankA, "debit", bank.TransOut, 97), 3)), answered(r, bank.BankA, 0)
		}},
		{"command: unknown action", func(r string) (*nats.Msg, expectation) {
			return msg(ns.Command(bank.BankB, r), mustJSON(command(r, bank.BankB, "credit", "NoSuchAction", 99))), answered(r, bank.BankB, 99)
		}},
		{"command: for another participant", func(r string) (*nats.Msg, expectation) {
			return msg(ns.Command(bank.BankA, r), mustJSON(command(r, bank.BankB, "debit", bank.TransOut, 98))), answered(r, bank.BankA, 98)
		}},
		{"command: unknown saga", func(string) (*nats.Msg, expectation) {
			id := uuid.NewString()
			return msg(ns.Command(bank.BankB, id), mustJSON(command(id, bank.BankB, "credit", "NoSuchAction", 1))), expectation{}
		}},
	}
}

// rejectedStart expects saga id to exist, rejected with a reason.
func rejectedStart(id string) expectation {
	return expectation{check: func(ctx context.Context, s *system) error {
		st, err := s.client.Get(ctx, id)
		if err != nil {
			return err
		}
		if st.Status != orchestrator.Rejected || st.Reason == "" {
			return fmt.Errorf("saga %s is %s (reason %q), want rejected with a reason", id, st.Status, st.Reason)
		}
		return nil
	}}
}

// recorded expects saga id to hold a rejection of an input of kind.
func recorded(id string, kind events.Kind) expectation {
	return expectation{check: func(ctx context.Context, s *system) error {
		st, err := s.client.Get(ctx, id)
		if err != nil {
			return err
		}
		for _, r := range st.Rejections {
			if r.Kind == kind && r.Reason != "" {
				return nil
			}
		}
		return fmt.Errorf("saga %s (%s) records no rejected %s input: %+v", id, st.Status, kind, st.Rejections)
	}}
}

// answered expects an outcome from participant on saga id's subject that
// answers the injected command: for an attempt, or anonymous (attempt 0:
// the command could not be read).
func answered(id, participant string, attempt int) expectation {
	return expectation{check: func(ctx context.Context, s *system) error {
		entries, err := s.client.Timeline(ctx, id)
		if err != nil {
			return err
		}
		for _, e := range entries {
			if e.Kind != events.KindEvent || !strings.HasSuffix(e.Subject, "."+participant+"."+id) {
				continue
			}
			o, err := events.DecodeOutcome(e.Data)
			if err != nil {
				continue
			}
			if o.Attempt == attempt && (attempt != 0 || o.Status == events.Rejected) {
				return nil
			}
		}
		return fmt.Errorf("saga %s: no outcome from %s answers the injected command (attempt %d)", id, participant, attempt)
	}}
}

// verify checks every expectation of the injected messages, and that the
// coordinators logged the rejected inputs of unknown sagas.
func (m *malformed) verify(t *testing.T, s *system, _ []*started, _ *invariants.Report) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	m.mu.Lock()
	defer m.mu.Unlock()
	t.Logf("injected: %v", m.kinds)
	failed := 0
	for _, e := range m.expect {
		if err := e.check(ctx, s); err != nil {
			failed++
			if failed <= 10 {
				t.Errorf("%s: %v", e.what, err)
			}
		}
	}
	if failed > 10 {
		t.Errorf("… %d of %d expectations failed in all", failed, len(m.expect))
	}
	logged := 0
	for _, c := range s.coords {
		logged += c.count("input rejected", "unknown saga")
	}
	if want := m.kinds["outcome: unknown saga"] + m.kinds["command: unknown saga"]; want > 0 && logged == 0 {
		t.Errorf("%d inputs for unknown sagas injected, none logged as rejected by the coordinator", want)
	}
}

// hasStuckHistory reports whether a saga was parked by an unreadable
// command before it ended: a step's reason says so.
func hasStuckHistory(st *orchestrator.State) bool {
	for _, step := range st.Steps {
		if strings.Contains(step.Reason, "an unreadable command was rejected") {
			return true
		}
	}
	return strings.Contains(st.Reason, "an unreadable command was rejected")
}
