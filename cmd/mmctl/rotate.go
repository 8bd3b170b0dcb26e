package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
)

func newRotateCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "rotate session-key",
		Short: "Replace the key that seals data-plane session ids",
		Long: `Replace the key that seals the session ids data planes hand to MCP clients.
The new key seals new sessions; sessions sealed with the key it replaces keep
working (it stays as the previous key). Sessions sealed with the key before
that are refused from now on: their clients must initialize a new session.
Rotate at least one idle TTL apart to end no live session.`,
		Example:   "  mmctl rotate session-key",
		ValidArgs: []string{"session-key"},
		Args: func(cmd *cobra.Command, args []string) error {
			switch {
			case len(args) == 0:
				return usageErrorf("%s needs what to rotate: mmctl rotate session-key", cmd.CommandPath())
			case len(args) > 1:
				return usageErrorf("too many arguments: mmctl rotate session-key")
			case args[0] != "session-key":
				return usageErrorf("cannot rotate %q: only session-key is rotated (mmctl rotate session-key)", args[0])
			}
			return nil
		},
		RunE: a.runE(func(ctx context.Context, cmd *cobra.Command, args []string) error {
			c, err := a.admin()
			if err != nil {
				return err
			}
			resp, err := c.RotateSessionKey(ctx, &metamcpv1.RotateSessionKeyRequest{})
			if err != nil {
				return fmt.Errorf("rotate session key: %w", err)
			}
			switch a.output {
			case outputJSON:
				_, err = fmt.Fprintf(a.stdout, "{\n  \"result\": \"rotated\",\n  \"revision\": \"%d\"\n}\n", resp.GetRevision())
			case outputYAML:
				_, err = fmt.Fprintf(a.stdout, "result: rotated\nrevision: \"%d\"\n", resp.GetRevision())
			default:
				_, err = fmt.Fprintf(a.stdout, "session key rotated (revision %d)\n", resp.GetRevision())
			}
			return err
		}),
	}
}
