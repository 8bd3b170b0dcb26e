package admin

import (
	"context"
	"encoding/json"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/pkg/authz"
	"github.com/metamcp/metamcp/pkg/identity"
	"github.com/metamcp/metamcp/pkg/snapshot"
)

// ListedTools gives the tool lists data planes reported (the sync server
// keeps them).
type ListedTools interface {
	// EndpointTools returns the newest list reported for an endpoint, or nil.
	EndpointTools(endpoint string) *metamcpv1.EndpointTools
}

// SetListedTools tells CanI where the data planes' tool lists are. Call it
// before serving; without it CanI knows no tool list.
func (s *Service) SetListedTools(t ListedTools) {
	s.listedMu.Lock()
	defer s.listedMu.Unlock()
	s.listed = t
}

func (s *Service) listedTools(endpoint string) *metamcpv1.EndpointTools {
	s.listedMu.Lock()
	l := s.listed
	s.listedMu.Unlock()
	if l == nil {
		return nil
	}
	return l.EndpointTools(endpoint)
}

// CanI decides, with the endpoint's stored access rules, which tools a
// caller may use: one tool, or every tool a data plane reported.
func (s *Service) CanI(ctx context.Context, req *metamcpv1.CanIRequest) (*metamcpv1.CanIResponse, error) {
	ep, err := s.GetEndpoint(ctx, &metamcpv1.GetEndpointRequest{Name: req.GetEndpoint()})
	if err != nil {
		return nil, err
	}
	who, err := callerPrincipal(req.GetCaller())
	if err != nil {
		return nil, err
	}
	var args json.RawMessage
	if a := strings.TrimSpace(req.GetArguments()); a != "" {
		var obj map[string]any
		if json.Unmarshal([]byte(a), &obj) != nil || obj == nil {
			return nil, status.Error(codes.InvalidArgument, "arguments must be a JSON object, for example {\"path\": \"/tmp/x\"}")
		}
		if req.GetTool() == "" {
			return nil, status.Error(codes.InvalidArgument, "arguments need a tool: they are those of a call to it")
		}
		args = json.RawMessage(a)
	}
	policy, err := authz.Compile(ep.GetAccessRules())
	if err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "endpoint %q: %v", ep.GetName(), err)
	}
	resp := &metamcpv1.CanIResponse{Rules: ep.GetAccessRules()}
	listed := s.listedTools(ep.GetName())
	if listed != nil {
		resp.ToolsKnown = true
		resp.ListedBy, resp.ListedRevision, resp.ListedTime = listed.GetNodeId(), listed.GetRevision(), listed.GetReportTime()
	}
	decide := func(t *metamcpv1.ListedTool, unknown bool) {
		item := authz.Item{Kind: authz.Tool, Name: t.GetName(), Server: t.GetServer(), AnnotationsUnknown: unknown}
		if a := t.GetAnnotations(); a != nil {
			item.Annotations = authz.Annotations{Title: a.GetTitle(), ReadOnlyHint: a.ReadOnlyHint,
				DestructiveHint: a.DestructiveHint, IdempotentHint: a.IdempotentHint, OpenWorldHint: a.OpenWorldHint}
		}
		d := policy.Decide(who, item, args)
		resp.Decisions = append(resp.Decisions, &metamcpv1.ToolDecision{
			Tool: t.GetName(), Server: t.GetServer(), Allowed: d.Allowed, Rule: d.Rule,
			Conditional: d.Conditional, Reason: d.Reason(), AnnotationsUnknown: unknown,
		})
	}
	if name := req.GetTool(); name != "" {
		for _, t := range listed.GetTools() {
			if t.GetName() == name {
				decide(t, false)
				return resp, nil
			}
		}
		// Not listed (yet): decide on the name, the server its prefix
		// names, and no annotations.
		server, err := s.serverOf(ctx, ep, name)
		if err != nil {
			return nil, err
		}
		decide(&metamcpv1.ListedTool{Name: name, Server: server}, true)
		return resp, nil
	}
	for _, t := range listed.GetTools() {
		decide(t, false)
	}
	return resp, nil
}

// serverOf guesses which server of the endpoint's namespace exposes a tool,
// from the prefixes: the longest prefix the name starts with, or the one
// member without a prefix. Empty when it cannot tell.
func (s *Service) serverOf(ctx context.Context, ep *metamcpv1.Endpoint, tool string) (string, error) {
	ns, err := s.GetNamespace(ctx, &metamcpv1.GetNamespaceRequest{Name: ep.GetNamespace()})
	if status.Code(err) == codes.NotFound {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	sep := snapshot.Separator(ns)
	best, bestLen := "", -1
	var unprefixed []string
	for _, m := range ns.GetMembers() {
		p := snapshot.EffectivePrefix(m)
		if p == "" {
			unprefixed = append(unprefixed, m.GetServer())
			continue
		}
		if strings.HasPrefix(tool, p+sep) && len(p) > bestLen {
			best, bestLen = m.GetServer(), len(p)
		}
	}
	if best == "" && len(unprefixed) == 1 {
		best = unprefixed[0]
	}
	return best, nil
}

// callerPrincipal builds the principal a data plane would establish for c.
func callerPrincipal(c *metamcpv1.Caller) (*identity.Principal, error) {
	if c.GetName() == "" {
		return nil, status.Error(codes.InvalidArgument, "caller.name is required: the principal to decide for (--as)")
	}
	p := &identity.Principal{Name: c.GetName(), KeyID: c.GetApiKey(), Groups: c.GetGroups(), Issuer: c.GetIssuer()}
	kind := c.GetKind()
	if kind == "" {
		switch {
		case c.GetApiKey() != "":
			kind = "apikey"
		case c.GetName() == identity.AnonymousName:
			kind = "anonymous"
		default:
			kind = "jwt"
		}
	}
	switch kind {
	case "apikey":
		p.Kind = identity.KindAPIKey
		if p.KeyID == "" {
			p.KeyID = p.Name
		}
		if len(p.Groups) > 0 || len(c.GetClaims()) > 0 {
			return nil, status.Error(codes.InvalidArgument, "an API key caller has no groups or claims: those come from tokens (drop --api-key, or --group and --claim)")
		}
	case "jwt":
		p.Kind = identity.KindJWT
		p.Subject = p.Name
		if p.KeyID != "" {
			return nil, status.Error(codes.InvalidArgument, "a token caller has no API key (drop --api-key or --kind jwt)")
		}
	case "anonymous":
		p.Kind = identity.KindAnonymous
	default:
		return nil, status.Errorf(codes.InvalidArgument, "caller.kind %q: use apikey, jwt or anonymous", kind)
	}
	if len(c.GetClaims()) > 0 {
		p.Claims = make(map[string]any, len(c.GetClaims())+1)
		for k, v := range c.GetClaims() {
			var val any
			if json.Unmarshal([]byte(v), &val) != nil {
				val = v
			}
			p.Claims[k] = val
		}
	}
	if p.Kind == identity.KindJWT {
		if p.Claims == nil {
			p.Claims = map[string]any{}
		}
		if _, ok := p.Claims["sub"]; !ok {
			p.Claims["sub"] = p.Name
		}
		if p.Issuer != "" {
			if _, ok := p.Claims["iss"]; !ok {
				p.Claims["iss"] = p.Issuer
			}
		}
	}
	return p, nil
}
