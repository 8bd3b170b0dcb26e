package authz

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/ext"
	"cel.dev/cel-go/interpreter"

	"github.com/metamcp/metamcp/pkg/identity"
)

// MaxConditionLength is the longest condition, in characters.
const MaxConditionLength = 2048

// CostLimit bounds the work of one evaluation of a condition, in CEL's cost
// units (about one per operation, more per byte of string work): a condition
// that goes past it fails, which refuses (see Decide). Ordinary conditions
// cost under 100, a check of each element of a 1000-element argument a few
// thousand; the limit stops a runaway expression within a few milliseconds.
const CostLimit = 10_000

// celPrincipal is the `principal` variable of conditions.
type celPrincipal struct {
	Name    string         `cel:"name"`
	Kind    string         `cel:"kind"`
	Groups  []string       `cel:"groups"`
	Claims  map[string]any `cel:"claims"`
	KeyID   string         `cel:"keyId"`
	Issuer  string         `cel:"issuer"`
	Subject string         `cel:"subject"`
}

// celTool is the `tool` variable of conditions: the item decided on, tool,
// prompt or resource.
type celTool struct {
	Name        string          `cel:"name"`
	Kind        string          `cel:"kind"`
	Server      string          `cel:"server"`
	Title       string          `cel:"title"`
	Annotations map[string]bool `cel:"annotations"`
}

var (
	envOnce sync.Once
	env     *cel.Env
	envErr  error
)

// celEnv is the environment every condition compiles in, built once.
func celEnv() (*cel.Env, error) {
	envOnce.Do(func() {
		env, envErr = cel.NewEnv(
			ext.NativeTypes(
				types.NativeTypeFor[celPrincipal](types.NativeTypeAlias("metamcp.Principal")),
				types.NativeTypeFor[celTool](types.NativeTypeAlias("metamcp.Tool")),
				ext.ParseStructTags(true),
			),
			cel.Variable("principal", cel.ObjectType("metamcp.Principal")),
			cel.Variable("tool", cel.ObjectType("metamcp.Tool")),
			cel.Variable("arguments", cel.MapType(cel.StringType, cel.DynType)),
			cel.OptionalTypes(),
			ext.Strings(),
			cel.CrossTypeNumericComparisons(true),
			cel.ParserExpressionSizeLimit(MaxConditionLength),
			cel.ParserRecursionLimit(64),
		)
	})
	return env, envErr
}

// condition is one rule's compiled condition.
type condition struct {
	// prg evaluates with everything known; partial marks attributes unknown.
	prg, partial cel.Program
	// usesArguments and usesTool say which variables the expression reads.
	usesArguments, usesTool bool
}

// CheckCondition reports whether src is a valid condition: it compiles in
// the conditions' environment and yields a bool.
func CheckCondition(src string) error {
	_, err := compileCondition(src)
	return err
}

func compileCondition(src string) (*condition, error) {
	if n := len([]rune(src)); n > MaxConditionLength {
		return nil, fmt.Errorf("is %d characters: at most %d", n, MaxConditionLength)
	}
	e, err := celEnv()
	if err != nil {
		return nil, fmt.Errorf("condition environment: %w", err)
	}
	ast, iss := e.Compile(src)
	if iss.Err() != nil {
		return nil, errors.New(iss.Err().Error())
	}
	if !ast.OutputType().IsExactType(cel.BoolType) {
		return nil, fmt.Errorf("yields %s: a condition must yield a bool (true or false)", ast.OutputType())
	}
	c := &condition{}
	for _, ref := range ast.NativeRep().ReferenceMap() {
		switch ref.Name {
		case "arguments":
			c.usesArguments = true
		case "tool":
			c.usesTool = true
		}
	}
	// OptOptimize compiles constant regular expressions once, here.
	if c.prg, err = e.Program(ast, cel.CostLimit(CostLimit), cel.EvalOptions(cel.OptOptimize)); err != nil {
		return nil, err
	}
	if c.usesArguments || c.usesTool {
		if c.partial, err = e.Program(ast, cel.CostLimit(CostLimit), cel.EvalOptions(cel.OptOptimize, cel.OptPartialEval)); err != nil {
			return nil, err
		}
	}
	return c, nil
}

type result uint8

const (
	resultFalse result = iota
	resultTrue
	resultUnknown
	resultError
)

// input is what Decide evaluates conditions on; its activation is built on
// first use, so that rules without conditions allocate nothing.
type input struct {
	who  *identity.Principal
	item Item
	args json.RawMessage
	act  *activation
}

func (c *condition) eval(in *input) (result, error) {
	if in.act == nil {
		in.act = newActivation(in)
	}
	prg := c.prg
	var act interpreter.Activation = in.act
	unknownArgs := in.args == nil && c.usesArguments
	unknownAnn := in.item.AnnotationsUnknown && c.usesTool
	if unknownArgs || unknownAnn {
		// Lists and can-i only: the allocation does not matter.
		prg = c.partial
		switch {
		case unknownArgs && unknownAnn:
			act, _ = cel.PartialVars(in.act, unknownBoth...)
		case unknownArgs:
			act, _ = cel.PartialVars(in.act, unknownArguments...)
		default:
			act, _ = cel.PartialVars(in.act, unknownAnnotations...)
		}
	}
	out, _, err := prg.Eval(act)
	switch {
	case err != nil:
		return resultError, err
	case types.IsUnknown(out):
		return resultUnknown, nil
	}
	switch out {
	case types.True:
		return resultTrue, nil
	case types.False:
		return resultFalse, nil
	}
	return resultError, fmt.Errorf("yields %v, not a bool", out.Type())
}

var (
	unknownArguments   = []*interpreter.AttributePattern{cel.AttributePattern("arguments")}
	unknownAnnotations = []*interpreter.AttributePattern{cel.AttributePattern("tool").QualString("annotations")}
	unknownBoth        = append(append([]*interpreter.AttributePattern{}, unknownArguments...), unknownAnnotations...)
)

// activation resolves the variables of a condition.
type activation struct {
	principal celPrincipal
	tool      celTool
	args      json.RawMessage
	// arguments is parsed from args on first use.
	parsed    bool
	arguments map[string]any
	argsErr   error
}

var emptyClaims = map[string]any{}

func newActivation(in *input) *activation {
	p, it := in.who, &in.item
	a := &activation{
		principal: celPrincipal{
			Name: p.Name, Kind: p.Kind.String(), Groups: p.Groups, Claims: p.Claims,
			KeyID: p.KeyID, Issuer: p.Issuer, Subject: p.Subject,
		},
		tool: celTool{
			Name: it.Name, Kind: it.Kind.String(), Server: it.Server, Title: it.Annotations.Title,
			Annotations: annotationMap(&it.Annotations),
		},
		args: in.args,
	}
	if a.principal.Claims == nil {
		a.principal.Claims = emptyClaims
	}
	if a.principal.Groups == nil {
		a.principal.Groups = []string{}
	}
	return a
}

// annotationMaps holds the 16 possible annotation maps, shared read-only, so
// that evaluating a condition does not build one.
var annotationMaps = func() [16]map[string]bool {
	var ms [16]map[string]bool
	for i := range ms {
		ms[i] = map[string]bool{
			"readOnlyHint":    i&1 != 0,
			"destructiveHint": i&2 != 0,
			"idempotentHint":  i&4 != 0,
			"openWorldHint":   i&8 != 0,
		}
	}
	return ms
}()

func annotationMap(a *Annotations) map[string]bool {
	ro, de, id, ow := a.hints()
	i := 0
	for bit, v := range [4]bool{ro, de, id, ow} {
		if v {
			i |= 1 << bit
		}
	}
	return annotationMaps[i]
}

// ResolveName implements interpreter.Activation.
func (a *activation) ResolveName(name string) (any, bool) {
	switch name {
	case "principal":
		return &a.principal, true
	case "tool":
		return &a.tool, true
	case "arguments":
		if !a.parsed {
			a.parsed = true
			a.arguments, a.argsErr = parseArguments(a.args)
		}
		if a.argsErr != nil {
			return types.NewErr("%v", a.argsErr), true
		}
		return a.arguments, true
	}
	return nil, false
}

// Parent implements interpreter.Activation.
func (a *activation) Parent() interpreter.Activation { return nil }

// parseArguments decodes a tools/call's arguments: an object, or nothing.
func parseArguments(raw json.RawMessage) (map[string]any, error) {
	var m map[string]any
	if len(raw) == 0 {
		return map[string]any{}, nil
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("the call's arguments are not a JSON object: %w", err)
	}
	if m == nil { // null
		m = map[string]any{}
	}
	return m, nil
}
