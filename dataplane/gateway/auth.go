package gateway

import (
	"crypto/sha256"
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"github.com/metamcp/metamcp/pkg/snapshot"
)

// anonymousPrincipal is the principal of requests to an anonymous endpoint.
const anonymousPrincipal = "anonymous"

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

// credential returns the API key the request carries and where it came from.
func credential(r *http.Request) (key, from string) {
	if h := headerValue(r.Header, headerAuthorization); h != "" {
		if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
			return strings.TrimSpace(h[7:]), "header"
		}
		return "", "header"
	}
	if k := headerValue(r.Header, headerAPIKey); k != "" {
		return k, "header"
	}
	if k := r.URL.Query().Get("api_key"); k != "" {
		return k, "query"
	}
	return "", ""
}

// authenticate returns the caller's principal, or answers 401/403 itself.
func (g *Gateway) authenticate(w http.ResponseWriter, r *http.Request, t target) (string, bool) {
	if t.ep.Endpoint.GetAuth().GetAnonymous() {
		return anonymousPrincipal, true
	}
	key, _ := credential(r)
	if key == "" {
		g.unauthorized(w, r, t, "", "this endpoint needs an API key: send Authorization: Bearer mm_...")
		return "", false
	}
	var buf [256]byte // keys are short: hash them without an allocation
	sum := sha256.Sum256(append(buf[:0], key...))
	entry := t.snap.APIKeys[sum]
	if entry == nil {
		g.unauthorized(w, r, t, "invalid_token", "the API key is not valid (unknown or revoked): check it or create a new one with mmctl create apikey")
		return "", false
	}
	if exp := entry.GetExpireTime(); exp != nil && !exp.AsTime().After(time.Now()) {
		g.unauthorized(w, r, t, "invalid_token", "the API key "+quote(entry.GetName())+" expired at "+exp.AsTime().UTC().Format(time.RFC3339)+": create a new one")
		return "", false
	}
	allowed := false
	for _, e := range entry.GetEndpoints() {
		if e == "*" || e == t.name {
			allowed = true
			break
		}
	}
	if !allowed {
		writeHTTPError(w, http.StatusForbidden, codeInvalidRequest, "the API key "+quote(entry.GetName())+" may not call endpoint "+quote(t.name))
		return "", false
	}
	p := entry.GetPrincipal()
	if p == "" {
		p = entry.GetName()
	}
	return p, true
}

// unauthorized answers 401 with a WWW-Authenticate header pointing at the
// endpoint's protected-resource metadata (RFC 9728).
func (g *Gateway) unauthorized(w http.ResponseWriter, r *http.Request, t target, errCode, msg string) {
	v := `Bearer resource_metadata="` + baseURL(r) + "/.well-known/oauth-protected-resource/metamcp/" + t.name + `/mcp"`
	if errCode != "" {
		v += `, error="` + errCode + `"`
	}
	w.Header().Set("WWW-Authenticate", v)
	writeHTTPError(w, http.StatusUnauthorized, codeInvalidRequest, msg)
}

// baseURL is the scheme and host the client used.
func baseURL(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

// serveResourceMetadata serves the RFC 9728 protected-resource metadata of an endpoint.
func (g *Gateway) serveResourceMetadata(w http.ResponseWriter, r *http.Request) {
	t, ok := g.lookupEndpoint(w, r, strings.HasSuffix(r.URL.Path, "/sse"))
	if !ok {
		return
	}
	doc := map[string]any{
		"resource":                 baseURL(r) + "/metamcp/" + t.name + "/mcp",
		"bearer_methods_supported": []string{"header"},
		"resource_name":            "MetaMCP endpoint " + t.name,
	}
	if iss := t.ep.Endpoint.GetAuth().GetJwt().GetIssuer(); iss != "" {
		doc["authorization_servers"] = []string{iss}
		if sc := t.ep.Endpoint.GetAuth().GetJwt().GetRequiredScopes(); len(sc) > 0 {
			doc["scopes_supported"] = sc
		}
	}
	b, _ := json.Marshal(doc)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Access-Control-Allow-Origin", "*")
	_, _ = w.Write(b)
}
