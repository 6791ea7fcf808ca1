package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/jetsaga/jetsaga/orchestrator"
)

func (a *app) listCmd() *cobra.Command {
	var (
		nf     natsFlags
		status string
		limit  int
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List sagas, newest first",
		Long: `List the sagas of the state bucket, newest first, optionally only those in one status
(for example "jetsaga list --status parked", the sagas that wait for an operator).

A saga enters the bucket with its first step's outcome: one whose first step has not answered yet
is not listed, but "jetsaga status <id>" finds it.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := parseStatus(status)
			if err != nil {
				return err
			}
			if limit < 0 {
				return usagef("--limit must not be negative, got %d", limit)
			}
			ctx := cmd.Context()
			s, err := nf.open(ctx, "list")
			if err != nil {
				return err
			}
			defer s.close()
			sagas, err := s.client.List(ctx, orchestrator.ListFilter{Status: st, Limit: limit})
			if err != nil {
				return fmt.Errorf("list sagas: %w", err)
			}
			if asJSON {
				if sagas == nil {
					sagas = []*orchestrator.State{}
				}
				return writeJSON(a.stdout, sagas)
			}
			if len(sagas) == 0 {
				fmt.Fprintln(a.stdout, "no sagas")
				return nil
			}
			tw := newTable(a.stdout)
			fmt.Fprintln(tw, "SAGA ID\tNAME\tSTATUS\tSTEPS\tSTARTED\tUPDATED\tREASON")
			for _, s := range sagas {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d/%d\t%s\t%s\t%s\n", s.SagaID, orDash(s.Name), s.Status,
					stepsDone(s), len(s.Steps), msTime(s.StartedMS), msTime(s.UpdatedMS), orDash(oneLine(s.Reason, 60)))
			}
			return tw.Flush()
		},
	}
	nf.register(cmd.Flags())
	cmd.Flags().StringVar(&status, "status", "", fmt.Sprintf("only sagas in this status: one of %v", statusValues))
	cmd.Flags().IntVar(&limit, "limit", 0, "at most this many sagas (0: all)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the sagas' states as a JSON array")
	return cmd
}
