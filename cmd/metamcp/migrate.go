package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/metamcp/metamcp/controlplane/store/postgres"
)

func newMigrateCommand(lf *logFlags, stdout io.Writer) *cobra.Command {
	var databaseURL string
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Bring the Postgres schema up to date, then exit",
		Long: `Apply the database migrations this build knows and exit. Running it again
applies nothing. 'metamcp controlplane' runs the same migrations at start, so
this command is needed only to migrate ahead of a rollout (e.g. as a Kubernetes
Job or a one-shot compose service). Several runs at once are safe: they take a
Postgres advisory lock.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if databaseURL == "" {
				return usageError{errors.New("no database: pass --database-url or set METAMCP_DATABASE_URL " +
					"(e.g. postgres://metamcp:PASSWORD@localhost:5432/metamcp)")}
			}
			logger, err := lf.logger(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			applied, err := postgres.Migrate(ctx, databaseURL, logger)
			if err != nil {
				return fmt.Errorf("migrate database: %w", err)
			}
			if applied == 0 {
				_, err = fmt.Fprintln(stdout, "The database schema is up to date: 0 migrations applied.")
			} else {
				_, err = fmt.Fprintf(stdout, "Applied %d migration(s); the database schema is up to date.\n", applied)
			}
			return err
		},
	}
	cmd.Flags().StringVar(&databaseURL, "database-url", "", "Postgres connection URL, e.g. postgres://USER:PASSWORD@HOST:5432/DB (required)")
	return cmd
}
