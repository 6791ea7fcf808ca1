package events

import (
	"os"
	"strings"
	"testing"
)

// TestFramingMatchesHeaderTable builds every message with its constructor and
// checks its headers against PROTOCOL.md §4.2's table (✓ present, "✓ unless
// anonymous" present but for an anonymous rejection, blank absent), its
// Nats-Msg-Id against §4.1, and its subject.
func TestFramingMatchesHeaderTable(t *testing.T) {
	doc, err := os.ReadFile("PROTOCOL.md")
	if err != nil {
		t.Fatal(err)
	}
	sec := string(doc)
	sec = sec[strings.Index(sec, "### 4.2 Jetsaga headers"):]
	sec = sec[:strings.Index(sec, "### 4.3")]
	columns := []string{"start", "command", "outcome", "tick", "control"}
	table := map[string]map[string]string{} // header -> column -> cell
	for _, line := range strings.Split(sec, "\n") {
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		name := strings.Trim(strings.Fields(strings.TrimSpace(cells[0]))[0], "`")
		table[name] = map[string]string{}
		for i, col := range columns {
			table[name][col] = strings.TrimSpace(cells[i+1])
		}
	}
	if len(table) != 5 {
		t.Fatalf("found %d rows in §4.2's table, want 5", len(table))
	}
	ns := Default()
	start := Start{V: Version, SagaID: "s1", Name: "n", Steps: []Step{{Name: "a", Participant: "p", Action: "A", Compensation: "U", After: []string{}}}}
	cmd := Command{V: Version, SagaID: "s1", Participant: "p", Step: "a", Op: OpDo, Attempt: 2, Action: "A", Retry: DefaultRetry()}
	out := Outcome{V: Version, SagaID: "s1", Participant: "p", Step: "a", Op: OpDo, Attempt: 2, Status: Succeeded}
	anon := Outcome{V: Version, SagaID: "s1", Participant: "p", Status: Rejected, Reason: "unreadable"}
	ctl := Control{V: Version, SagaID: "s1", Action: Redrive, ID: "c1"}
	trace := Trace{Parent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
	type built struct {
		column, subject, msgID string
		anonymous              bool
		build                  func() (map[string][]string, string, error)
	}
	for _, b := range []built{
		{"start", ns.Start("s1"), StartMsgID("s1"), false, func() (map[string][]string, string, error) {
			m, err := ns.StartMsg(start, trace)
			return m.Header, m.Subject, err
		}},
		{"command", ns.Command("p", "s1"), CommandMsgID("s1", "a", OpDo, 2), false, func() (map[string][]string, string, error) {
			m, err := ns.CommandMsg(&cmd, trace)
			return m.Header, m.Subject, err
		}},
		{"outcome", ns.Event("p", "s1"), OutcomeMsgID(&out, 7), false, func() (map[string][]string, string, error) {
			m, err := ns.OutcomeMsg(&out, 7, trace)
			return m.Header, m.Subject, err
		}},
		{"outcome", ns.Event("p", "s1"), OutcomeMsgID(&anon, 7), true, func() (map[string][]string, string, error) {
			m, err := ns.OutcomeMsg(&anon, 7, Trace{})
			return m.Header, m.Subject, err
		}},
		{"tick", ns.Tick("s1"), TickMsgID("s1", 1_700_000_000_123, 42), false, func() (map[string][]string, string, error) {
			m, err := ns.TickMsg("s1", 1_700_000_000_123, 42)
			return m.Header, m.Subject, err
		}},
		{"control", ns.Control("s1"), ControlMsgID("s1", "c1"), false, func() (map[string][]string, string, error) {
			m, err := ns.ControlMsg(ctl)
			return m.Header, m.Subject, err
		}},
	} {
		h, subject, err := b.build()
		if err != nil {
			t.Fatalf("%s: %v", b.column, err)
		}
		if subject != b.subject {
			t.Errorf("%s: subject %s, want %s", b.column, subject, b.subject)
		}
		if got := first(h, HeaderMsgID); got != b.msgID {
			t.Errorf("%s: Nats-Msg-Id %q, want %q", b.column, got, b.msgID)
		}
		for name, cells := range table {
			want := strings.HasPrefix(cells[b.column], "✓") && !(b.anonymous && strings.Contains(cells[b.column], "unless anonymous"))
			if got := first(h, name) != ""; got != want {
				t.Errorf("%s (anonymous %v): header %s present %v, §4.2 says %v", b.column, b.anonymous, name, got, want)
			}
		}
		if b.column == "start" || b.column == "command" || (b.column == "outcome" && !b.anonymous) {
			if first(h, HeaderTraceParent) != trace.Parent {
				t.Errorf("%s: traceparent not carried", b.column)
			}
		}
	}
}

func first(h map[string][]string, name string) string {
	if v := h[name]; len(v) > 0 {
		return v[0]
	}
	return ""
}
