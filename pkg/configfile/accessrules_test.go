package configfile

import (
	"bytes"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
)

// TestAccessRulesRoundTrip checks that an endpoint's access rules, as the
// README writes them, parse and are written back unchanged.
func TestAccessRulesRoundTrip(t *testing.T) {
	in := `apiVersion: metamcp/v1
kind: Endpoint
name: team
namespace: dev
accessRules:
  - name: engineers
    groups: [eng, sre]
    servers: [github]
  - name: bots-read-only
    apiKeys: [ci]
    tools: ["*"]
    condition: tool.annotations.readOnlyHint
  - name: no-deletes
    effect: deny
    principals: ["*@example.com"]
    tools: ["*__delete_*"]
    prompts: ["*"]
    resources: ["file:///srv/*"]
    condition: arguments.path.startsWith("/tmp/") && principal.claims.team == "payments"
`
	rs, err := Parse(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := &metamcpv1.Endpoint{Name: "team", Namespace: "dev", AccessRules: []*metamcpv1.AccessRule{
		{Name: "engineers", Groups: []string{"eng", "sre"}, Servers: []string{"github"}},
		{Name: "bots-read-only", ApiKeys: []string{"ci"}, Tools: []string{"*"}, Condition: "tool.annotations.readOnlyHint"},
		{Name: "no-deletes", Effect: metamcpv1.AccessEffect_ACCESS_EFFECT_DENY, Principals: []string{"*@example.com"},
			Tools: []string{"*__delete_*"}, Prompts: []string{"*"}, Resources: []string{"file:///srv/*"},
			Condition: `arguments.path.startsWith("/tmp/") && principal.claims.team == "payments"`},
	}}
	if len(rs) != 1 || !proto.Equal(rs[0].GetEndpoint(), want) {
		t.Fatalf("parsed %v\nwant %v", rs, want)
	}
	var b bytes.Buffer
	if err := Marshal(&b, rs); err != nil {
		t.Fatal(err)
	}
	back, err := Parse(&b)
	if err != nil {
		t.Fatalf("parse back: %v\n%s", err, b.String())
	}
	if len(back) != 1 || !proto.Equal(back[0].GetEndpoint(), want) {
		t.Fatalf("round trip gave %v\nfrom\n%s", back, b.String())
	}
}
