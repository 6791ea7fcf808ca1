package faulttest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"time"

	"github.com/jetsaga/jetsaga/events"
)

// replayTimeout bounds one run of the jetsaga CLI (a replay folds the whole
// sagas stream: 5,000 sagas in the long form).
const replayTimeout = 5 * time.Minute

// exitDiffers is `jetsaga replay --compare`'s exit code when the rebuilt
// states differ from the live ones (cmd/jetsaga/root.go).
const exitDiffers = 6

// shownDiffers is how many differing sagas the report shows in full (both
// states and the saga's timeline); the ids of all of them are listed.
const shownDiffers = 3

// replayResult is the part of `jetsaga replay --compare --json`'s output
// the suite reads (cmd/jetsaga/replay.go, replayJSON).
type replayResult struct {
	Bucket   string `json:"bucket"`
	Rebuilt  int    `json:"rebuilt"`
	Compared *struct {
		Live        int      `json:"live"`
		Differ      int      `json:"differ"`
		MissingLive []string `json:"missing_in_live"`
		MissingRep  []string `json:"missing_in_replay"`
		Changed     []string `json:"changed"`
	} `json:"compared"`
}

// replayCheck is the outcome of comparing the replayed states with the
// live bucket.
type replayCheck struct {
	err                   error // the comparison could not be made
	rebuilt, live, differ int
	// report lists the differing sagas with both states ("" if none).
	report string
}

// column is the figures table's "replay" cell.
func (r *replayCheck) column() string {
	switch {
	case r == nil:
		return "not run"
	case r.err != nil:
		return "error"
	case r.differ == 0:
		return "equal"
	default:
		return fmt.Sprintf("%d differ", r.differ)
	}
}

// compareReplay runs `jetsaga replay --compare --json` against the system's
// NATS, as an operator would: it folds the sagas stream into the scratch
// bucket and compares every saga with the live bucket. Run it once the
// system is quiet (every saga settled, every consumer drained): then the
// fold of the stream must equal the live state of every saga, byte for
// byte. When some differ, the report shows, for the first few, the live
// state (`jetsaga status --json`, with the saga's timeline in stream order)
// and the replayed one (the key in the scratch bucket).
func (s *system) compareReplay(ctx context.Context) (*replayCheck, error) {
	replicas := "1"
	if s.cfg.cluster {
		replicas = "3"
	}
	out, code, err := s.cli(ctx, "replay", "--compare", "--json", "--replicas", replicas)
	if err != nil && code != exitDiffers {
		return nil, err
	}
	var res replayResult
	if jerr := json.Unmarshal(out, &res); jerr != nil || res.Compared == nil {
		return nil, fmt.Errorf("jetsaga replay --compare --json (exit %d): unreadable output (%v): %s", code, jerr, out)
	}
	c := res.Compared
	rc := &replayCheck{rebuilt: res.Rebuilt, live: c.Live, differ: c.Differ}
	if (code == exitDiffers) != (c.Differ > 0) {
		return nil, fmt.Errorf("jetsaga replay --compare: exit code %d with %d sagas differing", code, c.Differ)
	}
	if c.Differ == 0 {
		return rc, nil
	}
	var b strings.Builder
	fmt.Fprintf(&b, "replayed states differ from the live bucket: %d of %d sagas (%d rebuilt from the stream)\n",
		c.Differ, c.Live, res.Rebuilt)
	list := func(what string, ids []string) {
		if len(ids) > 0 {
			fmt.Fprintf(&b, "  %s (%d): %s\n", what, len(ids), strings.Join(ids, " "))
		}
	}
	list("differ", c.Changed)
	list("not in the live bucket", c.MissingLive)
	list("not in the stream", c.MissingRep)
	ids := slices.Concat(c.Changed, c.MissingLive, c.MissingRep)
	for _, id := range ids[:min(len(ids), shownDiffers)] {
		b.WriteString(s.showDiff(ctx, res.Bucket, id))
	}
	rc.report = b.String()
	return rc, nil
}

// showDiff renders saga id's live state and timeline (`jetsaga status
// --json`), its replayed state (the key in bucket) and the fields in which
// the two states differ. The states are shown compact, keys sorted, without
// the plan (the start message, in the timeline) unless the plans differ.
func (s *system) showDiff(ctx context.Context, bucket, id string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "--- saga %s\n", id)
	var live struct {
		State    json.RawMessage `json:"state"`
		Timeline []struct {
			Stream  string    `json:"stream"`
			Seq     uint64    `json:"seq"`
			Time    time.Time `json:"time"`
			Subject string    `json:"subject"`
			Summary string    `json:"summary"`
		} `json:"timeline"`
	}
	out, _, err := s.cli(ctx, "status", "--json", id)
	if err == nil {
		err = json.Unmarshal(out, &live)
	}
	if err != nil {
		fmt.Fprintf(&b, "live (jetsaga status --json): %v\n", err)
	}
	replayed, rerr := s.bucketValue(ctx, bucket, id)
	if rerr != nil {
		fmt.Fprintf(&b, "replayed (bucket %s): %v\n", bucket, rerr)
	}
	var fields []string
	if err == nil && rerr == nil {
		fields = differingFields(live.State, replayed)
	}
	showPlan := slices.Contains(fields, "plan")
	if err == nil {
		fmt.Fprintf(&b, "live (jetsaga status --json):\n  %s\n", compactState(live.State, showPlan))
	}
	if rerr == nil {
		fmt.Fprintf(&b, "replayed (bucket %s):\n  %s\n", bucket, compactState(replayed, showPlan))
	}
	if fields != nil {
		fmt.Fprintf(&b, "fields that differ: %s\n", strings.Join(fields, ", "))
	}
	if len(live.Timeline) > 0 {
		b.WriteString("timeline (time order):\n")
		for _, e := range live.Timeline {
			fmt.Fprintf(&b, "  %s %-9s #%-6d %s  %s\n", e.Time.Format("15:04:05.000"), e.Stream, e.Seq, e.Subject, e.Summary)
		}
	}
	return b.String()
}

// compactState re-encodes a JSON state compactly with its keys sorted,
// without its plan unless withPlan.
func compactState(state []byte, withPlan bool) string {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(state, &m); err != nil {
		return string(state)
	}
	if !withPlan {
		delete(m, "plan")
	}
	out, err := json.Marshal(m) // compacts the values too
	if err != nil {
		return string(state)
	}
	return string(out)
}

// bucketValue reads key from bucket.
func (s *system) bucketValue(ctx context.Context, bucket, key string) ([]byte, error) {
	c, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	kv, err := s.js.KeyValue(c, bucket)
	if err != nil {
		return nil, err
	}
	e, err := kv.Get(c, key)
	if err != nil {
		return nil, err
	}
	return e.Value(), nil
}

// differingFields lists the top-level fields (and the steps, by index) in
// which two JSON-encoded states differ.
func differingFields(a, b []byte) []string {
	var x, y map[string]json.RawMessage
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return []string{"(undecodable)"}
	}
	var out []string
	for k := range x {
		if _, ok := y[k]; !ok {
			y[k] = nil // a field only the first has differs too
		}
	}
	for _, k := range sortedKeys(y) {
		if k == "steps" {
			var xs, ys []json.RawMessage
			_ = json.Unmarshal(x[k], &xs)
			_ = json.Unmarshal(y[k], &ys)
			for i := range max(len(xs), len(ys)) {
				if i >= len(xs) || i >= len(ys) || !jsonEqual(xs[i], ys[i]) {
					out = append(out, fmt.Sprintf("steps[%d]", i))
				}
			}
			continue
		}
		if !jsonEqual(x[k], y[k]) {
			out = append(out, k)
		}
	}
	if len(out) == 0 {
		return []string{"none once decoded (the encodings differ)"}
	}
	return out
}

func sortedKeys(m map[string]json.RawMessage) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// jsonEqual compares two JSON values once compacted.
func jsonEqual(a, b json.RawMessage) bool {
	var ca, cb bytes.Buffer
	if json.Compact(&ca, a) != nil || json.Compact(&cb, b) != nil {
		return bytes.Equal(a, b)
	}
	return bytes.Equal(ca.Bytes(), cb.Bytes())
}

// cli runs one command of the jetsaga binary against the system's NATS and
// returns its standard output and exit code; err describes a failure
// (exit code other than 0) with its standard error.
func (s *system) cli(ctx context.Context, args ...string) ([]byte, int, error) {
	ctx, cancel := context.WithTimeout(ctx, replayTimeout)
	defer cancel()
	args = append(args, "--nats-url", s.natsURL, "--connect-timeout", "20s", "--prefix", events.Default().Prefix())
	cmd := exec.CommandContext(ctx, s.bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return stdout.Bytes(), 0, nil
	case errors.As(err, &exit):
		return stdout.Bytes(), exit.ExitCode(), fmt.Errorf("jetsaga %s: %v: %s", args[0], err, bytes.TrimSpace(stderr.Bytes()))
	default:
		return nil, -1, fmt.Errorf("jetsaga %s: %w", args[0], err)
	}
}
