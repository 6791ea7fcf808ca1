package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/jetsaga/jetsaga/examples/bank"
	"github.com/jetsaga/jetsaga/outbox"
	"github.com/jetsaga/jetsaga/participants"
)

func (a *app) migrateCmd() *cobra.Command {
	var (
		db             dbFlags
		withBank       bool
		asJSON         bool
		connectTimeout = defaultConnectTimeout
	)
	cmd := &cobra.Command{
		Use:   "migrate --database-url URL [--bank]",
		Short: "Create or upgrade a participant's tables (barrier and outbox) in its database",
		Long: `Create or upgrade the tables a participant needs in its own database: the sub-transaction
barrier and the transactional outbox. With --bank, also the example bank's tables.

Migrations are embedded in the binary, versioned in the database and run under an advisory lock, so
running migrate again, or from several processes at once, is safe and does nothing new.`,
		Example: `  jetsaga migrate --database-url postgres://bank:secret@db:5432/bank_a --bank`,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			pool, err := openPool(ctx, db.url, 2, connectTimeout)
			if err != nil {
				return err
			}
			defer pool.Close()
			if err := participants.Migrate(ctx, pool); err != nil {
				return fmt.Errorf("migrate %s: %w", redactURL(db.url), err)
			}
			ob, err := outbox.New(outbox.Config{})
			if err != nil {
				return err
			}
			obv, err := ob.Version(ctx, pool)
			if err != nil {
				return fmt.Errorf("read the outbox version: %w", err)
			}
			if withBank {
				if err := bank.Migrate(ctx, pool); err != nil {
					return fmt.Errorf("migrate the bank tables in %s: %w", redactURL(db.url), err)
				}
			}
			if asJSON {
				return writeJSON(a.stdout, migrateJSON{OutboxTable: ob.Table(), OutboxVersion: obv,
					BarrierTable: participants.DefaultBarrierTable, BarrierVersion: participants.LatestVersion(), Bank: withBank})
			}
			fmt.Fprintf(a.stdout, "outbox table %s at version %d\n", ob.Table(), obv)
			fmt.Fprintf(a.stdout, "barrier table %s at version %d\n", participants.DefaultBarrierTable, participants.LatestVersion())
			if withBank {
				fmt.Fprintln(a.stdout, "bank tables migrated")
			}
			return nil
		},
	}
	db.register(cmd.Flags(), "the participant's database, a postgres:// URL (required)")
	cmd.Flags().BoolVar(&withBank, "bank", false, "also create the example bank's tables")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the tables and their versions as a JSON object")
	cmd.Flags().DurationVar(&connectTimeout, "connect-timeout", defaultConnectTimeout, "how long to try to reach PostgreSQL")
	return cmd
}
