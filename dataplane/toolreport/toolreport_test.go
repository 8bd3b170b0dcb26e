package toolreport

import (
	"encoding/json"
	"testing"
	"time"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
)

func names(lists []*metamcpv1.EndpointTools) []string {
	var out []string
	for _, l := range lists {
		out = append(out, l.GetEndpoint())
	}
	return out
}

func TestReport(t *testing.T) {
	var nilReport *Report
	nilReport.Set("x", 1, nil) // a nil Report ignores everything
	if nilReport.Changed(true) != nil {
		t.Fatal("nil report has lists")
	}

	r := New()
	now := time.Unix(1000, 0)
	r.now = func() time.Time { return now }
	if !r.Due("team", 3) {
		t.Fatal("a list never set is not due")
	}
	ro := Tool("gh__get", "github", json.RawMessage(`{"name":"get","annotations":{"readOnlyHint":true,"title":"Get"}}`))
	if ro.GetAnnotations().GetReadOnlyHint() != true || ro.GetAnnotations().GetTitle() != "Get" || ro.GetAnnotations().DestructiveHint != nil {
		t.Fatalf("Tool: %v", ro)
	}
	plain := Tool("fs__read", "fs", json.RawMessage(`{"name":"read"}`))
	if plain.GetAnnotations() != nil {
		t.Fatalf("Tool without annotations: %v", plain)
	}
	r.Set("team", 3, []*metamcpv1.ListedTool{ro, plain})
	r.Set("dev", 3, []*metamcpv1.ListedTool{plain})
	if r.Due("team", 3) || !r.Due("team", 4) {
		t.Fatal("a list just set is due again, or one of an older revision is not")
	}
	now = now.Add(RefreshInterval)
	if !r.Due("team", 3) {
		t.Fatal("a list set RefreshInterval ago is not due")
	}
	got := r.Changed(false)
	if n := names(got); len(n) != 2 || n[0] != "dev" || n[1] != "team" {
		t.Fatalf("changed = %v", n)
	}
	if tl := got[1].GetTools(); tl[0].GetName() != "fs__read" || tl[1].GetName() != "gh__get" {
		t.Fatalf("tools not sorted: %v", tl)
	}
	if len(r.Changed(false)) != 0 {
		t.Fatal("reported twice")
	}
	// The same list (in another order) is not reported again.
	r.Set("team", 4, []*metamcpv1.ListedTool{plain, ro})
	if len(r.Changed(false)) != 0 {
		t.Fatal("an unchanged list was reported")
	}
	r.Set("team", 5, []*metamcpv1.ListedTool{plain})
	if n := names(r.Changed(false)); len(n) != 1 || n[0] != "team" {
		t.Fatalf("changed after a change = %v", n)
	}
	// A new stream gets every list.
	if n := names(r.Changed(true)); len(n) != 2 {
		t.Fatalf("all = %v", n)
	}
}
