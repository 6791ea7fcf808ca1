package orchestrator_test

import (
	"bytes"
	"context"
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetsaga/jetsaga/events"
	"github.com/jetsaga/jetsaga/examples/bank"
	"github.com/jetsaga/jetsaga/internal/testenv"
	"github.com/jetsaga/jetsaga/orchestrator"
	"github.com/jetsaga/jetsaga/participants"
)

// The coordinator's part of PROTOCOL.md: saga and step statuses, the
// rejections kept, the state bucket's TTLs, the participants' consumer
// defaults, and the bundled bank accepting the examples' payloads. (events'
// protocol_doc_test.go checks the wire formats.)

// docPart is one section of PROTOCOL.md: its tables and JSON examples.
type docPart struct {
	title  string
	tables [][][]string // each table: the header, then the rows
	json   []string
}

func readProtocolDoc(t *testing.T) []*docPart {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "events", "PROTOCOL.md"))
	if err != nil {
		t.Fatal(err)
	}
	cur := &docPart{}
	parts := []*docPart{cur}
	lines := strings.Split(string(data), "\n")
	for i := 0; i < len(lines); i++ {
		line := lines[i]
		switch {
		case strings.HasPrefix(line, "```"):
			lang := strings.TrimPrefix(line, "```")
			var body []string
			for i++; i < len(lines) && !strings.HasPrefix(lines[i], "```"); i++ {
				body = append(body, lines[i])
			}
			if lang == "json" {
				cur.json = append(cur.json, strings.Join(body, "\n"))
			}
		case strings.HasPrefix(line, "#"):
			cur = &docPart{title: strings.TrimSpace(strings.TrimLeft(line, "#"))}
			parts = append(parts, cur)
		case strings.HasPrefix(line, "|"):
			tb := [][]string{cells(line)}
			for i++; i+1 < len(lines) && strings.HasPrefix(lines[i+1], "|"); {
				i++
				tb = append(tb, cells(lines[i]))
			}
			cur.tables = append(cur.tables, tb)
		}
	}
	return parts
}

// cells splits a table row on its unescaped pipes.
func cells(line string) []string {
	line = strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(line), "|"), "|")
	line = strings.ReplaceAll(line, `\|`, "\x00")
	out := strings.Split(line, "|")
	for i, c := range out {
		out[i] = strings.TrimSpace(strings.ReplaceAll(c, "\x00", "|"))
	}
	return out
}

// docTable returns the rows of the only table of section num whose header
// starts with cols.
func docTable(t *testing.T, parts []*docPart, num string, cols ...string) [][]string {
	t.Helper()
	var found [][][]string
	for _, p := range parts {
		if !strings.HasPrefix(p.title, num+" ") && !strings.HasPrefix(p.title, num+". ") {
			continue
		}
		for _, tb := range p.tables {
			if len(tb[0]) >= len(cols) && slices.Equal(tb[0][:len(cols)], cols) {
				found = append(found, tb)
			}
		}
	}
	if len(found) != 1 {
		t.Fatalf("PROTOCOL.md §%s: want one table with columns %q, found %d", num, cols, len(found))
	}
	return found[0][1:]
}

var codeSpan = regexp.MustCompile("`([^`]+)`")

func code(t *testing.T, cell string) string {
	t.Helper()
	m := codeSpan.FindStringSubmatch(cell)
	if m == nil {
		t.Fatalf("PROTOCOL.md: cell %q has no `code`", cell)
	}
	return m[1]
}

// constsOfType returns the sorted values of this package's string constants
// of type typ, read from its source.
func constsOfType(t *testing.T, typ string) []string {
	t.Helper()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	fset := token.NewFileSet()
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(af, func(n ast.Node) bool {
			vs, ok := n.(*ast.ValueSpec)
			if !ok {
				return true
			}
			if id, ok := vs.Type.(*ast.Ident); !ok || id.Name != typ {
				return true
			}
			for _, v := range vs.Values {
				if lit, ok := v.(*ast.BasicLit); ok && lit.Kind == token.STRING {
					s, _ := strconv.Unquote(lit.Value)
					out = append(out, s)
				}
			}
			return true
		})
	}
	if len(out) == 0 {
		t.Fatalf("no constants of type %s", typ)
	}
	sort.Strings(out)
	return out
}

// TestProtocolDocStatuses checks §9.2's status tables against the Status
// and StepStatus constants and Status.Terminal.
func TestProtocolDocStatuses(t *testing.T) {
	doc := readProtocolDoc(t)
	var sagas []string
	for _, r := range docTable(t, doc, "9.2", "saga status", "terminal") {
		s := orchestrator.Status(code(t, r[0]))
		sagas = append(sagas, string(s))
		if terminal := r[1] == "yes"; terminal != s.Terminal() || (r[1] != "yes" && r[1] != "no") {
			t.Errorf("§9.2: %s documented terminal %q, Terminal() is %v", s, r[1], s.Terminal())
		}
	}
	sort.Strings(sagas)
	if want := constsOfType(t, "Status"); !slices.Equal(sagas, want) {
		t.Errorf("§9.2 documents the saga statuses %q, the Status constants are %q", sagas, want)
	}
	var steps []string
	for _, r := range docTable(t, doc, "9.2", "step status") {
		steps = append(steps, code(t, r[0]))
	}
	sort.Strings(steps)
	if want := constsOfType(t, "StepStatus"); !slices.Equal(steps, want) {
		t.Errorf("§9.2 documents the step statuses %q, the StepStatus constants are %q", steps, want)
	}
}

// TestProtocolDocLimits checks the orchestrator's rows of §2.3.
func TestProtocolDocLimits(t *testing.T) {
	limits := map[string]int{"orchestrator.MaxRejections": orchestrator.MaxRejections}
	for _, r := range docTable(t, readProtocolDoc(t), "2.3", "limit", "value", "Go constant") {
		name := strings.Trim(r[2], "`")
		if !strings.HasPrefix(name, "orchestrator.") {
			continue
		}
		want, ok := limits[name]
		if !ok {
			t.Errorf("§2.3 %s: unknown constant %s", r[0], name)
			continue
		}
		delete(limits, name)
		if got := regexp.MustCompile(`\d+`).FindString(r[1]); got != strconv.Itoa(want) {
			t.Errorf("§2.3 %s: documented %q, %s is %d", r[0], r[1], name, want)
		}
	}
	for name := range limits {
		t.Errorf("§2.3 lacks %s", name)
	}
}

// TestProtocolDocStateBucket checks §3.3's TTL rows against
// FinishedStateTTL and the bucket's stream that EnsureStreams leaves.
func TestProtocolDocStateBucket(t *testing.T) {
	rows := docTable(t, readProtocolDoc(t), "3.3", "setting", "state bucket")
	srv := testenv.NATS(t)
	_, js := testenv.Connect(t, srv.URL())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := orchestrator.EnsureStreams(ctx, js, events.Default(), events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(ctx, events.BucketStream(events.Default().StateBucket()))
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.CachedInfo().Config
	seen := map[string]bool{}
	for _, r := range rows {
		key, value := r[0], r[1]
		if m := codeSpan.FindStringSubmatch(key); m != nil {
			key = m[1]
		}
		seen[key] = true
		switch key {
		case "allow_msg_ttl":
			if got := strconv.FormatBool(cfg.AllowMsgTTL); got != value {
				t.Errorf("§3.3 %s: documented %q, the bucket's stream has %s", r[0], value, got)
			}
		case "subject_delete_marker_ttl":
			if value != "none" || cfg.SubjectDeleteMarkerTTL != 0 {
				t.Errorf("§3.3 %s: documented %q, the bucket's stream has %v", r[0], value, cfg.SubjectDeleteMarkerTTL)
			}
		case "TTL of a finished saga's state":
			_, def, ok := strings.Cut(value, ": ")
			def, ok2 := strings.CutSuffix(def, " by default")
			want := orchestrator.FinishedStateTTL(events.DefaultMaxAge)
			if !ok || !ok2 || parseDocDuration(def) != want {
				t.Errorf("§3.3 %s: documented %q, FinishedStateTTL of the default max age %v is %v", r[0], value, events.DefaultMaxAge, want)
			}
		case "TTL of a running or parked saga's state":
			if value != "none" {
				t.Errorf("§3.3 %s: documented %q, want none", r[0], value)
			}
		}
	}
	for _, key := range []string{"allow_msg_ttl", "subject_delete_marker_ttl", "TTL of a finished saga's state", "TTL of a running or parked saga's state"} {
		if !seen[key] {
			t.Errorf("§3.3 lacks the row %q", key)
		}
	}
}

// parseDocDuration parses "7 days 1 minute"; 0 if it cannot.
func parseDocDuration(s string) time.Duration {
	units := map[string]time.Duration{"day": 24 * time.Hour, "hour": time.Hour, "minute": time.Minute, "second": time.Second}
	f := strings.Fields(s)
	if len(f) == 0 || len(f)%2 != 0 {
		return 0
	}
	var d time.Duration
	for i := 0; i < len(f); i += 2 {
		n, err := strconv.Atoi(f[i])
		u, ok := units[strings.TrimSuffix(f[i+1], "s")]
		if err != nil || !ok {
			return 0
		}
		d += time.Duration(n) * u
	}
	return d
}

// TestProtocolDocParticipantConsumer checks the defaults §3.4 states for a
// participant's consumer against the one a default participant creates.
func TestProtocolDocParticipantConsumer(t *testing.T) {
	srv := testenv.NATS(t)
	_, js := testenv.Connect(t, srv.URL())
	// The pool is never used: ConsumerConfig needs no database.
	pool, err := pgxpool.New(context.Background(), "postgres://jetsaga-protocol-doc.invalid/none")
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	p, err := participants.New(participants.Config{Name: "bank-a", Pool: pool, JetStream: js})
	if err != nil {
		t.Fatal(err)
	}
	cc := p.ConsumerConfig()
	if cc.AckWait != participants.DefaultAckWait || cc.MaxDeliver != -1 || cc.AckPolicy != jetstream.AckExplicitPolicy ||
		cc.DeliverPolicy != jetstream.DeliverAllPolicy {
		t.Fatalf("the participant's consumer is not what this test expects: %+v", cc)
	}
	for _, r := range docTable(t, readProtocolDoc(t), "3.4", "consumer", "stream", "filter", "settings") {
		if !strings.Contains(r[0], "_participant_") {
			continue
		}
		for _, want := range []string{
			"explicit ack, deliver all, max deliver unlimited (-1)",
			"ack wait " + strconv.Itoa(int(cc.AckWait/time.Second)) + " s by default",
			"max ack pending (`max_ack_pending`) 4 × the instance's concurrency by default, " +
				strconv.Itoa(cc.MaxAckPending) + " with the default concurrency of " + strconv.Itoa(participants.DefaultConcurrency),
		} {
			if !strings.Contains(r[3], want) {
				t.Errorf("§3.4 %s: the settings do not say %q: %s", r[0], want, r[3])
			}
		}
		if cc.MaxAckPending != 4*participants.DefaultConcurrency {
			t.Errorf("a default participant's max ack pending is %d, not 4 × its concurrency %d", cc.MaxAckPending, participants.DefaultConcurrency)
		}
		return
	}
	t.Error("§3.4 has no participant consumer row")
}

// TestProtocolDocBankPayloads checks that the bundled bank accepts every
// payload that PROTOCOL.md's examples send to it.
func TestProtocolDocBankPayloads(t *testing.T) {
	actions := map[string]bool{
		bank.TransOut: true, bank.TransIn: true,
		bank.TransOut + participants.CompensationSuffix: true, bank.TransIn + participants.CompensationSuffix: true,
	}
	check := func(where, participant, action string, payload json.RawMessage) {
		if participant != bank.BankA && participant != bank.BankB {
			return
		}
		if !actions[action] {
			t.Errorf("%s: the bank has no action %q", where, action)
		}
		var req bank.TransferReq
		dec := json.NewDecoder(bytes.NewReader(payload))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			t.Errorf("%s: the bank cannot decode payload %s: %v", where, payload, err)
		} else if err := req.Validate(); err != nil {
			t.Errorf("%s: the bank refuses payload %s: %v", where, payload, err)
		}
	}
	checked := 0
	for _, p := range readProtocolDoc(t) {
		for _, text := range p.json {
			switch {
			case strings.HasPrefix(p.title, "6.1 "):
				start, err := events.DecodeStart([]byte(text))
				if err != nil {
					t.Errorf("§6.1 example: %v", err)
					continue
				}
				for _, st := range start.Steps {
					if st.Participant == bank.BankA || st.Participant == bank.BankB {
						checked++
						check("§6.1 step "+st.Name, st.Participant, st.Action, st.Payload)
						check("§6.1 step "+st.Name+" (compensation)", st.Participant, st.Compensation, st.Payload)
					}
				}
			case strings.HasPrefix(p.title, "6.2 "):
				cmd, err := events.DecodeCommand([]byte(text))
				if err != nil {
					t.Errorf("§6.2 example: %v", err)
					continue
				}
				checked++
				check("§6.2 example", cmd.Participant, cmd.Action, cmd.Payload)
			}
		}
	}
	if checked == 0 {
		t.Error("no example of PROTOCOL.md sends anything to the bank")
	}
}
