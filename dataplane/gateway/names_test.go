package gateway

import (
	"context"
	"fmt"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
)

// TestSharedResourceURINoFalseListChanged: two servers list the same
// resource URI (the first in namespace order serves it). Config changes that
// leave the resources as they are must not send resources/list_changed,
// whichever server answers first when the gateway checks.
func TestSharedResourceURINoFalseListChanged(t *testing.T) {
	lh := newLiveHarness(t)
	// beta also lists fixture://alpha/readme.
	lh.beta.s.AddResource(&mcp.Resource{URI: "fixture://alpha/readme", Name: "readme copy", MIMEType: "text/plain"},
		func(_ context.Context, req *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
			return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: req.Params.URI, Text: "beta's copy"}}}, nil
		})
	tools, resources := newCounter(), newCounter()
	cs := lh.connectWith(t, "main", keyAlice, "2025-11-25", &mcp.ClientOptions{
		ToolListChangedHandler:     func(context.Context, *mcp.ToolListChangedRequest) { tools.add() },
		ResourceListChangedHandler: func(context.Context, *mcp.ResourceListChangedRequest) { resources.add() },
	})
	lh.waitStreams(t, "main", 1)
	toolNamesOf(t, cs)
	if _, err := cs.ListResources(testCtx(t), nil); err != nil {
		t.Fatal(err)
	}
	// Changes of the tools only. Each check of the endpoint looks at the
	// resources after the tools, and checks run one after the other: once
	// the tools' notice of change n+1 is here, a resources' notice of
	// change n would have come before it.
	const changes = 8
	for i := range changes + 1 {
		lh.swap(t, func(c *metamcpv1.Config) {
			c.Namespaces[0].Members[0].ToolOverrides = map[string]*metamcpv1.ToolOverride{"echo": {Title: fmt.Sprint("title ", i)}}
		})
		tools.waitFor(t, i+1, fmt.Sprint("tools/list_changed after change ", i))
	}
	if n := resources.get(); n != 0 {
		t.Fatalf("%d resources/list_changed after %d config changes that left the resources alone", n, changes)
	}
}

// TestListTimeCollisions: two tools that end up with one exposed name (an
// unprefixed server's tool named like another's prefixed one; an override
// renaming a tool onto one the config does not name) are listed once, as
// the one calls reach, and reported.
func TestListTimeCollisions(t *testing.T) {
	gamma := fixtureServer("gamma", nil)
	addEcho(gamma, "alpha__echo")
	servers := defaultServers(t)
	servers["gamma"] = gamma
	empty := ""
	cfg := testConfig(
		&metamcpv1.NamespaceMember{Server: "gamma", Prefix: &empty},
		&metamcpv1.NamespaceMember{Server: "alpha", ToolOverrides: map[string]*metamcpv1.ToolOverride{"add": {Name: "whoami"}}},
	)
	h := newHarness(t, cfg, servers, nil)
	cs := h.connect(t, "main", keyAlice, "2025-11-25")
	res, err := cs.ListTools(testCtx(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	desc := map[string]string{}
	for _, tl := range res.Tools {
		count[tl.Name]++
		desc[tl.Name] = tl.Description
	}
	for _, name := range []string{"alpha__echo", "alpha__whoami"} {
		if count[name] != 1 {
			t.Errorf("%s listed %d times, want once", name, count[name])
		}
	}
	// Calls to alpha__echo reach alpha (the longest prefix), and
	// alpha__whoami reaches the tool renamed onto it: those are listed.
	if desc["alpha__echo"] != "Echo the text" {
		t.Errorf("alpha__echo listed as %q, want alpha's echo", desc["alpha__echo"])
	}
	if desc["alpha__whoami"] != "Add two numbers" {
		t.Errorf("alpha__whoami listed as %q, want the override of add", desc["alpha__whoami"])
	}
	if got, _ := callText(t, cs, "alpha__echo", map[string]any{"text": "x"}); got != "alpha:x" {
		t.Errorf("alpha__echo answered %q, want alpha's", got)
	}
	cols := h.gw.Collisions()
	if len(cols) != 2 {
		t.Fatalf("collisions %+v, want 2", cols)
	}
	if c := cols[0]; c.Name != "alpha__echo" || c.Kept != "alpha" || c.Dropped != "gamma" || c.Namespace != "main" {
		t.Errorf("collision %+v", c)
	}
	if c := cols[1]; c.Name != "alpha__whoami" || c.Kept != "alpha" || c.Dropped != "alpha" {
		t.Errorf("collision %+v", c)
	}
}
