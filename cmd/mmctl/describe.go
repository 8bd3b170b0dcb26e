package main

import (
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
)

// describer writes a multi-line, human view of one resource: `Label:  value`
// lines, aligned, with indented sub-sections.
type describer struct {
	a  *app
	tw *tabwriter.Writer
}

func newDescriber(a *app, w io.Writer) *describer {
	return &describer{a: a, tw: tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)}
}

// field writes one `Label: value` line at the given depth.
func (d *describer) field(depth int, label, value string) {
	if value == "" {
		value = none
	}
	fmt.Fprintf(d.tw, "%s%s:\t%s\n", strings.Repeat("  ", depth), label, value)
}

// section starts an indented block.
func (d *describer) section(depth int, label string) {
	fmt.Fprintf(d.tw, "%s%s:\n", strings.Repeat("  ", depth), label)
}

// line writes a free line at the given depth.
func (d *describer) line(depth int, text string) {
	fmt.Fprintf(d.tw, "%s%s\n", strings.Repeat("  ", depth), text)
}

// values writes a map of Values, secrets as placeholders.
func (d *describer) values(depth int, label string, m map[string]*metamcpv1.Value) {
	if len(m) == 0 {
		d.field(depth, label, "")
		return
	}
	d.section(depth, label)
	for _, k := range sortedKeys(m) {
		d.line(depth+1, k+"="+valueShown(m[k]))
	}
}

func (d *describer) list(depth int, label string, items []string) {
	d.field(depth, label, strings.Join(items, ", "))
}

// times writes the output-only revision and times every config kind has.
func (d *describer) meta(rev int64, created, updated *timestamppb.Timestamp) {
	d.field(0, "Revision", revision(rev))
	d.field(0, "Created", d.a.timeShown(created))
	if updated != nil {
		d.field(0, "Updated", d.a.timeShown(updated))
	}
}

func (d *describer) flush() error { return d.tw.Flush() }

// timeShown is an absolute time and how long ago it was.
func (a *app) timeShown(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return ""
	}
	return fmt.Sprintf("%s (%s ago)", ts.AsTime().UTC().Format(time.RFC3339), a.age(ts))
}

// describe writes the detailed view of one item.
func (a *app) describe(w io.Writer, m proto.Message, resp proto.Message) error {
	d := newDescriber(a, w)
	switch v := m.(type) {
	case *metamcpv1.Server:
		describeServer(d, v)
	case *metamcpv1.Namespace:
		describeNamespace(d, v)
	case *metamcpv1.Endpoint:
		describeEndpoint(d, v)
	case *metamcpv1.RateLimitPolicy:
		describeRateLimit(d, v)
	case *metamcpv1.ApiKey:
		describeApiKey(d, v)
	case *metamcpv1.Token:
		describeToken(d, v)
	case *metamcpv1.DataPlane:
		r, _ := resp.(*metamcpv1.ListDataPlanesResponse)
		describeDataPlane(d, v, r)
	default:
		return fmt.Errorf("cannot describe %s", m.ProtoReflect().Descriptor().Name())
	}
	if mb, ok := m.(interface{ GetManagedBy() string }); ok {
		managedBy := mb.GetManagedBy()
		if managedBy == "" {
			managedBy = "- (not pruned by mmctl apply --prune)"
		}
		d.field(0, "Managed by", managedBy)
	}
	return d.flush()
}

func describeServer(d *describer, s *metamcpv1.Server) {
	d.field(0, "Name", s.GetName())
	d.field(0, "Description", s.GetDescription())
	transport, _ := serverTarget(s)
	d.field(0, "Transport", transport)
	switch t := s.GetTransport().(type) {
	case *metamcpv1.Server_Stdio:
		d.field(1, "Command", shellQuote(t.Stdio.GetCommand()))
		d.field(1, "Args", shellJoin(t.Stdio.GetArgs()))
		d.field(1, "Working dir", t.Stdio.GetCwd())
		d.values(1, "Env", t.Stdio.GetEnv())
	case *metamcpv1.Server_Sse:
		describeHTTP(d, t.Sse)
	case *metamcpv1.Server_StreamableHttp:
		describeHTTP(d, t.StreamableHttp)
	}
	d.field(0, "Session mode", sessionModeName(s.GetSessionMode()))
	d.section(0, "Timeouts")
	d.field(1, "Initialize", durationShown(s.GetTimeouts().GetInitialize()))
	d.field(1, "Call", durationShown(s.GetTimeouts().GetCall()))
	d.field(1, "List", durationShown(s.GetTimeouts().GetList()))
	d.section(0, "Limits")
	d.field(1, "Max processes", countShown(s.GetLimits().GetMaxProcesses()))
	d.field(1, "Max sessions", countShown(s.GetLimits().GetMaxSessions()))
	d.field(1, "Idle TTL", durationShown(s.GetLimits().GetIdleTtl()))
	d.meta(s.GetRevision(), s.GetCreateTime(), s.GetUpdateTime())
}

func describeHTTP(d *describer, h *metamcpv1.HTTPTransport) {
	d.field(1, "URL", h.GetUrl())
	d.values(1, "Headers", h.GetHeaders())
	bearer := ""
	if h.GetBearerToken() != nil {
		bearer = valueShown(&metamcpv1.Value{Secret: true, Set: h.GetBearerToken().GetSet(), Value: h.GetBearerToken().GetValue()})
	}
	d.field(1, "Bearer token", bearer)
}

func countShown(n int32) string {
	if n == 0 {
		return "default"
	}
	return fmt.Sprint(n)
}

func describeNamespace(d *describer, n *metamcpv1.Namespace) {
	d.field(0, "Name", n.GetName())
	d.field(0, "Description", n.GetDescription())
	d.field(0, "Separator", separator(n.GetSeparator()))
	if len(n.GetMembers()) == 0 {
		d.field(0, "Servers", "")
	} else {
		d.section(0, "Servers")
	}
	for _, m := range n.GetMembers() {
		d.section(1, m.GetServer())
		prefix := m.GetServer()
		if m.Prefix != nil {
			prefix = m.GetPrefix()
		}
		if prefix == "" {
			prefix = "(none)"
		}
		d.field(2, "Prefix", prefix)
		allow := strings.Join(m.GetAllowTools(), ", ")
		if allow == "" {
			allow = "(all)"
		}
		d.field(2, "Allow tools", allow)
		d.list(2, "Deny tools", m.GetDenyTools())
		if len(m.GetToolOverrides()) > 0 {
			d.section(2, "Tool overrides")
			for _, tool := range sortedKeys(m.GetToolOverrides()) {
				o := m.GetToolOverrides()[tool]
				d.section(3, tool)
				if o.GetDisabled() {
					d.field(4, "Disabled", "yes")
				}
				if o.GetName() != "" {
					d.field(4, "Name", o.GetName())
				}
				if o.GetTitle() != "" {
					d.field(4, "Title", o.GetTitle())
				}
				if o.GetDescription() != "" {
					d.field(4, "Description", oneLine(o.GetDescription()))
				}
				if an := o.GetAnnotations(); an != nil {
					var hints []string
					if an.Title != nil {
						hints = append(hints, fmt.Sprintf("title=%q", an.GetTitle()))
					}
					for _, h := range []struct {
						name string
						v    *bool
					}{{"readOnly", an.ReadOnlyHint}, {"destructive", an.DestructiveHint}, {"idempotent", an.IdempotentHint}, {"openWorld", an.OpenWorldHint}} {
						if h.v != nil {
							hints = append(hints, fmt.Sprintf("%s=%t", h.name, *h.v))
						}
					}
					d.list(4, "Annotations", hints)
				}
			}
		}
	}
	describeCollisions(d, n.GetName())
	d.meta(n.GetRevision(), n.GetCreateTime(), n.GetUpdateTime())
}

// describeCollisions writes the tool and prompt names two upstreams of
// namespace share, as the data planes reported them.
func describeCollisions(d *describer, namespace string) {
	if d.a.collisionsErr != nil {
		d.field(0, "Name collisions", "unknown: "+d.a.collisionsErr.Error())
		return
	}
	type key struct{ endpoint, kind, name, kept, dropped string }
	nodes := map[key][]string{}
	var keys []key
	for _, dp := range d.a.collisions {
		for _, c := range dp.GetNameCollisions() {
			if c.GetNamespace() != namespace {
				continue
			}
			k := key{c.GetEndpoint(), c.GetKind(), c.GetName(), c.GetKeptServer(), c.GetDroppedServer()}
			if _, ok := nodes[k]; !ok {
				keys = append(keys, k)
			}
			nodes[k] = append(nodes[k], dp.GetNodeId())
		}
	}
	if len(keys) == 0 {
		d.field(0, "Name collisions", "")
		return
	}
	sort.Slice(keys, func(i, j int) bool {
		a, b := keys[i], keys[j]
		if a.endpoint != b.endpoint {
			return a.endpoint < b.endpoint
		}
		if a.kind != b.kind {
			return a.kind < b.kind
		}
		return a.name < b.name
	})
	d.section(0, "Name collisions")
	for _, k := range keys {
		d.line(1, fmt.Sprintf("%s %s on endpoint %s: %s's is listed and called, %s's left out (seen by %s)",
			k.kind, k.name, k.endpoint, k.kept, k.dropped, strings.Join(nodes[k], ", ")))
	}
}

func describeEndpoint(d *describer, e *metamcpv1.Endpoint) {
	d.field(0, "Name", e.GetName())
	d.field(0, "Description", e.GetDescription())
	d.field(0, "Namespace", e.GetNamespace())
	d.field(0, "Paths", fmt.Sprintf("/metamcp/%s/mcp, /metamcp/%s/sse", e.GetName(), e.GetName()))
	d.section(0, "Auth")
	switch {
	case e.GetAuth().GetAnonymous():
		d.line(1, "anonymous (no authentication: for local trials only)")
	default:
		switch {
		case e.GetAuth().GetDisableApiKeys():
			d.field(1, "API keys", "refused (OAuth access tokens only)")
		case e.GetAuth().GetAllowQueryApiKey():
			d.field(1, "API keys", "accepted (keys scoped to this endpoint or to *), also as ?api_key= in the URL")
		default:
			d.field(1, "API keys", "accepted (keys scoped to this endpoint or to *)")
		}
		if j := e.GetAuth().GetJwt(); j != nil {
			d.section(1, "JWT")
			d.field(2, "Issuer", j.GetIssuer())
			jwks := j.GetJwksUrl()
			if jwks == "" {
				jwks = "(discovered from the issuer)"
			}
			d.field(2, "JWKS URL", jwks)
			claim := j.GetPrincipalClaim()
			if claim == "" {
				claim = "sub"
			}
			d.field(2, "Principal claim", claim)
			if g := j.GetGroupsClaim(); g != "" {
				d.field(2, "Groups claim", g)
			}
			d.list(2, "Required scopes", j.GetRequiredScopes())
			d.list(2, "Audiences", append([]string{"the endpoint's URL (https://HOST/metamcp/" + e.GetName() + "/mcp or /sse)"}, j.GetAudiences()...))
			if len(j.GetAlgorithms()) > 0 {
				d.list(2, "Algorithms", j.GetAlgorithms())
			}
			if s := j.GetClockSkew(); s != nil {
				d.field(2, "Clock skew", s.AsDuration().String())
			}
		}
	}
	describeAccessRules(d, e.GetAccessRules())
	d.list(0, "Rate limits", e.GetRateLimits())
	d.section(0, "Transports")
	d.field(1, "Streamable HTTP", onOff(!e.GetTransports().GetDisableStreamableHttp()))
	d.field(1, "SSE", onOff(!e.GetTransports().GetDisableSse()))
	d.meta(e.GetRevision(), e.GetCreateTime(), e.GetUpdateTime())
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

func describeRateLimit(d *describer, p *metamcpv1.RateLimitPolicy) {
	d.field(0, "Name", p.GetName())
	d.field(0, "Description", p.GetDescription())
	d.field(0, "Rate", rateSpec(p))
	d.field(0, "Burst", burst(p))
	d.field(0, "Key", rateLimitKeyName(p.GetKey()))
	server := p.GetServer()
	if server == "" {
		server = "(every server)"
	}
	d.field(0, "Server", server)
	tool := p.GetTool()
	if tool == "" {
		tool = "(every tool)"
	}
	d.field(0, "Tool", tool)
	d.field(0, "On Redis failure", failureModeName(p.GetOnRedisFailure()))
	counts := "tools/call"
	if p.GetEveryRequest() {
		counts = "every request"
	}
	d.field(0, "Counts", counts)
	d.field(0, "Shadow", onOff(p.GetShadow()))
	d.meta(p.GetRevision(), p.GetCreateTime(), p.GetUpdateTime())
}

func describeApiKey(d *describer, k *metamcpv1.ApiKey) {
	d.field(0, "Name", k.GetName())
	d.field(0, "Description", k.GetDescription())
	principal := k.GetPrincipal()
	if principal == "" {
		principal = k.GetName() + " (the key's name)"
	}
	d.field(0, "Principal", principal)
	d.list(0, "Endpoints", k.GetEndpoints())
	d.field(0, "Key prefix", prefixShown(k.GetKeyPrefix()))
	d.field(0, "Status", d.a.credentialStatus(k.GetRevokeTime(), k.GetExpireTime()))
	d.field(0, "Expires", d.a.expires(k.GetExpireTime()))
	if k.GetRevokeTime() != nil {
		d.field(0, "Revoked", d.a.timeShown(k.GetRevokeTime()))
	}
	d.meta(k.GetRevision(), k.GetCreateTime(), k.GetUpdateTime())
}

func describeToken(d *describer, t *metamcpv1.Token) {
	d.field(0, "Name", t.GetName())
	d.field(0, "Description", t.GetDescription())
	d.field(0, "Scope", tokenScopeName(t.GetScope()))
	d.field(0, "Token prefix", prefixShown(t.GetTokenPrefix()))
	d.field(0, "Status", d.a.credentialStatus(t.GetRevokeTime(), t.GetExpireTime()))
	d.field(0, "Expires", d.a.expires(t.GetExpireTime()))
	if t.GetRevokeTime() != nil {
		d.field(0, "Revoked", d.a.timeShown(t.GetRevokeTime()))
	}
	d.field(0, "Created", d.a.timeShown(t.GetCreateTime()))
}

func describeDataPlane(d *describer, p *metamcpv1.DataPlane, r *metamcpv1.ListDataPlanesResponse) {
	d.field(0, "Node", p.GetNodeId())
	d.field(0, "Hostname", p.GetHostname())
	d.field(0, "Address", p.GetAddress())
	d.field(0, "Version", p.GetVersion())
	d.field(0, "Connected", yesNo(p.GetConnected()))
	d.field(0, "Applied revision", revision(p.GetAppliedRevision()))
	d.field(0, "Applied hash", p.GetAppliedHash())
	d.field(0, "Status", dataPlaneStatus(p, r))
	if p.GetStoreId() != "" {
		d.field(0, "Store", p.GetStoreId())
	}
	if p.GetLastError() != "" {
		d.field(0, "Last error", fmt.Sprintf("%s (revision %d)", oneLine(p.GetLastError()), p.GetLastErrorRevision()))
	}
	if p.GetKeysRevision() > 0 {
		d.field(0, "Keys revision", fmt.Sprintf("%d (the API keys and session keys in force; the rest of that revision was refused)", p.GetKeysRevision()))
	}
	if len(p.GetRefusedServers()) > 0 {
		d.section(0, "Servers left out")
		for _, r := range p.GetRefusedServers() {
			d.line(1, r.GetServer()+": "+oneLine(r.GetReason()))
		}
	}
	d.field(0, "Last seen", d.a.timeShown(p.GetLastSeen()))
	d.field(0, "Connected since", d.a.timeShown(p.GetConnectTime()))
	d.field(0, "Client sessions", strconv.FormatInt(p.GetActiveSessions(), 10))
	if len(p.GetUpstreams()) == 0 {
		d.field(0, "Upstreams", "")
		return
	}
	d.section(0, "Upstreams")
	for _, u := range p.GetUpstreams() {
		state := strings.ToLower(strings.TrimPrefix(u.GetState().String(), "UPSTREAM_STATE_"))
		text := fmt.Sprintf("%s: %s, %d sessions, %d processes", u.GetServer(), state, u.GetSessions(), u.GetProcesses())
		if u.GetError() != "" {
			text += ": " + oneLine(u.GetError())
		}
		d.line(1, text)
	}
}
