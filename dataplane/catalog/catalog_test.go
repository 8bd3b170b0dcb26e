package catalog

import (
	"encoding/json"
	"fmt"
	"sync"
	"testing"
)

func TestMatchTemplate(t *testing.T) {
	tests := []struct {
		tmpl, uri string
		want      bool
	}{
		{"fixture://a/items/{id}", "fixture://a/items/42", true},
		{"fixture://a/items/{id}", "fixture://a/items/4/2", false},
		{"fixture://a/items/{id}", "fixture://b/items/42", false},
		{"file:///{+path}", "file:///etc/hosts", true},
		{"db://{table}/{id}.json", "db://users/7.json", true},
		{"db://{table}/{id}.json", "db://users/7.xml", false},
		{"search://q{?term,page}", "search://q?term=x&page=2", true},
		{"plain://x", "plain://x", true},
		{"open://{x", "open://y", false},
	}
	for _, tc := range tests {
		if got := MatchTemplate(tc.tmpl, tc.uri); got != tc.want {
			t.Errorf("MatchTemplate(%q, %q) = %v, want %v", tc.tmpl, tc.uri, got, tc.want)
		}
	}
}

func TestCursorRoundTrip(t *testing.T) {
	in := &Cursor{Revision: 3, Pending: []CursorEntry{{Member: 1, Server: "b", Cursor: "xyz"}}}
	out, ok := DecodeCursor(EncodeCursor(in))
	if !ok || out.Revision != 3 || len(out.Pending) != 1 || out.Pending[0] != in.Pending[0] {
		t.Errorf("round trip = %+v, %v", out, ok)
	}
	if _, ok := DecodeCursor("!!"); ok {
		t.Error("garbage cursor accepted")
	}
}

// TestParseHints: a malformed hint is read as none, and costs nothing else.
func TestParseHints(t *testing.T) {
	for _, tc := range []struct {
		ttl, scope string
		wantTTL    int64
		wantScope  string
	}{
		{`60000`, `"public"`, 60000, "public"},
		{`1.5e3`, `"private"`, 1500, "private"},
		{``, ``, -1, ""},
		{`-5`, `7`, -1, ""},
		{`"60000"`, `{"a":1}`, -1, ""},
		{`1e400`, `null`, -1, ""},
	} {
		ttl, scope := ParseHints(json.RawMessage(tc.ttl), json.RawMessage(tc.scope))
		if ttl != tc.wantTTL || scope != tc.wantScope {
			t.Errorf("ParseHints(%s, %s) = %d, %q; want %d, %q", tc.ttl, tc.scope, ttl, scope, tc.wantTTL, tc.wantScope)
		}
	}
}

// TestHints: the shortest ttl wins, a page without one counts as 0, and
// the list is public only through an anonymous endpoint when no page said
// private and no member keeps a session per client; partial or empty lists
// are not to be kept.
func TestHints(t *testing.T) {
	type pg struct {
		ttl       int64
		scope     string
		perClient bool
	}
	for _, tc := range []struct {
		name      string
		anonymous bool
		pages     []pg
		partial   bool
		wantTTL   int64
		wantPub   bool
	}{
		{"shortest", true, []pg{{60000, "public", false}, {5000, "", false}}, false, 5000, true},
		{"none counts as 0", true, []pg{{60000, "", false}, {-1, "", false}}, false, 0, true},
		{"private page", true, []pg{{100, "private", false}, {200, "public", false}}, false, 100, false},
		{"per client", true, []pg{{100, "", true}}, false, 100, false},
		{"authenticated", false, []pg{{100, "public", false}}, false, 100, false},
		{"partial", true, []pg{{100, "public", false}}, true, 0, false},
		{"empty", true, nil, false, 0, false},
	} {
		h := NewHints(tc.anonymous)
		for _, p := range tc.pages {
			h.Add(p.ttl, p.scope, p.perClient)
		}
		ttl, pub := h.Merged(tc.partial)
		if ttl != tc.wantTTL || pub != tc.wantPub {
			t.Errorf("%s: Merged = %d, %v; want %d, %v", tc.name, ttl, pub, tc.wantTTL, tc.wantPub)
		}
	}
	if got := string(AppendHints([]byte("{"), 7, true)); got != `{,"ttlMs":7,"cacheScope":"public"` {
		t.Errorf("AppendHints public = %s", got)
	}
	if got := string(AppendHints(nil, 0, false)); got != `,"ttlMs":0,"cacheScope":"private"` {
		t.Errorf("AppendHints private = %s", got)
	}
}

// TestRoutes: the first member in namespace order keeps a URI or template
// another one lists too; a URI not listed is routed by the earliest
// matching template.
func TestRoutes(t *testing.T) {
	var r Routes[string]
	if _, ok := r.Lookup("x://a"); ok {
		t.Error("empty routes found a URI")
	}
	if w, won := r.AddURI("x://a", 1, "b"); !won || w != "b" {
		t.Errorf("first AddURI = %q, %v", w, won)
	}
	if w, won := r.AddURI("x://a", 2, "c"); won || w != "b" {
		t.Errorf("later member's AddURI = %q, %v; want b, false", w, won)
	}
	if w, won := r.AddURI("x://a", 0, "a"); !won || w != "a" {
		t.Errorf("earlier member's AddURI = %q, %v; want a, true", w, won)
	}
	if s, ok := r.Lookup("x://a"); !ok || s != "a" {
		t.Errorf("Lookup(x://a) = %q, %v", s, ok)
	}
	r.AddTemplate("t://{id}", 3, "late")
	r.AddTemplate("t://{+path}", 1, "early")
	if s, ok := r.Lookup("t://7"); !ok || s != "early" {
		t.Errorf("Lookup(t://7) = %q, %v; want early", s, ok)
	}
	if s, ok := r.Lookup("t://7/8"); !ok || s != "early" {
		t.Errorf("Lookup(t://7/8) = %q, %v; want early", s, ok)
	}
	if s, ok := r.Template("t://{id}"); !ok || s != "late" {
		t.Errorf("Template(t://{id}) = %q, %v", s, ok)
	}
	if _, ok := r.Template("t://7"); ok {
		t.Error("Template matched a URI, not a template")
	}
	r.SetTool("echo", "params")
	if v, ok := r.Tool("echo"); !ok || v != "params" {
		t.Errorf("Tool(echo) = %q, %v", v, ok)
	}
	if _, ok := r.Tool("other"); ok {
		t.Error("Tool found a tool never set")
	}
}

// TestRoutesBounded: past MaxRoutes a URI is answered for, not remembered.
func TestRoutesBounded(t *testing.T) {
	var r Routes[int]
	for i := range MaxRoutes + 10 {
		uri := fmt.Sprintf("x://%d", i)
		if _, won := r.AddURI(uri, 0, "s"); !won {
			t.Fatalf("AddURI(%s) lost", uri)
		}
	}
	if _, ok := r.Lookup(fmt.Sprintf("x://%d", MaxRoutes+5)); ok {
		t.Error("a URI past the bound was remembered")
	}
	if _, ok := r.Lookup("x://5"); !ok {
		t.Error("a URI within the bound was forgotten")
	}
}

// TestCache: one value per revision and endpoint, the same on every Get,
// and a newer revision drops the older ones.
func TestCache(t *testing.T) {
	var c Cache[Routes[int]]
	a := c.Get(1, "e")
	if c.Get(1, "e") != a {
		t.Error("second Get made another value")
	}
	if c.Get(1, "f") == a {
		t.Error("another endpoint shares the value")
	}
	a.AddURI("x://a", 0, "s")
	var wg sync.WaitGroup
	got := make([]*Routes[int], 8)
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i] = c.Get(2, "e")
		}()
	}
	wg.Wait()
	for _, g := range got[1:] {
		if g != got[0] {
			t.Fatal("concurrent Gets made different values")
		}
	}
	if _, ok := got[0].Lookup("x://a"); ok {
		t.Error("a new revision kept the old routes")
	}
	if c.Get(1, "e") == a {
		t.Error("the old revision was not dropped")
	}
}

func TestCoversURI(t *testing.T) {
	for _, tc := range []struct {
		sub, uri string
		want     bool
	}{
		{"file:///a", "file:///a", true},
		{"file:///a", "file:///a/b", true},
		{"file:///a/", "file:///a/b", true},
		{"file:///a", "file:///ab", false},
		{"file:///a/b", "file:///a", false},
	} {
		if got := CoversURI(tc.sub, tc.uri); got != tc.want {
			t.Errorf("CoversURI(%q, %q) = %v, want %v", tc.sub, tc.uri, got, tc.want)
		}
	}
}
