package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/pkg/version"
)

func newVersionCommand(a *app) *cobra.Command {
	var clientOnly bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print mmctl's version and the control plane's revision",
		Args:  cobra.NoArgs,
		RunE: a.runE(func(ctx context.Context, cmd *cobra.Command, args []string) error {
			fmt.Fprintf(a.stdout, "mmctl %s\n", version.String())
			if clientOnly {
				return nil
			}
			c, err := a.admin()
			if err != nil {
				return err
			}
			resp, err := c.GetRevision(ctx, &metamcpv1.GetRevisionRequest{})
			if err != nil {
				return fmt.Errorf("get revision: %w", err)
			}
			_, err = fmt.Fprintf(a.stdout, "control plane %s: config revision %d\n", a.addr, resp.GetRevision())
			return err
		}),
	}
	cmd.Flags().BoolVar(&clientOnly, "client", false, "print only mmctl's version, without asking the control plane")
	return cmd
}
