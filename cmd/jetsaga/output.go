package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jetsaga/jetsaga/events"
	"github.com/jetsaga/jetsaga/orchestrator"
)

// newTable returns a tabwriter for aligned columns.
func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
}

// writeJSON writes v as indented JSON.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// msTime formats Unix milliseconds for people (UTC, millisecond precision).
func msTime(ms int64) string {
	if ms == 0 {
		return "-"
	}
	return time.UnixMilli(ms).UTC().Format("2006-01-02 15:04:05.000Z")
}

// orDash returns s, or "-" when it is empty.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// oneLine flattens s to one line of at most max runes.
func oneLine(s string, max int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); max > 0 && len(r) > max {
		return string(r[:max-1]) + "…"
	}
	return s
}

// stepsDone counts the steps of a saga that reached their end in the
// saga's direction.
func stepsDone(st *orchestrator.State) int {
	n := 0
	for _, s := range st.Steps {
		switch s.Status {
		case orchestrator.StepSucceeded, orchestrator.StepSkipped, orchestrator.StepCompensated, orchestrator.StepFailed:
			n++
		}
	}
	return n
}

// printState writes a saga's state: its header, its steps and its
// rejections.
func printState(w io.Writer, st *orchestrator.State) {
	tw := newTable(w)
	fmt.Fprintf(tw, "saga\t%s\n", st.SagaID)
	fmt.Fprintf(tw, "name\t%s\n", orDash(st.Name))
	status := string(st.Status)
	if st.Status == orchestrator.Parked && st.ParkedFrom != "" {
		status += " (was " + string(st.ParkedFrom) + ")"
	}
	fmt.Fprintf(tw, "status\t%s\n", status)
	if st.Reason != "" {
		fmt.Fprintf(tw, "reason\t%s\n", oneLine(st.Reason, 0))
	}
	if st.Resolution != "" {
		fmt.Fprintf(tw, "resolution\t%s\n", oneLine(st.Resolution, 0))
	}
	fmt.Fprintf(tw, "started\t%s\n", msTime(st.StartedMS))
	fmt.Fprintf(tw, "updated\t%s\n", msTime(st.UpdatedMS))
	if st.DeadlineMS != 0 {
		fmt.Fprintf(tw, "deadline\t%s\n", msTime(st.DeadlineMS))
	}
	_ = tw.Flush()
	if len(st.Steps) > 0 {
		fmt.Fprintln(w)
		printSteps(w, st)
	}
	if len(st.Rejections) > 0 {
		fmt.Fprintln(w)
		tw := newTable(w)
		fmt.Fprintln(tw, "REJECTED INPUT\tSEQ\tTIME\tREASON")
		for _, r := range st.Rejections {
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", r.Kind, r.Seq, msTime(r.TimeMS), oneLine(r.Reason, 120))
		}
		_ = tw.Flush()
	}
}

// printSteps writes the steps table of a saga.
func printSteps(w io.Writer, st *orchestrator.State) {
	plan := map[string]events.Step{}
	if st.Plan != nil {
		for _, s := range st.Plan.Steps {
			plan[s.Name] = s
		}
	}
	tw := newTable(w)
	fmt.Fprintln(tw, "STEP\tPARTICIPANT\tACTION\tSTATUS\tOP\tATTEMPT\tRESULT\tREASON")
	for _, s := range st.Steps {
		p := plan[s.Name]
		status := string(s.Status)
		if s.Stuck {
			status += " (stuck)"
		}
		attempt := "-"
		if s.Attempt > 0 {
			attempt = strconv.Itoa(s.Attempt)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.Name, orDash(p.Participant), orDash(p.Action),
			status, orDash(string(s.Op)), attempt, orDash(oneLine(string(s.Result), 40)), orDash(oneLine(s.Reason, 80)))
	}
	_ = tw.Flush()
}

// printTimeline writes a saga's messages, with times relative to the first.
func printTimeline(w io.Writer, tl []orchestrator.TimelineEntry, indent string) {
	if len(tl) == 0 {
		fmt.Fprintf(w, "%s(no messages)\n", indent)
		return
	}
	tw := newTable(w)
	fmt.Fprintf(tw, "%sAT\tSTREAM\tSEQ\tMESSAGE\n", indent)
	t0 := tl[0].Time
	for _, e := range tl {
		fmt.Fprintf(tw, "%s+%s\t%s\t%d\t%s\n", indent, fmtOffset(e.Time.Sub(t0)), e.Stream, e.Seq, oneLine(e.Summary, 160))
	}
	_ = tw.Flush()
}

// fmtOffset renders a non-negative duration in milliseconds with a unit
// that suits people.
func fmtOffset(d time.Duration) string {
	switch {
	case d < 0:
		d = 0
		fallthrough
	case d < 10*time.Second:
		return fmt.Sprintf("%.1fms", float64(d.Microseconds())/1000)
	default:
		return d.Round(time.Millisecond).String()
	}
}
