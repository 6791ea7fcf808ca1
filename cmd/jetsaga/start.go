package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/jetsaga/jetsaga/events"
	"github.com/jetsaga/jetsaga/orchestrator"
)

func (a *app) startCmd() *cobra.Command {
	var (
		nf          natsFlags
		file        string
		wait        bool
		waitTimeout time.Duration
		asJSON      bool
		progress    bool
	)
	cmd := &cobra.Command{
		Use:   "start -f PLAN.json",
		Short: "Start a saga from a JSON plan",
		Long: `Start a saga from a JSON plan: the start message of the protocol (events.Start), from a file or,
with "-f -", from standard input. "v" defaults to the protocol version and a missing "saga_id" to a
new UUIDv7. The plan is validated before it is published; an error names the field.

Starting the same saga_id again with the same plan starts one saga; with a different plan it fails.

It prints the saga id. With --wait it then waits for the saga to end (or park) and prints its final
state; the exit code says how it ended: 0 committed, 3 compensated, 4 parked, 5 rejected.`,
		Example: `  jetsaga start -f transfer.json
  echo '{"name":"withdraw","steps":[{"name":"debit","participant":"bank-a","action":"TransOut",
    "compensation":"TransOutCompensate","payload":{"user_id":1,"amount":"5.00"}}]}' | jetsaga start -f - --wait`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return usagef("--file (-f) is required: a plan JSON file, or - for standard input")
			}
			if waitTimeout < 0 {
				return usagef("--wait-timeout must not be negative, got %s", waitTimeout)
			}
			data, err := a.readPlan(file)
			if err != nil {
				return err
			}
			start, err := parsePlan(data)
			if err != nil {
				return fmt.Errorf("invalid plan %s: %w", planName(file), err)
			}
			ctx := cmd.Context()
			s, err := nf.open(ctx, "start")
			if err != nil {
				return err
			}
			defer s.close()
			if err := s.client.StartMessage(ctx, start); err != nil {
				if errors.Is(err, orchestrator.ErrPlanConflict) {
					return fmt.Errorf("saga %s was already started with a different plan", start.SagaID)
				}
				return fmt.Errorf("start saga %s: %w", start.SagaID, err)
			}
			if !wait {
				if asJSON {
					return writeJSON(a.stdout, startedJSON{SagaID: start.SagaID})
				}
				fmt.Fprintln(a.stdout, start.SagaID)
				return nil
			}
			if !asJSON {
				fmt.Fprintln(a.stdout, start.SagaID)
			}
			if !cmd.Flags().Changed("progress") {
				progress = isTerminal(a.stderr)
			}
			return a.waitSaga(ctx, s, start.SagaID, waitTimeout, asJSON, progress)
		},
	}
	fs := cmd.Flags()
	nf.register(fs)
	fs.StringVarP(&file, "file", "f", "", "plan JSON file, - for standard input")
	fs.BoolVar(&wait, "wait", false, "wait until the saga ends or parks; print its final state; exit 3 compensated, 4 parked, 5 rejected")
	fs.DurationVar(&waitTimeout, "wait-timeout", 0, "with --wait: give up after this long (0: wait until Ctrl-C, which exits 130)")
	fs.BoolVar(&progress, "progress", false, "with --wait: print each step's progress on standard error (default: when it is a terminal)")
	fs.BoolVar(&asJSON, "json", false, `print {"saga_id": ...} as JSON; with --wait, the final state`)
	return cmd
}

func planName(file string) string {
	if file == "-" {
		return "(standard input)"
	}
	return file
}

// readPlan reads the plan file, or standard input for "-".
func (a *app) readPlan(file string) ([]byte, error) {
	limit := int64(events.MaxMessageBytes) + 1
	var r io.Reader
	if file == "-" {
		r = a.stdin
	} else {
		f, err := os.Open(file)
		if err != nil {
			return nil, usagef("read plan: %v", err)
		}
		defer f.Close()
		r = f
	}
	data, err := io.ReadAll(io.LimitReader(r, limit))
	if err != nil {
		return nil, fmt.Errorf("read plan %s: %w", planName(file), err)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, fmt.Errorf("read plan %s: it is empty", planName(file))
	}
	if len(data) > events.MaxMessageBytes {
		return nil, fmt.Errorf("plan %s is larger than %d bytes, the protocol's limit for a start message (keep large documents out of payloads)",
			planName(file), events.MaxMessageBytes)
	}
	return data, nil
}

// parsePlan decodes a plan file (orchestrator.ParsePlan), reporting a JSON
// syntax error with its line and column first.
func parsePlan(data []byte) (events.Start, error) {
	if err := checkPlanJSON(data); err != nil {
		return events.Start{}, err
	}
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(data, &doc); err != nil {
		return events.Start{}, syntaxError(data, err)
	}
	return orchestrator.ParsePlan(data)
}

// waitSaga waits for a saga to end or park, prints its state and turns its
// status into the exit code.
func (a *app) waitSaga(ctx context.Context, s *session, id string, timeout time.Duration, asJSON, showProgress bool) error {
	ctx, stop := signalContext(ctx)
	defer stop()
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	var p *progress
	stopProgress := func() {}
	if showProgress {
		p = &progress{w: a.stderr, shown: map[string]string{}}
		pctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); p.follow(pctx, s, id) }()
		stopProgress = func() { cancel(); <-done }
	}
	st, err := s.client.Wait(ctx, id)
	stopProgress()
	if p != nil && st != nil {
		p.show(st) // the last steps, which the poll may not have seen
	}
	if err != nil {
		if ctx.Err() != nil {
			status := "not started yet"
			if st != nil {
				status = string(st.Status)
			}
			return interrupted(ctx, fmt.Errorf("stopped waiting for saga %s (%s; it goes on: jetsaga watch %s): %v", id, status, id, context.Cause(ctx)))
		}
		return s.sagaError(id, err)
	}
	if asJSON {
		if err := writeJSON(a.stdout, st); err != nil {
			return err
		}
	} else {
		printState(a.stdout, st)
	}
	return statusExit(st.Status)
}

// statusExit maps a saga's final status to the exit code of start --wait.
func statusExit(s orchestrator.Status) error {
	switch s {
	case orchestrator.Committed:
		return nil
	case orchestrator.Compensated:
		return &exitCodeError{code: exitCompensated}
	case orchestrator.Parked:
		return &exitCodeError{code: exitParked}
	case orchestrator.Rejected:
		return &exitCodeError{code: exitRejected}
	}
	return fmt.Errorf("saga ended in unexpected status %q", s)
}
