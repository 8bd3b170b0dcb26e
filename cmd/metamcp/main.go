// Command metamcp is the MetaMCP server binary. Its roles are subcommands, in
// the style of `consul agent`: `metamcp controlplane` runs the control plane on
// Postgres, `metamcp dev` runs everything in one process on an embedded store,
// `metamcp migrate` brings a Postgres schema up to date and `metamcp version`
// says which build this is.
//
// This package is where components are wired together: it builds the store,
// the secret sealer and the servers from flags and hands each its
// dependencies. Nothing below it reads flags or the environment.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/metamcp/metamcp/pkg/envflag"
	"github.com/metamcp/metamcp/pkg/version"
)

// Exit codes.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

// run executes the command line args and returns the process exit code. Errors
// are printed as one line on stderr; a user never sees a stack trace.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRootCommand(stdout, stderr)
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return exitOK
	}
	fmt.Fprintf(stderr, "metamcp: error: %v\n", err)
	var ue usageError
	// Cobra reports an unknown subcommand as a plain error.
	if errors.As(err, &ue) || strings.HasPrefix(err.Error(), "unknown command") {
		fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
		return exitUsage
	}
	return exitError
}

// usageError marks a mistake on the command line (exit code 2), as opposed to
// a failure while running (exit code 1).
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// newRootCommand builds the whole command tree.
func newRootCommand(stdout, stderr io.Writer) *cobra.Command {
	lf := &logFlags{}
	root := &cobra.Command{
		Use:   "metamcp",
		Short: "MetaMCP: one gateway in front of all your MCP servers",
		Long: `MetaMCP is a self-hosted gateway for the Model Context Protocol.

Roles of this binary:
  metamcp dev            everything in one process, state in a local directory (first run, laptops)
  metamcp controlplane   the control plane on Postgres (production)
  metamcp dataplane      a data plane: serves MCP clients with the config the control plane streams
  metamcp migrate        bring the Postgres schema up to date
  metamcp demo-server    a small MCP server on stdio (the upstream metamcp dev seeds)
  metamcp healthcheck    exit 0 when a data plane is ready (for container healthchecks)

Every flag can also be set through the environment variable shown next to it.
The admin CLI is mmctl.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		return usageError{err}
	})
	root.CompletionOptions.DisableDefaultCmd = true
	lf.register(root)

	root.AddCommand(
		newControlPlaneCommand(lf),
		newDataPlaneCommand(lf),
		newDevCommand(lf, stdout),
		newDemoServerCommand(lf),
		newHealthcheckCommand(stdout),
		newMigrateCommand(lf, stdout),
		newVersionCommand(stdout),
	)
	envflag.Bind(root)
	return root
}

// noArgs rejects positional arguments as a usage error.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usageError{fmt.Errorf("%s takes no arguments, got %q", cmd.CommandPath(), args)}
	}
	return nil
}

func newVersionCommand(stdout io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version of this build",
		Args:  noArgs,
		RunE: func(*cobra.Command, []string) error {
			_, err := fmt.Fprintf(stdout, "metamcp %s\n", version.String())
			return err
		},
	}
}
