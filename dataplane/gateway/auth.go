package gateway

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/dataplane/auth"
	"github.com/metamcp/metamcp/pkg/identity"
	"github.com/metamcp/metamcp/pkg/snapshot"
)

// TokenIssuers reports the key sets of the identity providers the served
// endpoints trust, for /readyz.
func (g *Gateway) TokenIssuers() []auth.IssuerState { return g.opts.Tokens.State() }

// updateTokens gives the token verifiers the JWT settings of snap's
// endpoints (ConfigChanged calls it), so that a new issuer's keys are
// fetched before its first token comes and an issuer no endpoint names any
// more is forgotten. Settings it has not seen yet (a request served from a
// snapshot before ConfigChanged ran) are registered on first use.
func (g *Gateway) updateTokens(snap *snapshot.Compiled) {
	cfgs := make(map[string]*metamcpv1.JWTAuth)
	for name, ep := range snap.Endpoints {
		if a := ep.Endpoint.GetAuth(); a.GetJwt() != nil && !a.GetAnonymous() {
			cfgs[name] = a.GetJwt()
		}
	}
	if _, err := g.opts.Tokens.Update(cfgs); err != nil {
		g.log.Warn("endpoints whose JWT settings are not valid refuse every token", "revision", snap.Revision, "err", err)
	}
}

// target is a request's endpoint in the snapshot being served.
type target struct {
	snap *snapshot.Compiled
	ep   *snapshot.Endpoint
	name string
}

// lookupEndpoint finds the request's endpoint, answering 404 or 503 itself
// when there is none. sse says which transport the request is for.
func (g *Gateway) lookupEndpoint(w http.ResponseWriter, r *http.Request, sse bool) (target, bool) {
	name := endpointName(r)
	var snap *snapshot.Compiled
	if g.opts.Config != nil {
		snap = g.opts.Config.Current()
	}
	if snap == nil {
		writeHTTPError(w, http.StatusServiceUnavailable, codeServerError, "the data plane has no configuration yet: it is waiting for the control plane; retry shortly")
		return target{}, false
	}
	ep := snap.Endpoints[name]
	if ep == nil || ep.Endpoint == nil {
		writeHTTPError(w, http.StatusNotFound, codeInvalidRequest, "no endpoint "+quote(name)+": check the URL (/metamcp/{endpoint}/mcp)")
		return target{}, false
	}
	tr := ep.Endpoint.GetTransports()
	if (sse && tr.GetDisableSse()) || (!sse && tr.GetDisableStreamableHttp()) {
		which := "Streamable HTTP (/mcp)"
		if sse {
			which = "SSE (/sse)"
		}
		writeHTTPError(w, http.StatusNotFound, codeInvalidRequest, "endpoint "+quote(name)+" does not serve "+which+": its transports turn it off")
		return target{}, false
	}
	return target{snap: snap, ep: ep, name: name}, true
}

// credential returns the credential the request carries and where it came
// from; the query string counts only where the endpoint allows it.
func credential(r *http.Request, ea *metamcpv1.EndpointAuth) (key, from string) {
	if h := headerValue(r.Header, headerAuthorization); h != "" {
		if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
			return strings.TrimSpace(h[7:]), "header"
		}
		return "", "header"
	}
	if k := headerValue(r.Header, headerAPIKey); k != "" {
		return k, "header"
	}
	if ea.GetAllowQueryApiKey() {
		if k := r.URL.Query().Get("api_key"); k != "" {
			return k, "query"
		}
	}
	return "", ""
}

// looksLikeJWT reports whether a credential has a JWS compact form's shape
// (three dot-separated parts); API keys never do.
func looksLikeJWT(s string) bool {
	return strings.Count(s, ".") == 2 && !strings.HasPrefix(s, "mm_")
}

// authenticate returns the caller's principal, or answers the refusal
// itself and records it in the audit trail.
//
// How a refusal is answered depends on what the endpoint accepts. An
// endpoint that takes OAuth access tokens answers a missing or bad token
// with 401 and a WWW-Authenticate header pointing at its protected-resource
// metadata (RFC 9728), which starts an OAuth client's sign-in. A bad API key,
// or any refusal on an endpoint that takes only API keys, is answered 403
// with no such pointer: MCP clients with OAuth support (mcp-remote, Claude
// Code, the Inspector) start an OAuth flow on every 401, whatever its
// header says, and then report a failed client registration instead of the
// gateway's message; on a 403 they show the message.
func (g *Gateway) authenticate(w http.ResponseWriter, r *http.Request, t target) (*identity.Principal, bool) {
	ea := t.ep.Endpoint.GetAuth()
	if ea.GetAnonymous() {
		return identity.Anonymous, true
	}
	ip := g.clientIP(r)
	if wait := g.authFailures.blocked(ip, time.Now()); wait > 0 {
		secs := strconv.Itoa(int((wait + time.Second - 1) / time.Second))
		w.Header().Set("Retry-After", secs)
		g.refuse(w, r, t, refusal{status: http.StatusTooManyRequests, outcome: metamcpv1.CallOutcome_CALL_OUTCOME_RATE_LIMITED,
			msg: "too many failed authentication attempts from this address: retry in " + secs + " s with a valid credential"})
		return nil, false
	}
	jwt := ea.GetJwt()
	key, _ := credential(r, ea)
	if key == "" {
		if jwt != nil {
			g.tokenChallenge(w, r, t, "", "this endpoint needs an OAuth access token (Authorization: Bearer ...)"+keysToo(ea))
			return nil, false
		}
		g.refuse(w, r, t, refusal{status: http.StatusForbidden, msg: "this endpoint needs an API key: send Authorization: Bearer mm_..."})
		return nil, false
	}
	var buf [256]byte // keys are short: hash them without an allocation
	sum := sha256.Sum256(append(buf[:0], key...))
	if entry := t.snap.APIKeys[sum]; entry != nil {
		p, ref := keyPrincipal(t, entry)
		if ref != nil {
			g.authFailures.fail(ip, time.Now())
			g.refuse(w, r, t, *ref)
			return nil, false
		}
		return p, true
	}
	if jwt != nil && looksLikeJWT(key) {
		p, err := g.opts.Tokens.Verify(r.Context(), key, jwt, g.tokenAudiences(r, t))
		if err == nil {
			return p, true
		}
		var te *auth.Error
		if !errors.As(err, &te) {
			te = &auth.Error{Code: auth.CodeInvalidToken, Description: err.Error()}
		}
		if te.Code == auth.CodeInsufficientScope {
			w.Header().Set("WWW-Authenticate", `Bearer error="insufficient_scope", scope="`+strings.Join(te.Scopes, " ")+`", resource_metadata="`+g.metadataURL(r, t)+`", error_description=`+quote(te.Description))
			g.refuse(w, r, t, refusal{status: http.StatusForbidden, outcome: metamcpv1.CallOutcome_CALL_OUTCOME_FORBIDDEN, msg: te.Description})
			return nil, false
		}
		g.authFailures.fail(ip, time.Now())
		g.tokenChallenge(w, r, t, te.Code, te.Description)
		return nil, false
	}
	g.authFailures.fail(ip, time.Now())
	if ea.GetDisableApiKeys() {
		g.tokenChallenge(w, r, t, auth.CodeInvalidToken, "the access token is not a JWT: this endpoint accepts only OAuth access tokens from "+jwt.GetIssuer())
		return nil, false
	}
	g.refuse(w, r, t, refusal{status: http.StatusForbidden, msg: "the API key is not valid (unknown or revoked): check it or create a new one with mmctl create apikey"})
	return nil, false
}

// refusal is how authenticate refuses a request: the HTTP status, the
// outcome the audit trail records (unauthorized when zero), the message and,
// where the credential was good but may not be used here, who it was.
type refusal struct {
	status  int
	outcome metamcpv1.CallOutcome
	msg     string
	who     *identity.Principal
}

// refuse answers a refused request and records it.
func (g *Gateway) refuse(w http.ResponseWriter, r *http.Request, t target, ref refusal) {
	if ref.outcome == metamcpv1.CallOutcome_CALL_OUTCOME_UNSPECIFIED {
		ref.outcome = metamcpv1.CallOutcome_CALL_OUTCOME_UNAUTHORIZED
	}
	writeHTTPError(w, ref.status, codeInvalidRequest, ref.msg)
	g.recordRefusal(r, t, ref.who, ref.status, ref.outcome, ref.msg)
}

// keysToo adds to a message that API keys work too, where they do.
func keysToo(a *metamcpv1.EndpointAuth) string {
	if a.GetDisableApiKeys() {
		return ""
	}
	return " or an API key (Bearer mm_...)"
}

// keyPrincipal checks an API key found in the snapshot against the endpoint:
// its principal, or why it may not be used here.
func keyPrincipal(t target, entry *metamcpv1.ApiKeyEntry) (*identity.Principal, *refusal) {
	if exp := entry.GetExpireTime(); exp != nil && !exp.AsTime().After(time.Now()) {
		return nil, &refusal{status: http.StatusForbidden, msg: "the API key " + quote(entry.GetName()) + " expired at " + exp.AsTime().UTC().Format(time.RFC3339) + ": create a new one"}
	}
	name := entry.GetPrincipal()
	if name == "" {
		name = entry.GetName()
	}
	p := &identity.Principal{Name: name, Kind: identity.KindAPIKey, KeyID: entry.GetName()}
	if t.ep.Endpoint.GetAuth().GetDisableApiKeys() {
		return nil, &refusal{status: http.StatusForbidden, outcome: metamcpv1.CallOutcome_CALL_OUTCOME_FORBIDDEN, who: p,
			msg: "endpoint " + quote(t.name) + " accepts only OAuth access tokens, not API keys: sign in through its identity provider"}
	}
	for _, e := range entry.GetEndpoints() {
		if e == "*" || e == t.name {
			return p, nil
		}
	}
	return nil, &refusal{status: http.StatusForbidden, outcome: metamcpv1.CallOutcome_CALL_OUTCOME_FORBIDDEN, who: p,
		msg: "the API key " + quote(entry.GetName()) + " may not call endpoint " + quote(t.name)}
}

// tokenChallenge answers 401 with a WWW-Authenticate header that points an
// OAuth client at the endpoint's protected-resource metadata (RFC 9728) and
// says which scopes to ask for.
func (g *Gateway) tokenChallenge(w http.ResponseWriter, r *http.Request, t target, errCode, msg string) {
	v := `Bearer resource_metadata="` + g.metadataURL(r, t) + `"`
	if sc := t.ep.Endpoint.GetAuth().GetJwt().GetRequiredScopes(); len(sc) > 0 {
		v += `, scope="` + strings.Join(sc, " ") + `"`
	}
	if errCode != "" {
		v += `, error="` + errCode + `", error_description=` + quote(msg)
	}
	w.Header().Set("WWW-Authenticate", v)
	g.refuse(w, r, t, refusal{status: http.StatusUnauthorized, msg: msg})
}

// resourcePath is the path of an endpoint's MCP URL for the transport a
// request used: its canonical resource URL ends with it (RFC 8707).
func resourcePath(r *http.Request, name string) string {
	if strings.HasSuffix(r.URL.Path, "/sse") || strings.HasSuffix(r.URL.Path, "/message") {
		return "/metamcp/" + name + "/sse"
	}
	return "/metamcp/" + name + "/mcp"
}

// metadataURL is the path-aware RFC 9728 metadata URL of the request's endpoint.
func (g *Gateway) metadataURL(r *http.Request, t target) string {
	return g.baseURL(r) + "/.well-known/oauth-protected-resource" + resourcePath(r, t.name)
}

// tokenAudiences are the `aud` values a token for endpoint t may carry: the
// endpoint's canonical resource URLs (Streamable HTTP and SSE) and the
// audiences its config adds.
func (g *Gateway) tokenAudiences(r *http.Request, t target) []string {
	base := g.baseURL(r) + "/metamcp/" + t.name
	extra := t.ep.Endpoint.GetAuth().GetJwt().GetAudiences()
	aud := make([]string, 0, 2+len(extra))
	aud = append(aud, base+"/mcp", base+"/sse")
	return append(aud, extra...)
}

// serveResourceMetadata serves the RFC 9728 protected-resource metadata of an
// endpoint that takes OAuth access tokens. Other endpoints have none, and
// answer as an unknown endpoint does: a document naming no authorization
// server would start an OAuth flow that cannot succeed.
func (g *Gateway) serveResourceMetadata(w http.ResponseWriter, r *http.Request) {
	t, ok := g.lookupEndpoint(w, r, strings.HasSuffix(r.URL.Path, "/sse"))
	if !ok {
		return
	}
	a := t.ep.Endpoint.GetAuth()
	if a.GetJwt() == nil || a.GetAnonymous() {
		writeHTTPError(w, http.StatusNotFound, codeInvalidRequest, "endpoint "+quote(t.name)+" does not use OAuth: it takes API keys (Authorization: Bearer mm_...)")
		return
	}
	doc := map[string]any{
		"resource":                 g.baseURL(r) + resourcePath(r, t.name),
		"authorization_servers":    []string{a.GetJwt().GetIssuer()},
		"bearer_methods_supported": []string{"header"},
		"resource_name":            "MetaMCP endpoint " + t.name,
	}
	if sc := a.GetJwt().GetRequiredScopes(); len(sc) > 0 {
		doc["scopes_supported"] = sc
	}
	b, _ := json.Marshal(doc)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Access-Control-Allow-Origin", "*")
	_, _ = w.Write(b)
}
