package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/jetsaga/jetsaga/orchestrator"
)

// exitInterrupted is the exit code of a command that waited or followed
// until Ctrl-C (or SIGTERM): 128 + SIGINT, as shells report it.
const exitInterrupted = 130

// startedJSON is the output of `start --json` without --wait.
type startedJSON struct {
	SagaID string `json:"saga_id"`
}

// sentJSON is the output of redrive, skip and resolve with --json.
type sentJSON struct {
	SagaID string `json:"saga_id"`
	Action string `json:"action"`
	Step   string `json:"step,omitempty"`
	Sent   bool   `json:"sent"`
}

// migrateJSON is the output of `migrate --json`.
type migrateJSON struct {
	OutboxTable    string `json:"outbox_table"`
	OutboxVersion  int    `json:"outbox_version"`
	BarrierTable   string `json:"barrier_table"`
	BarrierVersion int    `json:"barrier_version"`
	Bank           bool   `json:"bank"`
}

// sent reports an operator action that was published.
func (a *app) sent(asJSON bool, id, action, step string) error {
	if asJSON {
		return writeJSON(a.stdout, sentJSON{SagaID: id, Action: action, Step: step, Sent: true})
	}
	what := action
	if step != "" {
		what += " of step " + step
	}
	fmt.Fprintf(a.stdout, "%s of saga %s sent; follow it with: jetsaga watch %s\n", what, id, id)
	return nil
}

// interrupted turns the end of a wait into exit 130 when ctx was cancelled
// (Ctrl-C, SIGTERM), not timed out.
func interrupted(ctx context.Context, err error) error {
	if ctx.Err() == nil || errors.Is(context.Cause(ctx), context.DeadlineExceeded) {
		return err
	}
	return &exitCodeError{code: exitInterrupted, err: err}
}

// followEvent is one line of `watch --json`: a message of the saga's
// timeline as it appears, then its state at every change of status.
type followEvent struct {
	Type    string                      `json:"type"` // "message" or "state"
	Message *orchestrator.TimelineEntry `json:"message,omitempty"`
	State   *orchestrator.State         `json:"state,omitempty"`
}

func (a *app) watchCmd() *cobra.Command {
	var (
		nf     natsFlags
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "watch SAGA_ID",
		Short: "Follow a saga's timeline live until it ends (status SAGA_ID --follow)",
		Long: `Print a saga's messages (start, commands, outcomes, timer ticks, operator actions) as they
appear, and its status at every change, until it ends; then its final state. A parked saga is
followed on: an operator may redrive it. The exit code says how it ended, as for start --wait:
0 committed, 3 compensated, 5 rejected; Ctrl-C exits 130.

With --json every line is a JSON object: {"type": "message", "message": {...}} for each message and
{"type": "state", "state": {...}} at every change of status.`,
		Args: exactArgs("SAGA_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.followSaga(cmd.Context(), &nf, args[0], asJSON)
		},
	}
	nf.register(cmd.Flags())
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object per line")
	return cmd
}

// followInterval is how often follow reads the saga.
const followInterval = 250 * time.Millisecond

// followSaga prints the saga's timeline as it grows until the saga ends.
func (a *app) followSaga(ctx context.Context, nf *natsFlags, id string, asJSON bool) error {
	ctx, stop := signalContext(ctx)
	defer stop()
	s, err := nf.open(ctx, "watch")
	if err != nil {
		return interrupted(ctx, err)
	}
	defer s.close()
	type key struct {
		stream string
		seq    uint64
	}
	seen := map[key]bool{}
	var t0 time.Time
	var last orchestrator.Status
	parkedSaid := false
	tick := time.NewTicker(followInterval)
	defer tick.Stop()
	for {
		st, err := s.client.Get(ctx, id)
		if err != nil {
			if ctx.Err() != nil {
				return interrupted(ctx, fmt.Errorf("stopped following saga %s", id))
			}
			return s.sagaError(id, err)
		}
		tl, err := s.client.Timeline(ctx, id)
		if err != nil {
			if ctx.Err() != nil {
				return interrupted(ctx, fmt.Errorf("stopped following saga %s (%s)", id, st.Status))
			}
			return fmt.Errorf("timeline of saga %s: %w", id, err)
		}
		if t0.IsZero() && len(tl) > 0 {
			t0 = tl[0].Time
			if !asJSON {
				fmt.Fprintf(a.stdout, "saga %s (%s), started %s\n", id, orDash(st.Name), tl[0].Time.UTC().Format("2006-01-02 15:04:05.000Z"))
			}
		}
		for i := range tl {
			e := &tl[i]
			k := key{e.Stream, e.Seq}
			if seen[k] {
				continue
			}
			seen[k] = true
			if asJSON {
				if err := writeJSONLine(a.stdout, followEvent{Type: "message", Message: e}); err != nil {
					return err
				}
				continue
			}
			fmt.Fprintf(a.stdout, "  +%-10s %s\n", fmtOffset(e.Time.Sub(t0)), oneLine(e.Summary, 160))
		}
		if st.Status != last {
			last = st.Status
			if asJSON {
				if err := writeJSONLine(a.stdout, followEvent{Type: "state", State: st}); err != nil {
					return err
				}
			} else if !st.Status.Terminal() {
				line := "status " + string(st.Status)
				if st.Reason != "" {
					line += ": " + oneLine(st.Reason, 120)
				}
				fmt.Fprintf(a.stdout, "  %s\n", line)
			}
		}
		if st.Status.Terminal() {
			if !asJSON {
				fmt.Fprintln(a.stdout)
				printState(a.stdout, st)
			}
			return statusExit(st.Status)
		}
		if st.Status == orchestrator.Parked && !parkedSaid && !asJSON {
			parkedSaid = true
			fmt.Fprintf(a.stdout, "  parked: waiting for an operator (jetsaga redrive %s, skip or resolve); Ctrl-C stops following\n", id)
		}
		if st.Status != orchestrator.Parked {
			parkedSaid = false
		}
		select {
		case <-ctx.Done():
			return interrupted(ctx, fmt.Errorf("stopped following saga %s (%s)", id, st.Status))
		case <-tick.C:
		}
	}
}

// writeJSONLine writes v as one line of JSON.
func writeJSONLine(w io.Writer, v any) error {
	return json.NewEncoder(w).Encode(v)
}

// progress prints a saga's steps as they change, while start --wait waits.
type progress struct {
	w     io.Writer
	shown map[string]string
}

// show prints the steps of st that changed since the last call.
func (p *progress) show(st *orchestrator.State) {
	for _, ss := range st.Steps {
		line := string(ss.Status)
		if ss.Attempt > 1 {
			line += " (attempt " + strconv.Itoa(ss.Attempt) + ")"
		}
		if ss.Reason != "" && (ss.Status == orchestrator.StepFailed || ss.Status == orchestrator.StepUnknown) {
			line += ": " + oneLine(ss.Reason, 100)
		}
		if ss.Stuck {
			line += " (stuck)"
		}
		if ss.Status == orchestrator.StepPending || p.shown[ss.Name] == line {
			continue
		}
		p.shown[ss.Name] = line
		fmt.Fprintf(p.w, "  %s: %s\n", ss.Name, line)
	}
}

// follow shows the saga's state every followInterval until ctx is done.
func (p *progress) follow(ctx context.Context, s *session, id string) {
	tick := time.NewTicker(followInterval)
	defer tick.Stop()
	for {
		if st, err := s.client.Get(ctx, id); err == nil {
			p.show(st)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// isTerminal reports whether w is a terminal (a character device).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
