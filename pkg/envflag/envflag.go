// Package envflag mirrors cobra flags into environment variables, so every
// flag `--some-flag` can also be set as METAMCP_SOME_FLAG and --help says so.
package envflag

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// Prefix starts every mirrored variable name.
const Prefix = "METAMCP_"

// Name returns the environment variable that mirrors a flag name.
func Name(flag string) string {
	return Prefix + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// Bind annotates the usage of every flag of cmd and its subcommands (local and
// persistent) with its variable, and arranges for each command, before it runs,
// to take unset flags from the environment. Flags in skip are not mirrored
// (help, version). Call it once on the root command after all flags exist.
func Bind(root *cobra.Command, skip ...string) {
	skipped := map[string]bool{"help": true}
	for _, s := range skip {
		skipped[s] = true
	}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		annotate := func(f *pflag.Flag) {
			if skipped[f.Name] || strings.Contains(f.Usage, "[$"+Prefix) {
				return
			}
			f.Usage = fmt.Sprintf("%s [$%s]", f.Usage, Name(f.Name))
		}
		c.LocalNonPersistentFlags().VisitAll(annotate)
		c.PersistentFlags().VisitAll(annotate)
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)

	prev := root.PersistentPreRunE
	root.PersistentPreRunE = func(cmd *cobra.Command, args []string) error {
		var errs []string
		cmd.Flags().VisitAll(func(f *pflag.Flag) {
			if skipped[f.Name] || f.Changed {
				return
			}
			v, ok := os.LookupEnv(Name(f.Name))
			if !ok {
				return
			}
			if err := cmd.Flags().Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Sprintf("%s=%q: %v", Name(f.Name), v, err))
			}
		})
		if len(errs) > 0 {
			return fmt.Errorf("invalid environment: %s", strings.Join(errs, "; "))
		}
		if prev != nil {
			return prev(cmd, args)
		}
		return nil
	}
}
