package snapshot

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/pkg/glob"
)

// MaxNameLength is the longest resource name: a DNS label.
const MaxNameLength = 63

// DefaultSeparator goes between a member's prefix and an upstream name when the
// namespace sets none.
const DefaultSeparator = "__"

// MaxToolNameLength is the longest tool name MCP allows.
const MaxToolNameLength = 128

// PortableToolNameLength is the longest tool name the big model APIs (OpenAI,
// Anthropic, Bedrock) accept; longer names work over MCP but fail there.
const PortableToolNameLength = 64

// nameRule says what a resource name must look like, for error messages.
const nameRule = "must be a lowercase DNS label (a-z, 0-9, '-', not starting or ending with '-'), at most 63 characters"

// ValidateName checks a resource name: a lowercase DNS label
// ([a-z0-9]([a-z0-9-]*[a-z0-9])?, 1 to 63 characters).
func ValidateName(name string) error {
	if p := nameProblem(name); p != "" {
		if name == "" {
			return errors.New("name " + p)
		}
		return fmt.Errorf("invalid name %q: %s", name, p)
	}
	return nil
}

// nameProblem describes what is wrong with a resource name, or returns "".
func nameProblem(name string) string {
	if name == "" {
		return "is required and " + nameRule
	}
	if !isDNSLabel(name) {
		if fixed := NormalizeName(name); fixed != "" && fixed != name {
			return fmt.Sprintf("%s; try %q", nameRule, fixed)
		}
		return nameRule
	}
	return ""
}

func isDNSLabel(s string) bool {
	if len(s) == 0 || len(s) > MaxNameLength {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c == '-' && i > 0 && i < len(s)-1:
		default:
			return false
		}
	}
	return true
}

// NormalizeName turns any string into a valid resource name where it can:
// lowercase, each run of other characters becomes one '-', leading and
// trailing '-' trimmed, at most 63 characters. It returns "" when nothing
// usable is left (for example a name of only punctuation).
func NormalizeName(s string) string {
	var b strings.Builder
	dash := false
	for _, r := range strings.ToLower(s) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			if dash && b.Len() > 0 {
				b.WriteByte('-')
			}
			dash = false
			b.WriteRune(r)
			continue
		}
		dash = true
	}
	out := b.String()
	if len(out) > MaxNameLength {
		out = strings.TrimRight(out[:MaxNameLength], "-")
	}
	return out
}

// ExposedName is the name a client sees for an upstream tool or prompt:
// prefix + separator + name, or the name alone when the prefix is empty.
func ExposedName(prefix, separator, tool string) string {
	if prefix == "" {
		return tool
	}
	return prefix + separator + tool
}

// EffectivePrefix is the prefix a member's names get: the server's name when
// the prefix is unset, the prefix (possibly empty) otherwise.
func EffectivePrefix(m *metamcpv1.NamespaceMember) string {
	if m == nil {
		return ""
	}
	if m.Prefix == nil {
		return m.GetServer()
	}
	return m.GetPrefix()
}

// Separator is the text between prefix and name in a namespace: its
// separator, or DefaultSeparator when unset.
func Separator(ns *metamcpv1.Namespace) string {
	if s := ns.GetSeparator(); s != "" {
		return s
	}
	return DefaultSeparator
}

// MatchGlob reports whether name matches pattern, where `*` matches any run of
// characters (including none) and `?` exactly one character (see glob.Match).
func MatchGlob(pattern, name string) bool {
	return glob.Match(pattern, name)
}

// ToolAllowed reports whether a member exposes the upstream tool: it matches
// allow_tools (or allow_tools is empty), matches none of deny_tools, and is
// not disabled by an override.
func ToolAllowed(m *metamcpv1.NamespaceMember, tool string) bool {
	if o, ok := m.GetToolOverrides()[tool]; ok && o.GetDisabled() {
		return false
	}
	if allow := m.GetAllowTools(); len(allow) > 0 {
		matched := false
		for _, p := range allow {
			if MatchGlob(p, tool) {
				matched = true
				break
			}
		}
		if !matched {
			return false
		}
	}
	for _, p := range m.GetDenyTools() {
		if MatchGlob(p, tool) {
			return false
		}
	}
	return true
}

// isToolNameChar reports whether c may appear in an MCP tool name.
func isToolNameChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '_' || c == '.' || c == '-'
}

// isToolName reports whether s is made of tool-name characters and has a
// length in [minLen, maxLen].
func isToolName(s string, minLen, maxLen int) bool {
	if len(s) < minLen || len(s) > maxLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isToolNameChar(s[i]) {
			return false
		}
	}
	return true
}

// globProblem describes what is wrong with a tool glob, or returns "".
func globProblem(p string) string {
	if p == "" {
		return "must not be empty: use \"*\" to match every tool"
	}
	if len(p) > 2*MaxToolNameLength {
		return fmt.Sprintf("is %d characters: at most %d", len(p), 2*MaxToolNameLength)
	}
	for _, r := range p {
		if r >= utf8.RuneSelf || !isToolNameChar(byte(r)) && r != '*' && r != '?' {
			return fmt.Sprintf("%q has character %q: a tool glob may contain only A-Z, a-z, 0-9, '_', '.', '-', '*' and '?'", p, r)
		}
	}
	return ""
}
