package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
)

// exitStatus ends mmctl with a code and no message: the command already
// said what it had to (`mmctl auth can-i` answering "no").
type exitStatus struct{ code int }

func (e exitStatus) Error() string { return fmt.Sprintf("exit status %d", e.code) }

func newAuthCommand(a *app) *cobra.Command {
	auth := &cobra.Command{
		Use:   "auth",
		Short: "Inspect who may use what through an endpoint",
	}
	auth.AddCommand(newCanICommand(a))
	return auth
}

func newCanICommand(a *app) *cobra.Command {
	var (
		as, kind, apiKey, issuer, arguments string
		groups, claims                      []string
	)
	cmd := &cobra.Command{
		Use:   "can-i ENDPOINT --as PRINCIPAL [TOOL]",
		Short: "Show which tools a caller may use through an endpoint, and which rule decides",
		Long: `Show which of an endpoint's tools a caller may use, and which access rule
decides each, as the data planes decide it.

Without TOOL, every tool a data plane listed for the endpoint is shown (data
planes report their tool lists to the control plane a few seconds after they
list them). With TOOL, that one tool is decided and the exit code says the
answer: 0 for yes, 1 for no.

Describe the caller as the data plane would see it: --as is the principal
name (an API key's principal, or the token claim the endpoint names);
--api-key makes it an API key caller; --group and --claim make it a token
(JWT) caller. A tool marked "yes*" has a rule whose condition reads the call's
arguments: it is listed, and each call is decided on its arguments (pass
--arguments to decide one).`,
		Example: `  mmctl auth can-i team --as alice@example.com --group eng
  mmctl auth can-i team --as ci-bot --api-key ci github__delete_repo
  mmctl auth can-i team --as bob --claim team=payments fs__write --arguments '{"path": "/tmp/x"}'`,
		Args: func(cmd *cobra.Command, args []string) error {
			switch {
			case len(args) == 0:
				return usageErrorf("%s needs an ENDPOINT: mmctl auth can-i ENDPOINT --as PRINCIPAL [TOOL]", cmd.CommandPath())
			case len(args) > 2:
				return usageErrorf("too many arguments: mmctl auth can-i ENDPOINT --as PRINCIPAL [TOOL]")
			}
			if as == "" {
				return usageErrorf("--as is required: the principal to decide for")
			}
			if arguments != "" && len(args) < 2 {
				return usageErrorf("--arguments needs a TOOL: they are the arguments of a call to it")
			}
			return nil
		},
		RunE: a.runE(func(ctx context.Context, cmd *cobra.Command, args []string) error {
			caller := &metamcpv1.Caller{Name: as, Kind: kind, ApiKey: apiKey, Groups: groups, Issuer: issuer}
			for _, kv := range claims {
				k, v, ok := strings.Cut(kv, "=")
				if !ok || k == "" {
					return usageErrorf("--claim %q: use NAME=VALUE (VALUE a JSON value or a plain string)", kv)
				}
				if caller.Claims == nil {
					caller.Claims = map[string]string{}
				}
				caller.Claims[k] = v
			}
			req := &metamcpv1.CanIRequest{Endpoint: args[0], Caller: caller, Arguments: arguments}
			if len(args) == 2 {
				req.Tool = args[1]
			}
			c, err := a.admin()
			if err != nil {
				return err
			}
			resp, err := c.CanI(ctx, req)
			if err != nil {
				return about(fmt.Sprintf("can-i on endpoint %q", req.GetEndpoint()), err)
			}
			return a.printCanI(req, resp)
		}),
	}
	f := cmd.Flags()
	f.StringVar(&as, "as", "", "the caller's principal name (required)")
	f.StringVar(&apiKey, "api-key", "", "the name of the API key the caller uses (an API key caller)")
	f.StringSliceVar(&groups, "group", nil, "a group of the caller (a token caller); repeat or separate with commas")
	f.StringArrayVar(&claims, "claim", nil, "a token claim NAME=VALUE (a token caller); repeat for more")
	f.StringVar(&kind, "kind", "", "apikey, jwt or anonymous; guessed from the other flags when empty")
	f.StringVar(&issuer, "issuer", "", "the token's issuer (a token caller)")
	f.StringVar(&arguments, "arguments", "", "the arguments of a call to TOOL, a JSON object")
	return cmd
}

func (a *app) printCanI(req *metamcpv1.CanIRequest, resp *metamcpv1.CanIResponse) error {
	var err error
	switch a.output {
	case outputJSON:
		err = writeJSON(a.stdout, resp)
	case outputYAML:
		err = writeYAML(a.stdout, resp)
	default:
		if req.GetTool() != "" {
			err = a.printCanIOne(req, resp)
		} else {
			err = a.printCanIList(req, resp)
		}
	}
	if err != nil {
		return err
	}
	if req.GetTool() != "" {
		if d := resp.GetDecisions(); len(d) != 1 || !d[0].GetAllowed() {
			return exitStatus{exitError}
		}
	}
	return nil
}

func (a *app) printCanIOne(req *metamcpv1.CanIRequest, resp *metamcpv1.CanIResponse) error {
	ds := resp.GetDecisions()
	if len(ds) != 1 {
		return fmt.Errorf("the control plane gave %d decisions for one tool", len(ds))
	}
	d := ds[0]
	answer := "no"
	if d.GetAllowed() {
		answer = "yes"
	}
	fmt.Fprintf(a.stdout, "%s: %s\n", answer, d.GetReason())
	if d.GetAnnotationsUnknown() {
		fmt.Fprintf(a.stderr, "note: no data plane has listed %q yet, so its annotations are not known", d.GetTool())
		if d.GetServer() == "" {
			fmt.Fprint(a.stderr, ", nor its server")
		}
		fmt.Fprintln(a.stderr, "; rules reading them are not decided")
	}
	if d.GetConditional() && d.GetAllowed() && req.GetArguments() == "" {
		fmt.Fprintln(a.stderr, "note: a condition reads what is not known here; each call is decided on its arguments (try --arguments '{...}')")
	}
	return nil
}

func (a *app) printCanIList(req *metamcpv1.CanIRequest, resp *metamcpv1.CanIResponse) error {
	if !resp.GetToolsKnown() {
		fmt.Fprintf(a.stdout, "The tool list of endpoint %q is not known yet: no data plane has reported it to this control plane.\n", req.GetEndpoint())
		fmt.Fprintf(a.stdout, "List the tools through the endpoint (tools/list), or ask about one tool: mmctl auth can-i %s --as %s TOOL\n", req.GetEndpoint(), req.GetCaller().GetName())
		fmt.Fprintln(a.stdout)
		return a.printRules(resp.GetRules())
	}
	t := &table{header: []string{"TOOL", "SERVER", "ALLOWED", "RULE"}}
	conditional := false
	for _, d := range resp.GetDecisions() {
		allowed := "no"
		if d.GetAllowed() {
			allowed = "yes"
			if d.GetConditional() {
				allowed = "yes*"
				conditional = true
			}
		}
		rule := d.GetRule()
		switch {
		case len(resp.GetRules()) == 0:
			rule = "(no rules)"
		case rule == "":
			rule = "(no rule allows it)"
		case !d.GetAllowed():
			rule += " (deny)"
		}
		t.add(d.GetTool(), d.GetServer(), allowed, rule)
	}
	if len(t.rows) == 0 {
		fmt.Fprintf(a.stdout, "Endpoint %q lists no tools.\n", req.GetEndpoint())
	} else if err := t.write(a.stdout); err != nil {
		return err
	}
	if conditional {
		fmt.Fprintln(a.stdout, "* listed; each call is decided on its arguments")
	}
	fmt.Fprintf(a.stdout, "Tools as listed by data plane %s at revision %d, %s ago.\n", resp.GetListedBy(), resp.GetListedRevision(), a.age(resp.GetListedTime()))
	return nil
}

func (a *app) printRules(rules []*metamcpv1.AccessRule) error {
	if len(rules) == 0 {
		fmt.Fprintln(a.stdout, "The endpoint has no access rules: every authenticated caller may use everything.")
		return nil
	}
	t := &table{header: []string{"RULE", "EFFECT", "WHO", "WHAT", "CONDITION"}}
	for _, r := range rules {
		t.add(r.GetName(), accessEffectName(r.GetEffect()), ruleWho(r), ruleWhat(r), r.GetCondition())
	}
	return t.write(a.stdout)
}

// describeAccessRules writes an endpoint's rules in `mmctl describe`.
func describeAccessRules(d *describer, rules []*metamcpv1.AccessRule) {
	if len(rules) == 0 {
		d.field(0, "Access rules", "(none: every authenticated caller may use everything)")
		return
	}
	d.section(0, "Access rules")
	for _, r := range rules {
		text := ruleWho(r) + " -> " + ruleWhat(r)
		if c := r.GetCondition(); c != "" {
			text += " if " + c
		}
		d.field(1, r.GetName()+" ("+accessEffectName(r.GetEffect())+")", text)
	}
}

func accessEffectName(e metamcpv1.AccessEffect) string {
	if e == metamcpv1.AccessEffect_ACCESS_EFFECT_DENY {
		return "deny"
	}
	return "allow"
}

// ruleWho says whom a rule applies to.
func ruleWho(r *metamcpv1.AccessRule) string {
	var parts []string
	if p := r.GetPrincipals(); len(p) > 0 {
		parts = append(parts, "principals "+strings.Join(p, ","))
	}
	if g := r.GetGroups(); len(g) > 0 {
		parts = append(parts, "groups "+strings.Join(g, ","))
	}
	if k := r.GetApiKeys(); len(k) > 0 {
		parts = append(parts, "api keys "+strings.Join(k, ","))
	}
	if len(parts) == 0 {
		return "everyone"
	}
	return strings.Join(parts, "; ")
}

// ruleWhat says what a rule covers.
func ruleWhat(r *metamcpv1.AccessRule) string {
	var parts []string
	for _, p := range []struct {
		label string
		items []string
	}{{"tools", r.GetTools()}, {"servers", r.GetServers()}, {"prompts", r.GetPrompts()}, {"resources", r.GetResources()}} {
		if len(p.items) > 0 {
			parts = append(parts, p.label+" "+strings.Join(p.items, ","))
		}
	}
	return strings.Join(parts, "; ")
}
