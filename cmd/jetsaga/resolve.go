package main

import (
	"strings"

	"github.com/spf13/cobra"
)

func (a *app) resolveCmd() *cobra.Command {
	var (
		nf     natsFlags
		note   string
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "resolve SAGA_ID --note TEXT",
		Short: "End a parked saga with an operator's note",
		Long: `End a parked saga: it becomes terminal in the direction it was going (compensated if it was
compensating, committed otherwise) and the operator's note is recorded as its resolution. You vouch
for the steps it did not finish.`,
		Args: exactArgs("SAGA_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := args[0]
			if strings.TrimSpace(note) == "" {
				return usagef("--note is required: say why the saga may end as it is")
			}
			ctx := cmd.Context()
			s, err := nf.open(ctx, "resolve")
			if err != nil {
				return err
			}
			defer s.close()
			if err := s.client.Resolve(ctx, id, note); err != nil {
				return s.sagaError(id, err)
			}
			return a.sent(asJSON, id, "resolve", "")
		},
	}
	nf.register(cmd.Flags())
	cmd.Flags().BoolVar(&asJSON, "json", false, `print {"saga_id": ..., "action": ..., "sent": true} as JSON`)
	cmd.Flags().StringVar(&note, "note", "", "why the saga may end as it is (required)")
	return cmd
}
