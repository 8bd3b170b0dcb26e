package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
)

func newRestartCommand(a *app) *cobra.Command {
	isServer := func(k *kind) bool { return k.apiKind == "Server" }
	return &cobra.Command{
		Use:   "restart server NAME",
		Short: "Make every data plane reconnect its sessions with an upstream server",
		Long: `Make every data plane close its sessions with an upstream server and open new
ones (calls in flight finish first; stdio processes are replaced). Data planes
notice most upstream restarts by themselves (a refused session is initialized
again); this is for the rest. It travels to data planes as a new revision,
like a config change, but changes nothing in the server's definition.`,
		Example:           "  mmctl restart server github",
		Args:              kindArgs(2, 2, "mmctl restart server NAME"),
		ValidArgsFunction: a.completeKindAndName(isServer),
		RunE: a.runE(func(ctx context.Context, cmd *cobra.Command, args []string) error {
			k, err := lookupKind(args[0])
			if err != nil {
				return err
			}
			if !isServer(k) {
				return usageErrorf("cannot restart %s: only servers are restarted (mmctl restart server NAME)", k.plural)
			}
			c, err := a.admin()
			if err != nil {
				return err
			}
			resp, err := c.RestartServer(ctx, &metamcpv1.RestartServerRequest{Name: args[1]})
			if err != nil {
				return fmt.Errorf("restart server %q: %w", args[1], err)
			}
			return a.printDone(k, args[1], "restarted", resp.GetRevision())
		}),
	}
}
