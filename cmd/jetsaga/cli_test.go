package main

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/jetsaga/jetsaga/devenv"
	"github.com/jetsaga/jetsaga/events"
	"github.com/jetsaga/jetsaga/internal/testenv"
	"github.com/jetsaga/jetsaga/orchestrator"
)

// goNames are the marks of Go's own words in an error meant for people.
var goNames = regexp.MustCompile(`Go struct|Go value|int64|\bint\b|json\.RawMessage|events\.|map\[|\[\]struct|(^|[ :])json: `)

// TestPlanErrorsForPeople: a bad plan file is reported with the line and
// column of a syntax error, the step and field of a wrong value or unknown
// field in JSON's words (no Go type names), and a plan over the size limit
// as such — all before anything is contacted.
func TestPlanErrorsForPeople(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	big := `{"name":"x","steps":[{"name":"a","participant":"p","action":"A","compensation":"B","payload":{"blob":"` +
		strings.Repeat("x", events.MaxMessageBytes) + `"}}]}`
	for name, tc := range map[string]struct {
		plan string
		want []string
	}{
		"syntax":        {"{\"name\": \"x\",\n \"steps\": [\n  {\"name\": \"a\", \"participant\": \"p\",}\n]}", []string{"line 3, column 36", "invalid character '}'"}},
		"truncated":     {"{\"name\": \"x\",\n \"steps\": [", []string{"line 2, column 11", "ends too early"}},
		"trailing":      {`{"name":"x","steps":[]} {}`, []string{"line 1, column 25", "more JSON after the plan"}},
		"not an object": {`[1, 2]`, []string{"a plan is a JSON object, got an array"}},
		"float timeout": {`{"name":"x","steps":[{"name":"debit","participant":"p","action":"A","compensation":"B","timeout_ms":1.5}]}`,
			[]string{"steps[0] (debit).timeout_ms: want an integer, got the number 1.5"}},
		"string retry": {`{"name":"x","steps":[{"name":"a","participant":"p","action":"A","compensation":"B","retry":{"max_attempts":"3"}}]}`,
			[]string{"steps[0] (a).retry.max_attempts: want an integer, got the string \"3\""}},
		"steps string": {`{"name":"x","steps":"none"}`, []string{"steps: want an array of objects, got the string \"none\""}},
		"unknown step field": {`{"name":"x","steps":[{"name":"a","participant":"p","action":"A","compensation":"B"},
			{"name":"credit","participant":"p","action":"A","compensation":"B","timeoutms":5}]}`,
			[]string{`steps[1] (credit): unknown field "timeoutms"`, "timeout_ms"}},
		"unknown field": {`{"nmae":"x","steps":[]}`, []string{`the plan: unknown field "nmae"`}},
		"too large":     {big, []string{"larger than 262144 bytes", "limit for a start message"}},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			file := filepath.Join(dir, strings.ReplaceAll(name, " ", "-")+".json")
			if err := os.WriteFile(file, []byte(tc.plan), 0o600); err != nil {
				t.Fatal(err)
			}
			r := cli(t, nil, "", "start", "-f", file, "--nats-url", "nats://"+closedPort(t))
			wantOneLineError(t, r, exitError, tc.want...)
			if goNames.MatchString(r.stderr) || strings.Contains(r.stderr, "unexpected end of JSON input") {
				t.Fatalf("the error speaks Go: %s", r.stderr)
			}
		})
	}
}

// TestNoDoubledPrefix: a subcommand's usage error names the subcommand
// once, after the one "jetsaga: ".
func TestNoDoubledPrefix(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"start", "--bogus"}, {"status"}, {"list", "extra"}, {"watch"}, {"--bogus"}} {
		r := cli(t, nil, "", args...)
		wantExit(t, r, exitUsage)
		if strings.Contains(r.stderr, "jetsaga: jetsaga") || !strings.HasPrefix(r.stderr, "jetsaga: ") {
			t.Errorf("%v: %q", args, r.stderr)
		}
	}
	wantOneLineError(t, cli(t, nil, "", "start", "--bogus"), exitUsage, "jetsaga: start: unknown flag: --bogus (see 'jetsaga start --help')")
}

// TestMoreUsageErrors: every bad command line exits 2, including those of
// the console and watch.
func TestMoreUsageErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"console", "--listen", "0.0.0.0:0"}, "not a loopback address: set --token or --basic-auth"},
		{[]string{"console", "--listen", ":8080"}, "not a loopback address"},
		{[]string{"console", "--listen", "nope"}, "--listen \"nope\": want HOST:PORT"},
		{[]string{"console", "--basic-auth", "alice"}, "--basic-auth: want USER:PASSWORD"},
		{[]string{"console", "--basic-auth", "alice:"}, "--basic-auth: want USER:PASSWORD, got \"alice:xxxxx\""},
		{[]string{"watch"}, "missing SAGA_ID"},
		{[]string{"watch", "a", "b"}, `unexpected argument "b"`},
		{[]string{"status", "a", "--follow", "--no-timeline"}, "--follow follows the timeline"},
		{[]string{"version", "--json=maybe"}, "--json"},
		{[]string{"start", "-f", "-", "--progress=often"}, "--progress"},
	} {
		args := append(tc.args, "--nats-url", "nats://"+closedPort(t))
		if tc.args[0] == "version" {
			args = tc.args
		}
		wantOneLineError(t, cli(t, nil, "", args...), exitUsage, tc.want)
	}
}

// jsonExempt are the commands without --json: services and environments,
// whose output is their log (--log-format json), and the demo, a narrated
// walk-through.
var jsonExempt = map[string]string{
	"demo": "narration", "dev": "an environment's log", "coordinator": "a service's log", "bank": "a service's log",
	"http-participant": "a service's log", "gateway": "a service's log", "help": "cobra's",
}

// TestJSONOnEveryCommand: every command that prints a result has --json,
// and version's is a JSON object.
func TestJSONOnEveryCommand(t *testing.T) {
	t.Parallel()
	a := &app{stdin: strings.NewReader(""), stdout: io.Discard, stderr: io.Discard, getenv: func(string) string { return "" }}
	for _, c := range a.newRoot().Commands() {
		if _, ok := jsonExempt[c.Name()]; ok || c.Hidden || c.Name() == "completion" {
			continue
		}
		if c.Flags().Lookup("json") == nil {
			t.Errorf("jetsaga %s has no --json", c.Name())
		}
	}
	r := cli(t, nil, "", "version", "--json")
	wantExit(t, r, exitOK)
	var v versionJSON
	decodeJSON(t, r, &v)
	if v.Version == "" || v.Protocol != events.Version || !strings.HasPrefix(v.Go, "go") {
		t.Fatalf("version --json: %+v", v)
	}
}

// TestConnectTimeoutRetries: a refused connection is tried again until
// --connect-timeout: a command started before its NATS server gets it.
func TestConnectTimeoutRetries(t *testing.T) {
	t.Parallel()
	addr := closedPort(t)
	_, portText, _ := strings.Cut(addr, ":")
	port, _ := strconv.Atoi(portText)
	started := make(chan *devenv.NATSServer, 1)
	go func() {
		time.Sleep(500 * time.Millisecond) // the command's first tries are refused
		srv, err := devenv.StartNATS(devenv.NATSOptions{Port: port, StoreDir: t.TempDir()})
		if err != nil {
			t.Errorf("start NATS on %d: %v", port, err)
		}
		started <- srv
	}()
	r := cli(t, nil, "", "list", "--nats-url", "nats://"+addr, "--connect-timeout", "30s")
	if srv := <-started; srv != nil {
		srv.Close()
	}
	// Connected: the server has no jetsaga deployment.
	wantOneLineError(t, r, exitError, "no jetsaga deployment")
	r = cli(t, nil, "", "list", "--nats-url", "nats://"+closedPort(t), "--connect-timeout", "600ms")
	wantOneLineError(t, r, exitError, "connection refused", "tried for 600ms")
}

// TestNATSAuthorizationNamesTheUser: a refused login says who was refused,
// never the password.
func TestNATSAuthorizationNamesTheUser(t *testing.T) {
	t.Parallel()
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, NoLog: true, NoSigs: true,
		Users: []*server.User{{Username: "alice", Password: "right"}}})
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(srv.Shutdown)
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("NATS not ready")
	}
	u := srv.ClientURL()
	r := cli(t, nil, "", "list", "--nats-url", u, "--nats-user", "bob", "--nats-password", "hunter2")
	wantOneLineError(t, r, exitError, "Authorization Violation", `the server refused user "bob"`)
	if strings.Contains(r.stderr, "hunter2") {
		t.Fatalf("password shown: %s", r)
	}
	r = cli(t, nil, "", "list", "--nats-url", u, "--nats-token", "t0ken")
	wantOneLineError(t, r, exitError, "the server refused the token of --nats-token")
	r = cli(t, nil, "", "list", "--nats-url", u)
	wantOneLineError(t, r, exitError, "a connection without credentials")
	r = cli(t, nil, "", "list", "--nats-url", strings.Replace(u, "nats://", "nats://carol:pw@", 1))
	wantOneLineError(t, r, exitError, `user "carol" (from the URL)`)
}

// TestPostgresErrorWithoutTLSNoise: with the default sslmode=prefer on a
// server without TLS, the error is the server's, not pgx's report of the
// refused TLS attempt that came first.
func TestPostgresErrorWithoutTLSNoise(t *testing.T) {
	t.Parallel()
	u, err := url.Parse(testenv.PostgresURL(t))
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Del("sslmode")
	u.RawQuery = q.Encode()
	u.Path = "/no_such_database"
	r := cli(t, nil, "", "migrate", "--database-url", u.String())
	wantOneLineError(t, r, exitError, "cannot connect to PostgreSQL at", `database "no_such_database" does not exist`)
	if strings.Contains(r.stderr, "tls error") {
		t.Fatalf("the TLS attempt leads the error: %s", r.stderr)
	}
	// Refused: tried again until --connect-timeout, then reported as such.
	r = cli(t, nil, "", "migrate", "--database-url", "postgres://x@"+closedPort(t)+"/db", "--connect-timeout", "600ms")
	wantOneLineError(t, r, exitError, "connection refused")
}

// TestWatch: watch (and status --follow) prints the saga's messages as they
// come and ends with its final state when it ends, with start --wait's exit
// codes; --json prints one object per line.
func TestWatch(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.coordinator()
	r := f.runIn(shipPlan("w1"), "start", "-f", "-", "--json")
	wantExit(t, r, exitOK)
	var started startedJSON
	decodeJSON(t, r, &started)
	if started.SagaID != "w1" {
		t.Fatalf("start --json: %+v", started)
	}
	w := background(t, nil, "watch", "w1", "--nats-url", f.url)
	js := background(t, nil, "status", "w1", "--follow", "--json", "--nats-url", f.url)
	w.waitOutput("command reserve do Reserve → stock (attempt 1)")
	f.succeed("w1", "reserve", "stock")
	w.waitOutput("outcome reserve do succeeded from stock")
	f.succeed("w1", "send", "post")
	code := w.wait()
	if code != exitOK {
		t.Fatalf("watch: exit %d\n%s", code, w.out.String())
	}
	out := squeeze(w.out.String())
	for _, want := range []string{"saga w1 (ship), started", "status running", "outcome send do succeeded from post", "status committed"} {
		if !strings.Contains(out, want) {
			t.Fatalf("watch output lacks %q:\n%s", want, out)
		}
	}
	if code := js.wait(); code != exitOK {
		t.Fatalf("status --follow --json: exit %d", code)
	}
	var kinds []string
	var last followEvent
	for _, line := range strings.Split(strings.TrimSpace(js.out.String()), "\n") {
		var ev followEvent
		dec := json.NewDecoder(strings.NewReader(line))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&ev); err != nil {
			t.Fatalf("not a JSON line: %q: %v", line, err)
		}
		kinds = append(kinds, ev.Type)
		last = ev
	}
	if last.Type != "state" || last.State.Status != orchestrator.Committed || !strings.Contains(strings.Join(kinds, " "), "message") {
		t.Fatalf("status --follow --json: %v, last %+v", kinds, last)
	}
	// A compensated saga exits 3.
	wantExit(t, f.runIn(shipPlan("w2"), "start", "-f", "-"), exitOK)
	w = background(t, nil, "watch", "w2", "--nats-url", f.url)
	f.answer("w2", "reserve", "stock", events.Failed)
	if code := w.wait(); code != exitCompensated {
		t.Fatalf("watch of a compensated saga: exit %d\n%s", code, w.out.String())
	}
}

// TestInterruptExits130: Ctrl-C while start --wait or watch waits exits 130
// with one line saying what was left.
func TestInterruptExits130(t *testing.T) {
	t.Parallel()
	f := newFixture(t) // no coordinator: the saga never moves
	plan := filepath.Join(t.TempDir(), "plan.json")
	if err := os.WriteFile(plan, []byte(shipPlan("i1")), 0o600); err != nil {
		t.Fatal(err)
	}
	start := background(t, nil, "start", "-f", plan, "--wait", "--progress", "--nats-url", f.url)
	start.waitOutput("i1")
	watch := background(t, nil, "watch", "i1", "--nats-url", f.url)
	watch.waitOutput("start ship (2 steps)")
	for name, b := range map[string]*bg{"start --wait": start, "watch": watch} {
		code := b.interrupt()
		if code != exitInterrupted {
			t.Fatalf("%s: exit %d after the interrupt, want 130\n%s\n%s", name, code, b.out.String(), b.errOut.String())
		}
		lines := strings.Split(strings.TrimSpace(b.errOut.String()), "\n")
		if last := lines[len(lines)-1]; !strings.HasPrefix(last, "jetsaga: stopped ") || !strings.Contains(last, "i1") {
			t.Fatalf("%s: last line %q", name, last)
		}
	}
}

// TestStartWaitProgress: start --wait --progress shows each step as it
// moves, on standard error, and the final state on standard output.
func TestStartWaitProgress(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.coordinator()
	plan := filepath.Join(t.TempDir(), "plan.json")
	if err := os.WriteFile(plan, []byte(shipPlan("p1")), 0o600); err != nil {
		t.Fatal(err)
	}
	b := background(t, nil, "start", "-f", plan, "--wait", "--progress", "--nats-url", f.url)
	b.waitOutput("reserve: running")
	f.succeed("p1", "reserve", "stock")
	b.waitOutput("reserve: succeeded")
	f.succeed("p1", "send", "post")
	if code := b.wait(); code != exitOK {
		t.Fatalf("exit %d\n%s", code, b.errOut.String())
	}
	progress := squeeze(b.errOut.String())
	for _, want := range []string{"reserve: running", "reserve: succeeded", "send: succeeded"} {
		if !strings.Contains(progress, want) {
			t.Fatalf("progress lacks %q:\n%s", want, progress)
		}
	}
	if !strings.Contains(b.out.String(), "committed") {
		t.Fatalf("no final state on stdout:\n%s", b.out.String())
	}
	// Without a terminal and without --progress: no progress.
	wantExit(t, f.runIn(shipPlan("p2"), "start", "-f", "-"), exitOK)
	r := cli(t, nil, "", "start", "-f", plan, "--wait", "--wait-timeout", "300ms", "--nats-url", f.url)
	if strings.Contains(r.stderr, "reserve") && !strings.Contains(r.stderr, "stopped waiting") {
		t.Fatalf("progress without a terminal: %s", r)
	}
}

// TestConsoleCommand: `jetsaga console` serves the console on loopback
// without login, with a token when asked, and stops on Ctrl-C with exit 0.
func TestConsoleCommand(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.coordinator()
	wantExit(t, f.runIn(shipPlan("c1"), "start", "-f", "-"), exitOK)
	b := background(t, nil, "console", "--listen", "127.0.0.1:0", "--json", "--nats-url", f.url)
	b.waitOutput(`"url"`)
	var info consoleJSON
	if err := json.Unmarshal([]byte(strings.TrimSpace(b.out.String())), &info); err != nil || info.Auth != "none" {
		t.Fatalf("console --json: %q %v", b.out.String(), err)
	}
	body := httpGet(t, info.URL+"sagas/c1", http.StatusOK)
	if !strings.Contains(body, `id="saga-id">c1<`) {
		t.Fatalf("saga page:\n%s", body)
	}
	b.stop()

	b = background(t, nil, "console", "--listen", "127.0.0.1:0", "--read-only", "--nats-url", f.url,
		"--token", "tok3n")
	b.waitOutput("jetsaga console (read-only): http://")
	u := strings.TrimSpace(strings.TrimPrefix(b.out.String(), "jetsaga console (read-only): "))
	base, _, _ := strings.Cut(u, "?")
	httpGet(t, base, http.StatusUnauthorized)
	if body := httpGet(t, u, http.StatusOK); !strings.Contains(body, "read-only") {
		t.Fatalf("overview with the token:\n%s", body)
	}
	b.stop()
}

func httpGet(t *testing.T, u string, code int) string {
	t.Helper()
	jar := &cookieJar{}
	c := &http.Client{Timeout: waitTotal, Jar: jar}
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != code {
		t.Fatalf("GET %s: %d, want %d\n%s", u, resp.StatusCode, code, body)
	}
	return string(body)
}

// cookieJar keeps every cookie for every URL (one server).
type cookieJar struct{ cookies []*http.Cookie }

func (j *cookieJar) SetCookies(_ *url.URL, cs []*http.Cookie) { j.cookies = append(j.cookies, cs...) }
func (j *cookieJar) Cookies(*url.URL) []*http.Cookie          { return j.cookies }

// wait waits for the command to exit on its own and returns its code.
func (b *bg) wait() int {
	b.t.Helper()
	select {
	case b.code = <-b.done:
		b.stopped = true
		return b.code
	case <-time.After(waitTotal):
		b.t.Fatalf("the command did not end:\n%s\n%s", b.out.String(), b.errOut.String())
	}
	return 0
}

// interrupt cancels the command as Ctrl-C would and returns its code.
func (b *bg) interrupt() int {
	b.t.Helper()
	b.cancel()
	return b.wait()
}

// TestBenchInterrupted: SIGINT or SIGTERM stops a bench cleanly — the sagas
// in flight finish, a partial report is printed, exit 130 — and leaves
// nothing in its temporary directory (JetStream store, PostgreSQL
// cluster); with its standard output's reader gone (| head) the process is
// not killed by SIGPIPE and cleans up the same.
func TestBenchInterrupted(t *testing.T) {
	t.Parallel()
	bin := buildBinary(t)
	for _, tc := range []struct {
		name       string
		sig        syscall.Signal
		closedPipe bool
	}{{"SIGINT", syscall.SIGINT, false}, {"SIGTERM into a closed pipe", syscall.SIGTERM, true}} {
		tmp := filepath.Join(t.TempDir(), "tmp")
		if err := os.MkdirAll(tmp, 0o777); err != nil {
			t.Fatal(err)
		}
		for d := tmp; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
			_ = os.Chmod(d, 0o777) // the throwaway cluster runs as postgres when we are root
		}
		cmd := exec.Command(bin, "bench", "--duration", "10m", "--concurrency", "4", "--accounts", "20", "--ceiling-duration", "0")
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "TMPDIR=" + tmp}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		stderr, err := cmd.StderrPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var out strings.Builder
		outDone := make(chan struct{})
		go func() {
			defer close(outDone)
			if tc.closedPipe {
				_ = stdout.Close() // as head does once it has read its lines
				return
			}
			_, _ = io.Copy(&out, stdout)
		}()
		lines := make(chan string, 1024)
		var errLog strings.Builder
		go func() {
			defer close(lines)
			sc := bufio.NewScanner(stderr)
			for sc.Scan() {
				lines <- sc.Text()
			}
		}()
		running := regexp.MustCompile(`\s[1-9]\d* sagas\s`)
		timeout := time.After(2 * time.Minute)
	load:
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("%s: bench ended before its load:\n%s", tc.name, errLog.String())
				}
				errLog.WriteString(l + "\n")
				if running.MatchString(l) {
					break load
				}
			case <-timeout:
				_ = cmd.Process.Kill()
				t.Fatalf("%s: no progress within 2 minutes:\n%s", tc.name, errLog.String())
			}
		}
		if err := cmd.Process.Signal(tc.sig); err != nil {
			t.Fatal(err)
		}
		for l := range lines {
			errLog.WriteString(l + "\n")
		}
		<-outDone
		err = cmd.Wait()
		code := cmd.ProcessState.ExitCode()
		if code != exitInterrupted {
			t.Fatalf("%s: %v (exit %d), want exit 130\n%s", tc.name, err, code, errLog.String())
		}
		if !strings.Contains(errLog.String(), "finishing the sagas in flight") || !strings.Contains(errLog.String(), "bench interrupted: the report covers") {
			t.Fatalf("%s: stderr:\n%s", tc.name, errLog.String())
		}
		if !tc.closedPipe && (!strings.Contains(out.String(), "completed") || !strings.Contains(out.String(), "invariants")) {
			t.Fatalf("%s: no partial report:\n%s", tc.name, out.String())
		}
		left, _ := os.ReadDir(tmp)
		if len(left) != 0 {
			var names []string
			for _, e := range left {
				names = append(names, e.Name())
			}
			t.Fatalf("%s: left behind in TMPDIR: %v", tc.name, names)
		}
	}
}
