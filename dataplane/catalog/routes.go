package catalog

import (
	"strings"
	"sync"
)

// MaxRoutes bounds the remembered URIs, templates and tools of one Routes.
const MaxRoutes = 100000

// Routes maps the resource URIs and templates an endpoint listed to the
// server that listed them, and exposed tool names to T, what calls need
// of a tool's listing. The zero value is ready; it is safe for concurrent
// use.
type Routes[T any] struct {
	mu        sync.RWMutex // read-locked on the hot path (stateless tools/call)
	uris      map[string]entry
	templates map[string]entry
	tools     map[string]T
}

type entry struct {
	member int
	server string
}

// add records key for the member at index member of the namespace unless
// an earlier member listed it: it returns the server that keeps it and
// whether that is this one. Past MaxRoutes keys it answers without
// remembering.
func add(m *map[string]entry, key string, member int, server string) (string, bool) {
	if e, ok := (*m)[key]; ok {
		if e.member < member {
			return e.server, false
		}
		if e.member == member {
			return server, true
		}
	}
	if *m == nil {
		*m = map[string]entry{}
	}
	if len(*m) < MaxRoutes {
		(*m)[key] = entry{member, server}
	}
	return server, true
}

// AddURI records a listed resource URI; see add for what it returns.
func (r *Routes[T]) AddURI(uri string, member int, server string) (winner string, won bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return add(&r.uris, uri, member, server)
}

// AddTemplate records a listed resource template; see AddURI.
func (r *Routes[T]) AddTemplate(tmpl string, member int, server string) (winner string, won bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return add(&r.templates, tmpl, member, server)
}

// Template returns the server that listed exactly this template.
func (r *Routes[T]) Template(tmpl string) (string, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	e, ok := r.templates[tmpl]
	return e.server, ok
}

// SetTool records a listed tool.
func (r *Routes[T]) SetTool(exposed string, t T) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.tools == nil {
		r.tools = map[string]T{}
	}
	if _, ok := r.tools[exposed]; ok || len(r.tools) < MaxRoutes {
		r.tools[exposed] = t
	}
}

// Tool returns what was recorded of an exposed tool; false when it was not
// listed.
func (r *Routes[T]) Tool(exposed string) (T, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	t, ok := r.tools[exposed]
	return t, ok
}

// Lookup returns the server of a URI: listed exactly, else the first (in
// namespace order) template that matches it, else a template equal to it.
func (r *Routes[T]) Lookup(uri string) (string, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if e, ok := r.uris[uri]; ok {
		return e.server, true
	}
	best := entry{member: -1}
	for tmpl, e := range r.templates {
		if (best.member < 0 || e.member < best.member) && (tmpl == uri || MatchTemplate(tmpl, uri)) {
			best = e
		}
	}
	return best.server, best.member >= 0
}

// Cache keeps one V per snapshot revision and endpoint (the gateway's
// routes), dropping those of older revisions as a newer one is asked for.
// The zero value is ready; V's zero value must be ready too.
type Cache[V any] struct {
	mu sync.RWMutex // read-locked on the hot path
	m  map[cacheKey]*V
}

type cacheKey struct {
	revision int64
	endpoint string
}

// Get returns the V of a revision and endpoint, making it when there is
// none.
func (c *Cache[V]) Get(revision int64, endpoint string) *V {
	k := cacheKey{revision, endpoint}
	c.mu.RLock()
	v := c.m[k]
	c.mu.RUnlock()
	if v != nil {
		return v
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if v := c.m[k]; v != nil {
		return v
	}
	if c.m == nil {
		c.m = make(map[cacheKey]*V)
	}
	for old := range c.m {
		if old.revision < k.revision {
			delete(c.m, old)
		}
	}
	v = new(V)
	c.m[k] = v
	return v
}

// MatchTemplate reports whether uri matches an RFC 6570 URI template:
// literal text must match; a {var} matches a run without '/', and {+var},
// {#var}, {/var}, {?var}, {&var} match any run.
func MatchTemplate(tmpl, uri string) bool {
	return matchT(tmpl, uri, 0)
}

func matchT(t, u string, depth int) bool {
	if depth > 32 {
		return false
	}
	for t != "" && t[0] != '{' {
		i := strings.IndexByte(t, '{')
		if i < 0 {
			i = len(t)
		}
		if !strings.HasPrefix(u, t[:i]) {
			return false
		}
		t, u = t[i:], u[i:]
	}
	if t == "" {
		return u == ""
	}
	end := strings.IndexByte(t, '}')
	if end < 0 {
		return false
	}
	expr, rest := t[1:end], t[end+1:]
	anyChar := expr != "" && strings.ContainsRune("+#/?&.;", rune(expr[0]))
	for k := 0; k <= len(u); k++ {
		if k > 0 && !anyChar && u[k-1] == '/' {
			break
		}
		if matchT(rest, u[k:], depth+1) {
			return true
		}
	}
	return false
}

// CoversURI reports whether a resource subscription to subscribed covers
// an update of uri: the same resource, or one under it.
func CoversURI(subscribed, uri string) bool {
	return subscribed == uri || strings.HasPrefix(uri, strings.TrimSuffix(subscribed, "/")+"/")
}
