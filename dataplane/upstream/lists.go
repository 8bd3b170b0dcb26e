package upstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/dataplane/catalog"
	"github.com/metamcp/metamcp/dataplane/rpc"
)

// Kept lists. A session keeps the pages of its lists (tools, prompts,
// resources, templates) as the upstream sent them, unfiltered (what a
// namespace or a caller may see is decided on the way out), and serves them
// again until:
//   - the upstream says notifications/*/list_changed (resources/list_changed
//     covers templates too), or, over Streamable HTTP, its event stream ends
//     (a notification may have been missed);
//   - the page's ttlMs runs out (0: never kept), in a session at 2026-07-28,
//     the revision that has it;
//   - the session ends: a config change of the server, mmctl restart server,
//     a lost session (each gives a new session, with nothing kept);
//   - for a list the session cannot hear changes of (no listChanged
//     capability, or no event stream), the server's listMaxAge.
// A volatile server's lists are never kept. Concurrent misses of one page
// share one request upstream, which runs to its list timeout even when the
// callers stop waiting (a slow upstream's list then arrives later: see the
// gateway's list wait).

// DefaultListMaxAge is how long a list is kept that the session cannot hear
// changes of, when the server sets no listMaxAge.
const DefaultListMaxAge = time.Minute

// maxKeptPages bounds the pages one session keeps (cursors are the
// upstream's and unbounded).
const maxKeptPages = 256

// ListPage is one page of a list operation.
type ListPage struct {
	// Items are the list's entries, as the upstream sent them.
	Items []json.RawMessage
	// Next is the upstream's nextCursor ("" on the last page).
	Next string
	// TTLMs is the page's ttlMs, -1 when it carried none (or an invalid one).
	TTLMs int64
	// Scope is the page's cacheScope, "" when it carried none.
	Scope string
}

// Lister is implemented by sessions that keep their lists.
type Lister interface {
	// List returns one page of method (tools/list, prompts/list,
	// resources/list, resources/templates/list) from cursor, kept or asked
	// of the upstream. Errors are those of Call.
	List(ctx context.Context, method, cursor string) (*ListPage, error)
}

// ListMaxAge is the server's listMaxAge, or def (DefaultListMaxAge when
// zero) when unset.
func ListMaxAge(s *metamcpv1.Server, def time.Duration) time.Duration {
	return pick(s.GetListMaxAge().AsDuration(), def, DefaultListMaxAge)
}

// listKinds are the lists a session keeps, by index.
var listKinds = [...]struct{ method, field string }{
	{"tools/list", "tools"},
	{"prompts/list", "prompts"},
	{"resources/list", "resources"},
	{"resources/templates/list", "resourceTemplates"},
}

func listIndex(method string) int {
	for i, k := range listKinds {
		if k.method == method {
			return i
		}
	}
	return -1
}

// listChangedMask maps a list_changed notification to the lists it concerns.
func listChangedMask(method string) uint8 {
	switch method {
	case "notifications/tools/list_changed":
		return 1 << 0
	case "notifications/prompts/list_changed":
		return 1 << 1
	case "notifications/resources/list_changed":
		return 1<<2 | 1<<3
	}
	return 0
}

// ParseListPage reads a result of method.
func ParseListPage(method string, res json.RawMessage) (*ListPage, error) {
	var p struct {
		Tools             []json.RawMessage `json:"tools"`
		Prompts           []json.RawMessage `json:"prompts"`
		Resources         []json.RawMessage `json:"resources"`
		ResourceTemplates []json.RawMessage `json:"resourceTemplates"`
		NextCursor        string            `json:"nextCursor"`
		// Raw: a malformed hint must not cost the page.
		TTLMs      json.RawMessage `json:"ttlMs"`
		CacheScope json.RawMessage `json:"cacheScope"`
	}
	if err := json.Unmarshal(res, &p); err != nil {
		return nil, err
	}
	out := &ListPage{Next: p.NextCursor}
	switch method {
	case "tools/list":
		out.Items = p.Tools
	case "prompts/list":
		out.Items = p.Prompts
	case "resources/list":
		out.Items = p.Resources
	case "resources/templates/list":
		out.Items = p.ResourceTemplates
	}
	out.TTLMs, out.Scope = catalog.ParseHints(p.TTLMs, p.CacheScope)
	return out, nil
}

func cursorParams(cursor string) json.RawMessage {
	if cursor == "" {
		return json.RawMessage(`{}`)
	}
	b := rpc.AppendString([]byte(`{"cursor":`), cursor)
	return append(b, '}')
}

type listKey struct {
	kind   int
	cursor string
}

// keptPage is a page and when it stops being served (zero: when the
// upstream says it changed).
type keptPage struct {
	page    *ListPage
	expires time.Time
}

// listFlight is one request upstream for a page, which callers share.
type listFlight struct {
	done chan struct{}
	page *ListPage
	err  error
}

// lists is a session's kept lists.
type lists struct {
	// notifies says, per kind, that the upstream declared listChanged.
	notifies [len(listKinds)]bool
	// gen counts each kind's invalidations: a page fetched across one is
	// not kept.
	gen     [len(listKinds)]uint64
	kept    map[listKey]keptPage
	flights map[listKey]*listFlight
}

// hearsChanges is implemented by transports that may be unable to deliver
// a notification outside a call (Streamable HTTP without its event stream).
type hearsChanges interface{ hearing() bool }

// setListCapabilities records which lists the upstream announces changes of.
func (s *session) setListCapabilities(caps json.RawMessage) {
	var c map[string]struct {
		ListChanged bool `json:"listChanged"`
	}
	if json.Unmarshal(caps, &c) != nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lists.notifies = [len(listKinds)]bool{c["tools"].ListChanged, c["prompts"].ListChanged, c["resources"].ListChanged, c["resources"].ListChanged}
}

// dropLists forgets the kept pages of the kinds in mask.
func (s *session) dropLists(mask uint8) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k := range listKinds {
		if mask&(1<<k) != 0 {
			s.lists.gen[k]++
		}
	}
	for key := range s.lists.kept {
		if mask&(1<<key.kind) != 0 {
			delete(s.lists.kept, key)
		}
	}
}

// dropAllLists forgets every kept page.
func (s *session) dropAllLists() { s.dropLists(1<<len(listKinds) - 1) }

// List implements Lister.
func (s *session) List(ctx context.Context, method, cursor string) (*ListPage, error) {
	k := listIndex(method)
	if k < 0 || s.cfg.GetVolatile() {
		res, err := s.Call(ctx, method, cursorParams(cursor))
		if err != nil {
			return nil, err
		}
		return s.parsePage(method, res)
	}
	key := listKey{k, cursor}
	s.mu.Lock()
	if kp, ok := s.lists.kept[key]; ok && (kp.expires.IsZero() || time.Now().Before(kp.expires)) {
		s.mu.Unlock()
		s.keptHits.Add(1)
		return kp.page, nil
	}
	f := s.lists.flights[key]
	if f == nil {
		f = &listFlight{done: make(chan struct{})}
		if s.lists.flights == nil {
			s.lists.flights = make(map[listKey]*listFlight)
		}
		s.lists.flights[key] = f
		gen := s.lists.gen[k]
		s.mu.Unlock()
		run := func() { s.fly(ctx, key, gen, f) }
		if !s.goBackground(run) {
			run() // the session ended: the call fails at once
		}
	} else {
		s.mu.Unlock()
	}
	select {
	case <-f.done:
		return f.page, f.err
	case <-ctx.Done():
		err := ctx.Err()
		if errors.Is(err, context.DeadlineExceeded) {
			return nil, &Error{Server: s.server, Err: fmt.Errorf("%s timed out: %w", method, err)}
		}
		return nil, &Error{Server: s.server, Err: fmt.Errorf("%s: %w", method, err)}
	}
}

// fly asks the upstream for a page on behalf of every caller waiting for
// it, bounded by the server's list timeout and the session's life (not by
// the first caller's context: others may wait longer), and keeps it.
func (s *session) fly(ctx context.Context, key listKey, gen uint64, f *listFlight) {
	method := listKinds[key.kind].method
	// The request's values (trace headers) without its cancellation or its
	// Caller: the page is the session's, not one client's.
	fctx, cancel := context.WithTimeout(WithCaller(context.WithoutCancel(ctx), nil), ListTimeout(s.cfg, s.defList))
	stop := context.AfterFunc(s.life, cancel)
	res, err := s.Call(fctx, method, cursorParams(key.cursor))
	stop()
	cancel()
	var page *ListPage
	if err == nil {
		page, err = s.parsePage(method, res)
	}
	now := time.Now()
	s.mu.Lock()
	delete(s.lists.flights, key)
	if err == nil && s.lists.gen[key.kind] == gen {
		if expires, keep := s.keepUntil(key.kind, page, now); keep {
			if s.lists.kept == nil {
				s.lists.kept = make(map[listKey]keptPage)
			}
			if _, ok := s.lists.kept[key]; ok || len(s.lists.kept) < maxKeptPages {
				s.lists.kept[key] = keptPage{page: page, expires: expires}
			}
		}
	}
	s.mu.Unlock()
	f.page, f.err = page, err
	close(f.done)
}

// keepUntil decides how long a page is served again (zero time: until the
// upstream says it changed); false when not at all. s.mu is held.
func (s *session) keepUntil(kind int, page *ListPage, now time.Time) (time.Time, bool) {
	hears := s.lists.notifies[kind]
	if h, ok := s.t.(hearsChanges); ok && !h.hearing() {
		hears = false
	}
	maxAge := now.Add(ListMaxAge(s.cfg, s.defListMaxAge))
	ttl := page.TTLMs
	if s.info == nil || s.info.ProtocolVersion < "2026-07-28" {
		// ttlMs belongs to 2026-07-28: in a session at an earlier revision
		// list_changed says when a list changed (go-sdk servers send
		// ttlMs 0 at every revision).
		ttl = -1
	}
	switch {
	case ttl == 0:
		return time.Time{}, false
	case ttl > 0:
		until := now.Add(time.Duration(ttl) * time.Millisecond)
		if !hears && maxAge.Before(until) {
			until = maxAge
		}
		return until, true
	case hears:
		return time.Time{}, true
	}
	return maxAge, true
}

func (s *session) parsePage(method string, res json.RawMessage) (*ListPage, error) {
	p, err := ParseListPage(method, res)
	if err != nil {
		return nil, &Error{Server: s.server, Err: fmt.Errorf("invalid %s result: %w", method, err)}
	}
	return p, nil
}
