// Package authz decides which of an endpoint's tools, prompts and resources a
// caller may use, from the endpoint's access rules (AccessRule in
// resources.proto). Both planes use it: the data plane on every list and call,
// the control plane to answer `mmctl auth can-i`, and config validation to
// check conditions.
//
// Rules are compiled once per snapshot (Compile); Decide then runs without
// I/O, and without allocating for rules that have no condition.
package authz

import (
	"encoding/json"
	"fmt"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/pkg/glob"
	"github.com/metamcp/metamcp/pkg/identity"
)

// ItemKind says what an Item is.
type ItemKind uint8

// The kinds of item a rule may grant.
const (
	Tool ItemKind = iota
	Prompt
	Resource
)

// String is the kind as conditions (`tool.kind`) and messages spell it.
func (k ItemKind) String() string {
	switch k {
	case Prompt:
		return "prompt"
	case Resource:
		return "resource"
	default:
		return "tool"
	}
}

// Item is what a caller wants to list or use.
type Item struct {
	Kind ItemKind
	// Name is the exposed (prefixed) name of a tool or prompt, or the URI of
	// a resource.
	Name string
	// Server is the name of the server the item comes from.
	Server string
	// Annotations are a tool's, as the client sees them (after overrides).
	Annotations Annotations
	// AnnotationsUnknown says that the tool's annotations are not known (a
	// tool `mmctl auth can-i` asks about that no data plane has listed):
	// conditions that read them are then undecided, like those that read the
	// arguments at list time. The data plane never sets it: a tool without
	// annotations has MCP's defaults.
	AnnotationsUnknown bool
}

// Annotations are an MCP tool's annotations. A nil hint is absent and takes
// MCP's default: readOnlyHint false, destructiveHint true, idempotentHint
// false, openWorldHint true.
type Annotations struct {
	Title           string
	ReadOnlyHint    *bool
	DestructiveHint *bool
	IdempotentHint  *bool
	OpenWorldHint   *bool
}

// ParseAnnotations reads the annotations of a tool as listed (the JSON of one
// element of a tools/list result). A tool without annotations, or with
// annotations that do not parse, gets the zero Annotations.
func ParseAnnotations(tool json.RawMessage) Annotations {
	var t struct {
		Annotations struct {
			Title           string `json:"title"`
			ReadOnlyHint    *bool  `json:"readOnlyHint"`
			DestructiveHint *bool  `json:"destructiveHint"`
			IdempotentHint  *bool  `json:"idempotentHint"`
			OpenWorldHint   *bool  `json:"openWorldHint"`
		} `json:"annotations"`
	}
	if json.Unmarshal(tool, &t) != nil {
		return Annotations{}
	}
	a := t.Annotations
	return Annotations{Title: a.Title, ReadOnlyHint: a.ReadOnlyHint, DestructiveHint: a.DestructiveHint, IdempotentHint: a.IdempotentHint, OpenWorldHint: a.OpenWorldHint}
}

// hints returns the four hints with MCP's defaults for absent ones.
func (a *Annotations) hints() (readOnly, destructive, idempotent, openWorld bool) {
	get := func(p *bool, def bool) bool {
		if p == nil {
			return def
		}
		return *p
	}
	return get(a.ReadOnlyHint, false), get(a.DestructiveHint, true), get(a.IdempotentHint, false), get(a.OpenWorldHint, true)
}

// NoArguments is the arguments of a tools/call that has none. Pass it rather
// than nil: nil arguments mean "deciding for a list".
var NoArguments = json.RawMessage("{}")

// Decision is the outcome of Decide.
type Decision struct {
	// Allowed says whether the caller may list or use the item.
	Allowed bool
	// Rule names the rule that decided: the allow rule that grants, or the
	// deny rule that refuses. Empty when the endpoint has no rules (allowed)
	// or when no rule allows the item (refused).
	Rule string
	// Conditional says that the decision depends on what was not known:
	// the arguments at list time, or the annotations when AnnotationsUnknown.
	// An allowed item is then listed, and the call is decided on its
	// arguments: an allow rule whose condition needs them may still refuse,
	// or a deny rule may refuse.
	Conditional bool

	cause cause
	// detail is the condition's error when cause says one failed.
	detail string
}

type cause uint8

const (
	causeNoRules cause = iota
	causeAllowed
	causeDenied
	causeDeniedOnError
	causeNoAllow
)

// Reason says in a sentence why the decision was made, for error messages,
// logs and `mmctl auth can-i`.
func (d Decision) Reason() string {
	var s string
	switch d.cause {
	case causeNoRules:
		return "the endpoint has no access rules: every authenticated caller may use everything"
	case causeAllowed:
		s = fmt.Sprintf("allowed by rule %q", d.Rule)
		if d.Conditional {
			s += ", subject to conditions that depend on what is not known yet"
		}
	case causeDenied:
		s = fmt.Sprintf("denied by rule %q", d.Rule)
	case causeDeniedOnError:
		s = fmt.Sprintf("denied by rule %q, whose condition failed to evaluate (%s)", d.Rule, d.detail)
	case causeNoAllow:
		s = "no access rule allows it"
		if d.detail != "" {
			s += " (" + d.detail + ")"
		}
	}
	return s
}

// Policy is an endpoint's compiled access rules. A nil *Policy (an endpoint
// without rules) allows everything. It is immutable and safe for concurrent
// use.
type Policy struct {
	deny, allow []*rule
}

type rule struct {
	name string
	// anyone: the rule names no principal, group or key.
	anyone     bool
	principals []string
	groups     []string
	apiKeys    []string
	tools      []string
	servers    []string
	prompts    []string
	resources  []string
	cond       *condition
}

// Compile compiles an endpoint's access rules, in their order. It returns a
// nil Policy for no rules. Rules are expected to be valid (pkg/snapshot
// checks them); Compile only fails on a condition that does not compile.
func Compile(rules []*metamcpv1.AccessRule) (*Policy, error) {
	if len(rules) == 0 {
		return nil, nil
	}
	p := &Policy{}
	for _, r := range rules {
		c := &rule{
			name:       r.GetName(),
			principals: r.GetPrincipals(),
			groups:     r.GetGroups(),
			apiKeys:    r.GetApiKeys(),
			tools:      r.GetTools(),
			servers:    r.GetServers(),
			prompts:    r.GetPrompts(),
			resources:  r.GetResources(),
		}
		c.anyone = len(c.principals) == 0 && len(c.groups) == 0 && len(c.apiKeys) == 0
		if src := r.GetCondition(); src != "" {
			cond, err := compileCondition(src)
			if err != nil {
				return nil, fmt.Errorf("access rule %q: condition: %w", r.GetName(), err)
			}
			c.cond = cond
		}
		if r.GetEffect() == metamcpv1.AccessEffect_ACCESS_EFFECT_DENY {
			p.deny = append(p.deny, c)
		} else {
			p.allow = append(p.allow, c)
		}
	}
	return p, nil
}

// matchesCaller reports whether the rule applies to the principal.
func (r *rule) matchesCaller(p *identity.Principal) bool {
	if r.anyone {
		return true
	}
	for _, g := range r.principals {
		if glob.Match(g, p.Name) {
			return true
		}
	}
	if p.Kind == identity.KindAPIKey {
		for _, k := range r.apiKeys {
			if k == p.KeyID {
				return true
			}
		}
	}
	for _, g := range r.groups {
		if p.InGroup(g) {
			return true
		}
	}
	return false
}

// matchesItem reports whether the rule covers the item.
func (r *rule) matchesItem(it *Item) bool {
	for _, s := range r.servers {
		if s == it.Server {
			return true
		}
	}
	var pats []string
	switch it.Kind {
	case Tool:
		pats = r.tools
	case Prompt:
		pats = r.prompts
	case Resource:
		pats = r.resources
	}
	for _, g := range pats {
		if glob.Match(g, it.Name) {
			return true
		}
	}
	return false
}

// Decide says whether principal p may use item: an allow rule matches it
// (caller, item and condition) and no deny rule does. A nil p is the
// anonymous caller.
//
// args are the arguments of a tools/call (NoArguments when it has none; the
// raw `arguments` otherwise). Nil args mean deciding for a list: conditions
// that read the arguments are then undecided, an allow rule with an undecided
// condition lists the item and a deny rule with one does not hide it
// (Decision.Conditional is set); the call is decided on its arguments.
//
// A condition that fails to evaluate never grants: an allow rule whose
// condition fails does not apply, a deny rule whose condition fails does.
func (p *Policy) Decide(who *identity.Principal, item Item, args json.RawMessage) Decision {
	if p == nil {
		return Decision{Allowed: true, cause: causeNoRules}
	}
	if who == nil {
		who = identity.Anonymous
	}
	var in input // built on the first condition evaluated
	in.who, in.item, in.args = who, item, args
	conditional := false
	for _, r := range p.deny {
		if !r.matchesCaller(who) || !r.matchesItem(&in.item) {
			continue
		}
		if r.cond == nil {
			return Decision{Rule: r.name, cause: causeDenied}
		}
		switch res, err := r.cond.eval(&in); res {
		case resultTrue:
			return Decision{Rule: r.name, cause: causeDenied}
		case resultError:
			return Decision{Rule: r.name, cause: causeDeniedOnError, detail: err.Error()}
		case resultUnknown:
			conditional = true
		}
	}
	var undecided *rule
	var failed string
	for _, r := range p.allow {
		if !r.matchesCaller(who) || !r.matchesItem(&in.item) {
			continue
		}
		if r.cond == nil {
			return Decision{Allowed: true, Rule: r.name, Conditional: conditional, cause: causeAllowed}
		}
		switch res, err := r.cond.eval(&in); res {
		case resultTrue:
			return Decision{Allowed: true, Rule: r.name, Conditional: conditional, cause: causeAllowed}
		case resultUnknown:
			if undecided == nil {
				undecided = r
			}
		case resultError:
			if failed == "" {
				failed = fmt.Sprintf("the condition of rule %q failed to evaluate: %v", r.name, err)
			}
		}
	}
	if undecided != nil {
		return Decision{Allowed: true, Rule: undecided.name, Conditional: true, cause: causeAllowed}
	}
	return Decision{cause: causeNoAllow, detail: failed}
}
