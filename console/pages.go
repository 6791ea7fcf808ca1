package console

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/jetsaga/jetsaga/events"
	"github.com/jetsaga/jetsaga/orchestrator"
)

// page is what every template gets.
type page struct {
	Title    string
	Nav      string // the menu entry to highlight
	Search   string // the id search box's value
	ReadOnly bool
	// Refresh, when set, has the page reload its content every so many
	// seconds; Live, when set, is the URL of the server-sent events that
	// say when to reload it.
	Refresh int
	Live    string
	Data    any
}

func (c *Console) render(w http.ResponseWriter, r *http.Request, name string, p *page) {
	p.ReadOnly = c.cfg.ReadOnly
	var buf bytes.Buffer
	if err := c.tmpl.ExecuteTemplate(&buf, name, p); err != nil {
		c.fail(w, r, http.StatusInternalServerError, "render "+name+": "+err.Error())
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, _ = buf.WriteTo(w)
}

// statusOrder is the order in which pages show statuses: those that need
// someone first.
var statusOrder = []orchestrator.Status{orchestrator.Parked, orchestrator.Running, orchestrator.Compensating,
	orchestrator.Committed, orchestrator.Compensated, orchestrator.Rejected}

type statusCount struct {
	Status orchestrator.Status
	Count  int
}

type overviewPage struct {
	Overview orchestrator.Overview
	Statuses []statusCount
	Parked   orchestrator.Page
	Recent   orchestrator.Page
	Rate     rateChart
	Minutes  int
}

func (c *Console) overview(w http.ResponseWriter, r *http.Request) {
	ov := c.index.Overview(c.cfg.Minutes)
	p := overviewPage{Overview: ov, Minutes: c.cfg.Minutes, Rate: newRateChart(ov.Minutes)}
	for _, s := range statusOrder {
		p.Statuses = append(p.Statuses, statusCount{s, ov.ByStatus[s]})
	}
	p.Parked, _ = c.index.Page(orchestrator.Query{Status: orchestrator.Parked, Limit: 20})
	p.Recent, _ = c.index.Page(orchestrator.Query{Limit: 10})
	c.render(w, r, "overview.html", &page{Title: "Overview", Nav: "overview", Refresh: 5, Data: p})
}

type listPage struct {
	Filter   listFilter
	Result   orchestrator.Page
	Statuses []orchestrator.Status
	Names    []string
	Next     string // URL of the next page
	First    string // URL of the first page, when not on it
	Error    string
}

// listFilter is the list's form, as the URL carries it.
type listFilter struct {
	Status, Name, Participant, From, To, Q string
}

func (f listFilter) values() url.Values {
	v := url.Values{}
	for k, s := range map[string]string{"status": f.Status, "name": f.Name, "participant": f.Participant, "from": f.From, "to": f.To, "q": f.Q} {
		if s != "" {
			v.Set(k, s)
		}
	}
	return v
}

// formTime is the format of the list's time range inputs (datetime-local,
// taken as UTC).
const formTime = "2006-01-02T15:04"

func (c *Console) list(w http.ResponseWriter, r *http.Request) {
	v := r.URL.Query()
	f := listFilter{Status: v.Get("status"), Name: strings.TrimSpace(v.Get("name")), Participant: strings.TrimSpace(v.Get("participant")),
		From: v.Get("from"), To: v.Get("to"), Q: strings.TrimSpace(v.Get("q"))}
	p := listPage{Filter: f, Statuses: statusOrder}
	for _, n := range c.index.Overview(1).ByName {
		p.Names = append(p.Names, n.Name)
	}
	q := orchestrator.Query{Name: f.Name, Participant: f.Participant, ID: f.Q, After: v.Get("after")}
	var problems []string
	if f.Status != "" {
		q.Status = orchestrator.Status(f.Status)
		if !contains(statusOrder, q.Status) {
			problems = append(problems, fmt.Sprintf("status %q is not a saga status", f.Status))
		}
	}
	for _, t := range []struct {
		name, val string
		into      *time.Time
	}{{"from", f.From, &q.Since}, {"to", f.To, &q.Until}} {
		if t.val == "" {
			continue
		}
		tm, err := time.Parse(formTime, t.val)
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %q is not a time like 2025-01-31T14:05", t.name, t.val))
			continue
		}
		*t.into = tm
	}
	if n, err := strconv.Atoi(v.Get("limit")); err == nil {
		q.Limit = n
	}
	if f.Q != "" && q.After == "" && events.ValidToken(f.Q) == nil {
		// An id: go to the saga if it exists.
		ctx, cancel := context.WithTimeout(r.Context(), timeout)
		_, err := c.client.Get(ctx, f.Q)
		cancel()
		if err == nil {
			http.Redirect(w, r, "/sagas/"+url.PathEscape(f.Q), http.StatusSeeOther)
			return
		}
	}
	if len(problems) > 0 {
		p.Error = strings.Join(problems, "; ")
	} else {
		res, err := c.index.Page(q)
		if err != nil {
			p.Error = "the page link is not valid any more: start from the first page"
		}
		p.Result = res
		base := f.values()
		if res.Next != "" {
			base.Set("after", res.Next)
			p.Next = "/sagas?" + base.Encode()
			base.Del("after")
		}
		if q.After != "" {
			p.First = "/sagas?" + base.Encode()
		}
	}
	c.render(w, r, "list.html", &page{Title: "Sagas", Nav: "sagas", Search: f.Q, Data: p})
}

func contains[T comparable](list []T, v T) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

type sagaPage struct {
	State    *orchestrator.State
	Plan     planChart
	Timeline timelineChart
	Steps    []stepRow
	Entries  []entryRow
	Stuck    []string
	CanAct   bool
	Done     string // the action just sent
	Error    string
}

type stepRow struct {
	Plan            events.Step
	State           orchestrator.StepState
	Payload, Result string
}

type entryRow struct {
	Offset, Time, Stream, Kind, Summary, Data, By string
	Seq                                           uint64
}

func (c *Console) saga(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	st, err := c.client.Get(ctx, id)
	if err != nil {
		c.sagaError(w, r, id, err)
		return
	}
	tl, err := c.client.Timeline(ctx, id)
	if err != nil {
		c.fail(w, r, http.StatusBadGateway, fmt.Sprintf("timeline of saga %s: %v", id, err))
		return
	}
	p := sagaPage{State: st, Plan: newPlanChart(st), Timeline: newTimelineChart(st, tl, time.Now()),
		CanAct: st.Status == orchestrator.Parked && !c.cfg.ReadOnly, Done: r.URL.Query().Get("done"), Error: r.URL.Query().Get("error")}
	plan := map[string]events.Step{}
	if st.Plan != nil {
		for _, s := range st.Plan.Steps {
			plan[s.Name] = s
		}
	}
	for _, s := range st.Steps {
		ps := plan[s.Name]
		p.Steps = append(p.Steps, stepRow{Plan: ps, State: s, Payload: pretty(ps.Payload), Result: pretty(s.Result)})
		if s.Stuck {
			p.Stuck = append(p.Stuck, s.Name)
		}
	}
	var t0 time.Time
	if len(tl) > 0 {
		t0 = tl[0].Time
	}
	for _, e := range tl {
		row := entryRow{Offset: "+" + offset(e.Time.Sub(t0)), Time: e.Time.UTC().Format("15:04:05.000"), Stream: e.Stream, Seq: e.Seq,
			Kind: string(e.Kind), Summary: e.Summary, Data: pretty(e.Data)}
		if e.Kind == events.KindControl {
			var ctl struct {
				By string `json:"by"`
			}
			if json.Unmarshal(e.Data, &ctl) == nil {
				row.By = ctl.By
			}
		}
		p.Entries = append(p.Entries, row)
	}
	pg := &page{Title: "Saga " + id, Nav: "sagas", Data: p}
	if !st.Status.Terminal() {
		pg.Live = fmt.Sprintf("/sagas/%s/live?v=%d.%s", url.PathEscape(id), st.UpdatedMS, st.Status)
	}
	c.render(w, r, "saga.html", pg)
}

func (c *Console) sagaError(w http.ResponseWriter, r *http.Request, id string, err error) {
	if errors.Is(err, orchestrator.ErrNotFound) || events.ValidToken(id) != nil {
		c.fail(w, r, http.StatusNotFound, fmt.Sprintf("saga %s not found", id))
		return
	}
	c.fail(w, r, http.StatusBadGateway, fmt.Sprintf("saga %s: %v", id, err))
}

// live sends an event whenever the saga's state changes from the version
// the page shows ("change"), and "end" once it has ended.
func (c *Console) live(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	fl, ok := w.(http.Flusher)
	if !ok {
		c.fail(w, r, http.StatusInternalServerError, "streaming not supported")
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	_, _ = fmt.Fprint(w, "retry: 2000\n\n")
	fl.Flush()
	shown := r.URL.Query().Get("v")
	ctx := r.Context()
	heartbeat := time.NewTicker(15 * time.Second)
	defer heartbeat.Stop()
	var again <-chan time.Time // a second "change" shortly after one
	for {
		changed := c.index.Changed()
		version, terminal := c.version(ctx, id)
		switch {
		case terminal:
			_, _ = fmt.Fprint(w, "event: end\ndata: {}\n\n")
			fl.Flush()
			return
		case version != "" && version != shown:
			shown = version
			_, _ = fmt.Fprintf(w, "event: change\ndata: %q\n\n", version)
			fl.Flush()
			// The coordinator publishes a transition's commands just after
			// writing its state: tell the page again once they are out.
			again = time.After(time.Second)
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
			select { // let a burst of changes settle
			case <-time.After(200 * time.Millisecond):
			case <-ctx.Done():
				return
			}
		case <-again:
			again = nil
			_, _ = fmt.Fprint(w, "event: change\ndata: \"\"\n\n")
			fl.Flush()
		case <-heartbeat.C:
			_, _ = fmt.Fprint(w, ": ping\n\n")
			fl.Flush()
		}
	}
}

// version returns what identifies the saga's state as pages show it, and
// whether it has ended.
func (c *Console) version(ctx context.Context, id string) (string, bool) {
	if s, ok := c.index.Get(id); ok {
		return fmt.Sprintf("%d.%s", s.UpdatedMS, s.Status), s.Status.Terminal()
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	st, err := c.client.Get(ctx, id) // not in the bucket yet
	if err != nil {
		return "", false
	}
	return fmt.Sprintf("%d.%s", st.UpdatedMS, st.Status), st.Status.Terminal()
}

type confirmPage struct {
	State    *orchestrator.State
	Action   events.ControlAction
	Step     string
	Steps    []string // the steps a skip may name
	CSRF     string
	User     string // the authenticated user, if any
	Operator string // the default identity otherwise
	Error    string
}

// actions are the operator actions the console offers.
var actions = map[string]events.ControlAction{"redrive": events.Redrive, "skip": events.Skip, "resolve": events.Resolve}

// actionOf returns the action a request names, answering the request itself
// (404, or 403 in read-only mode) when there is none to take.
func (c *Console) actionOf(w http.ResponseWriter, r *http.Request) (events.ControlAction, bool) {
	action, ok := actions[r.PathValue("action")]
	if !ok {
		c.fail(w, r, http.StatusNotFound, "no such action: "+r.PathValue("action"))
		return "", false
	}
	if c.cfg.ReadOnly {
		c.fail(w, r, http.StatusForbidden, "this console is read-only: actions are refused")
		return "", false
	}
	return action, true
}

func (c *Console) confirm(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	action, ok := c.actionOf(w, r)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	st, err := c.client.Get(ctx, id)
	if err != nil {
		c.sagaError(w, r, id, err)
		return
	}
	p := confirmPage{State: st, Action: action, Step: r.URL.Query().Get("step"), CSRF: csrfToken(w, r),
		User: user(r), Operator: c.operator(r)}
	for _, s := range st.Steps {
		if s.Stuck {
			p.Steps = append(p.Steps, s.Name)
			if p.Step == "" {
				p.Step = s.Name
			}
		}
	}
	p.Error = r.URL.Query().Get("error")
	if st.Status != orchestrator.Parked {
		p.Error = fmt.Sprintf("saga %s is %s, not parked: there is nothing to %s", id, st.Status, action)
	}
	c.render(w, r, "confirm.html", &page{Title: string(action) + " saga " + id, Nav: "sagas", Data: p})
}

func user(r *http.Request) string {
	u, _ := r.Context().Value(userKey{}).(string)
	return u
}

const operatorCookie = "jetsaga_operator"

// operator is the identity the confirmation form proposes.
func (c *Console) operator(r *http.Request) string {
	if ck, err := r.Cookie(operatorCookie); err == nil {
		if v, err := url.QueryUnescape(ck.Value); err == nil && v != "" {
			return v
		}
	}
	return c.cfg.Operator
}

// act sends a confirmed operator action, with the operator's identity.
func (c *Console) act(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	action, ok := c.actionOf(w, r)
	if !ok {
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if !csrfOK(r) {
		c.fail(w, r, http.StatusForbidden, "the form's CSRF token does not match: reload the confirmation page and confirm again")
		return
	}
	by := user(r)
	if by == "" {
		by = strings.TrimSpace(r.PostFormValue("operator"))
	}
	note := strings.TrimSpace(r.PostFormValue("note"))
	step := r.PostFormValue("step")
	back := "/sagas/" + url.PathEscape(id)
	var problem string
	switch {
	case by == "":
		problem = "say who you are (operator): the action is recorded with your name"
	case len(by) > 200:
		problem = "operator: at most 200 characters"
	case action == events.Skip && step == "":
		problem = "skip needs the step to mark as done"
	case action != events.Redrive && note == "":
		problem = fmt.Sprintf("%s needs a note: say what was done by hand, or why the saga may end as it is", action)
	case len(note) > events.MaxReasonBytes:
		problem = fmt.Sprintf("note: at most %d bytes", events.MaxReasonBytes)
	}
	if problem != "" {
		http.Redirect(w, r, back+"/act/"+string(action)+"?"+url.Values{"step": {step}, "error": {problem}}.Encode(), http.StatusSeeOther)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	err := c.client.Act(ctx, events.Control{SagaID: id, Action: action, Step: step, Note: note, By: by})
	switch {
	case err == nil:
		if user(r) == "" {
			http.SetCookie(w, &http.Cookie{Name: operatorCookie, Value: url.QueryEscape(by), Path: "/", HttpOnly: true,
				SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil, MaxAge: 90 * 24 * 3600})
		}
		c.log.Info("operator action sent", "saga_id", id, "action", action, "step", step, "by", by)
		http.Redirect(w, r, back+"?done="+string(action), http.StatusSeeOther)
	case errors.Is(err, orchestrator.ErrNotParked), errors.Is(err, orchestrator.ErrNotFound):
		http.Redirect(w, r, back+"?error="+url.QueryEscape(err.Error()), http.StatusSeeOther)
	default:
		c.fail(w, r, http.StatusBadGateway, fmt.Sprintf("%s of saga %s: %v", action, id, err))
	}
}

// pretty indents a JSON document for display ("" for none).
func pretty(raw json.RawMessage) string {
	if len(raw) == 0 {
		return ""
	}
	var b bytes.Buffer
	if err := json.Indent(&b, raw, "", "  "); err != nil {
		return string(raw)
	}
	return b.String()
}

// offset renders a duration from a saga's first message.
func offset(d time.Duration) string {
	switch {
	case d < 0:
		return "0ms"
	case d < time.Second:
		return strconv.FormatFloat(float64(d.Microseconds())/1000, 'f', 1, 64) + "ms"
	case d < time.Minute:
		return strconv.FormatFloat(d.Seconds(), 'f', 2, 64) + "s"
	}
	return d.Round(time.Second).String()
}

var funcs = template.FuncMap{
	"msTime": func(ms int64) string {
		if ms == 0 {
			return "–"
		}
		return time.UnixMilli(ms).UTC().Format("2006-01-02 15:04:05.000")
	},
	"ago": func(ms int64) string {
		if ms == 0 {
			return ""
		}
		d := time.Since(time.UnixMilli(ms))
		switch {
		case d < time.Minute:
			return fmt.Sprintf("%ds ago", int(d.Seconds()))
		case d < time.Hour:
			return fmt.Sprintf("%dm ago", int(d.Minutes()))
		case d < 48*time.Hour:
			return fmt.Sprintf("%dh ago", int(d.Hours()))
		}
		return fmt.Sprintf("%dd ago", int(d.Hours()/24))
	},
	"join": strings.Join,
	"sagaURL": func(id string) string {
		return "/sagas/" + url.PathEscape(id)
	},
	"statusURL": func(s orchestrator.Status) string {
		return "/sagas?status=" + url.QueryEscape(string(s))
	},
	"nameURL": func(name string) string {
		return "/sagas?name=" + url.QueryEscape(name)
	},
	"count": func(m map[orchestrator.Status]int, s orchestrator.Status) int { return m[s] },
}
