package envflag

import (
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

func TestBind(t *testing.T) {
	var listen, level string
	var n int
	root := &cobra.Command{Use: "root"}
	root.PersistentFlags().StringVar(&level, "log-level", "info", "level")
	sub := &cobra.Command{Use: "sub", RunE: func(*cobra.Command, []string) error { return nil }}
	sub.Flags().StringVar(&listen, "listen", "127.0.0.1:1", "address")
	sub.Flags().IntVar(&n, "max-count", 1, "count")
	root.AddCommand(sub)
	Bind(root)

	if u := sub.Flags().Lookup("listen").Usage; !strings.Contains(u, "[$METAMCP_LISTEN]") {
		t.Errorf("usage not annotated: %q", u)
	}
	if u := root.PersistentFlags().Lookup("log-level").Usage; !strings.Contains(u, "[$METAMCP_LOG_LEVEL]") {
		t.Errorf("persistent usage not annotated: %q", u)
	}

	t.Setenv("METAMCP_LISTEN", "0.0.0.0:9")
	t.Setenv("METAMCP_LOG_LEVEL", "debug")
	t.Setenv("METAMCP_MAX_COUNT", "7")
	root.SetArgs([]string{"sub", "--max-count", "3"})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	if listen != "0.0.0.0:9" || level != "debug" {
		t.Errorf("env not applied: listen=%q level=%q", listen, level)
	}
	if n != 3 {
		t.Errorf("a flag given on the command line lost to the environment: %d", n)
	}

	// A fresh tree: flags remember being set across Execute calls.
	var m int
	root2 := &cobra.Command{Use: "root"}
	sub2 := &cobra.Command{Use: "sub", RunE: func(*cobra.Command, []string) error { return nil }}
	sub2.Flags().IntVar(&m, "max-count", 1, "count")
	root2.AddCommand(sub2)
	Bind(root2)
	root2.SilenceErrors, root2.SilenceUsage = true, true
	t.Setenv("METAMCP_MAX_COUNT", "many")
	root2.SetArgs([]string{"sub"})
	err := root2.Execute()
	if err == nil || !strings.Contains(err.Error(), `METAMCP_MAX_COUNT="many"`) {
		t.Errorf("bad env value: %v", err)
	}
}

func TestName(t *testing.T) {
	if got := Name("tls-client-ca"); got != "METAMCP_TLS_CLIENT_CA" {
		t.Errorf("Name = %q", got)
	}
}
