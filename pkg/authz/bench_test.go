package authz

import (
	"encoding/json"
	"testing"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/pkg/identity"
)

// plainRules is a rule set of the usual shape: a few groups, keys and
// globs, no conditions.
func plainRules() []*metamcpv1.AccessRule {
	return []*metamcpv1.AccessRule{
		deny("no-deletes", func(r *metamcpv1.AccessRule) { r.Tools = []string{"*__delete_*", "*__drop_*"} }),
		allow("admins", func(r *metamcpv1.AccessRule) { r.Groups = []string{"admins"}; r.Tools = []string{"*"} }),
		allow("eng-fs", func(r *metamcpv1.AccessRule) { r.Groups = []string{"eng", "sre"}; r.Servers = []string{"fs", "db"} }),
		allow("ci", func(r *metamcpv1.AccessRule) {
			r.ApiKeys = []string{"ci", "deploy"}
			r.Tools = []string{"gh__get_*", "gh__list_*"}
		}),
		allow("alice", func(r *metamcpv1.AccessRule) { r.Principals = []string{"alice", "ali*"}; r.Tools = []string{"gh__*"} }),
	}
}

func BenchmarkDecide(b *testing.B) {
	args := json.RawMessage(`{"owner":"metamcp","repo":"metamcp","number":42}`)
	celRules := append(plainRules(), allow("bots-read-only", func(r *metamcpv1.AccessRule) {
		r.Principals = []string{"robot"}
		r.Tools = []string{"*"}
		r.Condition = `tool.annotations.readOnlyHint`
	}))
	argRules := append(plainRules(), allow("repo", func(r *metamcpv1.AccessRule) {
		r.Principals = []string{"robot"}
		r.Tools = []string{"*"}
		r.Condition = `arguments.repo == "metamcp" && "eng" in principal.groups || principal.name == "robot"`
	}))
	robot := &identity.Principal{Name: "robot", Kind: identity.KindAPIKey, KeyID: "robot"}
	ro := Item{Kind: Tool, Name: "gh__get_issue", Server: "gh", Annotations: Annotations{ReadOnlyHint: yes()}}
	for _, bc := range []struct {
		name  string
		rules []*metamcpv1.AccessRule
		who   *identity.Principal
		item  Item
		args  json.RawMessage
	}{
		{"NoRules", nil, alice, ro, args},
		{"Plain/Allowed", plainRules(), alice, ro, args},
		{"Plain/NoAllow", plainRules(), bot, tool("fs__read", "fs"), args},
		{"Plain/Group", plainRules(), bob, tool("db__query", "db"), args},
		{"CEL/Annotations", celRules, robot, ro, args},
		{"CEL/Arguments", argRules, robot, ro, args},
		{"CEL/ArgumentsAtList", argRules, robot, ro, nil},
	} {
		p, err := Compile(bc.rules)
		if err != nil {
			b.Fatal(err)
		}
		who := bc.who
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				p.Decide(who, bc.item, bc.args)
			}
		})
	}
}
