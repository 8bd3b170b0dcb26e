package admin_test

import (
	"context"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/controlplane/store"
)

// fakeListed stands in for the sync server's reported tool lists.
type fakeListed struct {
	mu    sync.Mutex
	lists map[string]*metamcpv1.EndpointTools
}

func (f *fakeListed) EndpointTools(endpoint string) *metamcpv1.EndpointTools {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lists[endpoint]
}

// putRules stores access rules on an endpoint behind the admin service's
// back: validation refuses them until the data plane enforces them.
func putRules(t *testing.T, e *env, name string, rules []*metamcpv1.AccessRule) {
	t.Helper()
	ep, err := e.client.GetEndpoint(ctx(t), &metamcpv1.GetEndpointRequest{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	ep.AccessRules = rules
	ep.Revision, ep.CreateTime, ep.UpdateTime = 0, nil, nil
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(ep)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.st.Update(ctx(t), func(ctx context.Context, tx store.Tx) error {
		return tx.Put(ctx, store.Record{Kind: store.KindEndpoint, Name: name, Data: data})
	}); err != nil {
		t.Fatal(err)
	}
}

func yes() *bool { b := true; return &b }

func TestCanI(t *testing.T) {
	e := newEnv(t, openSQLite(t))
	listed := &fakeListed{lists: map[string]*metamcpv1.EndpointTools{}}
	e.svc.SetListedTools(listed)
	mustCreateServer(t, e, stdioServer("github", nil))
	mustCreateServer(t, e, stdioServer("fs", nil))
	ns := namespace("dev", "github", "fs")
	ns.Members[0].Prefix = proto.String("gh")
	mustCreateNamespace(t, e, ns)
	mustCreateEndpoint(t, e, endpoint("team", "dev"))
	mustCreateEndpoint(t, e, endpoint("open", "dev"))
	putRules(t, e, "team", []*metamcpv1.AccessRule{
		{Name: "eng", Groups: []string{"eng"}, Servers: []string{"fs"}},
		{Name: "bots-read-only", ApiKeys: []string{"ci"}, Tools: []string{"*"}, Condition: "tool.annotations.readOnlyHint"},
		{Name: "no-deletes", Effect: metamcpv1.AccessEffect_ACCESS_EFFECT_DENY, Tools: []string{"*delete*"}},
		{Name: "tmp", Principals: []string{"alice"}, Tools: []string{"fs__write"}, Condition: `arguments.path.startsWith("/tmp/")`},
	})

	canI := func(req *metamcpv1.CanIRequest) *metamcpv1.CanIResponse {
		t.Helper()
		resp, err := e.client.CanI(ctx(t), req)
		if err != nil {
			t.Fatalf("CanI(%v): %v", req, err)
		}
		return resp
	}
	bob := &metamcpv1.Caller{Name: "bob", Groups: []string{"eng"}}
	ci := &metamcpv1.Caller{Name: "ci-bot", ApiKey: "ci"}

	// No data plane has listed the tools yet.
	r := canI(&metamcpv1.CanIRequest{Endpoint: "team", Caller: bob})
	if r.GetToolsKnown() || len(r.GetDecisions()) != 0 || len(r.GetRules()) != 4 {
		t.Fatalf("before any report: %v", r)
	}
	// One tool is still decided, its server found from the prefixes.
	r = canI(&metamcpv1.CanIRequest{Endpoint: "team", Caller: bob, Tool: "fs__read"})
	if d := r.GetDecisions(); len(d) != 1 || !d[0].GetAllowed() || d[0].GetRule() != "eng" || d[0].GetServer() != "fs" || !d[0].GetAnnotationsUnknown() {
		t.Fatalf("fs__read for bob: %v", d)
	}
	r = canI(&metamcpv1.CanIRequest{Endpoint: "team", Caller: ci, Tool: "gh__get_issue"})
	if d := r.GetDecisions(); len(d) != 1 || !d[0].GetAllowed() || !d[0].GetConditional() || d[0].GetServer() != "github" {
		t.Fatalf("gh__get_issue for ci without annotations: %v", d)
	}

	listed.mu.Lock()
	listed.lists["team"] = &metamcpv1.EndpointTools{Endpoint: "team", Revision: 9, NodeId: "dp-1", Tools: []*metamcpv1.ListedTool{
		{Name: "fs__read", Server: "fs"},
		{Name: "fs__write", Server: "fs"},
		{Name: "fs__delete", Server: "fs"},
		{Name: "gh__get_issue", Server: "github", Annotations: &metamcpv1.ToolAnnotations{ReadOnlyHint: yes()}},
		{Name: "gh__create_issue", Server: "github"},
	}}
	listed.mu.Unlock()

	decisions := func(r *metamcpv1.CanIResponse) string {
		var out []string
		for _, d := range r.GetDecisions() {
			s := d.GetTool() + "="
			if d.GetAllowed() {
				s += "yes"
			} else {
				s += "no"
			}
			if d.GetConditional() {
				s += "?"
			}
			out = append(out, s+"("+d.GetRule()+")")
		}
		return strings.Join(out, " ")
	}
	for _, tc := range []struct {
		caller *metamcpv1.Caller
		want   string
	}{
		{bob, "fs__read=yes(eng) fs__write=yes(eng) fs__delete=no(no-deletes) gh__get_issue=no() gh__create_issue=no()"},
		{ci, "fs__read=no() fs__write=no() fs__delete=no(no-deletes) gh__get_issue=yes(bots-read-only) gh__create_issue=no()"},
		{&metamcpv1.Caller{Name: "alice"}, "fs__read=no() fs__write=yes?(tmp) fs__delete=no(no-deletes) gh__get_issue=no() gh__create_issue=no()"},
	} {
		r := canI(&metamcpv1.CanIRequest{Endpoint: "team", Caller: tc.caller})
		if got := decisions(r); got != tc.want || !r.GetToolsKnown() || r.GetListedBy() != "dp-1" || r.GetListedRevision() != 9 {
			t.Errorf("%s: got %s (known %v by %q), want %s", tc.caller.GetName(), got, r.GetToolsKnown(), r.GetListedBy(), tc.want)
		}
	}
	// A call's arguments decide the conditional tool.
	alice := &metamcpv1.Caller{Name: "alice"}
	if got := decisions(canI(&metamcpv1.CanIRequest{Endpoint: "team", Caller: alice, Tool: "fs__write", Arguments: `{"path": "/tmp/x"}`})); got != "fs__write=yes(tmp)" {
		t.Errorf("alice writing /tmp/x: %s", got)
	}
	if got := decisions(canI(&metamcpv1.CanIRequest{Endpoint: "team", Caller: alice, Tool: "fs__write", Arguments: `{"path": "/etc/x"}`})); got != "fs__write=no()" {
		t.Errorf("alice writing /etc/x: %s", got)
	}
	// An endpoint without rules allows everything.
	r = canI(&metamcpv1.CanIRequest{Endpoint: "open", Caller: alice, Tool: "gh__anything"})
	if d := r.GetDecisions(); len(d) != 1 || !d[0].GetAllowed() || !strings.Contains(d[0].GetReason(), "no access rules") {
		t.Errorf("open endpoint: %v", d)
	}

	// Errors.
	for _, tc := range []struct {
		req  *metamcpv1.CanIRequest
		code codes.Code
	}{
		{&metamcpv1.CanIRequest{Endpoint: "nosuch", Caller: alice}, codes.NotFound},
		{&metamcpv1.CanIRequest{Endpoint: "team"}, codes.InvalidArgument},
		{&metamcpv1.CanIRequest{Endpoint: "team", Caller: &metamcpv1.Caller{Name: "x", Kind: "robot"}}, codes.InvalidArgument},
		{&metamcpv1.CanIRequest{Endpoint: "team", Caller: &metamcpv1.Caller{Name: "x", ApiKey: "k", Groups: []string{"g"}}}, codes.InvalidArgument},
		{&metamcpv1.CanIRequest{Endpoint: "team", Caller: alice, Tool: "fs__write", Arguments: "[1]"}, codes.InvalidArgument},
		{&metamcpv1.CanIRequest{Endpoint: "team", Caller: alice, Arguments: "{}"}, codes.InvalidArgument},
	} {
		_, err := e.client.CanI(ctx(t), tc.req)
		wantCode(t, err, tc.code)
	}
}
