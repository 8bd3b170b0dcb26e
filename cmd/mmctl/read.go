package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
)

// runE wraps a command's body: it marks the start of the command's own work
// (errors from here on are not usage errors unless typed so) and gives it a
// context bounded by --timeout.
func (a *app) runE(body func(ctx context.Context, cmd *cobra.Command, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		a.begin()
		ctx, cancel := a.rpcContext(cmd.Context())
		defer cancel()
		return body(ctx, cmd, args)
	}
}

// kindArgs checks `KIND [NAME]` arguments: least..most of them.
func kindArgs(least, most int, use string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < least || len(args) > most {
			if len(args) == 0 {
				return usageErrorf("%s needs a kind (%s)", cmd.CommandPath(), kindList(nil))
			}
			if len(args) < least {
				return usageErrorf("%s needs a NAME: %s", cmd.CommandPath(), use)
			}
			return usageErrorf("too many arguments: %s", use)
		}
		return nil
	}
}

func newGetCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "get KIND [NAME]",
		Short: "List resources of a kind, or show one",
		Long: `List resources of a kind, or show one.

Kinds (any spelling): server|servers|srv, namespace|namespaces|ns,
endpoint|endpoints|ep, ratelimit|ratelimits|ratelimitpolicy|rl,
apikey|apikeys|key, token|tokens, dataplane|dataplanes|dp.

Secrets are never shown: a set secret prints as <set>. -o yaml prints config
kinds in the form mmctl apply reads.`,
		Example: `  mmctl get servers
  mmctl get ns dev -o yaml
  mmctl get dataplanes`,
		Args:              kindArgs(1, 2, "mmctl get KIND [NAME]"),
		ValidArgsFunction: a.completeKindAndName(func(*kind) bool { return true }),
		RunE: a.runE(func(ctx context.Context, cmd *cobra.Command, args []string) error {
			k, err := lookupKind(args[0])
			if err != nil {
				return err
			}
			c, err := a.admin()
			if err != nil {
				return err
			}
			if len(args) == 2 {
				m, resp, err := k.getOne(ctx, c, args[1])
				if err != nil {
					return fmt.Errorf("get %s %q: %w", k.name, args[1], err)
				}
				redact(m)
				return a.printItems(k, resp, []proto.Message{m}, true)
			}
			resp, items, err := k.list(ctx, c)
			if err != nil {
				return fmt.Errorf("list %s: %w", k.plural, err)
			}
			redact(resp)
			return a.printItems(k, resp, items, false)
		}),
	}
}

func newDescribeCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "describe KIND NAME",
		Short: "Show one resource in detail",
		Long: `Show one resource in detail: every field, in a form for people to read.
Secrets are never shown: a set secret prints as <set>.`,
		Example: `  mmctl describe server github
  mmctl describe endpoint dev`,
		Args:              kindArgs(2, 2, "mmctl describe KIND NAME"),
		ValidArgsFunction: a.completeKindAndName(func(*kind) bool { return true }),
		RunE: a.runE(func(ctx context.Context, cmd *cobra.Command, args []string) error {
			k, err := lookupKind(args[0])
			if err != nil {
				return err
			}
			c, err := a.admin()
			if err != nil {
				return err
			}
			m, resp, err := k.getOne(ctx, c, args[1])
			if err != nil {
				return fmt.Errorf("get %s %q: %w", k.name, args[1], err)
			}
			redact(m)
			switch a.output {
			case outputJSON, outputYAML:
				return a.printItems(k, resp, []proto.Message{m}, true)
			}
			if _, ok := m.(*metamcpv1.Namespace); ok {
				// Name collisions only the data planes' lists show.
				dps, err := c.ListDataPlanes(ctx, &metamcpv1.ListDataPlanesRequest{})
				if err != nil {
					a.collisionsErr = err
				} else {
					a.collisions = dps.GetDataPlanes()
				}
			}
			return a.describe(a.stdout, m, resp)
		}),
	}
}

func newDeleteCommand(a *app) *cobra.Command {
	deletable := func(k *kind) bool { return k.del != nil }
	var (
		files  []string
		dryRun bool
	)
	cmd := &cobra.Command{
		Use:     "delete KIND NAME | delete -f FILE|DIR|-",
		Aliases: []string{"rm"},
		Short:   "Delete a resource, or the resources of YAML files",
		Long: `Delete a resource. A server, namespace or rate-limit policy still in use
cannot be deleted: remove the references first. Deleting an API key forgets
it; "mmctl revoke apikey" stops it and keeps the record.

With -f, delete every resource the files name (only kind and name are read),
in one revision, or none of them when one is missing or still used by a
resource that stays.`,
		Example: `  mmctl delete endpoint dev
  mmctl delete -f old-servers.yaml --dry-run`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(files) > 0 {
				if len(args) > 0 {
					return usageErrorf("delete -f takes no KIND NAME arguments")
				}
				return nil
			}
			return kindArgs(2, 2, "mmctl delete KIND NAME")(cmd, args)
		},
		ValidArgsFunction: a.completeKindAndName(deletable),
		RunE: a.runE(func(ctx context.Context, cmd *cobra.Command, args []string) error {
			if len(files) > 0 {
				resources, err := a.readConfigFiles(files, false)
				if err != nil {
					return err
				}
				return a.applyRequest(ctx, &metamcpv1.ApplyRequest{Resources: resources, Delete: true, DryRun: dryRun})
			}
			if dryRun {
				return usageErrorf("--dry-run goes with -f")
			}
			k, err := lookupKind(args[0])
			if err != nil {
				return err
			}
			if k.del == nil {
				return usageErrorf("cannot delete %s: %s", k.plural, k.noDelete)
			}
			c, err := a.admin()
			if err != nil {
				return err
			}
			rev, err := k.del(ctx, c, args[1])
			if err != nil {
				return fmt.Errorf("delete %s %q: %w", k.name, args[1], err)
			}
			return a.printDone(k, args[1], "deleted", rev)
		}),
	}
	cmd.Flags().StringArrayVarP(&files, "filename", "f", nil, "delete the resources a YAML or JSON file, a directory of them, or - (stdin) names (repeatable)")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "with -f: check and show the deletions without committing them")
	return cmd
}

func newRevokeCommand(a *app) *cobra.Command {
	revocable := func(k *kind) bool { return k.revoke != nil }
	return &cobra.Command{
		Use:   "revoke apikey|token NAME",
		Short: "Stop an API key or a token at once, keeping its record",
		Long: `Stop an API key or a control-plane token at once. The record stays, marked
revoked, for the audit trail. Every data plane refuses a revoked key within a
second; a revoked sync token's streams are closed.`,
		Example:           "  mmctl revoke apikey alice\n  mmctl revoke token dp-eu-1",
		Args:              kindArgs(2, 2, "mmctl revoke apikey|token NAME"),
		ValidArgsFunction: a.completeKindAndName(revocable),
		RunE: a.runE(func(ctx context.Context, cmd *cobra.Command, args []string) error {
			k, err := lookupKind(args[0])
			if err != nil {
				return err
			}
			if k.revoke == nil {
				return usageErrorf("cannot revoke %s: only apikeys and tokens are revoked", k.plural)
			}
			c, err := a.admin()
			if err != nil {
				return err
			}
			m, err := k.revoke(ctx, c, args[1])
			if err != nil {
				return fmt.Errorf("revoke %s %q: %w", k.name, args[1], err)
			}
			redact(m)
			switch a.output {
			case outputJSON:
				return writeJSON(a.stdout, m)
			case outputYAML:
				return writeYAML(a.stdout, m)
			}
			fmt.Fprintf(a.stdout, "%s/%s revoked\n", k.name, args[1])
			return nil
		}),
	}
}

// printDone prints the outcome of a delete: `server/github deleted (revision 7)`,
// or {"revision": ...} for -o json|yaml.
func (a *app) printDone(k *kind, name, verb string, rev int64) error {
	switch a.output {
	case outputJSON:
		_, err := fmt.Fprintf(a.stdout, "{\n  \"kind\": %q,\n  \"name\": %q,\n  \"result\": %q,\n  \"revision\": \"%d\"\n}\n", k.apiKind, name, verb, rev)
		return err
	case outputYAML:
		_, err := fmt.Fprintf(a.stdout, "kind: %s\nname: %s\nresult: %s\nrevision: \"%d\"\n", k.apiKind, name, verb, rev)
		return err
	}
	_, err := fmt.Fprintf(a.stdout, "%s/%s %s (revision %d)\n", k.name, name, verb, rev)
	return err
}

// completeKindAndName completes the first argument with kind names (those
// keep accepts) and the second with the names of existing resources, asked
// of the control plane with a short deadline.
func (a *app) completeKindAndName(keep func(*kind) bool) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		switch len(args) {
		case 0:
			var out []string
			for _, k := range kinds {
				if keep(k) && strings.HasPrefix(k.plural, toComplete) {
					out = append(out, k.plural)
				}
			}
			return out, cobra.ShellCompDirectiveNoFileComp
		case 1:
			k, err := lookupKind(args[0])
			if err != nil || !keep(k) {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			return a.completeNames(cmd, k, toComplete), cobra.ShellCompDirectiveNoFileComp
		}
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
}

// completeNames lists names of kind k starting with prefix; nothing on error.
func (a *app) completeNames(cmd *cobra.Command, k *kind, prefix string) []string {
	// Cobra's completion path does not run the persistent pre-run hooks:
	// apply the environment and the config file here.
	if pre := cmd.Root().PersistentPreRunE; pre != nil {
		if err := pre(cmd, nil); err != nil {
			return nil
		}
	}
	c, err := a.admin()
	if err != nil {
		return nil
	}
	ctx := cmd.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_, items, err := k.list(ctx, c)
	if err != nil {
		return nil
	}
	var out []string
	for _, n := range k.sortedNames(items) {
		if strings.HasPrefix(n, prefix) {
			out = append(out, n)
		}
	}
	return out
}
