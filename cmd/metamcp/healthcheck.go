package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/metamcp/metamcp/dataplane"
)

// defaultHealthURL is the readiness URL of a data plane on its default port.
const defaultHealthURL = "http://" + dataplane.DefaultListen + "/readyz"

func newHealthcheckCommand(stdout io.Writer) *cobra.Command {
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "healthcheck [URL]",
		Short: "Check a data plane's health URL: exit 0 when it answers 200",
		Long: `Fetch URL (default ` + defaultHealthURL + `) and exit 0 when it answers
HTTP 200, 1 otherwise. For container healthchecks in images without a shell or
curl: /readyz is 200 once the data plane serves a config, /healthz while the
process lives.`,
		Example: `  metamcp healthcheck
  metamcp healthcheck http://127.0.0.1:12008/healthz`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 {
				return usageError{fmt.Errorf("%s takes at most one URL, got %q", cmd.CommandPath(), args)}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			url := defaultHealthURL
			if len(args) == 1 {
				url = args[0]
			}
			return runHealthcheck(cmd.Context(), stdout, url, timeout)
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Second, "how long to wait for the answer")
	return cmd
}

func runHealthcheck(ctx context.Context, stdout io.Writer, url string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return usageError{fmt.Errorf("health URL %q: %w", url, err)}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("health check %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	msg := strings.TrimSpace(string(body))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("health check %s: HTTP %d: %s", url, resp.StatusCode, msg)
	}
	_, err = fmt.Fprintln(stdout, msg)
	return err
}
