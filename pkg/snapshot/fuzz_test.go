package snapshot

import (
	"errors"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
)

// FuzzValidate feeds arbitrary protobuf bytes to Validate and ValidateResource:
// whatever a data plane receives, validation must answer, never panic.
func FuzzValidate(f *testing.F) {
	seed, err := proto.Marshal(validConfig())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	f.Add([]byte{})
	broken := validConfig()
	ns(broken).Members[1].Prefix = proto.String("")
	ns(broken).Separator = "::"
	rl(broken).Period = nil
	if b, err := proto.Marshal(broken); err == nil {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var cfg metamcpv1.Config
		if err := proto.Unmarshal(data, &cfg); err != nil {
			return
		}
		_, err := Validate(&cfg)
		if err != nil {
			var verr *Error
			if !errors.As(err, &verr) {
				t.Fatalf("Validate returned %T, want *Error", err)
			}
		}
		for _, s := range cfg.GetServers() {
			ValidateResource(s)
		}
		for _, n := range cfg.GetNamespaces() {
			ValidateResource(n)
			for _, m := range n.GetMembers() {
				for tool := range m.GetToolOverrides() {
					ToolAllowed(m, tool)
				}
			}
		}
	})
}

// FuzzMatchGlob checks MatchGlob against the equivalent regular expression.
func FuzzMatchGlob(f *testing.F) {
	f.Add("get_*", "get_file")
	f.Add("*a?b*", "xxaybzz")
	f.Add("?é*", "aé")
	f.Fuzz(func(t *testing.T, pattern, name string) {
		if !utf8.ValidString(pattern) || !utf8.ValidString(name) || len(pattern) > 64 {
			return
		}
		var re strings.Builder
		re.WriteString(`(?s)\A`)
		for _, r := range pattern {
			switch r {
			case '*':
				re.WriteString(".*")
			case '?':
				re.WriteString(".")
			default:
				re.WriteString(regexp.QuoteMeta(string(r)))
			}
		}
		re.WriteString(`\z`)
		want := regexp.MustCompile(re.String()).MatchString(name)
		if got := MatchGlob(pattern, name); got != want {
			t.Fatalf("MatchGlob(%q, %q) = %v, regexp says %v", pattern, name, got, want)
		}
	})
}
