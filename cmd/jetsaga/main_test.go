package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetsaga/jetsaga/devenv"
	"github.com/jetsaga/jetsaga/events"
	"github.com/jetsaga/jetsaga/internal/testenv"
	"github.com/jetsaga/jetsaga/orchestrator"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// Generous bounds for eventual conditions; never asserted as performance.
const (
	waitTotal = 30 * time.Second
	waitStep  = 10 * time.Millisecond
)

// result is what one in-process run of the CLI produced.
type result struct {
	code           int
	stdout, stderr string
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\n--- stdout\n%s--- stderr\n%s", r.code, r.stdout, r.stderr)
}

// cli runs the CLI in-process with an empty environment (plus env) and
// stdin.
func cli(t *testing.T, env map[string]string, stdin string, args ...string) result {
	t.Helper()
	return cliContext(t.Context(), env, stdin, args...)
}

func cliContext(ctx context.Context, env map[string]string, stdin string, args ...string) result {
	var out, errb testenv.SyncBuffer
	a := &app{stdin: strings.NewReader(stdin), stdout: &out, stderr: &errb,
		getenv: func(k string) string { return env[k] }}
	code := a.run(ctx, args)
	return result{code: code, stdout: out.String(), stderr: errb.String()}
}

// wantExit fails the test unless r exited with code.
func wantExit(t *testing.T, r result, code int) {
	t.Helper()
	if r.code != code {
		t.Fatalf("want exit %d, got %s", code, r)
	}
}

// wantOneLineError checks that r failed with exactly one line on stderr
// that contains every part.
func wantOneLineError(t *testing.T, r result, code int, parts ...string) {
	t.Helper()
	wantExit(t, r, code)
	lines := strings.Split(strings.TrimRight(r.stderr, "\n"), "\n")
	if len(lines) != 1 || !strings.HasPrefix(lines[0], "jetsaga: ") {
		t.Fatalf("want one error line on stderr, got %s", r)
	}
	for _, p := range parts {
		if !strings.Contains(lines[0], p) {
			t.Fatalf("error line %q does not contain %q", lines[0], p)
		}
	}
}

// closedPort returns a local TCP address nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// fixture is a jetsaga deployment on an embedded NATS server: streams and
// bucket created, optionally a coordinator running in-process.
type fixture struct {
	t   *testing.T
	srv *devenv.NATSServer
	url string
	nc  *nats.Conn
	js  jetstream.JetStream
	ns  events.Namespace
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	srv := testenv.NATS(t)
	nc, js := testenv.Connect(t, srv.URL())
	f := &fixture{t: t, srv: srv, url: srv.URL(), nc: nc, js: js, ns: events.Default()}
	if err := orchestrator.EnsureStreams(t.Context(), js, f.ns, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	return f
}

// run runs the CLI against the fixture's server.
func (f *fixture) run(args ...string) result {
	f.t.Helper()
	return cli(f.t, nil, "", append(args, "--nats-url", f.url)...)
}

// runIn is run with standard input.
func (f *fixture) runIn(stdin string, args ...string) result {
	f.t.Helper()
	return cli(f.t, nil, stdin, append(args, "--nats-url", f.url)...)
}

// coordinator runs an in-process coordinator until the test ends.
func (f *fixture) coordinator() {
	f.t.Helper()
	c, err := orchestrator.NewCoordinator(orchestrator.Config{JetStream: f.js, Namespace: f.ns, Workers: 4,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		f.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	f.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			f.t.Errorf("coordinator: %v", err)
		}
	})
}

// outcome publishes a participant's outcome directly, as a participant's
// relay would.
func (f *fixture) outcome(o events.Outcome) {
	f.t.Helper()
	o.V = events.Version
	data, err := o.Encode()
	if err != nil {
		f.t.Fatal(err)
	}
	m := nats.NewMsg(f.ns.Event(o.Participant, o.SagaID))
	m.Data = data
	m.Header.Set(events.HeaderMsgID, events.OutcomeMsgID(&o, 0))
	if _, err := f.js.PublishMsg(f.t.Context(), m); err != nil {
		f.t.Fatal(err)
	}
}

// waitStatus waits until the saga has status.
func (f *fixture) waitStatus(id string, status orchestrator.Status) *orchestrator.State {
	f.t.Helper()
	client := orchestrator.NewClient(f.js, f.ns)
	defer client.Close()
	var st *orchestrator.State
	testenv.CheckFor(f.t, waitTotal, waitStep, func() error {
		var err error
		st, err = client.Get(f.t.Context(), id)
		if err != nil {
			return err
		}
		if st.Status != status {
			return fmt.Errorf("saga %s is %s, want %s", id, st.Status, status)
		}
		return nil
	})
	return st
}

// decodeJSON decodes r's stdout into v.
func decodeJSON(t *testing.T, r result, v any) {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(r.stdout))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("stdout is not the expected JSON: %v\n%s", err, r)
	}
	if _, err := dec.Token(); err != io.EOF {
		t.Fatalf("trailing output after the JSON document\n%s", r)
	}
}

// bg is a long-running command (a service) run in-process.
type bg struct {
	t           *testing.T
	cancel      context.CancelFunc
	out, errOut testenv.SyncBuffer
	done        chan int
	code        int
	stopped     bool
}

// background runs the CLI in-process until stop (or the test's end).
func background(t *testing.T, env map[string]string, args ...string) *bg {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	b := &bg{t: t, cancel: cancel, done: make(chan int, 1)}
	go func() {
		a := &app{stdin: strings.NewReader(""), stdout: &b.out, stderr: &b.errOut, getenv: func(k string) string { return env[k] }}
		b.done <- a.run(ctx, args)
	}()
	t.Cleanup(func() {
		if !b.stopped {
			cancel()
			<-b.done
		}
	})
	return b
}

// waitOutput waits until stdout or stderr contains s.
func (b *bg) waitOutput(s string) {
	b.t.Helper()
	testenv.CheckFor(b.t, waitTotal, waitStep, func() error {
		select {
		case code := <-b.done:
			b.stopped = true
			b.t.Fatalf("exited with %d before printing %q:\n%s\n%s", code, s, b.out.String(), b.errOut.String())
		default:
		}
		if strings.Contains(b.out.String(), s) || strings.Contains(b.errOut.String(), s) {
			return nil
		}
		return fmt.Errorf("no %q yet", s)
	})
}

// stop interrupts the command and checks that it exits 0.
func (b *bg) stop() {
	b.t.Helper()
	b.cancel()
	b.stopped = true
	select {
	case b.code = <-b.done:
	case <-time.After(waitTotal):
		b.t.Fatal("the command did not stop")
	}
	if b.code != exitOK {
		b.t.Fatalf("exit %d after the interrupt:\n%s\n%s", b.code, b.out.String(), b.errOut.String())
	}
}
