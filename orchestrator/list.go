package orchestrator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Summary is a saga as a list shows it: the part of its [State] that a list
// filters and sorts on.
type Summary struct {
	SagaID string `json:"saga_id"`
	Name   string `json:"name,omitempty"`
	Status Status `json:"status"`
	// ParkedFrom is the status a parked saga had.
	ParkedFrom Status `json:"parked_from,omitempty"`
	Reason     string `json:"reason,omitempty"`
	// Participants are the distinct participants of the plan's steps.
	Participants []string `json:"participants,omitempty"`
	// Steps counts the plan's steps; StepsDone those that reached their end
	// in the saga's direction (succeeded, skipped, failed or compensated).
	Steps     int   `json:"steps"`
	StepsDone int   `json:"steps_done"`
	StartedMS int64 `json:"started_ms"`
	UpdatedMS int64 `json:"updated_ms"`
}

// Summarize returns the summary of a state.
func Summarize(st *State) Summary {
	s := Summary{SagaID: st.SagaID, Name: st.Name, Status: st.Status, ParkedFrom: st.ParkedFrom, Reason: st.Reason,
		Participants: st.participants(), Steps: len(st.Steps), StartedMS: st.StartedMS, UpdatedMS: st.UpdatedMS}
	for _, ss := range st.Steps {
		if stepDone(ss.Status) {
			s.StepsDone++
		}
	}
	return s
}

func stepDone(s StepStatus) bool {
	return s == StepSucceeded || s == StepSkipped || s == StepCompensated || s == StepFailed
}

// summaryDoc is the part of a stored state that a summary needs: decoding
// only it skips the plan's payloads and the steps' results.
type summaryDoc struct {
	SagaID     string `json:"saga_id"`
	Name       string `json:"name"`
	Status     Status `json:"status"`
	Reason     string `json:"reason"`
	ParkedFrom Status `json:"parked_from"`
	Plan       *struct {
		Steps []struct {
			Participant string `json:"participant"`
		} `json:"steps"`
	} `json:"plan"`
	Steps []struct {
		Status StepStatus `json:"status"`
	} `json:"steps"`
	StartedMS int64 `json:"started_ms"`
	UpdatedMS int64 `json:"updated_ms"`
}

// decodeSummary decodes the summary of a stored state.
func decodeSummary(data []byte) (Summary, error) {
	var d summaryDoc
	if err := json.Unmarshal(data, &d); err != nil {
		return Summary{}, err
	}
	s := Summary{SagaID: d.SagaID, Name: d.Name, Status: d.Status, ParkedFrom: d.ParkedFrom, Reason: d.Reason,
		Steps: len(d.Steps), StartedMS: d.StartedMS, UpdatedMS: d.UpdatedMS}
	if d.Plan != nil {
		for _, ps := range d.Plan.Steps {
			if !slices.Contains(s.Participants, ps.Participant) {
				s.Participants = append(s.Participants, ps.Participant)
			}
		}
	}
	for _, ss := range d.Steps {
		if stepDone(ss.Status) {
			s.StepsDone++
		}
	}
	return s, nil
}

// Query selects a page of sagas from an [Index]. Every condition set must
// hold.
type Query struct {
	// Status keeps the sagas in this status.
	Status Status
	// Name keeps the sagas of this name.
	Name string
	// Participant keeps the sagas with a step on this participant.
	Participant string
	// Since and Until bound the start time: Since <= started < Until. Zero
	// values leave that side open.
	Since, Until time.Time
	// ID keeps the sagas whose id contains this text.
	ID string
	// Limit is the page size: 50 if 0, at most 1,000.
	Limit int
	// After is the [Page.Next] of the previous page ("" for the first).
	After string
}

// Page is one page of a query's result, newest first.
type Page struct {
	Sagas []Summary `json:"sagas"`
	// Total counts the sagas that match the query (on every page).
	Total int `json:"total"`
	// Next continues the query after this page ("" when this page is the
	// last): pass it as Query.After.
	Next string `json:"next,omitempty"`
}

// DefaultPageSize and MaxPageSize bound Query.Limit.
const (
	DefaultPageSize = 50
	MaxPageSize     = 1000
)

// Index is a live, in-memory index of the summaries of every saga in the
// state bucket, for lists that page through hundreds of thousands of sagas:
// [Index.Page] and [Index.Overview] read memory only.
//
// It is filled by one watch of the bucket (an ordered consumer on the
// bucket's stream that delivers the last state of every key, then every new
// one), instead of listing the keys and getting each, and kept up to date by
// the same watch. A finished saga's state expires from the bucket without a
// trace in the watch (no delete markers): the index drops finished sagas
// once their state's TTL ([FinishedStateTTL] of the sagas stream's max
// age) has passed.
//
// Measured (BenchmarkIndex200k, 2-core VM, states of a finished two-step
// transfer written directly into the bucket): 200,000 sagas are read in
// 10 s, once; then a page takes 6-11 ms whatever the filter (it counts
// the matches), a page within a start-time range less, and the overview
// 28 ms. The heap holds about 900 bytes per saga (878 measured at 20,000).
// For comparison, [Client.List] gets every key: 4.0 s per call at 20,000
// sagas, whatever its limit.
type Index struct {
	ttl time.Duration // a finished state's TTL; 0: never expires
	now func() time.Time

	mu      sync.RWMutex
	byID    map[string]*Summary
	order   []*Summary // by (StartedMS, SagaID), oldest first
	changed chan struct{}
	loaded  time.Duration

	cancel context.CancelFunc
	done   chan struct{}
}

// Index reads the summaries of every saga in the state bucket and returns
// an index that keeps them up to date until Close. It returns once the
// bucket has been read.
func (c *Client) Index(ctx context.Context) (*Index, error) {
	kv, err := c.bucket(ctx)
	if err != nil {
		return nil, err
	}
	sagas, err := c.sagasStream(ctx)
	if err != nil {
		return nil, err
	}
	info, err := sagas.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("sagas stream %s: %w", c.ns.SagasStream(), err)
	}
	ix := &Index{now: time.Now, byID: map[string]*Summary{}, changed: make(chan struct{}), done: make(chan struct{})}
	if cfg, err := bucketStream(ctx, kv); err == nil && cfg.AllowMsgTTL {
		ix.ttl = FinishedStateTTL(info.Config.MaxAge)
	}
	wctx, cancel := context.WithCancel(context.Background())
	ix.cancel = cancel
	began := time.Now()
	w, err := kv.WatchAll(wctx)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("watch state bucket %s: %w", c.ns.StateBucket(), err)
	}
	// The initial values, up to the nil entry that ends them.
	for initial := true; initial; {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				cancel()
				stopWatch(w)
				return nil, fmt.Errorf("watch state bucket %s: closed while reading it", c.ns.StateBucket())
			}
			if e == nil {
				initial = false
				break
			}
			ix.apply(e, false)
		case <-ctx.Done():
			cancel()
			stopWatch(w)
			return nil, ctx.Err()
		}
	}
	ix.sortOrder()
	ix.loaded = time.Since(began)
	go ix.follow(wctx, w)
	return ix, nil
}

// follow applies the watch's updates and drops expired sagas until the
// index is closed.
func (ix *Index) follow(ctx context.Context, w jetstream.KeyWatcher) {
	defer close(ix.done)
	defer stopWatch(w)
	sweep := time.NewTicker(30 * time.Second)
	defer sweep.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-w.Updates():
			if !ok {
				return
			}
			if e != nil {
				ix.apply(e, true)
			}
		case <-sweep.C:
			ix.sweep()
		}
	}
}

// Close stops following the bucket.
func (ix *Index) Close() {
	ix.cancel()
	<-ix.done
}

// LoadTime is how long the first read of the bucket took.
func (ix *Index) LoadTime() time.Duration { return ix.loaded }

// Len counts the sagas indexed (finished sagas past their TTL included
// until the next sweep).
func (ix *Index) Len() int {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	return len(ix.byID)
}

// Changed returns a channel closed at the next change of the index.
func (ix *Index) Changed() <-chan struct{} {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	return ix.changed
}

// Get returns the summary of one saga.
func (ix *Index) Get(id string) (Summary, bool) {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	s, ok := ix.byID[id]
	if !ok || ix.expired(s, ix.now().UnixMilli()) {
		return Summary{}, false
	}
	return *s, true
}

// apply records one entry of the watch; sorted keeps the order sorted (the
// initial read sorts once at the end instead).
func (ix *Index) apply(e jetstream.KeyValueEntry, sorted bool) {
	id := e.Key()
	var next *Summary
	if e.Operation() == jetstream.KeyValuePut {
		s, err := decodeSummary(e.Value())
		if err != nil || s.SagaID == "" {
			return // not a state: nothing to list
		}
		s.SagaID = id
		next = &s
	}
	ix.mu.Lock()
	defer ix.mu.Unlock()
	old := ix.byID[id]
	switch {
	case old == nil && next == nil:
		return
	case old != nil && next != nil && old.StartedMS == next.StartedMS:
		*old = *next // same place in the order
	default:
		if old != nil {
			delete(ix.byID, id)
			if sorted {
				ix.remove(old)
			}
		}
		if next != nil {
			ix.byID[id] = next
			if sorted {
				ix.insert(next)
			} else {
				ix.order = append(ix.order, next)
			}
		}
	}
	if sorted {
		close(ix.changed)
		ix.changed = make(chan struct{})
	}
}

func less(a, b *Summary) bool {
	if a.StartedMS != b.StartedMS {
		return a.StartedMS < b.StartedMS
	}
	return a.SagaID < b.SagaID
}

// search returns the position of the first summary not before (ms, id).
func (ix *Index) search(ms int64, id string) int {
	key := &Summary{StartedMS: ms, SagaID: id}
	return sort.Search(len(ix.order), func(i int) bool { return !less(ix.order[i], key) })
}

func (ix *Index) sortOrder() {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	// The initial read may hold a key twice (a put, then its deletion and a
	// new put): keep what byID holds.
	kept := ix.order[:0]
	for _, s := range ix.order {
		if ix.byID[s.SagaID] == s {
			kept = append(kept, s)
		}
	}
	ix.order = kept
	sort.Slice(ix.order, func(i, j int) bool { return less(ix.order[i], ix.order[j]) })
}

func (ix *Index) insert(s *Summary) {
	i := ix.search(s.StartedMS, s.SagaID)
	ix.order = slices.Insert(ix.order, i, s)
}

func (ix *Index) remove(s *Summary) {
	i := ix.search(s.StartedMS, s.SagaID)
	if i < len(ix.order) && ix.order[i] == s {
		ix.order = slices.Delete(ix.order, i, i+1)
	}
}

// expired reports whether a finished saga's state has left the bucket.
func (ix *Index) expired(s *Summary, nowMS int64) bool {
	return ix.ttl > 0 && s.Status.Terminal() && s.UpdatedMS+ix.ttl.Milliseconds() < nowMS
}

// sweep drops the sagas whose state has expired.
func (ix *Index) sweep() {
	if ix.ttl == 0 {
		return
	}
	ix.mu.Lock()
	defer ix.mu.Unlock()
	now := ix.now().UnixMilli()
	kept := ix.order[:0]
	for _, s := range ix.order {
		if ix.expired(s, now) {
			delete(ix.byID, s.SagaID)
			continue
		}
		kept = append(kept, s)
	}
	clear(ix.order[len(kept):])
	ix.order = kept
}

// matches reports whether s passes every condition of q but the time range.
func (q *Query) matches(s *Summary) bool {
	return (q.Status == "" || s.Status == q.Status) && (q.Name == "" || s.Name == q.Name) &&
		(q.Participant == "" || slices.Contains(s.Participants, q.Participant)) &&
		(q.ID == "" || strings.Contains(s.SagaID, q.ID))
}

// ErrBadCursor: Query.After is not a Page.Next.
var ErrBadCursor = errors.New("orchestrator: bad page cursor")

// cursor encodes the position of a summary for Page.Next.
func cursor(s *Summary) string { return strconv.FormatInt(s.StartedMS, 10) + "." + s.SagaID }

func parseCursor(c string) (int64, string, error) {
	ms, id, ok := strings.Cut(c, ".")
	n, err := strconv.ParseInt(ms, 10, 64)
	if !ok || err != nil || id == "" {
		return 0, "", fmt.Errorf("%w %q", ErrBadCursor, c)
	}
	return n, id, nil
}

// Page returns the sagas that match q, newest first (by start time, then
// id), one page at a time. It reads memory only; its cost grows with the
// number of sagas in q's time range (it counts the matches), about a
// millisecond per 100,000.
func (ix *Index) Page(q Query) (Page, error) {
	limit := q.Limit
	if limit <= 0 {
		limit = DefaultPageSize
	}
	limit = min(limit, MaxPageSize)
	var afterMS int64
	var afterID string
	if q.After != "" {
		var err error
		if afterMS, afterID, err = parseCursor(q.After); err != nil {
			return Page{}, err
		}
	}
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	now := ix.now().UnixMilli()
	lo, hi := 0, len(ix.order)
	if !q.Since.IsZero() {
		lo = ix.search(q.Since.UnixMilli(), "")
	}
	if !q.Until.IsZero() {
		hi = ix.search(q.Until.UnixMilli(), "")
	}
	// Positions at or after from are on earlier pages.
	from := hi
	if q.After != "" {
		from = min(hi, ix.search(afterMS, afterID))
	}
	p := Page{Sagas: []Summary{}}
	var last *Summary
	more := false
	for i := hi - 1; i >= lo; i-- {
		s := ix.order[i]
		if !q.matches(s) || ix.expired(s, now) {
			continue
		}
		p.Total++
		if i >= from {
			continue
		}
		if len(p.Sagas) < limit {
			p.Sagas = append(p.Sagas, *s)
			last = s
		} else {
			more = true
		}
	}
	if more {
		p.Next = cursor(last)
	}
	return p, nil
}

// Overview counts the sagas of an index, for an overview page.
type Overview struct {
	Total    int            `json:"total"`
	ByStatus map[Status]int `json:"by_status"`
	// ByName counts the sagas of each name, most numerous first.
	ByName []NameCount `json:"by_name"`
	// Minutes are the last minutes, oldest first: sagas started in each,
	// and sagas that ended (committed, compensated, rejected) in each.
	Minutes []MinuteCount `json:"minutes"`
}

// NameCount counts the sagas of one name, by status.
type NameCount struct {
	Name     string         `json:"name"`
	Total    int            `json:"total"`
	ByStatus map[Status]int `json:"by_status"`
}

// MinuteCount is one minute of Overview.Minutes.
type MinuteCount struct {
	Start    time.Time `json:"start"`
	Started  int       `json:"started"`
	Finished int       `json:"finished"`
}

// Overview counts the indexed sagas by status and by name, and those started
// and finished in each of the last minutes (the current one last).
func (ix *Index) Overview(minutes int) Overview {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	now := ix.now()
	nowMS := now.UnixMilli()
	end := now.Truncate(time.Minute).Add(time.Minute)
	first := end.Add(-time.Duration(minutes) * time.Minute)
	st := Overview{ByStatus: map[Status]int{}, Minutes: make([]MinuteCount, minutes)}
	for i := range st.Minutes {
		st.Minutes[i].Start = first.Add(time.Duration(i) * time.Minute)
	}
	minute := func(ms int64) int {
		if ms < first.UnixMilli() || ms >= end.UnixMilli() {
			return -1
		}
		return int((ms - first.UnixMilli()) / time.Minute.Milliseconds())
	}
	names := map[string]*NameCount{}
	for _, s := range ix.order {
		if ix.expired(s, nowMS) {
			continue
		}
		st.Total++
		st.ByStatus[s.Status]++
		n := names[s.Name]
		if n == nil {
			n = &NameCount{Name: s.Name, ByStatus: map[Status]int{}}
			names[s.Name] = n
		}
		n.Total++
		n.ByStatus[s.Status]++
		if i := minute(s.StartedMS); i >= 0 {
			st.Minutes[i].Started++
		}
		if s.Status.Terminal() {
			if i := minute(s.UpdatedMS); i >= 0 {
				st.Minutes[i].Finished++
			}
		}
	}
	for _, n := range names {
		st.ByName = append(st.ByName, *n)
	}
	sort.Slice(st.ByName, func(i, j int) bool {
		if st.ByName[i].Total != st.ByName[j].Total {
			return st.ByName[i].Total > st.ByName[j].Total
		}
		return st.ByName[i].Name < st.ByName[j].Name
	})
	return st
}
