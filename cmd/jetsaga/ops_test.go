package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jetsaga/jetsaga/events"
	"github.com/jetsaga/jetsaga/internal/testenv"
	"github.com/jetsaga/jetsaga/orchestrator"
)

// shipPlan is a two-step plan whose outcomes the tests publish by hand: a
// compensable step on "stock", then a retriable step on "post".
func shipPlan(id string) string {
	idField := ""
	if id != "" {
		idField = fmt.Sprintf(`"saga_id": %q,`, id)
	}
	return `{` + idField + `"name": "ship", "input": {"order": 7}, "steps": [
	  {"name": "reserve", "participant": "stock", "action": "Reserve", "compensation": "Release", "payload": {"sku": "a"}},
	  {"name": "send", "participant": "post", "action": "Send", "kind": "retriable"}]}`
}

// squeeze collapses runs of blanks, so that tests can look for table rows
// whatever the column widths.
func squeeze(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = strings.Join(strings.Fields(l), " ")
	}
	return strings.Join(lines, "\n")
}

// succeed publishes a succeeded outcome for the step's current attempt.
func (f *fixture) succeed(id, step, participant string) {
	f.t.Helper()
	f.answer(id, step, participant, events.Succeeded)
}

// answer publishes an outcome with status for the current attempt of an
// action in flight.
func (f *fixture) answer(id, step, participant string, status events.Status) {
	f.t.Helper()
	client := orchestrator.NewClient(f.js, f.ns)
	defer client.Close()
	attempt := 0
	testenv.CheckFor(f.t, waitTotal, waitStep, func() error {
		st, err := client.Get(f.t.Context(), id)
		if err != nil {
			return err
		}
		for _, s := range st.Steps {
			if s.Name == step && s.Status == orchestrator.StepRunning {
				attempt = s.Attempt
				return nil
			}
		}
		return fmt.Errorf("step %s of %s is not running: %+v", step, id, st.Steps)
	})
	// Answer only once the command is out, as a participant would.
	stream, err := f.js.Stream(f.t.Context(), f.ns.CommandsStream())
	if err != nil {
		f.t.Fatal(err)
	}
	testenv.CheckFor(f.t, waitTotal, waitStep, func() error {
		m, err := stream.GetLastMsgForSubject(f.t.Context(), f.ns.Command(participant, id))
		if err != nil {
			return err
		}
		cmd, err := events.DecodeCommand(m.Data)
		if err != nil {
			return err
		}
		if cmd.Step != step || cmd.Attempt != attempt {
			return fmt.Errorf("last command to %s is %s/%d, want %s/%d", participant, cmd.Step, cmd.Attempt, step, attempt)
		}
		return nil
	})
	o := events.Outcome{SagaID: id, Participant: participant, Step: step, Op: events.OpDo, Attempt: attempt, Status: status}
	if status != events.Succeeded {
		o.Reason = "test says " + string(status)
	}
	f.outcome(o)
}

// TestUnreachableNATS: every command that talks to NATS fails fast with one
// line naming the address it tried.
func TestUnreachableNATS(t *testing.T) {
	t.Parallel()
	plan := filepath.Join(t.TempDir(), "plan.json")
	if err := os.WriteFile(plan, []byte(shipPlan("")), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"status", "s1"}, {"list"}, {"start", "-f", plan}, {"redrive", "s1"},
		{"skip", "s1", "--step", "a", "--note", "n"}, {"resolve", "s1", "--note", "n"},
		{"replay"}, {"coordinator"},
	} {
		t.Run(args[0], func(t *testing.T) {
			t.Parallel()
			url := "nats://" + closedPort(t)
			r := cli(t, nil, "", append(args, "--nats-url", url)...)
			wantOneLineError(t, r, exitError, "cannot connect to NATS at "+url+": ", "connection refused")
		})
	}
	// The password of a URL is never shown.
	url := "nats://bob:hunter2@" + closedPort(t)
	r := cli(t, nil, "", "list", "--nats-url", url)
	wantOneLineError(t, r, exitError, "nats://bob:xxxxx@")
	if strings.Contains(r.stderr, "hunter2") {
		t.Fatalf("password shown: %s", r)
	}
}

// TestCredentialFiles: a credentials, NKey or CA file that cannot be read
// is named in the error.
func TestCredentialFiles(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	missing := filepath.Join(t.TempDir(), "missing")
	for _, flag := range []string{"--nats-creds", "--nats-nkey", "--tls-ca"} {
		wantOneLineError(t, f.run("list", flag, missing), exitError, missing, "no such file")
	}
}

// TestNoDeployment: a server without jetsaga's streams (or a wrong prefix)
// is reported as such.
func TestNoDeployment(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	r := f.run("list", "--prefix", "other")
	wantOneLineError(t, r, exitError, `no jetsaga deployment with prefix "other"`, "SAGAS_OTHER", "--prefix")
}

// TestStartInvalidPlan: a plan that does not validate is refused before
// anything is published, with the field named.
func TestStartInvalidPlan(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	for _, tc := range []struct {
		name, plan string
		want       []string
	}{
		{"not json", `{"name": `, []string{"invalid plan (standard input)", "line 1, column 9", "ends too early"}},
		{"array", `[1]`, []string{"a plan is a JSON object, got an array"}},
		{"no name", `{"steps": [{"name": "a", "participant": "p", "action": "A", "compensation": "U"}]}`, []string{"name: ", "must not be empty"}},
		{"no steps", `{"name": "x"}`, []string{"steps: ", "at least one step"}},
		{"missing compensation", `{"name": "x", "steps": [{"name": "a", "participant": "p", "action": "A"}]}`,
			[]string{"steps[0].compensation: missing"}},
		{"bad participant", `{"name": "x", "steps": [{"name": "a", "participant": "p.q", "action": "A", "compensation": "U"}]}`,
			[]string{"steps[0].participant", "'.'"}},
		{"unknown dependency", `{"name": "x", "steps": [{"name": "a", "participant": "p", "action": "A", "compensation": "U", "after": ["zz"]}]}`,
			[]string{"steps[0].after[0]"}},
		{"unknown field", `{"name": "x", "colour": "red", "steps": [{"name": "a", "participant": "p", "action": "A", "compensation": "U"}]}`,
			[]string{`unknown field "colour"`}},
		{"bad saga id", `{"saga_id": "a b", "name": "x", "steps": [{"name": "a", "participant": "p", "action": "A", "compensation": "U"}]}`,
			[]string{"saga_id", "' '"}},
		{"compensable after pivot", `{"name": "x", "steps": [{"name": "a", "participant": "p", "action": "A", "kind": "pivot"},
			{"name": "b", "participant": "p", "action": "B", "compensation": "U"}]}`, []string{"steps[0].after", "compensable step"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := f.runIn(tc.plan, "start", "-f", "-")
			wantOneLineError(t, r, exitError, tc.want...)
		})
	}
	r := f.run("start", "-f", filepath.Join(t.TempDir(), "missing.json"))
	wantOneLineError(t, r, exitUsage, "read plan", "missing.json", "no such file")
	r = f.runIn("  \n", "start", "-f", "-")
	wantOneLineError(t, r, exitError, "empty")
	// Nothing was published.
	info, err := f.js.Stream(t.Context(), f.ns.SagasStream())
	if err != nil {
		t.Fatal(err)
	}
	if n := info.CachedInfo().State.Msgs; n != 0 {
		t.Fatalf("invalid plans published %d messages", n)
	}
}

// TestStartStatusList: start from a file and from stdin (with and without
// a saga id), status and list in text and JSON, unknown ids.
func TestStartStatusList(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.coordinator()
	file := filepath.Join(t.TempDir(), "plan.json")
	if err := os.WriteFile(file, []byte(shipPlan("order-7")), 0o600); err != nil {
		t.Fatal(err)
	}
	r := f.run("start", "-f", file)
	wantExit(t, r, exitOK)
	if r.stdout != "order-7\n" {
		t.Fatalf("start printed %q, want the saga id", r.stdout)
	}
	// The same plan again starts nothing new; a different one is refused.
	wantExit(t, f.run("start", "-f", file), exitOK)
	r = f.runIn(strings.Replace(shipPlan("order-7"), `"sku": "a"`, `"sku": "b"`, 1), "start", "-f", "-")
	wantOneLineError(t, r, exitError, "saga order-7 was already started with a different plan")

	// Without a saga id, a UUIDv7 is generated.
	r = f.runIn(shipPlan(""), "start", "-f", "-")
	wantExit(t, r, exitOK)
	gen := strings.TrimSpace(r.stdout)
	if len(gen) != 36 || gen[14] != '7' {
		t.Fatalf("generated id %q is not a UUIDv7", gen)
	}

	f.succeed("order-7", "reserve", "stock")
	f.succeed("order-7", "send", "post")
	f.waitStatus("order-7", orchestrator.Committed)
	f.answer(gen, "reserve", "stock", events.Failed)
	f.waitStatus(gen, orchestrator.Compensated)

	// status, text.
	r = f.run("status", "order-7")
	wantExit(t, r, exitOK)
	for _, want := range []string{"saga order-7", "status committed", "STEP PARTICIPANT ACTION STATUS OP ATTEMPT RESULT REASON",
		"reserve stock Reserve succeeded do 1", "send post Send succeeded do 1", "timeline",
		"start ship (2 steps)", "command reserve do Reserve → stock (attempt 1)", "outcome send do succeeded from post (attempt 1)"} {
		if !strings.Contains(squeeze(r.stdout), want) {
			t.Errorf("status output lacks %q:\n%s", want, r.stdout)
		}
	}
	// status --json parses back, with the timeline.
	var sj statusJSON
	decodeJSON(t, f.run("status", "order-7", "--json"), &sj)
	if sj.State.SagaID != "order-7" || sj.State.Status != orchestrator.Committed || len(sj.State.Steps) != 2 {
		t.Fatalf("status --json state: %+v", sj.State)
	}
	if n := len(sj.Timeline); n != 5 { // start, 2 commands, 2 outcomes
		t.Fatalf("timeline has %d entries, want 5: %+v", n, sj.Timeline)
	}
	r = f.run("status", gen)
	if wantExit(t, r, exitOK); !strings.Contains(squeeze(r.stdout), "status compensated") || !strings.Contains(squeeze(r.stdout), `reason step "reserve" failed: test says failed`) {
		t.Fatalf("compensated saga's status:\n%s", r.stdout)
	}

	// Unknown and invalid ids.
	wantOneLineError(t, f.run("status", "nope"), exitError, "saga nope not found")
	wantOneLineError(t, f.run("status", "a.b"), exitError, `saga id "a.b"`)

	// list, text and JSON, filtered and limited.
	r = f.run("list")
	wantExit(t, r, exitOK)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "SAGA ID") {
		t.Fatalf("list: want a header and 2 sagas:\n%s", r.stdout)
	}
	if !strings.HasPrefix(lines[1], gen) || !strings.HasPrefix(lines[2], "order-7") {
		t.Fatalf("list is not newest first:\n%s", r.stdout)
	}
	if col := strings.Index(lines[0], "STATUS"); lines[1][col:col+len("compensated")] != "compensated" || lines[2][col:col+len("committed")] != "committed" {
		t.Fatalf("list columns are not aligned:\n%s", r.stdout)
	}
	var states []*orchestrator.State
	decodeJSON(t, f.run("list", "--json", "--status", "committed"), &states)
	if len(states) != 1 || states[0].SagaID != "order-7" {
		t.Fatalf("list --status committed --json: %+v", states)
	}
	states = nil
	decodeJSON(t, f.run("list", "--json", "--limit", "1"), &states)
	if len(states) != 1 || states[0].SagaID != gen {
		t.Fatalf("list --limit 1 --json: %+v", states)
	}
	states = nil
	decodeJSON(t, f.run("list", "--json", "--status", "parked"), &states)
	if states == nil || len(states) != 0 {
		t.Fatalf("list --status parked --json: want [], got %+v", states)
	}
	r = f.run("list", "--status", "parked")
	if wantExit(t, r, exitOK); r.stdout != "no sagas\n" {
		t.Fatalf("empty list: %q", r.stdout)
	}
}

// TestOperatorActions: redrive, skip and resolve act on parked sagas only.
func TestOperatorActions(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.coordinator()
	park := func(id string) {
		t.Helper()
		wantExit(t, f.runIn(shipPlan(id), "start", "-f", "-"), exitOK)
		f.succeed(id, "reserve", "stock")
		f.answer(id, "send", "post", events.Exhausted)
		st := f.waitStatus(id, orchestrator.Parked)
		if !st.Steps[1].Stuck {
			t.Fatalf("step send of %s is not stuck: %+v", id, st.Steps)
		}
	}
	park("p1")
	park("p2")
	park("p3")
	var parked []*orchestrator.State
	decodeJSON(t, f.run("list", "--status", "parked", "--json"), &parked)
	if len(parked) != 3 {
		t.Fatalf("want 3 parked sagas, got %d", len(parked))
	}
	r := f.run("status", "p1")
	if !strings.Contains(squeeze(r.stdout), "status parked (was running)") || !strings.Contains(squeeze(r.stdout), "send post Send unknown (stuck) do 1") {
		t.Fatalf("parked saga's status:\n%s", r)
	}

	// redrive: the step is sent again (attempt 2) and the saga goes on.
	r = f.run("redrive", "p1")
	if wantExit(t, r, exitOK); !strings.Contains(r.stdout, "redrive of saga p1 sent") {
		t.Fatalf("redrive: %s", r)
	}
	f.succeed("p1", "send", "post")
	st := f.waitStatus("p1", orchestrator.Committed)
	if st.Steps[1].Attempt != 2 {
		t.Fatalf("redriven step has attempt %d, want 2", st.Steps[1].Attempt)
	}
	wantOneLineError(t, f.run("redrive", "p1"), exitError, "saga is not parked", "p1 is committed")
	wantOneLineError(t, f.run("redrive", "ghost"), exitError, "saga ghost not found")

	// skip: only the stuck step, with a note.
	wantOneLineError(t, f.run("skip", "p2", "--step", "nope", "--note", "n"), exitUsage, `no step "nope"`)
	wantOneLineError(t, f.run("skip", "p2", "--step", "reserve", "--note", "n"), exitUsage, `step "reserve" did not park saga p2`, "stuck: send")
	wantExit(t, f.run("skip", "p2", "--step", "send", "--note", "shipped by hand"), exitOK)
	st = f.waitStatus("p2", orchestrator.Committed)
	if st.Steps[1].Status != orchestrator.StepSkipped || !strings.Contains(st.Steps[1].Reason, "shipped by hand") {
		t.Fatalf("skipped step: %+v", st.Steps[1])
	}

	// resolve: ends the saga with the note.
	wantExit(t, f.run("resolve", "p3", "--note", "refunded by phone"), exitOK)
	st = f.waitStatus("p3", orchestrator.Committed)
	if st.Resolution != "refunded by phone" {
		t.Fatalf("resolution %q", st.Resolution)
	}
	wantOneLineError(t, f.run("resolve", "p3", "--note", "again"), exitError, "not parked")

	// The operator actions are in the timeline.
	var sj statusJSON
	decodeJSON(t, f.run("status", "p3", "--json"), &sj)
	found := false
	for _, e := range sj.Timeline {
		found = found || (e.Kind == events.KindControl && strings.Contains(e.Summary, "operator resolve: refunded by phone"))
	}
	if !found {
		t.Fatalf("timeline lacks the resolve: %+v", sj.Timeline)
	}
}

// TestReplay: replay rebuilds every saga into the scratch bucket and finds
// no difference with the live one; the live bucket needs --force; a damaged
// live state is found and repaired.
func TestReplay(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.coordinator()
	for i := range 3 {
		id := fmt.Sprintf("r%d", i)
		wantExit(t, f.runIn(shipPlan(id), "start", "-f", "-"), exitOK)
		f.succeed(id, "reserve", "stock")
		if i == 2 {
			f.answer(id, "send", "post", events.Exhausted)
			f.waitStatus(id, orchestrator.Parked)
			continue
		}
		f.succeed(id, "send", "post")
		f.waitStatus(id, orchestrator.Committed)
	}
	// A saga whose first step has not answered: its live state is its start.
	wantExit(t, f.runIn(shipPlan("r3"), "start", "-f", "-"), exitOK)
	stream, err := f.js.Stream(t.Context(), f.ns.CommandsStream())
	if err != nil {
		t.Fatal(err)
	}
	testenv.CheckFor(t, waitTotal, waitStep, func() error {
		_, err := stream.GetLastMsgForSubject(t.Context(), f.ns.Command("stock", "r3"))
		return err
	})
	r := f.run("replay", "--compare")
	wantExit(t, r, exitOK)
	want := "rebuilt 4 sagas from stream SAGAS into bucket saga_state_replay\ncompared with the live states in saga_state (4 sagas): 0 differ\n"
	if r.stdout != want {
		t.Fatalf("replay --compare:\n%s\nwant:\n%s", r.stdout, want)
	}
	// Again: the scratch bucket is emptied and rebuilt.
	var out replayJSON
	decodeJSON(t, f.run("replay", "--compare", "--json"), &out)
	if out.Rebuilt != 4 || out.Compared == nil || out.Compared.Differ != 0 || out.Compared.Live != 4 {
		t.Fatalf("replay --json: %+v", out)
	}

	// Damage the live bucket: one state changed, one lost.
	kv, err := f.js.KeyValue(t.Context(), f.ns.StateBucket())
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(t.Context(), "r0")
	if err != nil {
		t.Fatal(err)
	}
	var st map[string]any
	if err := json.Unmarshal(e.Value(), &st); err != nil {
		t.Fatal(err)
	}
	st["status"] = "running"
	bad, _ := json.Marshal(st)
	if _, err := kv.Put(t.Context(), "r0", bad); err != nil {
		t.Fatal(err)
	}
	if err := kv.Delete(t.Context(), "r1"); err != nil {
		t.Fatal(err)
	}
	r = f.run("replay", "--compare")
	wantExit(t, r, exitDiffers)
	// r1's live state is now read from its start message: it differs too.
	for _, w := range []string{"2 differ", "differs:           r0", "differs:           r1"} {
		if !strings.Contains(r.stdout, w) {
			t.Fatalf("replay --compare output lacks %q:\n%s", w, r.stdout)
		}
	}
	// Repair the live bucket (the coordinator is idle: nothing is in flight).
	r = f.run("replay", "--into", "saga_state", "--force")
	wantExit(t, r, exitOK)
	if !strings.Contains(r.stderr, "warning: rewriting the live state bucket saga_state") {
		t.Fatalf("no warning on stderr: %s", r)
	}
	r = f.run("replay", "--compare")
	if wantExit(t, r, exitOK); !strings.Contains(r.stdout, "0 differ") {
		t.Fatalf("after the repair: %s", r)
	}
	// Another existing non-empty bucket needs --force.
	wantExit(t, f.run("replay", "--into", "mine"), exitOK)
	wantOneLineError(t, f.run("replay", "--into", "mine"), exitUsage, "--into mine: the bucket exists and holds 4 values", "--force")
	wantExit(t, f.run("replay", "--into", "mine", "--force"), exitOK)
}
