package main

import (
	"github.com/spf13/cobra"
)

func (a *app) redriveCmd() *cobra.Command {
	var (
		nf     natsFlags
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "redrive SAGA_ID",
		Short: "Resume a parked saga: send its stuck step again with a fresh retry budget",
		Long: `Resume a parked saga: the step that parked it (a compensation or retriable step that spent its
retry budget, a pivot whose outcome is unknown) is sent again with a fresh retry budget, in the
direction the saga was going. Fix the cause first (the participant's logs say what failed).`,
		Args: exactArgs("SAGA_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := args[0]
			ctx := cmd.Context()
			s, err := nf.open(ctx, "redrive")
			if err != nil {
				return err
			}
			defer s.close()
			if err := s.client.Redrive(ctx, id); err != nil {
				return s.sagaError(id, err)
			}
			return a.sent(asJSON, id, "redrive", "")
		},
	}
	nf.register(cmd.Flags())
	cmd.Flags().BoolVar(&asJSON, "json", false, `print {"saga_id": ..., "action": ..., "sent": true} as JSON`)
	return cmd
}
