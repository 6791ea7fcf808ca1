package events

import (
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The tests below keep PROTOCOL.md true to this package: they parse its
// tables and JSON examples and check them against the subject builders,
// stream configurations, header constants, enums, limits and decoders. A row
// removed, a constant changed or an example that no longer decodes fails
// them. (orchestrator/protocol_doc_test.go checks the coordinator's part:
// saga and step statuses, the state bucket's TTLs, the bank's payloads.)

// protoDoc is PROTOCOL.md cut into sections.
type protoDoc struct{ sections []*docSection }

type docSection struct {
	title  string // the heading without its #s, e.g. "3.1 Subjects"
	tables []docTable
	code   []docCode
}

// docTable is a markdown table: header cells, then rows of cells ("\|"
// unescaped to "|").
type docTable struct {
	header []string
	rows   [][]string
	line   int
}

type docCode struct {
	lang, text string
	line       int
}

func loadProtocolDoc(t *testing.T) *protoDoc {
	t.Helper()
	data, err := os.ReadFile("PROTOCOL.md")
	if err != nil {
		t.Fatal(err)
	}
	return parseProtocolDoc(string(data))
}

func parseProtocolDoc(text string) *protoDoc {
	d := &protoDoc{sections: []*docSection{{title: ""}}}
	cur := d.sections[0]
	lines := strings.Split(text, "\n")
	for i := 0; i < len(lines); i++ {
		line := lines[i]
		switch {
		case strings.HasPrefix(line, "```"):
			c := docCode{lang: strings.TrimSpace(strings.TrimPrefix(line, "```")), line: i + 1}
			var body []string
			for i++; i < len(lines) && !strings.HasPrefix(lines[i], "```"); i++ {
				body = append(body, lines[i])
			}
			c.text = strings.Join(body, "\n")
			cur.code = append(cur.code, c)
		case strings.HasPrefix(line, "#"):
			cur = &docSection{title: strings.TrimSpace(strings.TrimLeft(line, "#"))}
			d.sections = append(d.sections, cur)
		case strings.HasPrefix(line, "|"):
			tb := docTable{header: splitRow(line), line: i + 1}
			i++ // the separator
			for i+1 < len(lines) && strings.HasPrefix(lines[i+1], "|") {
				i++
				tb.rows = append(tb.rows, splitRow(lines[i]))
			}
			cur.tables = append(cur.tables, tb)
		}
	}
	return d
}

// splitRow splits a table row on its unescaped pipes.
func splitRow(line string) []string {
	line = strings.TrimSpace(line)
	line = strings.TrimPrefix(line, "|")
	line = strings.TrimSuffix(line, "|")
	var cells []string
	var cell strings.Builder
	for i := 0; i < len(line); i++ {
		switch {
		case line[i] == '\\' && i+1 < len(line) && line[i+1] == '|':
			cell.WriteByte('|')
			i++
		case line[i] == '|':
			cells = append(cells, strings.TrimSpace(cell.String()))
			cell.Reset()
		default:
			cell.WriteByte(line[i])
		}
	}
	return append(cells, strings.TrimSpace(cell.String()))
}

// section returns the section numbered num ("3.1", or "4" for "4. Headers").
func (d *protoDoc) section(t *testing.T, num string) *docSection {
	t.Helper()
	for _, s := range d.sections {
		if strings.HasPrefix(s.title, num+" ") || strings.HasPrefix(s.title, num+". ") {
			return s
		}
	}
	t.Fatalf("PROTOCOL.md has no section %s", num)
	return nil
}

// table returns the section's tables whose header starts with cols.
func (s *docSection) tablesWith(cols ...string) []docTable {
	var out []docTable
	for _, tb := range s.tables {
		if len(tb.header) >= len(cols) && slices.Equal(tb.header[:len(cols)], cols) {
			out = append(out, tb)
		}
	}
	return out
}

// table returns the only table of the section whose header starts with cols.
func (s *docSection) table(t *testing.T, cols ...string) docTable {
	t.Helper()
	tbs := s.tablesWith(cols...)
	if len(tbs) != 1 {
		t.Fatalf("PROTOCOL.md §%s: want one table with columns %q, found %d", s.title, cols, len(tbs))
	}
	for _, r := range tbs[0].rows {
		if len(r) != len(tbs[0].header) {
			t.Fatalf("PROTOCOL.md line %d (§%s): row %q has %d cells, the header %d", tbs[0].line, s.title, r, len(r), len(tbs[0].header))
		}
	}
	return tbs[0]
}

var backticked = regexp.MustCompile("`([^`]+)`")

// ticks returns the backticked parts of a cell.
func ticks(cell string) []string {
	var out []string
	for _, m := range backticked.FindAllStringSubmatch(cell, -1) {
		out = append(out, m[1])
	}
	return out
}

// tick returns the cell's first backticked part.
func tick(t *testing.T, cell string) string {
	t.Helper()
	tk := ticks(cell)
	if len(tk) == 0 {
		t.Fatalf("PROTOCOL.md: cell %q has no `code`", cell)
	}
	return tk[0]
}

// packageConsts reads this package's source (tests excluded): the value of
// every string constant by name, and the names of the constants of each
// declared type ("" for untyped).
func packageConsts(t *testing.T) (values map[string]string, byType map[string][]string) {
	t.Helper()
	fset := token.NewFileSet()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	values, byType = map[string]string{}, map[string][]string{}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, decl := range af.Decls {
			gd, ok := decl.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, spec := range gd.Specs {
				vs := spec.(*ast.ValueSpec)
				typ := ""
				if id, ok := vs.Type.(*ast.Ident); ok {
					typ = id.Name
				}
				for i, name := range vs.Names {
					byType[typ] = append(byType[typ], name.Name)
					if i < len(vs.Values) {
						if lit, ok := vs.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
							s, err := strconv.Unquote(lit.Value)
							if err != nil {
								t.Fatal(err)
							}
							values[name.Name] = s
						}
					}
				}
			}
		}
	}
	return values, byType
}

// enumValues returns the sorted values of the constants of type typ.
func enumValues(t *testing.T, typ string) []string {
	t.Helper()
	values, byType := packageConsts(t)
	var out []string
	for _, name := range byType[typ] {
		out = append(out, values[name])
	}
	if len(out) == 0 {
		t.Fatalf("no constants of type %s", typ)
	}
	sort.Strings(out)
	return out
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	sort.Strings(s)
	return s
}

// otherPrefix is the second prefix the names are checked with.
const otherPrefix = "ord-1"

// namespaces are the namespaces the tables are checked against: the
// default one and one with otherPrefix.
func namespaces(t *testing.T) []Namespace {
	t.Helper()
	other, err := NewNamespace(otherPrefix)
	if err != nil {
		t.Fatal(err)
	}
	return []Namespace{Default(), other}
}

// fill replaces the placeholders of a documented name.
func fill(pattern string, ns Namespace) string {
	return strings.NewReplacer("<p>", ns.Prefix(), "<P>", strings.ToUpper(ns.Prefix()),
		"<saga>", "s1", "<saga_id>", "s1", "<participant>", "bank-a", "<name>", "bank-a").Replace(pattern)
}

func fillAll(patterns []string, ns Namespace) []string {
	out := make([]string, len(patterns))
	for i, p := range patterns {
		out[i] = fill(p, ns)
	}
	return out
}

// TestProtocolDocNames checks §2.2's names against Namespace.
func TestProtocolDocNames(t *testing.T) {
	sec := loadProtocolDoc(t).section(t, "2.2")
	tb := sec.table(t, "what")
	if got := ticks(tb.header[1]); len(got) != 1 || got[0] != DefaultPrefix {
		t.Errorf("§2.2: the default prefix column says %q, DefaultPrefix is %q", got, DefaultPrefix)
	}
	names := map[string]func(Namespace) string{
		"sagas stream":          Namespace.SagasStream,
		"commands stream":       Namespace.CommandsStream,
		"state bucket":          Namespace.StateBucket,
		"state bucket's stream": func(n Namespace) string { return BucketStream(n.StateBucket()) },
		"coordinator consumer":  Namespace.CoordinatorConsumer,
		"participant consumer":  func(n Namespace) string { return n.ParticipantConsumer("bank-a") },
	}
	seen := map[string]bool{}
	for _, r := range tb.rows {
		what, _, _ := strings.Cut(r[0], " (")
		name, ok := names[what]
		if !ok {
			t.Errorf("§2.2: row %q names nothing this test knows; add it to the test", r[0])
			continue
		}
		seen[what] = true
		for i, ns := range namespaces(t) {
			if got, want := fill(tick(t, r[1+i]), ns), name(ns); got != want {
				t.Errorf("§2.2 %s, prefix %q: documented %q, Namespace gives %q", what, ns.Prefix(), got, want)
			}
		}
	}
	for what := range names {
		if !seen[what] {
			t.Errorf("§2.2 lacks the row %q", what)
		}
	}
}

// limitValues are the limit constants of this package by name. Every Max*
// constant must be here and in §2.3.
var limitValues = map[string]int{
	"MaxTokenLen":     MaxTokenLen,
	"MaxPrefixLen":    MaxPrefixLen,
	"MaxMessageBytes": MaxMessageBytes,
	"MaxPayloadBytes": MaxPayloadBytes,
	"MaxSteps":        MaxSteps,
	"MaxReasonBytes":  MaxReasonBytes,
}

// limitProbes check the limits that no constant holds: nil if value is the
// largest accepted.
var limitProbes = map[string]func(value int) error{
	"`retry.max_attempts`": func(v int) error {
		if err := (RetryPolicy{MaxAttempts: v}).validate("retry"); err != nil {
			return fmt.Errorf("%d rejected: %v", v, err)
		}
		if err := (RetryPolicy{MaxAttempts: v + 1}).validate("retry"); err == nil {
			return fmt.Errorf("%d accepted", v+1)
		}
		if err := (RetryPolicy{MaxAttempts: 0}).validate("retry"); err == nil {
			return fmt.Errorf("0 accepted")
		}
		return nil
	},
}

var number = regexp.MustCompile(`\d[\d,]*`)

// lastNumber is the last number of a cell before any parenthesis: the
// upper bound of "1..128 bytes", 262144 for "262,144 bytes (…)".
func lastNumber(t *testing.T, cell string) int {
	t.Helper()
	cell, _, _ = strings.Cut(cell, "(")
	ns := number.FindAllString(cell, -1)
	if len(ns) == 0 {
		t.Fatalf("PROTOCOL.md: %q holds no number", cell)
	}
	n, err := strconv.Atoi(strings.ReplaceAll(ns[len(ns)-1], ",", ""))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestProtocolDocLimits checks §2.3 against the limit constants, and that
// every Max* constant is documented there.
func TestProtocolDocLimits(t *testing.T) {
	tb := loadProtocolDoc(t).section(t, "2.3").table(t, "limit", "value", "Go constant")
	documented := map[string]bool{}
	for _, r := range tb.rows {
		limit, value := r[0], lastNumber(t, r[1])
		switch c := r[2]; {
		case strings.HasPrefix(c, "`events."):
			name := strings.TrimPrefix(tick(t, c), "events.")
			documented[name] = true
			want, ok := limitValues[name]
			switch {
			case !ok:
				t.Errorf("§2.3 %s: there is no constant events.%s (or add it to limitValues)", limit, name)
			case want != value:
				t.Errorf("§2.3 %s: documented %d, events.%s is %d", limit, value, name, want)
			}
		case strings.HasPrefix(c, "`orchestrator."):
			// Checked by orchestrator's TestProtocolDoc.
		case c == "none":
			probe, ok := limitProbes[limit]
			if !ok {
				t.Errorf("§2.3 %s: no constant and no probe in this test: add one to limitProbes", limit)
				continue
			}
			if err := probe(value); err != nil {
				t.Errorf("§2.3 %s is documented as %d: %v", limit, value, err)
			}
		default:
			t.Errorf("§2.3 %s: Go constant %q is neither `events.…`, `orchestrator.…` nor none", limit, c)
		}
	}
	_, byType := packageConsts(t)
	for _, name := range byType[""] {
		if strings.HasPrefix(name, "Max") && !documented[name] {
			t.Errorf("limit events.%s is not in PROTOCOL.md §2.3", name)
		}
	}
	for name := range limitValues {
		if !documented[name] {
			t.Errorf("limit events.%s is not in PROTOCOL.md §2.3", name)
		}
	}
}

// subjectMatches reports whether subject matches a NATS filter.
func subjectMatches(filter, subject string) bool {
	f, s := strings.Split(filter, "."), strings.Split(subject, ".")
	for i, tk := range f {
		switch {
		case tk == ">":
			return len(s) > i
		case i >= len(s):
			return false
		case tk != "*" && tk != s[i]:
			return false
		}
	}
	return len(f) == len(s)
}

func matchesAny(filters []string, subject string) bool {
	return slices.ContainsFunc(filters, func(f string) bool { return subjectMatches(f, subject) })
}

// TestProtocolDocSubjects checks §3.1's subjects table against Namespace's
// builders and parser, the streams' subjects, the coordinator's filters and
// the participants' filter, and that every Kind has its row.
func TestProtocolDocSubjects(t *testing.T) {
	tb := loadProtocolDoc(t).section(t, "3.1").table(t, "subject", "stream", "body", "published by", "consumed by")
	var kinds []string
	for _, ns := range namespaces(t) {
		build := map[Kind]string{
			KindStart: ns.Start("s1"), KindEvent: ns.Event("bank-a", "s1"), KindTick: ns.Tick("s1"),
			KindControl: ns.Control("s1"), KindSchedule: ns.Schedule("s1"), KindCommand: ns.Command("bank-a", "s1"),
		}
		streams := map[string][]string{
			Default().SagasStream():    ns.SagasStreamConfig(StreamOptions{}).Subjects,
			Default().CommandsStream(): ns.CommandsStreamConfig(StreamOptions{}).Subjects,
		}
		kinds = kinds[:0]
		for _, r := range tb.rows {
			subject := fill(tick(t, r[0]), ns)
			s, err := ns.Parse(subject)
			if err != nil {
				t.Errorf("§3.1 %s: %v", r[0], err)
				continue
			}
			kinds = append(kinds, string(s.Kind))
			if want, ok := build[s.Kind]; !ok || subject != want {
				t.Errorf("§3.1 %s: documented %q, the builder of kind %q gives %q", r[0], subject, s.Kind, want)
			}
			if s.SagaID != "s1" || (s.Kind == KindEvent || s.Kind == KindCommand) != (s.Participant == "bank-a") {
				t.Errorf("§3.1 %s: parsed as %+v", r[0], s)
			}
			filters, ok := streams[r[1]]
			if !ok {
				t.Errorf("§3.1 %s: unknown stream %q", r[0], r[1])
			} else if !matchesAny(filters, subject) {
				t.Errorf("§3.1 %s: stream %s's subjects %q do not take %q", r[0], r[1], filters, subject)
			}
			byCoordinator := r[4] == "coordinator"
			if matchesAny(ns.CoordinatorFilters(), subject) != byCoordinator {
				t.Errorf("§3.1 %s: consumed by %q, but the coordinator's filters %q say otherwise", r[0], r[4], ns.CoordinatorFilters())
			}
			if byParticipant := strings.HasPrefix(r[4], "participant"); subjectMatches(ns.CommandFilter("bank-a"), subject) != byParticipant {
				t.Errorf("§3.1 %s: consumed by %q, but the participant's filter %q says otherwise", r[0], r[4], ns.CommandFilter("bank-a"))
			}
		}
	}
	sort.Strings(kinds)
	if want := enumValues(t, "Kind"); !slices.Equal(kinds, want) {
		t.Errorf("§3.1 documents the subject kinds %q, the Kind constants are %q", kinds, want)
	}
}

// docDuration parses "7 days", "2 minutes" or "7 days 1 minute" at the start
// of a cell.
func docDuration(t *testing.T, cell string) time.Duration {
	t.Helper()
	units := map[string]time.Duration{"day": 24 * time.Hour, "hour": time.Hour, "minute": time.Minute, "second": time.Second, "s": time.Second, "ms": time.Millisecond}
	f := strings.Fields(cell)
	var d time.Duration
	for i := 0; i+1 < len(f); i += 2 {
		n, err := strconv.Atoi(f[i])
		if err != nil {
			break
		}
		u, ok := units[strings.TrimSuffix(strings.TrimRight(f[i+1], ",;:"), "s")]
		if !ok {
			u, ok = units[strings.TrimRight(f[i+1], ",;:")]
		}
		if !ok {
			t.Fatalf("PROTOCOL.md: %q: unknown unit %q", cell, f[i+1])
		}
		d += time.Duration(n) * u
	}
	if d == 0 {
		t.Fatalf("PROTOCOL.md: %q does not start with a duration", cell)
	}
	return d
}

// firstInt is the first integer of a cell.
func firstInt(t *testing.T, cell string) int {
	t.Helper()
	n, err := strconv.Atoi(number.FindString(cell))
	if err != nil {
		t.Fatalf("PROTOCOL.md: %q: %v", cell, err)
	}
	return n
}

// TestProtocolDocStreams checks §3.2's settings against the streams'
// configurations (by their JetStream JSON names), that every setting jetsaga
// chooses is documented, and §3.3's bucket settings this package owns.
func TestProtocolDocStreams(t *testing.T) {
	doc := loadProtocolDoc(t)
	tb := doc.section(t, "3.2").table(t, "setting", "SAGAS", "SAGA_CMDS")
	for _, ns := range namespaces(t) {
		var configs [2]map[string]any
		for i, c := range []any{ns.SagasStreamConfig(StreamOptions{}), ns.CommandsStreamConfig(StreamOptions{})} {
			data, err := json.Marshal(c)
			if err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(data, &configs[i]); err != nil {
				t.Fatal(err)
			}
		}
		documented := map[string]bool{"name": true, "description": true}
		for _, r := range tb.rows {
			tk := ticks(r[0])
			if len(tk) != 1 {
				t.Errorf("§3.2 %q: name its JSON field, as in `max_age`", r[0])
				continue
			}
			key := tk[0]
			documented[key] = true
			if _, ok := configs[0][key]; !ok {
				if _, ok := configs[1][key]; !ok && !(r[1] == "false" && r[2] == "false") {
					t.Errorf("§3.2 %s: no stream configuration has %q", r[0], key)
				}
			}
			for i, cfg := range configs {
				cell := r[1+i]
				if cell == "same" {
					cell = r[1]
				}
				var doc any
				switch have := cfg[key].(type) {
				case nil, bool:
					doc = cell == "true"
					if have == nil {
						have = false
					}
					if cell != "true" && cell != "false" {
						t.Errorf("§3.2 %s: %q is not true or false", r[0], cell)
					}
					cfg[key] = have
				case string:
					doc, _, _ = strings.Cut(cell, " ")
				case float64:
					if key == "max_age" || key == "duplicate_window" {
						doc = float64(docDuration(t, cell))
					} else {
						doc = float64(firstInt(t, cell))
					}
				case []any:
					var d []any
					for _, s := range fillAll(ticks(cell), ns) {
						d = append(d, s)
					}
					doc = d
				default:
					t.Errorf("§3.2 %s: %q holds %T; teach this test to compare it", r[0], key, have)
					continue
				}
				if !reflect.DeepEqual(doc, cfg[key]) {
					t.Errorf("§3.2 %s, stream %s, prefix %q: documented %v, configured %v", r[0], tb.header[1+i], ns.Prefix(), doc, cfg[key])
				}
			}
		}
		for _, cfg := range configs {
			for key, v := range cfg {
				if documented[key] || reflect.ValueOf(v).IsZero() || (reflect.ValueOf(v).Kind() == reflect.Map && reflect.ValueOf(v).Len() == 0) {
					continue
				}
				t.Errorf("§3.2 does not document the stream setting %s (%v)", key, v)
				documented[key] = true
			}
		}
	}

	// §3.3: the bucket's own settings (the orchestrator's test checks the
	// TTLs its coordinator sets).
	bt := doc.section(t, "3.3").table(t, "setting", "state bucket")
	opts := StreamOptions{Replicas: 3}
	bucket, stream := Default().StateBucketConfig(opts), Default().SagasStreamConfig(opts)
	storage, err := json.Marshal(bucket.Storage)
	if err != nil {
		t.Fatal(err)
	}
	checked := map[string]bool{}
	for _, r := range bt.rows {
		tk := ticks(r[0])
		if len(tk) == 0 {
			continue
		}
		switch key := tk[0]; key {
		case "history":
			if got := firstInt(t, r[1]); got != int(bucket.History) {
				t.Errorf("§3.3 history: documented %d, configured %d", got, bucket.History)
			}
		case "storage":
			if got := strconv.Quote(r[1]); got != string(storage) {
				t.Errorf("§3.3 storage: documented %s, configured %s", got, storage)
			}
		case "num_replicas":
			if r[1] != "as the streams" || bucket.Replicas != stream.Replicas {
				t.Errorf("§3.3 replicas: documented %q; bucket %d, streams %d", r[1], bucket.Replicas, stream.Replicas)
			}
		default:
			continue
		}
		checked[tk[0]] = true
	}
	for _, key := range []string{"history", "storage", "num_replicas"} {
		if !checked[key] {
			t.Errorf("§3.3 lacks the bucket setting %s", key)
		}
	}
}

// TestProtocolDocConsumers checks §3.4's names and filters.
func TestProtocolDocConsumers(t *testing.T) {
	tb := loadProtocolDoc(t).section(t, "3.4").table(t, "consumer", "stream", "filter")
	for _, ns := range namespaces(t) {
		want := map[string]struct {
			stream  string
			filters []string
		}{
			ns.CoordinatorConsumer():         {Default().SagasStream(), ns.CoordinatorFilters()},
			ns.ParticipantConsumer("bank-a"): {Default().CommandsStream(), []string{ns.CommandFilter("bank-a")}},
		}
		seen := 0
		for _, r := range tb.rows {
			name := fill(tick(t, r[0]), ns)
			w, ok := want[name]
			if !ok {
				t.Errorf("§3.4: unknown consumer %q", name)
				continue
			}
			seen++
			if r[1] != w.stream {
				t.Errorf("§3.4 %s: stream %q, want %q", name, r[1], w.stream)
			}
			if got := fillAll(ticks(r[2]), ns); !slices.Equal(got, w.filters) {
				t.Errorf("§3.4 %s: filters %q, the code's %q", name, got, w.filters)
			}
		}
		if seen != len(want) {
			t.Errorf("§3.4 documents %d of the %d consumers", seen, len(want))
		}
	}
}

// TestProtocolDocHeaders checks §4's header tables against the Header*
// constants (each documented, each documented one existing) and §4.1's
// message ids against the functions that build them.
func TestProtocolDocHeaders(t *testing.T) {
	doc := loadProtocolDoc(t)
	values, byType := packageConsts(t)
	tb := doc.section(t, "4").table(t, "header", "Go constant")
	byValue := map[string]string{}
	documented := map[string]bool{}
	for _, r := range tb.rows {
		header, name := tick(t, r[0]), tick(t, r[1])
		documented[name] = true
		byValue[header] = name
		v, ok := values[name]
		switch {
		case !ok || !strings.HasPrefix(name, "Header"):
			t.Errorf("§4: %s is documented as %s, which is not a Header constant of package events", header, name)
		case v != header:
			t.Errorf("§4: %s is documented as %q, its value is %q", name, header, v)
		}
	}
	for _, name := range byType[""] {
		if strings.HasPrefix(name, "Header") && !documented[name] {
			t.Errorf("events.%s (%q) is not in PROTOCOL.md §4's header table", name, values[name])
		}
	}
	jt := doc.section(t, "4.2").table(t, "header")
	for _, r := range jt.rows {
		if h := tick(t, r[0]); byValue[h] == "" {
			t.Errorf("§4.2: header %q is not in §4's table of Header constants", h)
		}
	}
	if _, ok := byValue[HeaderMsgID]; !ok {
		t.Errorf("§4 lacks %s", HeaderMsgID)
	}

	// §4.1: the ids, by template and example.
	it := doc.section(t, "4.1").table(t, "message", "subject", "`Nats-Msg-Id`", "example")
	ids := map[string]func(parts []string) (string, error){
		"start": func(p []string) (string, error) { return StartMsgID(p[0]), nil },
		"command": func(p []string) (string, error) {
			n, err := strconv.Atoi(p[3])
			return CommandMsgID(p[0], p[1], Op(p[2]), n), err
		},
		"outcome": func(p []string) (string, error) {
			n, err := strconv.Atoi(p[3])
			return OutcomeMsgID(&Outcome{SagaID: p[0], Step: p[1], Op: Op(p[2]), Attempt: n, Status: Status(p[4])}, 0), err
		},
		"anonymous rejected outcome": func(p []string) (string, error) {
			n, err := strconv.ParseUint(p[3], 10, 64)
			return OutcomeMsgID(&Outcome{SagaID: p[0], Participant: p[1], Status: Rejected}, n), err
		},
		"control": func(p []string) (string, error) { return ControlMsgID(p[0], p[2]), nil },
		"tick": func(p []string) (string, error) {
			due, err := strconv.ParseInt(p[2], 10, 64)
			if err != nil {
				return "", err
			}
			rev, err := strconv.ParseUint(p[3], 10, 64)
			return TickMsgID(p[0], due, rev), err
		},
	}
	seen := map[string]bool{}
	for _, r := range it.rows {
		msg, _, _ := strings.Cut(r[0], " (")
		seen[msg] = true
		id, ok := ids[msg]
		if !ok {
			t.Errorf("§4.1: unknown message %q", msg)
			continue
		}
		example := tick(t, r[3])
		got, err := id(strings.Split(example, "/"))
		if err != nil || got != example {
			t.Errorf("§4.1 %s: example %q, built from its parts %q (%v)", msg, example, got, err)
		}
		// The template, with the example's parts for its placeholders.
		tmpl := strings.Split(tick(t, r[2]), "/")
		parts := strings.Split(example, "/")
		if len(tmpl) != len(parts) {
			t.Errorf("§4.1 %s: template %q and example %q differ in parts", msg, r[2], example)
			continue
		}
		for i, p := range tmpl {
			if !strings.HasPrefix(p, "<") && p != parts[i] {
				t.Errorf("§4.1 %s: template %q, example %q: part %d", msg, r[2], example, i)
			}
		}
	}
	for msg := range ids {
		if !seen[msg] {
			t.Errorf("§4.1 lacks the id of %s", msg)
		}
	}
}

// fieldTable returns the field table of a message section: the n-th table
// with columns field, type, required.
func fieldTable(t *testing.T, sec *docSection, n int) docTable {
	t.Helper()
	tbs := sec.tablesWith("field", "type", "required")
	if len(tbs) <= n {
		t.Fatalf("PROTOCOL.md §%s: want a field table #%d, found %d", sec.title, n+1, len(tbs))
	}
	return tbs[n]
}

// row returns the row whose first cell is `name`.
func (tb docTable) row(t *testing.T, name string) []string {
	t.Helper()
	for _, r := range tb.rows {
		if r[0] == "`"+name+"`" {
			return r
		}
	}
	t.Fatalf("PROTOCOL.md table at line %d has no row `%s`", tb.line, name)
	return nil
}

// jsonFields are the JSON names of a message struct's fields.
func jsonFields(v any) []string {
	var out []string
	typ := reflect.TypeOf(v)
	for i := 0; i < typ.NumField(); i++ {
		name, _, _ := strings.Cut(typ.Field(i).Tag.Get("json"), ",")
		out = append(out, name)
	}
	sort.Strings(out)
	return out
}

// TestProtocolDocMessages checks §6's field tables against the message
// types' JSON fields, the enums against their constants, the default retry
// policy, and the status table against Outcome.Validate.
func TestProtocolDocMessages(t *testing.T) {
	doc := loadProtocolDoc(t)
	tables := []struct {
		sec string
		n   int
		v   any
	}{
		{"6.1", 0, Start{}}, {"6.1", 1, Step{}}, {"6.1", 2, RetryPolicy{}},
		{"6.2", 0, Command{}}, {"6.3", 0, Outcome{}}, {"6.4", 0, Tick{}}, {"6.5", 0, Control{}},
	}
	for _, x := range tables {
		tb := fieldTable(t, doc.section(t, x.sec), x.n)
		var documented []string
		for _, r := range tb.rows {
			documented = append(documented, tick(t, r[0]))
		}
		if got, want := sorted(documented), jsonFields(x.v); !slices.Equal(got, want) {
			t.Errorf("§%s field table %d documents %q, %T has %q", x.sec, x.n+1, got, x.v, want)
		}
	}

	enums := []struct {
		sec   string
		n     int
		field string
		typ   string
	}{
		{"6.1", 1, "kind", "StepKind"},
		{"6.2", 0, "op", "Op"},
		{"6.3", 0, "op", "Op"},
		{"6.5", 0, "action", "ControlAction"},
	}
	for _, e := range enums {
		r := fieldTable(t, doc.section(t, e.sec), e.n).row(t, e.field)
		if got, want := sorted(ticks(r[1])), enumValues(t, e.typ); !slices.Equal(got, want) {
			t.Errorf("§%s `%s` is documented as %q, the %s constants are %q", e.sec, e.field, got, e.typ, want)
		}
	}

	// The default retry policy.
	r := fieldTable(t, doc.section(t, "6.1"), 1).row(t, "retry")
	var def RetryPolicy
	found := false
	for _, tk := range ticks(r[3]) {
		if strings.HasPrefix(tk, "{") {
			found = true
			if err := json.Unmarshal([]byte(tk), &def); err != nil || def != DefaultRetry() {
				t.Errorf("§6.1 step `retry`: the default is documented as %s, DefaultRetry() is %+v (%v)", tk, DefaultRetry(), err)
			}
		}
	}
	if !found {
		t.Errorf("§6.1 step `retry` does not show the default policy")
	}

	// Statuses: which ops each answers, and whether a reason is required.
	st := doc.section(t, "6.3").table(t, "status", "answers", "meaning", "reason")
	var statuses []string
	for _, r := range st.rows {
		status := Status(tick(t, r[0]))
		statuses = append(statuses, string(status))
		answers := ticks(r[1])
		cases := []struct {
			what string
			o    Outcome
			ok   bool
		}{
			{"op do", Outcome{Step: "x", Op: OpDo, Attempt: 1}, slices.Contains(answers, "do")},
			{"op undo", Outcome{Step: "x", Op: OpUndo, Attempt: 1}, slices.Contains(answers, "undo")},
			{"no op (anonymous)", Outcome{}, strings.Contains(r[1], "anonymous")},
		}
		for _, c := range cases {
			o := c.o
			o.V, o.SagaID, o.Participant, o.Status, o.Reason = Version, "s1", "bank-a", status, "why"
			if err := o.Validate(); (err == nil) != c.ok {
				t.Errorf("§6.3 %s: documented to answer %s: %v, Validate says %v", status, c.what, c.ok, err)
			}
			if !c.ok {
				continue
			}
			o.Reason = ""
			required := r[3] == "required"
			if !required && r[3] != "optional" {
				t.Errorf("§6.3 %s: reason %q is neither required nor optional", status, r[3])
			}
			if err := o.Validate(); (err != nil) != required {
				t.Errorf("§6.3 %s, %s: reason documented as %s, Validate without one says %v", status, c.what, r[3], err)
			}
		}
	}
	if got, want := sorted(statuses), enumValues(t, "Status"); !slices.Equal(got, want) {
		t.Errorf("§6.3 documents the statuses %q, the Status constants are %q", got, want)
	}
}

// TestProtocolDocExamples decodes every JSON example of PROTOCOL.md with the
// decoder of its section, and checks that the examples tell one story: the
// command example is what the start example's step gets, the anonymous
// rejection's reason is the decoder's error.
func TestProtocolDocExamples(t *testing.T) {
	doc := loadProtocolDoc(t)
	decoders := map[string]func([]byte) (any, error){
		"6.1": func(b []byte) (any, error) { return DecodeStart(b) },
		"6.2": func(b []byte) (any, error) { return DecodeCommand(b) },
		"6.3": func(b []byte) (any, error) { return DecodeOutcome(b) },
		"6.4": func(b []byte) (any, error) { return DecodeTick(b) },
		"6.5": func(b []byte) (any, error) { return DecodeControl(b) },
	}
	decoded := map[string][]any{}
	for _, sec := range doc.sections {
		num, _, _ := strings.Cut(sec.title, " ")
		for _, c := range sec.code {
			if c.lang != "json" {
				continue
			}
			dec, ok := decoders[num]
			if !ok {
				t.Errorf("PROTOCOL.md line %d: a JSON example in §%s, which has no decoder in this test", c.line, sec.title)
				continue
			}
			v, err := dec([]byte(c.text))
			if err != nil {
				t.Errorf("PROTOCOL.md line %d (§%s): the example does not decode: %v", c.line, sec.title, err)
				continue
			}
			decoded[num] = append(decoded[num], v)
		}
	}
	for num := range decoders {
		if len(decoded[num]) == 0 {
			t.Errorf("§%s has no JSON example that decodes", num)
		}
	}
	if len(decoded["6.1"]) == 0 || len(decoded["6.2"]) == 0 {
		return
	}
	start := decoded["6.1"][0].(Start)
	for _, v := range decoded["6.2"] {
		cmd := v.(Command)
		i := slices.IndexFunc(start.Steps, func(s Step) bool { return s.Name == cmd.Step })
		if i < 0 || cmd.SagaID != start.SagaID {
			t.Errorf("§6.2: the command example is for step %q of saga %q, which the start example does not have", cmd.Step, cmd.SagaID)
			continue
		}
		st := start.Steps[i]
		action := st.Action
		if cmd.Op == OpUndo {
			action = st.Compensation
		}
		if cmd.Participant != st.Participant || cmd.Action != action || string(cmd.Payload) != string(st.Payload) || cmd.Retry != st.RetryPolicy() {
			t.Errorf("§6.2: the command example %+v is not what step %+v of the start example sends", cmd, st)
		}
	}
	for _, v := range decoded["6.3"] {
		o := v.(Outcome)
		if o.SagaID != start.SagaID {
			t.Errorf("§6.3: outcome example for saga %q, the start example is %q", o.SagaID, start.SagaID)
		}
		if o.Step != "" {
			i := slices.IndexFunc(start.Steps, func(s Step) bool { return s.Name == o.Step })
			if i < 0 || start.Steps[i].Participant != o.Participant {
				t.Errorf("§6.3: outcome example from %q for step %q, which the start example does not give it", o.Participant, o.Step)
			}
			continue
		}
		// The anonymous rejection's reason is the command decoder's error
		// for the command example with op "redo".
		var raw map[string]any
		cmd := doc.section(t, "6.2").code[0].text
		if err := json.Unmarshal([]byte(cmd), &raw); err != nil {
			t.Fatal(err)
		}
		raw["op"] = "redo"
		bad, err := json.Marshal(raw)
		if err != nil {
			t.Fatal(err)
		}
		_, err = DecodeCommand(bad)
		if want := "undecodable command: " + fmt.Sprint(err); o.Reason != want {
			t.Errorf("§6.3: the anonymous rejection's reason is %q; for a command with op \"redo\" it is %q", o.Reason, want)
		}
	}
}
