package snapshot

import (
	"errors"
	"strings"
	"testing"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
)

// validRules are access rules of every shape, valid on validConfig's "team"
// endpoint.
func validRules() []*metamcpv1.AccessRule {
	return []*metamcpv1.AccessRule{
		{Name: "admins", Groups: []string{"admins"}, Tools: []string{"*"}, Prompts: []string{"*"}, Resources: []string{"*"}},
		{Name: "bots-read-only", ApiKeys: []string{"bot"}, Tools: []string{"*"}, Condition: "tool.annotations.readOnlyHint"},
		{Name: "alice", Principals: []string{"alice@example.com", "ali?e"}, Servers: []string{"github", "events"}},
		{Name: "no-deletes", Effect: metamcpv1.AccessEffect_ACCESS_EFFECT_DENY, Tools: []string{"github__delete_*"},
			Condition: `!("admins" in principal.groups) || arguments.?force.orValue(false) == true`},
		{Name: "docs", Resources: []string{"file:///srv/docs/*"}, Prompts: []string{"rm__*"}},
	}
}

// accessRuleViolations validates validConfig with rules on endpoint "team".
func accessRuleViolations(t *testing.T, mutate func(rules []*metamcpv1.AccessRule) []*metamcpv1.AccessRule) []Violation {
	t.Helper()
	cfg := validConfig()
	ep(cfg).AccessRules = mutate(validRules())
	_, err := Validate(cfg)
	if err == nil {
		return nil
	}
	var verr *Error
	if !errors.As(err, &verr) {
		t.Fatalf("Validate error = %v, want *Error", err)
	}
	return verr.Violations
}

func TestValidateAccessRules(t *testing.T) {
	type want struct{ field, desc string }
	tests := []struct {
		name   string
		mutate func(r []*metamcpv1.AccessRule) []*metamcpv1.AccessRule
		want   []want
	}{
		{"valid", func(r []*metamcpv1.AccessRule) []*metamcpv1.AccessRule { return r }, nil},
		{"name missing", func(r []*metamcpv1.AccessRule) []*metamcpv1.AccessRule { r[1].Name = ""; return r },
			[]want{{"accessRules[1].name", "is required"}}},
		{"name invalid", func(r []*metamcpv1.AccessRule) []*metamcpv1.AccessRule { r[1].Name = "Bots_RO"; return r },
			[]want{{"accessRules[1].name", `try "bots-ro"`}}},
		{"name duplicate", func(r []*metamcpv1.AccessRule) []*metamcpv1.AccessRule { r[3].Name = "admins"; return r },
			[]want{{"accessRules[3].name", `"admins" is also the name of accessRules[0]`}}},
		{"null rule", func(r []*metamcpv1.AccessRule) []*metamcpv1.AccessRule { return append(r, nil) },
			[]want{{"accessRules[5]", "must not be null"}}},
		{"bad effect", func(r []*metamcpv1.AccessRule) []*metamcpv1.AccessRule { r[0].Effect = 7; return r },
			[]want{{"accessRules[0].effect", "use allow or deny"}}},
		{"names nothing", func(r []*metamcpv1.AccessRule) []*metamcpv1.AccessRule {
			r[2].Servers = nil
			return r
		}, []want{{"accessRules[2]", "list tools, servers, prompts or resources"}}},
		{"empty principal and group", func(r []*metamcpv1.AccessRule) []*metamcpv1.AccessRule {
			r[2].Principals = append(r[2].Principals, "")
			r[0].Groups = append(r[0].Groups, "a\nb")
			return r
		}, []want{{"accessRules[2].principals[2]", "must not be empty"}, {"accessRules[0].groups[1]", "control character"}}},
		{"bad api key name", func(r []*metamcpv1.AccessRule) []*metamcpv1.AccessRule { r[1].ApiKeys = []string{"Bot Key"}; return r },
			[]want{{"accessRules[1].apiKeys[0]", `"Bot Key" is not an API key name`}}},
		{"bad tool glob", func(r []*metamcpv1.AccessRule) []*metamcpv1.AccessRule {
			r[0].Tools = []string{"*", "", "a b"}
			return r
		},
			[]want{{"accessRules[0].tools[1]", "must not be empty"}, {"accessRules[0].tools[2]", "has character ' '"}}},
		{"empty resource and prompt", func(r []*metamcpv1.AccessRule) []*metamcpv1.AccessRule {
			r[4].Resources = append(r[4].Resources, "")
			r[4].Prompts = []string{strings.Repeat("p", 300)}
			return r
		}, []want{{"accessRules[4].resources[1]", "must not be empty"}, {"accessRules[4].prompts[0]", "at most 256"}}},
		{"server not in the namespace", func(r []*metamcpv1.AccessRule) []*metamcpv1.AccessRule {
			r[2].Servers = []string{"github", "nosuch", "Bad"}
			return r
		}, []want{{"accessRules[2].servers[1]", `server "nosuch" is not a member of namespace "dev"`}, {"accessRules[2].servers[2]", "not a valid server name"}}},
		{"condition does not compile", func(r []*metamcpv1.AccessRule) []*metamcpv1.AccessRule {
			r[1].Condition = `principal.nmae == "x"`
			return r
		}, []want{{"accessRules[1].condition", "undefined field 'nmae'"}}},
		{"condition not a bool", func(r []*metamcpv1.AccessRule) []*metamcpv1.AccessRule {
			r[1].Condition = `principal.name`
			return r
		}, []want{{"accessRules[1].condition", "must yield a bool"}}},
		{"condition too long", func(r []*metamcpv1.AccessRule) []*metamcpv1.AccessRule {
			r[1].Condition = strings.Repeat("true || ", 300) + "true"
			return r
		}, []want{{"accessRules[1].condition", "at most 2048"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := accessRuleViolations(t, tt.mutate)
			for _, w := range tt.want {
				found := false
				for _, v := range got {
					if v.Kind == KindEndpoint && v.Name == "team" && v.Field == w.field && strings.Contains(v.Description, w.desc) {
						found = true
					}
				}
				if !found {
					t.Errorf("missing violation %s containing %q", w.field, w.desc)
				}
			}
			if len(got) != len(tt.want) {
				t.Errorf("got %d violations, want %d: %v", len(got), len(tt.want), got)
			}
		})
	}
}

// TestValidateResourceAccessRules checks rules on an endpoint alone, as
// an admin client sends it: server membership is left to Validate.
func TestValidateResourceAccessRules(t *testing.T) {
	e := &metamcpv1.Endpoint{Name: "team", Namespace: "dev", AccessRules: []*metamcpv1.AccessRule{
		{Name: "a", Servers: []string{"anything"}},
		{Name: "b", Tools: []string{"*"}, Condition: "1"},
	}}
	var got []string
	for _, v := range ValidateResource(e) {
		got = append(got, v.String())
	}
	if len(got) != 1 || !strings.Contains(got[0], "accessRules[1].condition") {
		t.Fatalf("got %q, want one violation of accessRules[1].condition", got)
	}
}
