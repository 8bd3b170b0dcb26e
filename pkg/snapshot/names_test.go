package snapshot

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
)

func TestValidateName(t *testing.T) {
	tests := []struct {
		name    string
		wantErr string // "" means valid
	}{
		{"a", ""},
		{"github", ""},
		{"my-server-2", ""},
		{"0", ""},
		{strings.Repeat("a", 63), ""},
		{"", "name is required"},
		{strings.Repeat("a", 64), "at most 63 characters"},
		{"-a", "lowercase DNS label"},
		{"a-", "lowercase DNS label"},
		{"GitHub", `try "github"`},
		{"my_server", `try "my-server"`},
		{"a.b", `try "a-b"`},
		{"é", "lowercase DNS label"},
		{"!!!", "lowercase DNS label"},
	}
	for _, tt := range tests {
		err := ValidateName(tt.name)
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("ValidateName(%q) = %v, want nil", tt.name, err)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("ValidateName(%q) = %v, want error containing %q", tt.name, err, tt.wantErr)
		}
	}
}

func TestNormalizeName(t *testing.T) {
	tests := []struct{ in, want string }{
		{"github", "github"},
		{"GitHub", "github"},
		{"My Server", "my-server"},
		{"  brave__search  ", "brave-search"},
		{"@scope/pkg.name", "scope-pkg-name"},
		{"---", ""},
		{"café", "caf"},
		{strings.Repeat("ab", 40), strings.Repeat("ab", 31) + "a"},
		{strings.Repeat("a", 62) + "-b", strings.Repeat("a", 62)},
	}
	for _, tt := range tests {
		got := NormalizeName(tt.in)
		if got != tt.want {
			t.Errorf("NormalizeName(%q) = %q, want %q", tt.in, got, tt.want)
		}
		if got != "" && ValidateName(got) != nil {
			t.Errorf("NormalizeName(%q) = %q is not a valid name", tt.in, got)
		}
	}
}

func TestExposedName(t *testing.T) {
	tests := []struct{ prefix, sep, tool, want string }{
		{"gh", "__", "search", "gh__search"},
		{"gh", ".", "search", "gh.search"},
		{"", "__", "search", "search"},
	}
	for _, tt := range tests {
		if got := ExposedName(tt.prefix, tt.sep, tt.tool); got != tt.want {
			t.Errorf("ExposedName(%q, %q, %q) = %q, want %q", tt.prefix, tt.sep, tt.tool, got, tt.want)
		}
	}
}

func TestEffectivePrefixAndSeparator(t *testing.T) {
	if got := EffectivePrefix(&metamcpv1.NamespaceMember{Server: "github"}); got != "github" {
		t.Errorf("unset prefix: got %q, want the server name", got)
	}
	if got := EffectivePrefix(&metamcpv1.NamespaceMember{Server: "github", Prefix: proto.String("")}); got != "" {
		t.Errorf("empty prefix: got %q, want empty", got)
	}
	if got := EffectivePrefix(&metamcpv1.NamespaceMember{Server: "github", Prefix: proto.String("gh")}); got != "gh" {
		t.Errorf("prefix: got %q, want gh", got)
	}
	if got := EffectivePrefix(nil); got != "" {
		t.Errorf("nil member: got %q", got)
	}
	if got := Separator(&metamcpv1.Namespace{}); got != "__" {
		t.Errorf("default separator = %q", got)
	}
	if got := Separator(&metamcpv1.Namespace{Separator: "."}); got != "." {
		t.Errorf("separator = %q", got)
	}
}

func TestMatchGlob(t *testing.T) {
	tests := []struct {
		pattern, name string
		want          bool
	}{
		{"*", "", true},
		{"*", "anything/at all", true},
		{"", "", true},
		{"", "a", false},
		{"a", "a", true},
		{"a", "b", false},
		{"get_*", "get_file", true},
		{"get_*", "get_", true},
		{"get_*", "list_files", false},
		{"*_file", "get_file", true},
		{"*_file", "get_files", false},
		{"?", "a", true},
		{"?", "", false},
		{"?", "ab", false},
		{"?", "é", true},
		{"a?c", "abc", true},
		{"a?c", "ac", false},
		{"*a*b*c*", "xxaxxbxxcxx", true},
		{"*a*b*c*", "xxcxxbxxaxx", false},
		{"gh__*", "gh__search", true},
		{"gh__*", "gh_search", false},
		{"a*/b", "a/x/b", true}, // no path semantics
		{"**", "x", true},
		{"*?", "", false},
		{"*?", "x", true},
		{"a*a*a*a*a*a*a*a*b", strings.Repeat("a", 40), false},
		{"Search", "search", false}, // case-sensitive
	}
	for _, tt := range tests {
		if got := MatchGlob(tt.pattern, tt.name); got != tt.want {
			t.Errorf("MatchGlob(%q, %q) = %v, want %v", tt.pattern, tt.name, got, tt.want)
		}
	}
}

func TestToolAllowed(t *testing.T) {
	m := &metamcpv1.NamespaceMember{
		Server:     "gh",
		AllowTools: []string{"get_*", "list_*", "search"},
		DenyTools:  []string{"get_secret*"},
		ToolOverrides: map[string]*metamcpv1.ToolOverride{
			"list_private": {Disabled: true},
			"search":       {Name: "find"},
		},
	}
	tests := []struct {
		tool string
		want bool
	}{
		{"get_file", true},
		{"list_repos", true},
		{"search", true},
		{"delete_repo", false},    // not allowed
		{"get_secret_key", false}, // denied after allow
		{"list_private", false},   // disabled by override
		{"searching", false},      // exact allow entry
	}
	for _, tt := range tests {
		if got := ToolAllowed(m, tt.tool); got != tt.want {
			t.Errorf("ToolAllowed(%q) = %v, want %v", tt.tool, got, tt.want)
		}
	}
	if !ToolAllowed(&metamcpv1.NamespaceMember{}, "anything") {
		t.Error("empty allow list must allow every tool")
	}
	if ToolAllowed(&metamcpv1.NamespaceMember{DenyTools: []string{"*"}}, "anything") {
		t.Error("deny * must hide every tool")
	}
}
