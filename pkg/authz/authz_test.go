package authz

import (
	"encoding/json"
	"strings"
	"testing"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/pkg/identity"
)

var (
	alice = &identity.Principal{Name: "alice", Kind: identity.KindAPIKey, KeyID: "alice-laptop"}
	bob   = &identity.Principal{Name: "bob@example.com", Kind: identity.KindJWT, Issuer: "https://idp.example.com", Subject: "bob@example.com",
		Groups: []string{"eng", "oncall"}, Claims: map[string]any{"sub": "bob@example.com", "team": "payments", "level": float64(3)}}
	bot   = &identity.Principal{Name: "ci-bot", Kind: identity.KindAPIKey, KeyID: "ci"}
	carol = &identity.Principal{Name: "carol", Kind: identity.KindJWT, Groups: []string{"sales"}}
)

func yes() *bool { b := true; return &b }
func no() *bool  { b := false; return &b }

func tool(name, server string) Item { return Item{Kind: Tool, Name: name, Server: server} }

func allow(name string, f func(r *metamcpv1.AccessRule)) *metamcpv1.AccessRule {
	r := &metamcpv1.AccessRule{Name: name, Effect: metamcpv1.AccessEffect_ACCESS_EFFECT_ALLOW}
	f(r)
	return r
}

func deny(name string, f func(r *metamcpv1.AccessRule)) *metamcpv1.AccessRule {
	r := allow(name, f)
	r.Effect = metamcpv1.AccessEffect_ACCESS_EFFECT_DENY
	return r
}

func TestDecide(t *testing.T) {
	type check struct {
		who         *identity.Principal
		item        Item
		args        string // "" = list time (nil)
		allowed     bool
		rule        string
		conditional bool
		reason      string // substring of Reason
	}
	cases := []struct {
		name   string
		rules  []*metamcpv1.AccessRule
		checks []check
	}{
		{
			name:  "no rules allow everything",
			rules: nil,
			checks: []check{
				{who: alice, item: tool("gh__delete_repo", "gh"), allowed: true, reason: "no access rules"},
				{who: nil, item: Item{Kind: Resource, Name: "file:///etc/passwd", Server: "fs"}, allowed: true},
			},
		},
		{
			name: "principal globs, api keys and groups",
			rules: []*metamcpv1.AccessRule{
				allow("alice-all", func(r *metamcpv1.AccessRule) { r.Principals = []string{"ali?e"}; r.Tools = []string{"*"} }),
				allow("ci-key", func(r *metamcpv1.AccessRule) { r.ApiKeys = []string{"ci"}; r.Tools = []string{"gh__get_*"} }),
				allow("eng", func(r *metamcpv1.AccessRule) { r.Groups = []string{"eng"}; r.Servers = []string{"fs"} }),
			},
			checks: []check{
				{who: alice, item: tool("gh__delete_repo", "gh"), allowed: true, rule: "alice-all", reason: `allowed by rule "alice-all"`},
				{who: bot, item: tool("gh__get_issue", "gh"), allowed: true, rule: "ci-key"},
				{who: bot, item: tool("gh__delete_repo", "gh"), allowed: false, reason: "no access rule allows it"},
				{who: bob, item: tool("fs__read", "fs"), allowed: true, rule: "eng"},
				{who: bob, item: Item{Kind: Prompt, Name: "fs__summarize", Server: "fs"}, allowed: true, rule: "eng"},
				{who: bob, item: tool("gh__get_issue", "gh"), allowed: false},
				{who: carol, item: tool("fs__read", "fs"), allowed: false},
				// An API key name is not a principal name.
				{who: &identity.Principal{Name: "ci", Kind: identity.KindJWT}, item: tool("gh__get_issue", "gh"), allowed: false},
				// Tool globs do not cover prompts.
				{who: alice, item: Item{Kind: Prompt, Name: "gh__triage", Server: "gh"}, allowed: false},
				{who: nil, item: tool("gh__get_issue", "gh"), allowed: false},
			},
		},
		{
			name: "prompts and resources by glob",
			rules: []*metamcpv1.AccessRule{
				allow("docs", func(r *metamcpv1.AccessRule) {
					r.Prompts = []string{"docs__*"}
					r.Resources = []string{"file:///srv/docs/*"}
				}),
			},
			checks: []check{
				{who: carol, item: Item{Kind: Prompt, Name: "docs__explain", Server: "docs"}, allowed: true, rule: "docs"},
				{who: carol, item: Item{Kind: Resource, Name: "file:///srv/docs/a/b.md", Server: "docs"}, allowed: true, rule: "docs"},
				{who: carol, item: Item{Kind: Resource, Name: "file:///etc/passwd", Server: "docs"}, allowed: false},
				{who: carol, item: tool("docs__explain", "docs"), allowed: false},
			},
		},
		{
			name: "deny wins over allow, whatever the order",
			rules: []*metamcpv1.AccessRule{
				allow("everyone", func(r *metamcpv1.AccessRule) { r.Tools = []string{"*"} }),
				deny("no-deletes", func(r *metamcpv1.AccessRule) { r.Tools = []string{"*delete*"} }),
				deny("no-gh-for-bots", func(r *metamcpv1.AccessRule) { r.ApiKeys = []string{"ci"}; r.Servers = []string{"gh"} }),
			},
			checks: []check{
				{who: alice, item: tool("gh__get_issue", "gh"), allowed: true, rule: "everyone"},
				{who: alice, item: tool("gh__delete_repo", "gh"), allowed: false, rule: "no-deletes", reason: `denied by rule "no-deletes"`},
				{who: bot, item: tool("gh__get_issue", "gh"), allowed: false, rule: "no-gh-for-bots"},
				{who: bot, item: tool("fs__read", "fs"), allowed: true, rule: "everyone"},
			},
		},
		{
			name: "first matching allow rule is named",
			rules: []*metamcpv1.AccessRule{
				allow("gh-read", func(r *metamcpv1.AccessRule) { r.Tools = []string{"gh__get_*"} }),
				allow("gh", func(r *metamcpv1.AccessRule) { r.Servers = []string{"gh"} }),
			},
			checks: []check{
				{who: carol, item: tool("gh__get_issue", "gh"), allowed: true, rule: "gh-read"},
				{who: carol, item: tool("gh__create_issue", "gh"), allowed: true, rule: "gh"},
			},
		},
		{
			name: "conditions on principal and tool",
			rules: []*metamcpv1.AccessRule{
				allow("bots-read-only", func(r *metamcpv1.AccessRule) {
					r.ApiKeys = []string{"ci"}
					r.Tools = []string{"*"}
					r.Condition = "tool.annotations.readOnlyHint"
				}),
				allow("payments", func(r *metamcpv1.AccessRule) {
					r.Tools = []string{"pay__*"}
					r.Condition = `principal.claims.team == "payments" && principal.claims.level >= 2 && "oncall" in principal.groups`
				}),
				allow("by-kind", func(r *metamcpv1.AccessRule) {
					r.Prompts = []string{"*"}
					r.Condition = `tool.kind == "prompt" && principal.kind == "jwt" && principal.issuer.startsWith("https://idp.")`
				}),
			},
			checks: []check{
				{who: bot, item: Item{Kind: Tool, Name: "gh__get_issue", Server: "gh", Annotations: Annotations{ReadOnlyHint: yes()}}, allowed: true, rule: "bots-read-only"},
				{who: bot, item: Item{Kind: Tool, Name: "gh__delete_repo", Server: "gh", Annotations: Annotations{ReadOnlyHint: no()}}, allowed: false},
				// No annotations: MCP's default readOnlyHint is false.
				{who: bot, item: tool("gh__get_issue", "gh"), allowed: false},
				{who: bob, item: tool("pay__refund", "pay"), allowed: true, rule: "payments"},
				{who: carol, item: tool("pay__refund", "pay"), allowed: false},
				{who: bob, item: Item{Kind: Prompt, Name: "x", Server: "s"}, allowed: true, rule: "by-kind"},
				{who: alice, item: Item{Kind: Prompt, Name: "x", Server: "s"}, allowed: false},
			},
		},
		{
			name: "a failing condition never grants",
			rules: []*metamcpv1.AccessRule{
				// carol has no "team" claim: the lookup fails.
				allow("team", func(r *metamcpv1.AccessRule) {
					r.Tools = []string{"*"}
					r.Condition = `principal.claims.team == "payments"`
				}),
				deny("no-big-limits", func(r *metamcpv1.AccessRule) { r.Tools = []string{"db__*"}; r.Condition = `arguments.limit > 100` }),
				allow("db", func(r *metamcpv1.AccessRule) { r.Tools = []string{"db__*"} }),
			},
			checks: []check{
				{who: bob, item: tool("gh__x", "gh"), allowed: true, rule: "team"},
				{who: carol, item: tool("gh__x", "gh"), allowed: false, reason: `condition of rule "team" failed to evaluate`},
				{who: carol, item: tool("db__query", "db"), args: `{"limit": 10}`, allowed: true, rule: "db"},
				{who: carol, item: tool("db__query", "db"), args: `{"limit": 1000}`, allowed: false, rule: "no-big-limits"},
				// No limit argument: the deny condition fails, so it applies.
				{who: carol, item: tool("db__query", "db"), args: `{}`, allowed: false, rule: "no-big-limits", reason: "failed to evaluate"},
				{who: carol, item: tool("db__query", "db"), args: `null`, allowed: false, rule: "no-big-limits"},
				{who: carol, item: tool("db__query", "db"), args: `[1,2]`, allowed: false, rule: "no-big-limits", reason: "not a JSON object"},
				{who: carol, item: tool("db__query", "db"), args: `{"limit": "many"}`, allowed: false, rule: "no-big-limits"},
			},
		},
		{
			name: "list time: conditions on arguments are undecided",
			rules: []*metamcpv1.AccessRule{
				allow("tmp-only", func(r *metamcpv1.AccessRule) {
					r.Tools = []string{"fs__write"}
					r.Condition = `arguments.path.startsWith("/tmp/")`
				}),
				allow("reads", func(r *metamcpv1.AccessRule) { r.Tools = []string{"fs__read", "db__*"} }),
				deny("no-drop", func(r *metamcpv1.AccessRule) {
					r.Tools = []string{"db__*"}
					r.Condition = `arguments.sql.lowerAscii().contains("drop")`
				}),
				deny("never-etc", func(r *metamcpv1.AccessRule) {
					r.Tools = []string{"fs__*"}
					r.Condition = `principal.name == "carol" || arguments.path.startsWith("/etc")`
				}),
			},
			checks: []check{
				// Listed: the allow rule may grant the call.
				{who: alice, item: tool("fs__write", "fs"), allowed: true, rule: "tmp-only", conditional: true, reason: "subject to conditions"},
				{who: alice, item: tool("fs__write", "fs"), args: `{"path": "/tmp/x"}`, allowed: true, rule: "tmp-only"},
				{who: alice, item: tool("fs__write", "fs"), args: `{"path": "/home/x"}`, allowed: false},
				// No path: the deny rule's condition fails, so it applies.
				{who: alice, item: tool("fs__write", "fs"), args: `{}`, allowed: false, rule: "never-etc"},
				// Listed: the deny rule may or may not refuse the call.
				{who: alice, item: tool("db__query", "db"), allowed: true, rule: "reads", conditional: true},
				{who: alice, item: tool("db__query", "db"), args: `{"sql": "DROP TABLE x"}`, allowed: false, rule: "no-drop"},
				{who: alice, item: tool("db__query", "db"), args: `{"sql": "select 1"}`, allowed: true, rule: "reads"},
				// A deny condition decided without the arguments still hides.
				{who: carol, item: tool("fs__read", "fs"), allowed: false, rule: "never-etc"},
				{who: alice, item: tool("fs__read", "fs"), allowed: true, rule: "reads", conditional: true},
			},
		},
		{
			name: "unknown annotations (can-i for a tool never listed)",
			rules: []*metamcpv1.AccessRule{
				allow("read-only", func(r *metamcpv1.AccessRule) { r.Tools = []string{"*"}; r.Condition = `tool.annotations.readOnlyHint` }),
				allow("by-name", func(r *metamcpv1.AccessRule) { r.Tools = []string{"*"}; r.Condition = `tool.name.endsWith("_get")` }),
			},
			checks: []check{
				{who: alice, item: Item{Kind: Tool, Name: "x", AnnotationsUnknown: true}, args: `{}`, allowed: true, rule: "read-only", conditional: true},
				{who: alice, item: Item{Kind: Tool, Name: "x_get", AnnotationsUnknown: true}, args: `{}`, allowed: true, rule: "by-name"},
				{who: alice, item: Item{Kind: Tool, Name: "x", Annotations: Annotations{ReadOnlyHint: no()}}, args: `{}`, allowed: false},
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Compile(tc.rules)
			if err != nil {
				t.Fatal(err)
			}
			for i, c := range tc.checks {
				var args json.RawMessage
				if c.args != "" {
					args = json.RawMessage(c.args)
				}
				d := p.Decide(c.who, c.item, args)
				who := "<nil>"
				if c.who != nil {
					who = c.who.Name
				}
				if d.Allowed != c.allowed || d.Rule != c.rule || d.Conditional != c.conditional || !strings.Contains(d.Reason(), c.reason) {
					t.Errorf("check %d: %s on %s %q args %s: got allowed=%v rule=%q conditional=%v (%s); want allowed=%v rule=%q conditional=%v reason ~ %q",
						i, who, c.item.Kind, c.item.Name, c.args, d.Allowed, d.Rule, d.Conditional, d.Reason(), c.allowed, c.rule, c.conditional, c.reason)
				}
			}
		})
	}
}

func TestCompileErrors(t *testing.T) {
	for _, tc := range []struct{ cond, want string }{
		{`principal.nmae == "x"`, "undefined field 'nmae'"},
		{`tool.name`, "must yield a bool"},
		{`arguments.path.startsWith(`, "Syntax error"},
		{`nosuchvar`, "undeclared reference"},
		{strings.Repeat("true && ", 300) + "true", "at most 2048"},
	} {
		_, err := Compile([]*metamcpv1.AccessRule{{Name: "r", Tools: []string{"*"}, Condition: tc.cond}})
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), `access rule "r"`) {
			t.Errorf("condition %.40q: got %v, want an error with %q", tc.cond, err, tc.want)
		}
		if err := CheckCondition(tc.cond); err == nil {
			t.Errorf("CheckCondition(%.40q) passed", tc.cond)
		}
	}
	if p, err := Compile(nil); p != nil || err != nil {
		t.Fatalf("Compile(nil) = %v, %v; want nil, nil", p, err)
	}
}

// TestCostLimit checks that an expensive condition is stopped and refuses.
func TestCostLimit(t *testing.T) {
	p, err := Compile([]*metamcpv1.AccessRule{
		allow("hostile", func(r *metamcpv1.AccessRule) {
			r.Tools = []string{"*"}
			r.Condition = `arguments.xs.all(a, arguments.xs.all(b, arguments.xs.all(c, a + b + c != "x")))`
		}),
	})
	if err != nil {
		t.Fatal(err)
	}
	xs := make([]string, 200)
	for i := range xs {
		xs[i] = "ab"
	}
	args, _ := json.Marshal(map[string]any{"xs": xs})
	d := p.Decide(alice, tool("t", "s"), args)
	if d.Allowed || !strings.Contains(d.Reason(), "cost limit") {
		t.Fatalf("got allowed=%v (%s), want a refusal for the cost limit", d.Allowed, d.Reason())
	}
}

func TestParseAnnotations(t *testing.T) {
	a := ParseAnnotations(json.RawMessage(`{"name":"x","annotations":{"title":"X","readOnlyHint":true,"openWorldHint":false}}`))
	if a.Title != "X" || a.ReadOnlyHint == nil || !*a.ReadOnlyHint || a.OpenWorldHint == nil || *a.OpenWorldHint || a.DestructiveHint != nil {
		t.Fatalf("got %+v", a)
	}
	if a := ParseAnnotations(json.RawMessage(`{"name":"x"}`)); a != (Annotations{}) {
		t.Fatalf("got %+v", a)
	}
}

func TestDecideNoAllocations(t *testing.T) {
	p, err := Compile(plainRules())
	if err != nil {
		t.Fatal(err)
	}
	it := tool("gh__delete_repo", "gh")
	n := testing.AllocsPerRun(100, func() {
		if d := p.Decide(bob, it, nil); d.Allowed {
			t.Fatal("allowed")
		}
		if d := p.Decide(alice, tool("gh__get_issue", "gh"), NoArguments); !d.Allowed {
			t.Fatal("refused")
		}
	})
	if n != 0 {
		t.Fatalf("Decide allocates %v times per run; want 0", n)
	}
}
