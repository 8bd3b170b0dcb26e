package configcache

import (
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"unicode"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/pkg/glob"
	"github.com/metamcp/metamcp/pkg/snapshot"
)

// AnyArgs is the last word of a stdio pattern that allows any further arguments.
const AnyArgs = "..."

// LoaderEnv lists (as case-insensitive globs) the environment variables that
// change what a process loads or runs: the dynamic linker's, the language
// runtimes' module paths and startup hooks, shell startup files, and the
// package indexes of the usual launchers (npx, uvx, pip). A stdio server that
// sets one is refused unless --stdio-allow-env allows it: with LD_PRELOAD or
// NODE_OPTIONS, an allowed command runs any code, and with npm_config_registry
// an allowed package comes from anywhere.
var LoaderEnv = []string{
	"LD_*", "DYLD_*", "GLIBC_TUNABLES", "GCONV_PATH", "LOCPATH",
	"PATH", "PATHEXT",
	"NODE_OPTIONS", "NODE_PATH", "NODE_REPL_EXTERNAL_MODULE", "NPM_CONFIG_*", "COREPACK_*", "BUN_*",
	"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE", "PYTHONWARNINGS", "PYTHONBREAKPOINT", "PYTHONPLATLIBDIR", "PYTHONEXECUTABLE",
	"PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "UV_INDEX*", "UV_EXTRA_INDEX_URL", "UV_DEFAULT_INDEX", "UV_FIND_LINKS", "UV_PYTHON*",
	"PERL5LIB", "PERLLIB", "PERL5OPT", "RUBYOPT", "RUBYLIB", "GEM_PATH", "GEM_HOME",
	"JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS", "JDK_JAVA_OPTIONS", "CLASSPATH",
	"BASH_ENV", "ENV", "BASH_FUNC_*", "SHELLOPTS", "BASHOPTS", "PS4",
}

// StdioPattern is one --stdio-allow pattern: a glob for the command, then one
// glob per argument, the last of which may be AnyArgs.
type StdioPattern struct {
	Source  string
	Command string
	Args    []string
	AnyRest bool
}

// StdioPolicy says which stdio servers a data plane runs: their command and
// arguments must match one of Allow, and their environment may set a
// variable of LoaderEnv only when AllowEnv allows it.
type StdioPolicy struct {
	Allow    []StdioPattern
	AllowEnv []string
}

// ParseStdioPolicy parses --stdio-allow patterns and --stdio-allow-env names.
//
// A pattern is words separated by spaces: the command, then its arguments,
// each a glob (`*` any run of characters, `?` one). A word may be quoted
// with '…' or "…" to hold spaces. The arguments must match one by one and
// be as many, unless the last word is `...`, which allows any further
// arguments: `npx -y @modelcontextprotocol/server-*` runs npx only with -y
// and one such package, `uvx ...` runs uvx with anything, and `node` runs
// node without arguments. A command without a slash matches only a command
// configured without one (looked up in PATH); give a path to match a path.
func ParseStdioPolicy(patterns, allowEnv []string) (*StdioPolicy, error) {
	p := &StdioPolicy{}
	for _, src := range patterns {
		if strings.TrimSpace(src) == "" {
			continue
		}
		words, err := splitWords(src)
		if err != nil {
			return nil, fmt.Errorf("--stdio-allow %q: %w", src, err)
		}
		pat := StdioPattern{Source: strings.TrimSpace(src), Command: words[0]}
		if pat.Command == AnyArgs {
			return nil, fmt.Errorf("--stdio-allow %q: the first word is the command, not %s", src, AnyArgs)
		}
		for i, w := range words[1:] {
			if w == AnyArgs {
				if i != len(words)-2 {
					return nil, fmt.Errorf("--stdio-allow %q: %s may only be the last word", src, AnyArgs)
				}
				pat.AnyRest = true
				break
			}
			pat.Args = append(pat.Args, w)
		}
		p.Allow = append(p.Allow, pat)
	}
	for _, name := range allowEnv {
		if name = strings.TrimSpace(name); name != "" {
			p.AllowEnv = append(p.AllowEnv, name)
		}
	}
	return p, nil
}

// splitWords splits a pattern into words at unquoted spaces.
func splitWords(s string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	var quote rune
	for _, r := range s {
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
			} else {
				cur.WriteRune(r)
			}
		case r == '\'' || r == '"':
			quote, inWord = r, true
		case unicode.IsSpace(r):
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if quote != 0 {
		return nil, errors.New("unterminated quote")
	}
	if inWord {
		words = append(words, cur.String())
	}
	if len(words) == 0 {
		return nil, errors.New("empty pattern")
	}
	return words, nil
}

// matchCommand reports whether the pattern's command glob matches cmd: a
// glob with a path separator matches the command as configured; one without
// matches only a command looked up in PATH.
func matchCommand(pattern, cmd string) bool {
	if strings.ContainsAny(pattern, `/\`) {
		return glob.Match(pattern, cmd) || glob.Match(filepath.ToSlash(pattern), filepath.ToSlash(cmd))
	}
	return !strings.ContainsAny(cmd, `/\`) && glob.Match(pattern, cmd)
}

func (pat StdioPattern) matchArgs(args []string) bool {
	if len(args) < len(pat.Args) || (!pat.AnyRest && len(args) != len(pat.Args)) {
		return false
	}
	for i, g := range pat.Args {
		if !glob.Match(g, args[i]) {
			return false
		}
	}
	return true
}

// Refusal says why the policy does not run a stdio server, or "" when it
// does. It never quotes the server's arguments or environment values,
// which may hold secrets: the reason reaches the control plane and /readyz.
func (p *StdioPolicy) Refusal(st *metamcpv1.StdioTransport) string {
	cmd := st.GetCommand()
	cmdOK := false
	for _, pat := range p.Allow {
		if !matchCommand(pat.Command, cmd) {
			continue
		}
		cmdOK = true
		if pat.matchArgs(st.GetArgs()) {
			return p.envRefusal(st)
		}
	}
	if !cmdOK {
		if len(p.Allow) == 0 {
			return fmt.Sprintf("stdio command %q is not allowed on this data plane: --stdio-allow allows no command", cmd)
		}
		return fmt.Sprintf("stdio command %q is not allowed on this data plane (--stdio-allow %s)", cmd, p.commands())
	}
	return fmt.Sprintf("the %d arguments of stdio command %q match no --stdio-allow pattern for it (%s)", len(st.GetArgs()), cmd, p.patternsFor(cmd))
}

func (p *StdioPolicy) envRefusal(st *metamcpv1.StdioTransport) string {
	var bad []string
	for name := range st.GetEnv() {
		if loaderEnv(name) && !p.envAllowed(name) {
			bad = append(bad, name)
		}
	}
	if len(bad) == 0 {
		return ""
	}
	sort.Strings(bad)
	return fmt.Sprintf("stdio environment variable %s changes what the process loads: refused unless --stdio-allow-env allows it", strings.Join(bad, ", "))
}

func loaderEnv(name string) bool {
	upper := strings.ToUpper(name)
	for _, g := range LoaderEnv {
		if glob.Match(g, upper) {
			return true
		}
	}
	return false
}

func (p *StdioPolicy) envAllowed(name string) bool {
	upper := strings.ToUpper(name)
	for _, g := range p.AllowEnv {
		if glob.Match(strings.ToUpper(g), upper) {
			return true
		}
	}
	return false
}

func (p *StdioPolicy) commands() string {
	var cmds []string
	for _, pat := range p.Allow {
		if !contains(cmds, pat.Command) {
			cmds = append(cmds, pat.Command)
		}
	}
	return strings.Join(cmds, ",")
}

func (p *StdioPolicy) patternsFor(cmd string) string {
	var pats []string
	for _, pat := range p.Allow {
		if matchCommand(pat.Command, cmd) {
			pats = append(pats, pat.Source)
		}
	}
	return strings.Join(pats, "; ")
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Check returns the Check that leaves out the stdio servers p does not run.
func (p *StdioPolicy) Check() Check {
	return func(s *snapshot.Compiled) (map[string]string, error) {
		var refused map[string]string
		for _, srv := range s.Config.GetServers() {
			st := srv.GetStdio()
			if st == nil {
				continue
			}
			if why := p.Refusal(st); why != "" {
				if refused == nil {
					refused = map[string]string{}
				}
				refused[srv.GetName()] = why
			}
		}
		return refused, nil
	}
}

// StdioAllowList returns the Check of the policy of these --stdio-allow
// patterns (none: no stdio server runs) and --stdio-allow-env names. A
// pattern that does not parse refuses every snapshot with the error
// (ParseStdioPolicy reports it first where flags are read).
func StdioAllowList(patterns []string, allowEnv ...string) Check {
	p, err := ParseStdioPolicy(patterns, allowEnv)
	if err != nil {
		return func(*snapshot.Compiled) (map[string]string, error) { return nil, err }
	}
	return p.Check()
}
