// Package snapshot holds the one definition of a valid config: the checks the
// control plane runs on every write and the data plane runs on every snapshot
// it receives, and (later) the compiled, immutable form a data plane serves.
//
// Field paths in violations use the JSON (camelCase) names users write in
// config files, with list indexes and quoted map keys:
// `members[1].toolOverrides["search"].name`.
package snapshot

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/pkg/authz"
	"github.com/metamcp/metamcp/pkg/canonical"
)

// Violation is one problem with one field of one resource.
type Violation struct {
	// Kind is the resource kind ("Server", "Namespace", ...).
	Kind string
	// Name is the resource's name (may be empty when the name itself is missing).
	Name string
	// Field is the JSON path of the offending field, e.g. "stdio.command" or
	// "members[1].prefix".
	Field string
	// Description says what is wrong and, where it helps, what to do.
	Description string
}

func (v Violation) String() string {
	return fmt.Sprintf("%s %q: %s: %s", v.Kind, v.Name, v.Field, v.Description)
}

// Error is a failed validation; it lists every violation found.
type Error struct {
	Violations []Violation
}

func (e *Error) Error() string {
	parts := make([]string, len(e.Violations))
	for i, v := range e.Violations {
		parts[i] = v.String()
	}
	return "invalid config: " + strings.Join(parts, "; ")
}

// Resource kinds, as they appear in violations, config files and Apply reports.
const (
	KindServer          = "Server"
	KindNamespace       = "Namespace"
	KindEndpoint        = "Endpoint"
	KindRateLimitPolicy = "RateLimitPolicy"
	KindApiKey          = "ApiKey"
	KindToken           = "Token"
	KindSessionKeys     = "SessionKeys"
)

// Limits enforced on every resource.
const (
	// MaxDescriptionLength is the longest description, in characters.
	MaxDescriptionLength = 1024
	// MaxDuration bounds every timeout, TTL and rate-limit period.
	MaxDuration = 24 * time.Hour
	// MaxPrefixLength is the longest namespace member prefix.
	MaxPrefixLength = 64
	// MaxSeparatorLength is the longest namespace separator.
	MaxSeparatorLength = 8
	// longPrefixWarning is the prefix+separator length past which Validate
	// warns that ordinary tool names will exceed PortableToolNameLength.
	longPrefixWarning = 32
	// keyLength is the size of a SHA-256 hash and of a session key.
	keyLength = 32
)

// Validate checks a whole config: each resource on its own, then references
// between resources and the names each namespace exposes. It returns warnings
// for what works but will likely hurt, and an *Error listing every violation.
//
// The config is the one a data plane receives: secret values in clear text,
// nothing sealed. A nil config is an empty, valid one.
func Validate(cfg *metamcpv1.Config) (warnings []string, err error) {
	c := &checker{inConfig: true}
	idx := index{
		servers:    map[string]bool{},
		namespaces: map[string]bool{},
		endpoints:  map[string]bool{},
		rateLimits: map[string]bool{},
	}
	for _, s := range cfg.GetServers() {
		idx.servers[s.GetName()] = true
	}
	idx.members = map[string]map[string]bool{}
	for _, ns := range cfg.GetNamespaces() {
		idx.namespaces[ns.GetName()] = true
		m := map[string]bool{}
		for _, mem := range ns.GetMembers() {
			m[mem.GetServer()] = true
		}
		idx.members[ns.GetName()] = m
	}
	for _, e := range cfg.GetEndpoints() {
		idx.endpoints[e.GetName()] = true
	}
	for _, p := range cfg.GetRateLimits() {
		idx.rateLimits[p.GetName()] = true
	}
	c.idx = &idx

	seen := map[string]string{}
	for i, s := range cfg.GetServers() {
		c.unique(KindServer, s.GetName(), fmt.Sprintf("servers[%d]", i), seen)
		c.server(s)
	}
	clear(seen)
	for i, ns := range cfg.GetNamespaces() {
		c.unique(KindNamespace, ns.GetName(), fmt.Sprintf("namespaces[%d]", i), seen)
		c.namespace(ns)
	}
	clear(seen)
	for i, e := range cfg.GetEndpoints() {
		c.unique(KindEndpoint, e.GetName(), fmt.Sprintf("endpoints[%d]", i), seen)
		c.endpoint(e)
	}
	clear(seen)
	for i, p := range cfg.GetRateLimits() {
		c.unique(KindRateLimitPolicy, p.GetName(), fmt.Sprintf("rateLimits[%d]", i), seen)
		c.rateLimit(p)
	}
	c.rateLimitReach(cfg)
	clear(seen)
	hashes := map[string]string{}
	for i, k := range cfg.GetApiKeys() {
		c.unique(KindApiKey, k.GetName(), fmt.Sprintf("apiKeys[%d]", i), seen)
		c.apiKeyEntry(k, hashes)
	}
	if sk := cfg.GetSessionKeys(); sk != nil {
		c.sessionKeys(sk)
	}
	if len(c.violations) > 0 {
		return c.warnings, &Error{Violations: c.violations}
	}
	return c.warnings, nil
}

// ValidateResource checks one resource on its own, as an admin client sends
// it: everything Validate checks except references to other resources,
// collisions between resources and the rules on secret values (a secret
// written without a value keeps the stored one). It accepts *Resource,
// *Server, *Namespace, *Endpoint, *RateLimitPolicy, *ApiKey, *ApiKeyEntry and
// *Token. Call Validate on the whole would-be config as well: that is what
// decides whether a change is accepted.
func ValidateResource(m proto.Message) []Violation {
	c := &checker{}
	switch r := m.(type) {
	case *metamcpv1.Resource:
		switch k := r.GetKind().(type) {
		case *metamcpv1.Resource_Server:
			c.server(k.Server)
		case *metamcpv1.Resource_Namespace:
			c.namespace(k.Namespace)
		case *metamcpv1.Resource_Endpoint:
			c.endpoint(k.Endpoint)
		case *metamcpv1.Resource_RateLimit:
			c.rateLimit(k.RateLimit)
		default:
			c.add("Resource", "", "kind", "is required: set server, namespace, endpoint or rateLimit")
		}
	case *metamcpv1.Server:
		c.server(r)
	case *metamcpv1.Namespace:
		c.namespace(r)
	case *metamcpv1.Endpoint:
		c.endpoint(r)
	case *metamcpv1.RateLimitPolicy:
		c.rateLimit(r)
	case *metamcpv1.ApiKey:
		c.apiKey(r)
	case *metamcpv1.ApiKeyEntry:
		c.apiKeyEntry(r, map[string]string{})
	case *metamcpv1.Token:
		c.token(r)
	default:
		kind := "<nil>"
		if m != nil {
			kind = string(m.ProtoReflect().Descriptor().FullName())
		}
		c.add(kind, "", "", "is not a config resource")
	}
	return c.violations
}

// index holds the names of every resource of a config, for references.
type index struct {
	servers, namespaces, endpoints, rateLimits map[string]bool
	// members holds the servers mounted in each namespace.
	members map[string]map[string]bool
}

// checker collects violations and warnings.
type checker struct {
	// inConfig applies the rules of a data plane's config: secrets in clear
	// text, references resolved against idx.
	inConfig   bool
	idx        *index
	violations []Violation
	warnings   []string
}

func (c *checker) add(kind, name, field, format string, args ...any) {
	c.violations = append(c.violations, Violation{
		Kind: kind, Name: name, Field: field, Description: fmt.Sprintf(format, args...),
	})
}

func (c *checker) warn(kind, name, field, format string, args ...any) {
	c.warnings = append(c.warnings, Violation{
		Kind: kind, Name: name, Field: field, Description: fmt.Sprintf(format, args...),
	}.String())
}

// unique reports a name already used by an earlier resource of the same kind.
// seen maps each name to where it first appeared.
func (c *checker) unique(kind, name, at string, seen map[string]string) {
	if name == "" {
		return // reported as a missing name
	}
	if first, dup := seen[name]; dup {
		c.add(kind, name, "name", "%s is also named %q: names must be unique per kind", first, name)
		return
	}
	seen[name] = at
}

// common checks what every resource has: a name and a description.
func (c *checker) common(kind, name, description string) {
	if p := nameProblem(name); p != "" {
		c.add(kind, name, "name", "%s", p)
	}
	if n := utf8.RuneCountInString(description); n > MaxDescriptionLength {
		c.add(kind, name, "description", "is %d characters: at most %d", n, MaxDescriptionLength)
	}
}

func (c *checker) server(s *metamcpv1.Server) {
	name := s.GetName()
	c.common(KindServer, name, s.GetDescription())
	switch t := s.GetTransport().(type) {
	case *metamcpv1.Server_Stdio:
		c.stdio(name, t.Stdio)
	case *metamcpv1.Server_Sse:
		c.httpTransport(name, "sse", t.Sse)
	case *metamcpv1.Server_StreamableHttp:
		c.httpTransport(name, "streamableHttp", t.StreamableHttp)
	default:
		c.add(KindServer, name, "transport", "exactly one transport is required: set stdio, sse or streamableHttp")
	}
	if m := s.GetSessionMode(); metamcpv1.SessionMode_name[int32(m)] == "" {
		c.add(KindServer, name, "sessionMode", "unknown session mode %d: use %s", int32(m), canonical.EnumChoices(m.Descriptor()))
	}
	if t := s.GetTimeouts(); t != nil {
		c.duration(KindServer, name, "timeouts.initialize", t.GetInitialize(), false)
		c.duration(KindServer, name, "timeouts.call", t.GetCall(), false)
		c.duration(KindServer, name, "timeouts.list", t.GetList(), false)
	}
	if d := s.GetListMaxAge(); d != nil {
		c.duration(KindServer, name, "listMaxAge", d, true)
		if s.GetVolatile() {
			c.add(KindServer, name, "listMaxAge", "is set on a volatile server, whose lists are never kept: drop one of them")
		}
	}
	if l := s.GetLimits(); l != nil {
		if l.GetMaxProcesses() < 0 {
			c.add(KindServer, name, "limits.maxProcesses", "is %d: must not be negative (0 means the data plane's default)", l.GetMaxProcesses())
		}
		if l.GetMaxSessions() < 0 {
			c.add(KindServer, name, "limits.maxSessions", "is %d: must not be negative (0 means the data plane's default)", l.GetMaxSessions())
		}
		c.duration(KindServer, name, "limits.idleTtl", l.GetIdleTtl(), false)
	}
}

func (c *checker) stdio(name string, t *metamcpv1.StdioTransport) {
	switch cmd := t.GetCommand(); {
	case strings.TrimSpace(cmd) == "":
		c.add(KindServer, name, "stdio.command", "is required: the program to run, e.g. \"npx\"")
	case strings.ContainsRune(cmd, 0):
		c.add(KindServer, name, "stdio.command", "must not contain a NUL character")
	}
	for i, a := range t.GetArgs() {
		if strings.ContainsRune(a, 0) {
			c.add(KindServer, name, fmt.Sprintf("stdio.args[%d]", i), "must not contain a NUL character")
		}
	}
	if strings.ContainsRune(t.GetCwd(), 0) {
		c.add(KindServer, name, "stdio.cwd", "must not contain a NUL character")
	}
	for _, k := range sortedKeys(t.GetEnv()) {
		field := fmt.Sprintf("stdio.env[%q]", k)
		switch {
		case k == "":
			c.add(KindServer, name, field, "an environment variable name must not be empty")
		case strings.ContainsAny(k, "=\x00"):
			c.add(KindServer, name, field, "an environment variable name must not contain '=' or NUL")
		}
		v := t.GetEnv()[k]
		if strings.ContainsRune(v.GetValue(), 0) {
			c.add(KindServer, name, field+".value", "must not contain a NUL character")
		}
		c.value(KindServer, name, field, v, false)
	}
}

func (c *checker) httpTransport(name, field string, t *metamcpv1.HTTPTransport) {
	if p := httpURLProblem(t.GetUrl()); p != "" {
		c.add(KindServer, name, field+".url", "%s", p)
	}
	for _, k := range sortedKeys(t.GetHeaders()) {
		hf := fmt.Sprintf("%s.headers[%q]", field, k)
		if !IsHTTPToken(k) {
			c.add(KindServer, name, hf, "is not a valid HTTP header name: use letters, digits and !#$%%&'*+-.^_`|~")
		}
		v := t.GetHeaders()[k]
		if !validHeaderValue(v.GetValue()) {
			c.add(KindServer, name, hf+".value", "must not contain control characters (CR, LF, NUL...)")
		}
		c.value(KindServer, name, hf, v, false)
	}
	if bt := t.GetBearerToken(); bt != nil {
		if !validHeaderValue(bt.GetValue()) {
			c.add(KindServer, name, field+".bearerToken.value", "must not contain control characters (CR, LF, NUL...)")
		}
		c.value(KindServer, name, field+".bearerToken", bt, true)
		for k := range t.GetHeaders() {
			if strings.EqualFold(k, "Authorization") {
				c.warn(KindServer, name, fmt.Sprintf("%s.headers[%q]", field, k), "bearerToken is set too and replaces this header")
			}
		}
	}
}

// value checks a possibly secret value. In a data plane's config every secret
// carries its clear text; required says the value must not be empty even when
// it is not marked secret.
func (c *checker) value(kind, name, field string, v *metamcpv1.Value, required bool) {
	if !c.inConfig {
		return
	}
	if len(v.GetSealed()) > 0 {
		c.add(kind, name, field+".sealed", "must be empty in a config: the data plane receives secrets in clear text")
	}
	if v.GetValue() == "" && (v.GetSecret() || required) {
		c.add(kind, name, field+".value", "secret has no value: set it (a secret written without a value keeps the stored one, and none is stored)")
	}
}

// duration checks an optional duration: not negative, at most MaxDuration,
// and strictly positive when positive is set.
func (c *checker) duration(kind, name, field string, d *durationpb.Duration, positive bool) {
	if d == nil {
		return
	}
	if err := d.CheckValid(); err != nil {
		c.add(kind, name, field, "is not a valid duration (seconds and nanos must have the same sign and fit the range)")
		return
	}
	switch v := d.AsDuration(); {
	case v < 0:
		c.add(kind, name, field, "is %s: must not be negative", v)
	case positive && v == 0:
		c.add(kind, name, field, "must be more than 0 when set")
	case v > MaxDuration:
		c.add(kind, name, field, "is %s: at most 24h", v)
	}
}

func (c *checker) namespace(ns *metamcpv1.Namespace) {
	name := ns.GetName()
	c.common(KindNamespace, name, ns.GetDescription())
	sep := Separator(ns)
	if !isToolName(sep, 1, MaxSeparatorLength) {
		c.add(KindNamespace, name, "separator", "%q must be 1 to %d characters of A-Z, a-z, 0-9, '_', '.', '-' (empty means %q)", sep, MaxSeparatorLength, DefaultSeparator)
		sep = DefaultSeparator // check the rest as if it were fixed: one mistake, one violation
	}

	type owner struct {
		member int
		key    string
	}
	servers := map[string]int{}
	prefixes := map[string]int{}
	exposed := map[string]owner{}
	// Every member's prefix, for the checks across members.
	all := make([]string, len(ns.GetMembers()))
	for i, m := range ns.GetMembers() {
		if m != nil {
			all[i] = EffectivePrefix(m)
		}
	}
	for i, m := range ns.GetMembers() {
		path := fmt.Sprintf("members[%d]", i)
		if m == nil {
			c.add(KindNamespace, name, path, "is empty: set server")
			continue
		}
		server := m.GetServer()
		switch {
		case server == "":
			c.add(KindNamespace, name, path+".server", "is required: the name of the server to mount")
		case nameProblem(server) != "":
			c.add(KindNamespace, name, path+".server", "%q is not a valid server name: %s", server, nameRule)
		case c.inConfig && !c.idx.servers[server]:
			c.add(KindNamespace, name, path+".server", "server %q does not exist: create it first or fix the name", server)
		}
		if server != "" {
			if j, dup := servers[server]; dup {
				c.add(KindNamespace, name, path+".server", "server %q is already mounted at members[%d]: mount each server once", server, j)
			} else {
				servers[server] = i
			}
		}

		prefixOK := m.Prefix == nil || isToolName(m.GetPrefix(), 0, MaxPrefixLength)
		if !prefixOK {
			c.add(KindNamespace, name, path+".prefix", "%q must be at most %d characters of A-Z, a-z, 0-9, '_', '.', '-'", m.GetPrefix(), MaxPrefixLength)
		}
		prefix := EffectivePrefix(m)
		if m.Prefix == nil && server == "" {
			// No server and no prefix: nothing to compare.
		} else if j, dup := prefixes[prefix]; dup {
			if prefix == "" {
				c.add(KindNamespace, name, path+".prefix", "members[%d] has no prefix either: tools of two unprefixed servers may collide, which cannot be checked before they run; give one a prefix", j)
			} else {
				c.add(KindNamespace, name, path+".prefix", "prefix %q is also used by members[%d]: tools of both servers would share names; give each a distinct prefix", prefix, j)
			}
		} else {
			prefixes[prefix] = i
		}
		if prefix != "" && len(prefix)+len(sep) > longPrefixWarning {
			budget := PortableToolNameLength - len(prefix) - len(sep)
			c.warn(KindNamespace, name, path+".prefix", "prefix and separator take %d characters: upstream tool names over %d characters will exceed %d, and OpenAI, Anthropic and Bedrock reject tool names over 64 characters", len(prefix)+len(sep), max(budget, 0), PortableToolNameLength)
		}

		for j, p := range m.GetAllowTools() {
			if pr := globProblem(p); pr != "" {
				c.add(KindNamespace, name, fmt.Sprintf("%s.allowTools[%d]", path, j), "%s", pr)
			}
		}
		for j, p := range m.GetDenyTools() {
			if pr := globProblem(p); pr != "" {
				c.add(KindNamespace, name, fmt.Sprintf("%s.denyTools[%d]", path, j), "%s", pr)
			}
		}

		for _, key := range sortedKeys(m.GetToolOverrides()) {
			o := m.GetToolOverrides()[key]
			of := fmt.Sprintf("%s.toolOverrides[%q]", path, key)
			if key == "" {
				c.add(KindNamespace, name, of, "the upstream tool name (the key) must not be empty")
				continue
			}
			newName := o.GetName()
			if newName != "" && !isToolName(newName, 1, MaxToolNameLength) {
				c.add(KindNamespace, name, of+".name", "%q must be 1 to %d characters of A-Z, a-z, 0-9, '_', '.', '-'", newName, MaxToolNameLength)
				continue
			}
			if o.GetDisabled() {
				continue // hidden: exposes no name
			}
			if !ToolAllowed(m, key) {
				c.warn(KindNamespace, name, of, "has no effect: allowTools/denyTools hide tool %q", key)
				continue
			}
			final := key
			if newName != "" {
				final = newName
			}
			full := ExposedName(prefix, sep, final)
			if !isToolName(full, 1, MaxToolNameLength) {
				if !prefixOK {
					continue // reported on the prefix
				}
				c.add(KindNamespace, name, of, "exposed name %q must be 1 to %d characters of A-Z, a-z, 0-9, '_', '.', '-': rename the tool with name", full, MaxToolNameLength)
				continue
			}
			if prev, dup := exposed[full]; dup {
				if prev.member == i {
					c.add(KindNamespace, name, of, "exposes %q, as does %s.toolOverrides[%q]: two tools cannot share a name", full, path, prev.key)
				} else {
					c.add(KindNamespace, name, of, "exposes %q, as does members[%d].toolOverrides[%q]: two tools cannot share a name", full, prev.member, prev.key)
				}
				continue
			}
			exposed[full] = owner{member: i, key: key}
			if len(full) > PortableToolNameLength {
				c.warn(KindNamespace, name, of, "exposed name %q is %d characters: OpenAI, Anthropic and Bedrock reject tool names over 64 characters", full, len(full))
			}
			if prefix == "" {
				// An unprefixed server's tool renamed into another
				// member's prefix would be listed twice and called on the
				// other server (the longest prefix routes).
				for j, q := range all {
					if q != "" && j != i && strings.HasPrefix(full, q+sep) {
						c.add(KindNamespace, name, of+".name", "exposed name %q starts with the prefix %q of members[%d] and the separator: calls to it would go to that server; choose another name", full, q, j)
						break
					}
				}
			}
		}
	}
	// A prefix that extends another one with the separator ("a" and "a__b")
	// gives two servers one name space: tool "b__x" of the first and tool
	// "x" of the second are both exposed as "a__b__x".
	for i, p := range all {
		for j, q := range all {
			if p != "" && q != p && strings.HasPrefix(q, p+sep) {
				c.add(KindNamespace, name, fmt.Sprintf("members[%d].prefix", j), "prefix %q starts with the prefix %q of members[%d] and the separator %q: a tool %q of members[%d] and a tool %q of this server would both be exposed as %q; choose prefixes that do not extend one another",
					q, p, i, sep, strings.TrimPrefix(q, p+sep)+sep+"t", i, "t", q+sep+"t")
			}
		}
	}
}

func (c *checker) endpoint(e *metamcpv1.Endpoint) {
	name := e.GetName()
	c.common(KindEndpoint, name, e.GetDescription())
	switch ns := e.GetNamespace(); {
	case ns == "":
		c.add(KindEndpoint, name, "namespace", "is required: the namespace this endpoint serves")
	case nameProblem(ns) != "":
		c.add(KindEndpoint, name, "namespace", "%q is not a valid namespace name: %s", ns, nameRule)
	case c.inConfig && !c.idx.namespaces[ns]:
		c.add(KindEndpoint, name, "namespace", "namespace %q does not exist: create it first or fix the name", ns)
	}
	seen := map[string]int{}
	for i, rl := range e.GetRateLimits() {
		field := fmt.Sprintf("rateLimits[%d]", i)
		switch {
		case rl == "":
			c.add(KindEndpoint, name, field, "must not be empty: the name of a RateLimitPolicy")
			continue
		case nameProblem(rl) != "":
			c.add(KindEndpoint, name, field, "%q is not a valid rate-limit policy name: %s", rl, nameRule)
		case c.inConfig && !c.idx.rateLimits[rl]:
			c.add(KindEndpoint, name, field, "rate-limit policy %q does not exist: create it first or fix the name", rl)
		}
		if j, dup := seen[rl]; dup {
			c.add(KindEndpoint, name, field, "rate-limit policy %q is already listed at rateLimits[%d]", rl, j)
		} else {
			seen[rl] = i
		}
	}
	if a := e.GetAuth(); a != nil {
		if jwt := a.GetJwt(); jwt != nil {
			if a.GetAnonymous() {
				c.add(KindEndpoint, name, "auth.anonymous", "contradicts auth.jwt: anonymous turns authentication off; remove one of them")
			}
			c.jwt(name, jwt)
		}
	}
	c.accessRules(name, e.GetNamespace(), e.GetAccessRules())
	if a := e.GetAuth(); a.GetAllowQueryApiKey() && (a.GetAnonymous() || a.GetDisableApiKeys()) {
		c.add(KindEndpoint, name, "auth.allowQueryApiKey", "takes no effect: the endpoint takes no API key (anonymous or disableApiKeys); remove one of them")
	}
	if a := e.GetAuth(); a.GetDisableApiKeys() && a.GetJwt() == nil {
		c.add(KindEndpoint, name, "auth.disableApiKeys", "needs auth.jwt: an endpoint that refuses API keys must accept OAuth access tokens")
	}
	if t := e.GetTransports(); t.GetDisableSse() && t.GetDisableStreamableHttp() {
		c.warn(KindEndpoint, name, "transports", "both streamableHttp and sse are disabled: no client can connect")
	}
	c.audit(name, e.GetAudit())
}

// audit checks an endpoint's payload-capture settings.
func (c *checker) audit(name string, a *metamcpv1.AuditSettings) {
	if a == nil {
		return
	}
	if n := a.GetMaxPayloadBytes(); n < 0 || n > 65536 {
		c.add(KindEndpoint, name, "audit.maxPayloadBytes", "%d is out of range: 0 (4096) to 65536 bytes", n)
	}
	for i, k := range a.GetRedactKeys() {
		if strings.TrimSpace(k) == "" {
			c.add(KindEndpoint, name, fmt.Sprintf("audit.redactKeys[%d]", i), "must not be empty: an object key whose values are redacted")
		}
	}
}

// Limits on access rules.
const (
	// maxRuleEntry is the longest principal pattern, group name or prompt
	// pattern of an access rule.
	maxRuleEntry = 256
	// maxResourcePattern is the longest resource URI pattern.
	maxResourcePattern = 2048
)

// accessRules checks an endpoint's access rules; ns is its namespace, whose
// members are the servers rules may name.
func (c *checker) accessRules(name, ns string, rules []*metamcpv1.AccessRule) {
	seen := map[string]int{}
	for i, r := range rules {
		at := fmt.Sprintf("accessRules[%d]", i)
		if r == nil {
			c.add(KindEndpoint, name, at, "must not be null")
			continue
		}
		switch rn := r.GetName(); {
		case nameProblem(rn) != "":
			c.add(KindEndpoint, name, at+".name", "%s", nameProblem(rn))
		default:
			if j, dup := seen[rn]; dup {
				c.add(KindEndpoint, name, at+".name", "%q is also the name of accessRules[%d]: rule names must be unique", rn, j)
			} else {
				seen[rn] = i
			}
		}
		switch r.GetEffect() {
		case metamcpv1.AccessEffect_ACCESS_EFFECT_UNSPECIFIED, metamcpv1.AccessEffect_ACCESS_EFFECT_ALLOW, metamcpv1.AccessEffect_ACCESS_EFFECT_DENY:
		default:
			c.add(KindEndpoint, name, at+".effect", "%d is not an effect: use allow or deny", r.GetEffect())
		}
		entries := func(field string, list []string, maxLen int, what string) {
			for j, v := range list {
				switch {
				case v == "":
					c.add(KindEndpoint, name, fmt.Sprintf("%s.%s[%d]", at, field, j), "must not be empty: %s", what)
				case len(v) > maxLen:
					c.add(KindEndpoint, name, fmt.Sprintf("%s.%s[%d]", at, field, j), "is %d bytes: at most %d", len(v), maxLen)
				case strings.ContainsFunc(v, func(r rune) bool { return r < 0x20 || r == 0x7f || r == utf8.RuneError }):
					c.add(KindEndpoint, name, fmt.Sprintf("%s.%s[%d]", at, field, j), "%q has a control character or invalid UTF-8", v)
				}
			}
		}
		entries("principals", r.GetPrincipals(), maxRuleEntry, `a principal name or glob ("*" for every caller: or leave principals, groups and apiKeys all empty)`)
		entries("groups", r.GetGroups(), maxRuleEntry, "a group name")
		for j, k := range r.GetApiKeys() {
			if p := nameProblem(k); p != "" {
				c.add(KindEndpoint, name, fmt.Sprintf("%s.apiKeys[%d]", at, j), "%q is not an API key name: %s", k, p)
			}
		}
		if len(r.GetTools())+len(r.GetServers())+len(r.GetPrompts())+len(r.GetResources()) == 0 {
			c.add(KindEndpoint, name, at, `names nothing it applies to: list tools, servers, prompts or resources (tools: ["*"] for every tool)`)
		}
		for j, g := range r.GetTools() {
			if p := globProblem(g); p != "" {
				c.add(KindEndpoint, name, fmt.Sprintf("%s.tools[%d]", at, j), "%s", p)
			}
		}
		entries("prompts", r.GetPrompts(), maxRuleEntry, `a prompt name or glob ("*" for every prompt)`)
		entries("resources", r.GetResources(), maxResourcePattern, `a resource URI or glob ("*" for every resource)`)
		for j, sv := range r.GetServers() {
			field := fmt.Sprintf("%s.servers[%d]", at, j)
			switch {
			case nameProblem(sv) != "":
				c.add(KindEndpoint, name, field, "%q is not a valid server name: %s", sv, nameRule)
			case c.inConfig && c.idx.namespaces[ns] && !c.idx.members[ns][sv]:
				c.add(KindEndpoint, name, field, "server %q is not a member of namespace %q: the endpoint serves nothing of it; add it to the namespace or fix the name", sv, ns)
			}
		}
		if cond := r.GetCondition(); cond != "" {
			if err := authz.CheckCondition(cond); err != nil {
				c.add(KindEndpoint, name, at+".condition", "%v", err)
			}
		}
	}
}

func (c *checker) jwt(name string, j *metamcpv1.JWTAuth) {
	if iss := j.GetIssuer(); iss == "" {
		c.add(KindEndpoint, name, "auth.jwt.issuer", "is required: the identity provider's issuer URL (the token's iss claim)")
	} else if p := httpURLProblem(iss); p != "" {
		c.add(KindEndpoint, name, "auth.jwt.issuer", "%s", p)
	} else if u, _ := url.Parse(iss); u.Scheme != "https" && !isLoopbackHost(u.Hostname()) {
		c.add(KindEndpoint, name, "auth.jwt.issuer", "must be an https URL (http only for localhost or 127.0.0.1)")
	}
	for i, a := range j.GetAudiences() {
		if a == "" {
			c.add(KindEndpoint, name, fmt.Sprintf("auth.jwt.audiences[%d]", i), "must not be empty")
		}
	}
	if u := j.GetJwksUrl(); u != "" {
		if p := httpURLProblem(u); p != "" {
			c.add(KindEndpoint, name, "auth.jwt.jwksUrl", "%s", p)
		} else if pu, _ := url.Parse(u); pu.Scheme != "https" && !isLoopbackHost(pu.Hostname()) {
			c.add(KindEndpoint, name, "auth.jwt.jwksUrl", "must be an https URL (http only for localhost or 127.0.0.1): the keys it serves decide who gets in")
		}
	}
	for i, s := range j.GetRequiredScopes() {
		if s == "" || strings.ContainsAny(s, " \t\r\n") {
			c.add(KindEndpoint, name, fmt.Sprintf("auth.jwt.requiredScopes[%d]", i), "%q must be one non-empty scope without spaces: list each scope separately", s)
		}
	}
	if pc := j.GetPrincipalClaim(); pc != "" && strings.TrimSpace(pc) != pc {
		c.add(KindEndpoint, name, "auth.jwt.principalClaim", "%q has surrounding spaces", pc)
	}
	for i, a := range j.GetAlgorithms() {
		if !slices.Contains(JWTAlgorithms, a) {
			c.add(KindEndpoint, name, fmt.Sprintf("auth.jwt.algorithms[%d]", i), "%q is not accepted: use some of %s (HMAC and none are never accepted)", a, strings.Join(JWTAlgorithms, ", "))
		}
	}
	if d := j.GetClockSkew(); d != nil {
		if err := d.CheckValid(); err != nil || d.AsDuration() < 0 || d.AsDuration() > MaxJWTClockSkew {
			c.add(KindEndpoint, name, "auth.jwt.clockSkew", "must be between 0s and %s", MaxJWTClockSkew)
		}
	}
}

// JWTAlgorithms are the signature algorithms an endpoint may accept for
// access tokens: asymmetric ones only, never HMAC (a public key must not
// become a shared secret) nor `none`.
var JWTAlgorithms = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}

// MaxJWTClockSkew bounds auth.jwt.clockSkew.
const MaxJWTClockSkew = 5 * time.Minute

func (c *checker) rateLimit(p *metamcpv1.RateLimitPolicy) {
	name := p.GetName()
	c.common(KindRateLimitPolicy, name, p.GetDescription())
	if s := p.GetServer(); s != "" {
		switch {
		case nameProblem(s) != "":
			c.add(KindRateLimitPolicy, name, "server", "%q is not a valid server name: %s", s, nameRule)
		case c.inConfig && !c.idx.servers[s]:
			c.add(KindRateLimitPolicy, name, "server", "server %q does not exist: create it first or fix the name", s)
		}
	}
	if t := p.GetTool(); t != "" {
		if pr := globProblem(t); pr != "" {
			c.add(KindRateLimitPolicy, name, "tool", "%s", pr)
		}
	}
	if k := p.GetKey(); metamcpv1.RateLimitKey_name[int32(k)] == "" {
		c.add(KindRateLimitPolicy, name, "key", "unknown key %d: use %s", int32(k), canonical.EnumChoices(k.Descriptor()))
	}
	if m := p.GetOnRedisFailure(); metamcpv1.RateLimitFailureMode_name[int32(m)] == "" {
		c.add(KindRateLimitPolicy, name, "onRedisFailure", "unknown failure mode %d: use %s", int32(m), canonical.EnumChoices(m.Descriptor()))
	}
	if p.GetRate() < 1 {
		c.add(KindRateLimitPolicy, name, "rate", "is %d: at least 1 call per period", p.GetRate())
	}
	if p.GetBurst() < 1 && p != nil && p.Burst != nil {
		c.add(KindRateLimitPolicy, name, "burst", "is %d: at least 1 (leave it unset for the same as rate)", p.GetBurst())
	}
	c.duration(KindRateLimitPolicy, name, "period", p.GetPeriod(), true)
}

// keyEndpoints checks the endpoint list of an API key.
func (c *checker) keyEndpoints(name string, endpoints []string) {
	if len(endpoints) == 0 {
		c.add(KindApiKey, name, "endpoints", "at least one endpoint is required: an endpoint name, or \"*\" for every endpoint")
	}
	for i, e := range endpoints {
		field := fmt.Sprintf("endpoints[%d]", i)
		switch {
		case e == "*":
		case nameProblem(e) != "":
			c.add(KindApiKey, name, field, "%q is neither \"*\" nor a valid endpoint name", e)
		case c.inConfig && !c.idx.endpoints[e]:
			c.add(KindApiKey, name, field, "endpoint %q does not exist: create it first or fix the name", e)
		}
	}
}

func (c *checker) apiKey(k *metamcpv1.ApiKey) {
	name := k.GetName()
	c.common(KindApiKey, name, k.GetDescription())
	c.keyEndpoints(name, k.GetEndpoints())
	if t := k.GetExpireTime(); t != nil && t.CheckValid() != nil {
		c.add(KindApiKey, name, "expireTime", "is not a valid time")
	}
}

// apiKeyEntry checks the data plane's view of a key; hashes maps each key
// hash seen so far to its key's name.
func (c *checker) apiKeyEntry(k *metamcpv1.ApiKeyEntry, hashes map[string]string) {
	name := k.GetName()
	if p := nameProblem(name); p != "" {
		c.add(KindApiKey, name, "name", "%s", p)
	}
	if n := len(k.GetKeyHash()); n != keyLength {
		c.add(KindApiKey, name, "keyHash", "must be a %d-byte SHA-256 hash, got %d bytes", keyLength, n)
	} else if other, dup := hashes[string(k.GetKeyHash())]; dup {
		c.add(KindApiKey, name, "keyHash", "is the same key as ApiKey %q: each key must be unique", other)
	} else {
		hashes[string(k.GetKeyHash())] = name
	}
	c.keyEndpoints(name, k.GetEndpoints())
	if t := k.GetExpireTime(); t != nil && t.CheckValid() != nil {
		c.add(KindApiKey, name, "expireTime", "is not a valid time")
	}
}

func (c *checker) token(t *metamcpv1.Token) {
	name := t.GetName()
	c.common(KindToken, name, t.GetDescription())
	switch t.GetScope() {
	case metamcpv1.TokenScope_TOKEN_SCOPE_ADMIN, metamcpv1.TokenScope_TOKEN_SCOPE_SYNC:
	default:
		c.add(KindToken, name, "scope", "must be TOKEN_SCOPE_ADMIN (mmctl) or TOKEN_SCOPE_SYNC (data planes)")
	}
	if e := t.GetExpireTime(); e != nil && e.CheckValid() != nil {
		c.add(KindToken, name, "expireTime", "is not a valid time")
	}
}

func (c *checker) sessionKeys(sk *metamcpv1.SessionKeys) {
	if n := len(sk.GetCurrent()); n != keyLength {
		c.add(KindSessionKeys, "", "current", "must be a %d-byte key, got %d bytes", keyLength, n)
	}
	if n := len(sk.GetPrevious()); n != 0 && n != keyLength {
		c.add(KindSessionKeys, "", "previous", "must be empty or a %d-byte key, got %d bytes", keyLength, n)
	}
}

// httpURLProblem describes what is wrong with an absolute http(s) URL, or
// returns "". It never repeats the URL, which may carry a credential.
func httpURLProblem(raw string) string {
	if raw == "" {
		return "is required: an absolute http or https URL"
	}
	u, err := url.Parse(raw)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Sprintf("is not a valid URL: %v", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "must be an absolute http or https URL, like https://mcp.example.com/mcp"
	}
	if u.Hostname() == "" {
		return "must include a host, like https://mcp.example.com/mcp"
	}
	return ""
}

func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// IsHTTPToken reports whether s is an HTTP token (RFC 9110), the syntax of
// a header name.
func IsHTTPToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// validHeaderValue reports whether s can be sent as an HTTP header value:
// no control characters other than horizontal tab.
func validHeaderValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
