package console_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/jetsaga/jetsaga/console"
	"github.com/jetsaga/jetsaga/events"
	"github.com/jetsaga/jetsaga/orchestrator"
)

// get fetches path and returns the status code and body.
func get(t *testing.T, c *http.Client, req *http.Request) (int, string, http.Header) {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body), resp.Header
}

func newGet(t *testing.T, url string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

func mustContain(t *testing.T, what, body string, parts ...string) {
	t.Helper()
	for _, p := range parts {
		if !strings.Contains(body, p) {
			t.Fatalf("%s does not contain %q:\n%s", what, p, body)
		}
	}
}

// TestPages: the overview counts the sagas and lists the parked one first;
// the list filters and pages; a saga's page draws its plan and timeline and
// shows its payloads, results, reasons and messages; unknown sagas are 404;
// every page carries the security headers.
func TestPages(t *testing.T) {
	t.Parallel()
	e := newEnv(t, console.Config{})
	e.standard()
	c := browserless(t)

	code, body, h := get(t, c, newGet(t, e.url+"/"))
	if code != http.StatusOK {
		t.Fatalf("overview: %d\n%s", code, body)
	}
	if csp := h.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "script-src 'self'") {
		t.Fatalf("overview: CSP %q", csp)
	}
	if h.Get("X-Frame-Options") != "DENY" || h.Get("X-Content-Type-Options") != "nosniff" {
		t.Fatalf("overview: headers %v", h)
	}
	mustContain(t, "overview", body, `data-status="parked"><span class="n">1</span>`, `data-status="compensated"><span class="n">2</span>`,
		`data-status="committed"><span class="n">1</span>`, "post office closed", `href="/sagas/park-1"`, `>transfer</a>`, `data-refresh="5"`)
	if i, j := strings.Index(body, `id="parked"`), strings.Index(body, `id="names"`); i < 0 || i > j {
		t.Fatal("overview: the parked sagas do not come first")
	}
	if regexp.MustCompile(`<script>|style="|on(click|load)=`).MatchString(body) {
		t.Fatal("overview: inline script or style (the CSP forbids them)")
	}

	code, body, _ = get(t, c, newGet(t, e.url+"/sagas?status=parked"))
	if code != http.StatusOK {
		t.Fatalf("list: %d", code)
	}
	mustContain(t, "parked list", body, `id="total" data-filter="parked">1 saga`, `data-saga="park-1"`)
	if strings.Contains(body, `data-saga="ok-1"`) {
		t.Fatal("the parked list shows a committed saga")
	}
	_, body, _ = get(t, c, newGet(t, e.url+"/sagas?name=transfer&participant=bank-b&limit=2"))
	mustContain(t, "filtered list", body, `id="total" data-filter="">3 sagas`, `id="next"`)
	next := regexp.MustCompile(`href="(/sagas\?[^"]*after=[^"]*)" id="next"`).FindStringSubmatch(body)
	if next == nil {
		t.Fatalf("no next page link:\n%s", body)
	}
	_, body, _ = get(t, c, newGet(t, e.url+strings.ReplaceAll(next[1], "&amp;", "&")))
	if n := strings.Count(body, `<tr data-saga=`); n != 1 || !strings.Contains(body, `id="first"`) {
		t.Fatalf("second page: %d sagas\n%s", n, body)
	}
	_, body, _ = get(t, c, newGet(t, e.url+"/sagas?from=2000-01-01T00:00&to=2000-01-02T00:00"))
	mustContain(t, "empty time range", body, `id="total" data-filter="">0 sagas`)
	_, body, _ = get(t, c, newGet(t, e.url+"/sagas?from=yesterday"))
	mustContain(t, "bad time", body, `id="error"`, "from: &#34;yesterday&#34; is not a time")
	_, body, _ = get(t, c, newGet(t, e.url+"/sagas?q=comp"))
	mustContain(t, "id search", body, `data-saga="comp-1"`, `id="total" data-filter="">1 saga`)
	code, _, h = get(t, c, newGet(t, e.url+"/sagas?q=late-1"))
	if code != http.StatusSeeOther || h.Get("Location") != "/sagas/late-1" {
		t.Fatalf("an exact id: %d to %q, want the saga's page", code, h.Get("Location"))
	}

	code, body, _ = get(t, c, newGet(t, e.url+"/sagas/comp-1"))
	if code != http.StatusOK {
		t.Fatalf("saga page: %d\n%s", code, body)
	}
	mustContain(t, "compensated saga", body,
		`<g class="step st-compensated" data-step="debit"`, `<g class="step st-failed" data-step="credit"`, `class="edge"`,
		`data-step="debit" data-op="do" data-attempt="1" data-status="succeeded"`,
		`data-step="credit" data-op="do" data-attempt="1" data-status="failed"`,
		"account 2 is frozen", "&#34;amount&#34;: &#34;30.00&#34;", "&#34;tx&#34;: &#34;bank-a-debit&#34;", `data-kind="start"`)
	if strings.Contains(body, "data-live=") || strings.Contains(body, `id="actions"`) {
		t.Fatal("a finished saga's page is live or offers actions")
	}
	undone := regexp.MustCompile(`data-step="(\w+)" data-op="undo" data-attempt="\d+" data-status="compensated"`)
	if m := undone.FindAllStringSubmatch(body, -1); len(m) != 1 || m[0][1] != "debit" {
		t.Fatalf("compensated saga: compensation bars %v, want debit's", m)
	}
	_, body, _ = get(t, c, newGet(t, e.url+"/sagas/late-1"))
	mustContain(t, "timed-out saga", body, `<line class="tick"`, `data-step="credit" data-op="do" data-attempt="1" data-status="open"`)
	if m := undone.FindAllStringSubmatch(body, -1); len(m) != 2 {
		t.Fatalf("timed-out saga: compensation bars %v, want credit's and debit's", m)
	}
	_, body, _ = get(t, c, newGet(t, e.url+"/sagas/park-1"))
	mustContain(t, "parked saga", body, `id="actions"`, `href="/sagas/park-1/act/redrive"`, `href="/sagas/park-1/act/skip?step=send"`,
		`data-live="/sagas/park-1/live?v=`, `<g class="step st-unknown stuck" data-step="send"`, "&#34;order&#34;: 7")
	// The plan's picture: notify waits for charge only, so it stands beside send.
	boxes := regexp.MustCompile(`data-step="(\w+)" data-status="\w*">\s*<title>[^<]*</title>\s*<rect x="(\d+)" y="(\d+)"`).FindAllStringSubmatch(body, -1)
	pos := map[string][2]string{}
	for _, b := range boxes {
		pos[b[1]] = [2]string{b[2], b[3]}
	}
	if pos["send"][0] != pos["notify"][0] || pos["send"][1] == pos["notify"][1] || pos["charge"][0] >= pos["send"][0] {
		t.Fatalf("plan layout: %v", pos)
	}

	code, body, _ = get(t, c, newGet(t, e.url+"/sagas/nope"))
	if code != http.StatusNotFound || !strings.Contains(body, "saga nope not found") {
		t.Fatalf("unknown saga: %d\n%s", code, body)
	}
	code, _, _ = get(t, c, newGet(t, e.url+"/static/app.js"))
	if code != http.StatusOK {
		t.Fatalf("static: %d", code)
	}
}

// confirmForm opens the confirmation page of an action and returns its CSRF
// token.
func confirmForm(t *testing.T, c *http.Client, base, id, action string) string {
	t.Helper()
	code, body, _ := get(t, c, newGet(t, base+"/sagas/"+id+"/act/"+action))
	if code != http.StatusOK {
		t.Fatalf("confirmation page: %d\n%s", code, body)
	}
	m := regexp.MustCompile(`name="csrf" value="([0-9a-f]{32})"`).FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no CSRF token in the form:\n%s", body)
	}
	return m[1]
}

func post(t *testing.T, c *http.Client, target string, form url.Values, header map[string]string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, target, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	return get(t, c, req)
}

// TestActionsAreProtected: an action needs the form's CSRF token and the
// console's own origin; a confirmed one is sent with the operator's
// identity, which the stream records, and the saga goes on.
func TestActionsAreProtected(t *testing.T) {
	t.Parallel()
	e := newEnv(t, console.Config{})
	e.shipment("park-1")
	e.wait("park-1", orchestrator.Parked)
	c := browserless(t)
	csrf := confirmForm(t, c, e.url, "park-1", "redrive")
	target := e.url + "/sagas/park-1/act/redrive"
	good := url.Values{"csrf": {csrf}, "operator": {"alice"}, "note": {"post office reopened"}}
	for name, tc := range map[string]struct {
		form   url.Values
		header map[string]string
		want   string
	}{
		"no token":         {url.Values{"operator": {"alice"}}, nil, "CSRF token does not match"},
		"wrong token":      {url.Values{"csrf": {strings.Repeat("0", 32)}, "operator": {"alice"}}, nil, "CSRF token does not match"},
		"cross-site":       {good, map[string]string{"Sec-Fetch-Site": "cross-site"}, "cross-origin request refused"},
		"other origin":     {good, map[string]string{"Origin": "https://evil.example"}, "cross-origin request refused"},
		"other referer":    {good, map[string]string{"Referer": "https://evil.example/x"}, "cross-origin request refused"},
		"null origin":      {good, map[string]string{"Origin": "null"}, "cross-origin request refused"},
		"token, no cookie": {good, map[string]string{"Cookie": ""}, "CSRF token does not match"},
	} {
		cl := c
		if name == "token, no cookie" {
			cl = browserless(t) // an empty cookie jar
		}
		code, body, _ := post(t, cl, target, tc.form, tc.header)
		if code != http.StatusForbidden || !strings.Contains(body, tc.want) {
			t.Fatalf("%s: %d, want 403 saying %q\n%s", name, code, tc.want, body)
		}
	}
	if st, _ := e.client.Get(context.Background(), "park-1"); st.Status != orchestrator.Parked {
		t.Fatalf("a refused action changed the saga: %s", st.Status)
	}
	// Resolve without a note goes back to the form.
	code, _, h := post(t, c, e.url+"/sagas/park-1/act/resolve", url.Values{"csrf": {csrf}, "operator": {"alice"}}, nil)
	if code != http.StatusSeeOther || !strings.Contains(h.Get("Location"), "needs+a+note") {
		t.Fatalf("resolve without a note: %d to %q", code, h.Get("Location"))
	}
	code, body, h := post(t, c, target, good, map[string]string{"Origin": e.url, "Sec-Fetch-Site": "same-origin"})
	if code != http.StatusSeeOther || h.Get("Location") != "/sagas/park-1?done=redrive" {
		t.Fatalf("confirmed redrive: %d to %q\n%s", code, h.Get("Location"), body)
	}
	e.wait("park-1", orchestrator.Committed)
	tl, err := e.client.Timeline(context.Background(), "park-1")
	if err != nil {
		t.Fatal(err)
	}
	var ctl events.Control
	for _, en := range tl {
		if en.Kind == events.KindControl {
			if err := json.Unmarshal(en.Data, &ctl); err != nil {
				t.Fatal(err)
			}
		}
	}
	if ctl.Action != events.Redrive || ctl.By != "alice" || ctl.Note != "post office reopened" {
		t.Fatalf("recorded action: %+v", ctl)
	}
	_, body, _ = get(t, c, newGet(t, e.url+"/sagas/park-1"))
	mustContain(t, "saga page after the redrive", body, `<span class="by">by alice</span>`, `data-kind="control" data-action="redrive"`)
	// The saga is not parked any more; the name is remembered for the
	// next confirmation.
	_, body, _ = get(t, c, newGet(t, e.url+"/sagas/park-1/act/resolve"))
	mustContain(t, "confirmation after the redrive", body, "is committed, not parked")
	if strings.Contains(body, `id="confirm-form"`) {
		t.Fatal("the confirmation page of a saga that is not parked has a form")
	}
	u, _ := url.Parse(e.url)
	remembered := false
	for _, ck := range c.Jar.Cookies(u) {
		remembered = remembered || ck.Name == "jetsaga_operator" && ck.Value == "alice"
	}
	if !remembered {
		t.Fatalf("the operator's name is not remembered: %v", c.Jar.Cookies(u))
	}
}

// TestReadOnly: a read-only console shows no actions and refuses them.
func TestReadOnly(t *testing.T) {
	t.Parallel()
	e := newEnv(t, console.Config{ReadOnly: true})
	e.shipment("park-1")
	e.wait("park-1", orchestrator.Parked)
	c := browserless(t)
	_, body, _ := get(t, c, newGet(t, e.url+"/sagas/park-1"))
	mustContain(t, "read-only saga page", body, "read-only", "jetsaga redrive")
	if strings.Contains(body, "/act/") {
		t.Fatal("a read-only console links to actions")
	}
	code, _, _ := get(t, c, newGet(t, e.url+"/sagas/park-1/act/redrive"))
	if code != http.StatusForbidden {
		t.Fatalf("confirmation page: %d, want 403", code)
	}
	code, body, _ = post(t, c, e.url+"/sagas/park-1/act/redrive", url.Values{"operator": {"mallory"}}, nil)
	if code != http.StatusForbidden || !strings.Contains(body, "read-only") {
		t.Fatalf("action: %d, want 403\n%s", code, body)
	}
}

// TestAuthentication: with a token or users configured, every page but
// /healthz needs them; the token may come once in the URL and is then kept
// in a cookie; a basic-auth user is the identity recorded with actions.
func TestAuthentication(t *testing.T) {
	t.Parallel()
	e := newEnv(t, console.Config{Token: "s3cret-token", Users: map[string]string{"bob": "hunter2"}})
	e.shipment("park-1")
	e.wait("park-1", orchestrator.Parked)
	c := browserless(t)
	code, body, h := get(t, c, newGet(t, e.url+"/"))
	if code != http.StatusUnauthorized || !strings.Contains(h.Get("WWW-Authenticate"), "Basic") || !strings.Contains(body, "authentication required") {
		t.Fatalf("no credentials: %d %v", code, h)
	}
	if code, _, _ := get(t, c, newGet(t, e.url+"/healthz")); code != http.StatusOK {
		t.Fatalf("healthz: %d", code)
	}
	for _, bad := range []string{"/?token=wrong", "/sagas/park-1?token=s3cret-toke"} {
		if code, _, _ := get(t, c, newGet(t, e.url+bad)); code != http.StatusUnauthorized {
			t.Fatalf("%s: %d, want 401", bad, code)
		}
	}
	req := newGet(t, e.url+"/")
	req.SetBasicAuth("bob", "wrong")
	if code, _, _ := get(t, c, req); code != http.StatusUnauthorized {
		t.Fatalf("wrong password: %d", code)
	}
	req = newGet(t, e.url+"/")
	req.Header.Set("Authorization", "Bearer s3cret-token")
	if code, _, _ := get(t, c, req); code != http.StatusOK {
		t.Fatalf("bearer token: %d", code)
	}
	code, _, h = get(t, c, newGet(t, e.url+"/sagas/park-1?token=s3cret-token&x=1"))
	if code != http.StatusSeeOther || h.Get("Location") != "/sagas/park-1?x=1" {
		t.Fatalf("token in the URL: %d to %q", code, h.Get("Location"))
	}
	if code, _, _ := get(t, c, newGet(t, e.url+"/sagas/park-1")); code != http.StatusOK {
		t.Fatalf("with the token's cookie: %d", code)
	}
	// Basic auth: the user is the operator.
	cb := browserless(t)
	auth := func(r *http.Request) *http.Request { r.SetBasicAuth("bob", "hunter2"); return r }
	code, body, _ = get(t, cb, auth(newGet(t, e.url+"/sagas/park-1/act/resolve")))
	if code != http.StatusOK {
		t.Fatalf("basic auth: %d", code)
	}
	mustContain(t, "confirmation as bob", body, `<strong id="operator">bob</strong>`)
	csrf := regexp.MustCompile(`name="csrf" value="([0-9a-f]{32})"`).FindStringSubmatch(body)[1]
	req, _ = http.NewRequest(http.MethodPost, e.url+"/sagas/park-1/act/resolve",
		strings.NewReader(url.Values{"csrf": {csrf}, "operator": {"mallory"}, "note": {"sent by hand"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if code, body, _ := get(t, cb, auth(req)); code != http.StatusSeeOther {
		t.Fatalf("resolve: %d\n%s", code, body)
	}
	e.wait("park-1", orchestrator.Committed)
	tl, _ := e.client.Timeline(context.Background(), "park-1")
	found := false
	for _, en := range tl {
		found = found || en.Kind == events.KindControl && strings.Contains(string(en.Data), `"by":"bob"`)
	}
	if !found {
		t.Fatal("the resolve was not recorded as bob's")
	}
}

// TestIsLoopback tells loopback listen addresses from the others.
func TestIsLoopback(t *testing.T) {
	t.Parallel()
	for addr, want := range map[string]bool{
		"127.0.0.1:8080": true, "localhost:80": true, "[::1]:8080": true, "127.1.2.3:1": true,
		":8080": false, "0.0.0.0:8080": false, "[::]:8080": false, "10.0.0.5:8080": false, "example.com:80": false,
	} {
		if got := console.IsLoopback(addr); got != want {
			t.Errorf("IsLoopback(%q) = %v, want %v", addr, got, want)
		}
	}
}
