package main

import (
	"strings"

	"github.com/spf13/cobra"

	"github.com/jetsaga/jetsaga/orchestrator"
)

func (a *app) skipCmd() *cobra.Command {
	var (
		nf         natsFlags
		step, note string
		asJSON     bool
	)
	cmd := &cobra.Command{
		Use:   "skip SAGA_ID --step STEP --note TEXT",
		Short: "Mark the step that parked a saga as done by hand, and resume the saga",
		Long: `Mark the step that parked a saga as done without running it (you have done by hand what it
should have done) and resume the saga in the direction it was going. The note is recorded in the
saga's state and in the stream, for the audit.`,
		Args: exactArgs("SAGA_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := args[0]
			if step == "" {
				return usagef("--step is required: the step that parked the saga (see jetsaga status %s)", id)
			}
			if strings.TrimSpace(note) == "" {
				return usagef("--note is required: say what was done by hand")
			}
			ctx := cmd.Context()
			s, err := nf.open(ctx, "skip")
			if err != nil {
				return err
			}
			defer s.close()
			st, err := s.client.Get(ctx, id)
			if err != nil {
				return s.sagaError(id, err)
			}
			var stuck []string
			found := false
			for _, ss := range st.Steps {
				if ss.Stuck {
					stuck = append(stuck, ss.Name)
				}
				found = found || ss.Name == step
			}
			if !found {
				return usagef("--step: saga %s has no step %q", id, step)
			}
			if st.Status == orchestrator.Parked && !contains(stuck, step) {
				return usagef("--step: step %q did not park saga %s (stuck: %s)", step, id, strings.Join(stuck, ", "))
			}
			if err := s.client.Skip(ctx, id, step, note); err != nil {
				return s.sagaError(id, err)
			}
			return a.sent(asJSON, id, "skip", step)
		},
	}
	nf.register(cmd.Flags())
	cmd.Flags().BoolVar(&asJSON, "json", false, `print {"saga_id": ..., "action": ..., "sent": true} as JSON`)
	cmd.Flags().StringVar(&step, "step", "", "the step that parked the saga (required)")
	cmd.Flags().StringVar(&note, "note", "", "what was done by hand (required)")
	return cmd
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
