package orchestrator_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetsaga/jetsaga/events"
	"github.com/jetsaga/jetsaga/internal/testenv"
	"github.com/jetsaga/jetsaga/orchestrator"
)

// listBucket is a deployment whose state bucket the tests fill directly.
type listBucket struct {
	js     jetstream.JetStream
	client *orchestrator.Client
}

func newListBucket(t testing.TB) *listBucket {
	t.Helper()
	srv := testenv.NATS(t)
	_, js := testenv.Connect(t, srv.URL())
	if err := orchestrator.EnsureStreams(context.Background(), js, events.Default(), events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	c := orchestrator.NewClient(js, events.Default())
	t.Cleanup(c.Close)
	return &listBucket{js: js, client: c}
}

// fakeState is a finished two-step transfer as the coordinator stores it
// (about 1.3 KB of JSON), with the given id, name, status and times.
func fakeState(id, name string, status orchestrator.Status, participants [2]string, startedMS, updatedMS int64) *orchestrator.State {
	plan := &events.Start{V: 1, SagaID: id, Name: name, Steps: []events.Step{
		{Name: "debit", Participant: participants[0], Action: "TransOut", Compensation: "TransOutCompensate", Kind: events.Compensable,
			Payload: []byte(`{"user_id":1,"amount":"30.00"}`), After: []string{}},
		{Name: "credit", Participant: participants[1], Action: "TransIn", Compensation: "TransInCompensate", Kind: events.Compensable,
			Payload: []byte(`{"user_id":2,"amount":"30.00"}`), After: []string{"debit"}, TimeoutMS: 10000},
	}}
	steps := []orchestrator.StepState{
		{Name: "debit", Status: orchestrator.StepSucceeded, Op: events.OpDo, Attempt: 1, Sends: 1, DoneMS: startedMS + 2},
		{Name: "credit", Status: orchestrator.StepSucceeded, Op: events.OpDo, Attempt: 1, Sends: 1, DoneMS: startedMS + 4},
	}
	if status == orchestrator.Compensated {
		steps[0].Status, steps[0].Op, steps[0].UndoneMS = orchestrator.StepCompensated, events.OpUndo, updatedMS
		steps[1].Status, steps[1].Reason = orchestrator.StepFailed, "account frozen"
	}
	return &orchestrator.State{V: 1, SagaID: id, Name: name, Status: status, Seq: 7, Plan: plan,
		PlanHash: strings.Repeat("ab", 32), Steps: steps, StartedMS: startedMS, UpdatedMS: updatedMS, StepTimeoutMS: 60000}
}

// put writes states straight into the bucket, as a coordinator would, with
// asynchronous publishes: fast enough for hundreds of thousands.
func (b *listBucket) put(t testing.TB, states ...*orchestrator.State) {
	t.Helper()
	prefix := "$KV." + events.Default().StateBucket() + "."
	for i, st := range states {
		data, err := json.Marshal(st)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.js.PublishMsgAsync(&nats.Msg{Subject: prefix + st.SagaID, Data: data}); err != nil {
			t.Fatal(err)
		}
		if i%2000 == 1999 {
			b.flush(t)
		}
	}
	b.flush(t)
}

func (b *listBucket) flush(t testing.TB) {
	t.Helper()
	select {
	case <-b.js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		t.Fatal("asynchronous publishes not acknowledged within a minute")
	}
}

// mixedStates returns n states of three names, five statuses, three
// participants, started one second apart (a few at the same millisecond)
// until now.
func mixedStates(n int, now time.Time) []*orchestrator.State {
	statuses := []orchestrator.Status{orchestrator.Committed, orchestrator.Compensated, orchestrator.Parked,
		orchestrator.Running, orchestrator.Committed}
	names := []string{"transfer", "refund", "order"}
	parts := [][2]string{{"bank-a", "bank-b"}, {"bank-b", "shop"}, {"shop", "bank-a"}}
	out := make([]*orchestrator.State, n)
	for i := range out {
		started := now.Add(-time.Duration(n-i) * time.Second).UnixMilli()
		if i%10 == 1 {
			started = out[i-1].StartedMS // the same millisecond: the id breaks the tie
		}
		out[i] = fakeState(fmt.Sprintf("saga-%06d", i), names[i%3], statuses[i%5], parts[i%3], started, started+5)
	}
	return out
}

// expect is what a query must return, computed by brute force.
func expect(states []*orchestrator.State, q orchestrator.Query) []string {
	var out []*orchestrator.State
	for _, st := range states {
		s := orchestrator.Summarize(st)
		if (q.Status == "" || s.Status == q.Status) && (q.Name == "" || s.Name == q.Name) &&
			(q.Participant == "" || slices.Contains(s.Participants, q.Participant)) &&
			(q.ID == "" || strings.Contains(s.SagaID, q.ID)) &&
			(q.Since.IsZero() || s.StartedMS >= q.Since.UnixMilli()) && (q.Until.IsZero() || s.StartedMS < q.Until.UnixMilli()) {
			out = append(out, st)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].StartedMS != out[j].StartedMS {
			return out[i].StartedMS > out[j].StartedMS
		}
		return out[i].SagaID > out[j].SagaID
	})
	ids := make([]string, len(out))
	for i, st := range out {
		ids[i] = st.SagaID
	}
	return ids
}

// pageAll follows a query's pages to the end.
func pageAll(t *testing.T, ix *orchestrator.Index, q orchestrator.Query) (ids []string, total int) {
	t.Helper()
	for pages := 0; ; pages++ {
		p, err := ix.Page(q)
		if err != nil {
			t.Fatal(err)
		}
		if pages > 0 && p.Total != total {
			t.Fatalf("total changed from %d to %d between pages", total, p.Total)
		}
		total = p.Total
		for _, s := range p.Sagas {
			ids = append(ids, s.SagaID)
		}
		if p.Next == "" {
			return ids, total
		}
		q.After = p.Next
	}
}

// TestIndexPages: every query's pages, followed to the end, hold exactly the
// matching sagas newest first, each once, with the right total; the index
// agrees with Client.List.
func TestIndexPages(t *testing.T) {
	t.Parallel()
	b := newListBucket(t)
	now := time.Now()
	states := mixedStates(2000, now)
	b.put(t, states...)
	ix, err := b.client.Index(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer ix.Close()
	if ix.Len() != len(states) {
		t.Fatalf("index holds %d sagas, want %d", ix.Len(), len(states))
	}
	mid := time.UnixMilli(states[1000].StartedMS)
	for _, q := range []orchestrator.Query{
		{},
		{Limit: 7},
		{Status: orchestrator.Parked, Limit: 30},
		{Name: "refund", Participant: "shop", Limit: 100},
		{Participant: "bank-b", Status: orchestrator.Compensated},
		{Since: mid, Limit: 64},
		{Until: mid, Status: orchestrator.Committed},
		{Since: mid.Add(-time.Minute), Until: mid.Add(time.Minute), Limit: 9},
		{ID: "saga-0017", Limit: 3},
		{Name: "nothing"},
	} {
		t.Run(fmt.Sprintf("%+v", q), func(t *testing.T) {
			got, total := pageAll(t, ix, q)
			want := expect(states, q)
			if total != len(want) || !slices.Equal(got, want) {
				t.Fatalf("total %d, %d sagas (first %v), want %d (first %v)", total, len(got), got[:min(5, len(got))], len(want), want[:min(5, len(want))])
			}
		})
	}
	listed, err := b.client.List(t.Context(), orchestrator.ListFilter{Status: orchestrator.Parked, Limit: 25})
	if err != nil {
		t.Fatal(err)
	}
	p, err := ix.Page(orchestrator.Query{Status: orchestrator.Parked, Limit: 25})
	if err != nil {
		t.Fatal(err)
	}
	for i := range listed {
		if listed[i].SagaID != p.Sagas[i].SagaID {
			t.Fatalf("Client.List and Index.Page differ at %d: %s, %s", i, listed[i].SagaID, p.Sagas[i].SagaID)
		}
	}
	if _, err := ix.Page(orchestrator.Query{After: "garbage"}); err == nil {
		t.Fatal("a bad cursor was accepted")
	}
	ov := ix.Overview(5)
	if ov.Total != 2000 || ov.ByStatus[orchestrator.Parked] != 400 || len(ov.ByName) != 3 || len(ov.Minutes) != 5 {
		t.Fatalf("overview: %+v", ov)
	}
	started := 0
	for _, m := range ov.Minutes {
		started += m.Started
	}
	if want := len(expect(states, orchestrator.Query{Since: ov.Minutes[0].Start})); started != want {
		t.Fatalf("overview: %d started in the last 5 minutes, want %d", started, want)
	}
}

// TestIndexFollowsTheBucket: a new saga, a changed one and a deleted one are
// seen without reading the bucket again, and Changed says so; a finished
// saga whose state's TTL has passed is not listed.
func TestIndexFollowsTheBucket(t *testing.T) {
	t.Parallel()
	b := newListBucket(t)
	now := time.Now()
	old := now.Add(-8 * 24 * time.Hour).UnixMilli() // past the default max age plus a minute
	b.put(t, fakeState("a", "transfer", orchestrator.Running, [2]string{"bank-a", "bank-b"}, now.UnixMilli()-3000, now.UnixMilli()),
		fakeState("b", "transfer", orchestrator.Committed, [2]string{"bank-a", "bank-b"}, now.UnixMilli()-2000, now.UnixMilli()),
		fakeState("expired", "transfer", orchestrator.Committed, [2]string{"bank-a", "bank-b"}, old, old+10),
		fakeState("parked-long", "transfer", orchestrator.Parked, [2]string{"bank-a", "bank-b"}, old, old+10))
	ix, err := b.client.Index(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer ix.Close()
	ids := func() string {
		p, err := ix.Page(orchestrator.Query{})
		if err != nil {
			t.Fatal(err)
		}
		var s []string
		for _, x := range p.Sagas {
			s = append(s, x.SagaID+":"+string(x.Status))
		}
		return strings.Join(s, " ")
	}
	if got, want := ids(), "b:committed a:running parked-long:parked"; got != want {
		t.Fatalf("listed %q, want %q", got, want)
	}
	changed := ix.Changed()
	b.put(t, fakeState("a", "transfer", orchestrator.Compensated, [2]string{"bank-a", "bank-b"}, now.UnixMilli()-3000, now.UnixMilli()+1),
		fakeState("c", "refund", orchestrator.Running, [2]string{"shop", "bank-b"}, now.UnixMilli(), now.UnixMilli()))
	kv, err := b.js.KeyValue(t.Context(), events.Default().StateBucket())
	if err != nil {
		t.Fatal(err)
	}
	if err := kv.Delete(t.Context(), "b"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	case <-time.After(waitFor):
		t.Fatal("Changed not closed after a put")
	}
	testenv.CheckFor(t, waitFor, 10*time.Millisecond, func() error {
		if got, want := ids(), "c:running a:compensated parked-long:parked"; got != want {
			return fmt.Errorf("listed %q, want %q", got, want)
		}
		return nil
	})
	if s, ok := ix.Get("c"); !ok || s.Name != "refund" || !slices.Equal(s.Participants, []string{"shop", "bank-b"}) || s.Steps != 2 {
		t.Fatalf("Get(c) = %+v, %v", s, ok)
	}
	if _, ok := ix.Get("expired"); ok {
		t.Fatal("Get found an expired saga")
	}
}

const waitFor = 30 * time.Second

// BenchmarkIndex200k measures listing a bucket of finished sagas
// (JETSAGA_LIST_SAGAS, 200,000 by default) written directly into the
// bucket: building the index (one watch of the bucket), the first page, a
// filtered page and a page deep in the list; and, for comparison,
// Client.List, which gets every key (only with JETSAGA_LIST_OLD=1: it takes
// minutes at this size).
//
//	go test -run '^$' -bench BenchmarkIndex200k -benchtime 20x ./orchestrator/
func BenchmarkIndex200k(b *testing.B) {
	n := 200_000
	if v := os.Getenv("JETSAGA_LIST_SAGAS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil {
			b.Fatal(err)
		}
	}
	lb := newListBucket(b)
	now := time.Now()
	began := time.Now()
	lb.put(b, mixedStates(n, now)...)
	b.Logf("wrote %d states in %s", n, time.Since(began).Round(time.Millisecond))
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	heap0 := ms.HeapAlloc
	ix, err := lb.client.Index(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	defer ix.Close()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	b.Logf("index of %d sagas built in %s, %d bytes per saga", ix.Len(), ix.LoadTime().Round(time.Millisecond), (int64(ms.HeapAlloc)-int64(heap0))/int64(n))
	b.Run("load", func(b *testing.B) {
		for b.Loop() {
			ix, err := lb.client.Index(context.Background())
			if err != nil {
				b.Fatal(err)
			}
			ix.Close()
		}
		b.ReportMetric(float64(n), "sagas")
	})
	page := func(q orchestrator.Query) func(b *testing.B) {
		return func(b *testing.B) {
			for b.Loop() {
				p, err := ix.Page(q)
				if err != nil || len(p.Sagas) == 0 {
					b.Fatal(err, len(p.Sagas))
				}
			}
		}
	}
	b.Run("first-page", page(orchestrator.Query{}))
	b.Run("parked-page", page(orchestrator.Query{Status: orchestrator.Parked}))
	b.Run("last-hour-participant-page", page(orchestrator.Query{Participant: "shop", Since: now.Add(-time.Hour)}))
	deep, err := ix.Page(orchestrator.Query{Limit: 1000})
	if err != nil {
		b.Fatal(err)
	}
	last := deep.Sagas[len(deep.Sagas)-1]
	b.Run("page-after-150k", page(orchestrator.Query{After: strconv.FormatInt(last.StartedMS-150_000_000, 10) + ".x"}))
	b.Run("overview", func(b *testing.B) {
		for b.Loop() {
			if ov := ix.Overview(15); ov.Total != n {
				b.Fatal(ov.Total)
			}
		}
	})
	if os.Getenv("JETSAGA_LIST_OLD") == "1" {
		b.Run("Client.List-limit-50", func(b *testing.B) {
			for b.Loop() {
				if _, err := lb.client.List(context.Background(), orchestrator.ListFilter{Limit: 50}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
