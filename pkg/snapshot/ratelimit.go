package snapshot

import (
	"fmt"
	"strings"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
)

// rateLimitReach warns about a rate-limit policy whose tool glob can match no
// tool of an endpoint that lists it. Tool names are known only once the
// upstreams answer tools/list; what the config knows is the prefix each
// member's tools are exposed under (and, for a member that allows only
// listed tools, their names), so a glob that cannot match any of those is
// certain to limit nothing there.
func (c *checker) rateLimitReach(cfg *metamcpv1.Config) {
	policies := map[string]*metamcpv1.RateLimitPolicy{}
	for _, p := range cfg.GetRateLimits() {
		policies[p.GetName()] = p
	}
	namespaces := map[string]*metamcpv1.Namespace{}
	for _, ns := range cfg.GetNamespaces() {
		namespaces[ns.GetName()] = ns
	}
	for _, e := range cfg.GetEndpoints() {
		ns := namespaces[e.GetNamespace()]
		if ns == nil {
			continue
		}
		for i, name := range e.GetRateLimits() {
			p := policies[name]
			if p == nil || (p.GetTool() == "" && p.GetServer() == "") {
				continue
			}
			if reach, prefixes := policyReach(ns, p); !reach {
				what := fmt.Sprintf("tool glob %q", p.GetTool())
				if p.GetTool() == "" {
					what = fmt.Sprintf("server %q", p.GetServer())
				} else if p.GetServer() != "" {
					what += fmt.Sprintf(" (server %q)", p.GetServer())
				}
				seen := "it serves no such server"
				if len(prefixes) > 0 {
					seen = "its tools are exposed as " + strings.Join(prefixes, ", ")
				}
				c.warn(KindRateLimitPolicy, name, "tool", "%s matches no tool of endpoint %q (%s): the policy limits nothing there", what, e.GetName(), seen)
				// Said of the endpoint too: creating the endpoint is when it shows.
				c.warn(KindEndpoint, e.GetName(), fmt.Sprintf("rateLimits[%d]", i), "rate-limit policy %q: its %s matches no tool of this endpoint (%s): it limits nothing here", name, what, seen)
			}
		}
	}
}

// policyReach reports whether p's server and tool glob may match a tool of
// namespace ns, and the exposed-name patterns of the members it looked at.
func policyReach(ns *metamcpv1.Namespace, p *metamcpv1.RateLimitPolicy) (bool, []string) {
	sep := Separator(ns)
	var seen []string
	for _, m := range ns.GetMembers() {
		if s := p.GetServer(); s != "" && m.GetServer() != s {
			continue
		}
		prefix := EffectivePrefix(m)
		if prefix != "" {
			prefix += sep
		}
		seen = append(seen, prefix+"*")
		glob := p.GetTool()
		if glob == "" {
			return true, nil
		}
		if names, exact := exposedNames(m); exact {
			for _, n := range names {
				if MatchGlob(glob, prefix+n) {
					return true, nil
				}
			}
			continue
		}
		if globMayMatchPrefix(glob, prefix) {
			return true, nil
		}
	}
	return false, seen
}

// exposedNames returns the tool names a member exposes (before its prefix)
// when the config alone decides them: every allow_tools entry is a plain
// name. Renames by overrides apply.
func exposedNames(m *metamcpv1.NamespaceMember) ([]string, bool) {
	allow := m.GetAllowTools()
	if len(allow) == 0 {
		return nil, false
	}
	var out []string
	for _, a := range allow {
		if strings.ContainsAny(a, "*?") {
			return nil, false
		}
		if !ToolAllowed(m, a) {
			continue
		}
		if o, ok := m.GetToolOverrides()[a]; ok && o.GetName() != "" {
			a = o.GetName()
		}
		out = append(out, a)
	}
	return out, true
}

// globMayMatchPrefix reports whether some name that starts with prefix
// matches pattern.
func globMayMatchPrefix(pattern, prefix string) bool {
	p := 0
	for i := 0; i < len(prefix); i++ {
		if p == len(pattern) {
			return false
		}
		switch pattern[p] {
		case '*':
			return true
		case '?':
		default:
			if pattern[p] != prefix[i] {
				return false
			}
		}
		p++
	}
	return true
}
