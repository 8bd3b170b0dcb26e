package snapshot

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
)

// TestRateLimitGlobReach: a policy whose tool glob cannot match any tool of
// an endpoint that lists it is warned about; one that may match is not.
func TestRateLimitGlobReach(t *testing.T) {
	sep := Separator(validConfig().Namespaces[0])
	for _, tc := range []struct {
		name, server, tool string
		allow              []string // of the github member
		warn               bool
	}{
		{name: "prefix of a member", tool: "github" + sep + "create_*"},
		{name: "no prefix matches", server: "remote", tool: "notion" + sep + "*", warn: true},
		{name: "unprefixed member takes anything", tool: "anything"},
		{name: "question marks", tool: "githu?" + sep + "x"},
		{name: "server narrows to its prefix", server: "github", tool: "rm" + sep + "*", warn: true},
		{name: "server and its prefix", server: "remote", tool: "rm" + sep + "*"},
		{name: "allowed names known", server: "github", tool: "github" + sep + "search_*", allow: []string{"list_issues"}, warn: true},
		{name: "allowed name matches", server: "github", tool: "github" + sep + "list_*", allow: []string{"list_issues"}},
		{name: "renamed allowed name", server: "github", tool: "github" + sep + "search", allow: []string{"search_code"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := validConfig()
			p := rl(cfg)
			p.Server, p.Tool = tc.server, tc.tool
			p.Burst = proto.Int64(3)
			if tc.allow != nil {
				cfg.Namespaces[0].Members[0].AllowTools = tc.allow
				cfg.Namespaces[0].Members[0].DenyTools = nil
			}
			warnings, err := Validate(cfg)
			if err != nil {
				t.Fatal(err)
			}
			got, ofEndpoint := false, false
			for _, w := range warnings {
				if strings.Contains(w, "matches no tool of endpoint") {
					got = true
				}
				if strings.HasPrefix(w, `Endpoint "team"`) && strings.Contains(w, "matches no tool of this endpoint") {
					ofEndpoint = true
				}
			}
			if got != tc.warn || ofEndpoint != tc.warn {
				t.Fatalf("warned %v, want %v: %q", got, tc.warn, warnings)
			}
		})
	}
}
