package main

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
)

func newRateLimitCommand(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ratelimit",
		Short: "See and reset the budgets of rate-limit policies",
		Long: `See how much of a rate-limit policy's budget a caller has left and when it
refills, or give the caller the whole burst again. The control plane reads the
buckets where the data planes count them: their Redis (the control plane's
--redis-url), or in process under metamcp dev.

A policy's bucket is per endpoint that lists it and per key: the principal,
the API key's name or the client address, as the policy counts (--principal
names it); a global policy has one bucket per endpoint.`,
	}
	cmd.AddCommand(newRateLimitStatusCommand(a), newRateLimitResetCommand(a))
	return cmd
}

func newRateLimitStatusCommand(a *app) *cobra.Command {
	var key, endpoint string
	cmd := &cobra.Command{
		Use:   "status POLICY [--principal P] [--endpoint E]",
		Short: "Show the remaining budget of a policy and when it refills",
		Example: `  mmctl ratelimit status per-user --principal marketing-bot
  mmctl ratelimit status per-user --principal alice --endpoint team`,
		Args: policyArg,
		RunE: a.runE(func(ctx context.Context, cmd *cobra.Command, args []string) error {
			c, err := a.admin()
			if err != nil {
				return err
			}
			resp, err := c.GetRateLimitStatus(ctx, &metamcpv1.GetRateLimitStatusRequest{Policy: args[0], Key: key, Endpoint: endpoint})
			if err != nil {
				return fmt.Errorf("rate-limit status of %q: %w", args[0], err)
			}
			switch a.output {
			case outputJSON:
				return writeJSON(a.stdout, resp)
			case outputYAML:
				return writeYAML(a.stdout, resp)
			}
			p := resp.GetPolicy()
			fmt.Fprintf(a.stdout, "Policy %s: %s, bursts of %s, counted in %s\n", p.GetName(), rateSpec(p), burst(p), resp.GetBackend())
			t := &table{header: []string{"ENDPOINT", "KEY", "REMAINING", "NEXT CALL IN", "FULL IN"}}
			for _, b := range resp.GetBuckets() {
				t.add(b.GetEndpoint(), b.GetKey(), strconv.FormatInt(b.GetRemaining(), 10)+"/"+strconv.FormatInt(b.GetBurst(), 10),
					waitFor(b.GetRetryAfter().AsDuration()), waitFor(b.GetResetAfter().AsDuration()))
			}
			return t.write(a.stdout)
		}),
	}
	cmd.Flags().StringVar(&key, "principal", "", "whose bucket: the principal, the API key's name or the client address, as the policy counts (not for a global policy)")
	cmd.Flags().StringVar(&endpoint, "endpoint", "", "only this endpoint's bucket (default: every endpoint that lists the policy)")
	return cmd
}

func newRateLimitResetCommand(a *app) *cobra.Command {
	var key, endpoint string
	cmd := &cobra.Command{
		Use:     "reset POLICY --principal P [--endpoint E]",
		Short:   "Give a caller the whole burst of a policy again",
		Example: `  mmctl ratelimit reset per-user --principal marketing-bot`,
		Args:    policyArg,
		RunE: a.runE(func(ctx context.Context, cmd *cobra.Command, args []string) error {
			c, err := a.admin()
			if err != nil {
				return err
			}
			resp, err := c.ResetRateLimit(ctx, &metamcpv1.ResetRateLimitRequest{Policy: args[0], Key: key, Endpoint: endpoint})
			if err != nil {
				return fmt.Errorf("reset rate limit %q: %w", args[0], err)
			}
			switch a.output {
			case outputJSON:
				return writeJSON(a.stdout, resp)
			case outputYAML:
				return writeYAML(a.stdout, resp)
			}
			for _, e := range resp.GetEndpoints() {
				who := key
				if who == "" {
					who = "everyone"
				}
				fmt.Fprintf(a.stdout, "ratelimit %s reset for %s at endpoint %s\n", args[0], who, e)
			}
			return nil
		}),
	}
	cmd.Flags().StringVar(&key, "principal", "", "whose bucket: the principal, the API key's name or the client address, as the policy counts (not for a global policy)")
	cmd.Flags().StringVar(&endpoint, "endpoint", "", "only this endpoint's bucket (default: every endpoint that lists the policy)")
	return cmd
}

// waitFor prints a wait: "now" when there is none.
func waitFor(d time.Duration) string {
	if d <= 0 {
		return "now"
	}
	if d < time.Second {
		return d.Round(time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}

// policyArg takes the one POLICY argument.
func policyArg(cmd *cobra.Command, args []string) error {
	switch {
	case len(args) == 0:
		return usageErrorf("%s needs the name of a rate-limit policy (mmctl get ratelimits lists them)", cmd.CommandPath())
	case len(args) > 1:
		return usageErrorf("%s takes one POLICY, got %d arguments", cmd.CommandPath(), len(args))
	}
	return nil
}
