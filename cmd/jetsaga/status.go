package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/jetsaga/jetsaga/orchestrator"
)

// statusJSON is the output of `status --json`.
type statusJSON struct {
	State    *orchestrator.State          `json:"state"`
	Timeline []orchestrator.TimelineEntry `json:"timeline"`
}

func (a *app) statusCmd() *cobra.Command {
	var (
		nf     natsFlags
		asJSON bool
		noTL   bool
		follow bool
	)
	cmd := &cobra.Command{
		Use:   "status SAGA_ID",
		Short: "Show a saga's state, steps and timeline",
		Long: `Show a saga's state (status, reason, the steps with their status, attempt, result and reason,
and the inputs the coordinator rejected) and its timeline: every message of the saga in both streams
(start, commands, outcomes, timers, operator actions), in time order.

With --follow (or "jetsaga watch SAGA_ID") it prints the messages as they appear until the saga
ends, then its final state; the exit code says how it ended (0 committed, 3 compensated, 5
rejected; Ctrl-C: 130).`,
		Args: exactArgs("SAGA_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := args[0]
			ctx := cmd.Context()
			if follow {
				if noTL {
					return usagef("status: --follow follows the timeline: it does not go with --no-timeline")
				}
				return a.followSaga(ctx, &nf, id, asJSON)
			}
			s, err := nf.open(ctx, "status")
			if err != nil {
				return err
			}
			defer s.close()
			st, err := s.client.Get(ctx, id)
			if err != nil {
				return s.sagaError(id, err)
			}
			var tl []orchestrator.TimelineEntry
			if !noTL {
				if tl, err = s.client.Timeline(ctx, id); err != nil {
					return fmt.Errorf("timeline of saga %s: %w", id, err)
				}
			}
			if asJSON {
				if tl == nil {
					tl = []orchestrator.TimelineEntry{}
				}
				return writeJSON(a.stdout, statusJSON{State: st, Timeline: tl})
			}
			printState(a.stdout, st)
			if !noTL {
				fmt.Fprintln(a.stdout)
				fmt.Fprintln(a.stdout, "timeline")
				printTimeline(a.stdout, tl, "  ")
			}
			return nil
		},
	}
	nf.register(cmd.Flags())
	cmd.Flags().BoolVar(&asJSON, "json", false, `print {"state": ..., "timeline": [...]} as JSON`)
	cmd.Flags().BoolVar(&noTL, "no-timeline", false, "do not read the saga's messages from the streams")
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "print the messages as they appear until the saga ends (as jetsaga watch; with --json one object per line)")
	return cmd
}
