package canonical

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
)

func TestEnumSpelling(t *testing.T) {
	ed := metamcpv1.SessionMode(0).Descriptor()
	if got := EnumNumberName(ed, 2); got != "per_client" {
		t.Errorf("EnumNumberName(2) = %q", got)
	}
	if got := EnumEffective(ed, 0); got != "shared" {
		t.Errorf("EnumEffective(0) = %q", got)
	}
	if got := EnumChoices(metamcpv1.RateLimitFailureMode(0).Descriptor()); got != "open, closed or local" {
		t.Errorf("EnumChoices = %q", got)
	}
	for in, want := range map[string]protoreflect.EnumNumber{
		"per_client": 2, "PER_CLIENT": 2, "per-client": 2, "SESSION_MODE_PER_CLIENT": 2, "session_mode_per_client": 2,
		" shared ": 1, "SESSION_MODE_UNSPECIFIED": 0,
	} {
		ev, err := ParseEnum(ed, in)
		if err != nil || ev.Number() != want {
			t.Errorf("ParseEnum(%q) = %v, %v; want %d", in, ev, err, want)
		}
	}
	for _, in := range []string{"unspecified", "", "perclient", "1"} {
		if _, err := ParseEnum(ed, in); err == nil || !strings.Contains(err.Error(), "use shared or per_client") {
			t.Errorf("ParseEnum(%q) error = %v", in, err)
		}
	}
}

func TestStrip(t *testing.T) {
	srv := &metamcpv1.Server{Name: "s", SessionMode: metamcpv1.SessionMode_SESSION_MODE_SHARED}
	Strip(srv)
	if !proto.Equal(srv, &metamcpv1.Server{Name: "s"}) {
		t.Errorf("Strip(server) = %v", srv)
	}
	perClient := &metamcpv1.Server{Name: "s", SessionMode: metamcpv1.SessionMode_SESSION_MODE_PER_CLIENT}
	Strip(perClient)
	if perClient.GetSessionMode() != metamcpv1.SessionMode_SESSION_MODE_PER_CLIENT {
		t.Errorf("Strip cleared a value that is not the default")
	}
	ns := &metamcpv1.Namespace{Name: "n", Separator: "__"}
	Strip(ns)
	if ns.GetSeparator() != "" {
		t.Errorf("Strip(namespace) kept the default separator")
	}
	p := &metamcpv1.RateLimitPolicy{Name: "p", Rate: 5, Period: durationpb.New(60e9),
		Key: metamcpv1.RateLimitKey_RATE_LIMIT_KEY_PRINCIPAL, OnRedisFailure: metamcpv1.RateLimitFailureMode_RATE_LIMIT_FAILURE_MODE_CLOSED}
	Strip(&metamcpv1.Resource{Kind: &metamcpv1.Resource_RateLimit{RateLimit: p}})
	if p.Period != nil || p.Key != 0 || p.OnRedisFailure != metamcpv1.RateLimitFailureMode_RATE_LIMIT_FAILURE_MODE_CLOSED {
		t.Errorf("Strip(policy) = %v", p)
	}
	ep := &metamcpv1.Endpoint{Name: "e", AccessRules: []*metamcpv1.AccessRule{{Name: "r", Effect: metamcpv1.AccessEffect_ACCESS_EFFECT_ALLOW}}}
	Strip(ep)
	if ep.AccessRules[0].Effect != 0 {
		t.Errorf("Strip did not reach a list element: %v", ep)
	}
}

// TestEnumConvention holds the API to the rule Strip relies on: in a config
// resource, an enum's zero value means its value numbered 1, and says so
// ("Same as X") in its .proto file.
func TestEnumConvention(t *testing.T) {
	files, err := filepath.Glob("../../api/metamcp/v1/*.proto")
	if err != nil || len(files) == 0 {
		t.Fatalf("no .proto files: %v", err)
	}
	var src []byte
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		src = append(src, b...)
	}
	seen := map[protoreflect.FullName]bool{}
	var walk func(md protoreflect.MessageDescriptor)
	walk = func(md protoreflect.MessageDescriptor) {
		if seen[md.FullName()] {
			return
		}
		seen[md.FullName()] = true
		for i := 0; i < md.Fields().Len(); i++ {
			fd := md.Fields().Get(i)
			if fd.IsMap() {
				fd = fd.MapValue()
			}
			switch {
			case fd.Enum() != nil:
				ed := fd.Enum()
				if seen[ed.FullName()] {
					continue
				}
				seen[ed.FullName()] = true
				zero, one := ed.Values().ByNumber(0), ed.Values().ByNumber(1)
				if zero == nil || one == nil {
					t.Errorf("enum %s (field %s) needs a zero value and a value numbered 1", ed.FullName(), fd.FullName())
					continue
				}
				re := regexp.MustCompile(`//\s*Same as ` + string(one.Name()) + `\.?\s*\n\s*` + string(zero.Name()) + `\s*=\s*0;`)
				if !re.Match(src) {
					t.Errorf("enum %s: its zero value %s must mean %s and say so in a comment \"// Same as %s.\": config files and the control plane treat it so",
						ed.FullName(), zero.Name(), one.Name(), one.Name())
				}
			case fd.Message() != nil && strings.HasPrefix(string(fd.Message().FullName()), "metamcp."):
				walk(fd.Message())
			}
		}
	}
	walk((&metamcpv1.Resource{}).ProtoReflect().Descriptor())
	if !seen[metamcpv1.SessionMode(0).Descriptor().FullName()] {
		t.Fatal("the walk did not reach SessionMode")
	}
}
