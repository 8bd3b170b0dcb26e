package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/pkg/canonical"
)

// splitCommandLine splits a command line into words the way a POSIX shell
// does for quoting: single quotes keep everything, double quotes keep all but
// \" and \\, a backslash outside quotes escapes the next character. No
// variables, globs or substitutions.
func splitCommandLine(s string) ([]string, error) {
	var (
		words   []string
		cur     strings.Builder
		inWord  bool
		quote   rune
		escaped bool
	)
	for _, r := range s {
		switch {
		case escaped:
			cur.WriteRune(r)
			escaped = false
		case quote == '\'':
			if r == '\'' {
				quote = 0
			} else {
				cur.WriteRune(r)
			}
		case quote == '"':
			switch r {
			case '"':
				quote = 0
			case '\\':
				escaped = true
			default:
				cur.WriteRune(r)
			}
		case r == '\\':
			escaped, inWord = true, true
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
		return nil, fmt.Errorf("unterminated %c quote", quote)
	}
	if escaped {
		return nil, fmt.Errorf("trailing backslash")
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}

// parseValues turns repeated KEY=VALUE flag values into a map of Values.
// With fromEnv, a bare KEY takes its value from mmctl's own environment, so a
// secret need not appear in argv.
func parseValues(flag string, specs []string, secret bool, lookupEnv func(string) (string, bool), into map[string]*metamcpv1.Value) error {
	for _, spec := range specs {
		key, value, ok := strings.Cut(spec, "=")
		if !ok && lookupEnv != nil {
			v, found := lookupEnv(key)
			if !found {
				return usageErrorf("--%s %s: no value given and $%s is not set (pass %s=VALUE or export %s)", flag, key, key, key, key)
			}
			value, ok = v, true
		}
		if !ok {
			return usageErrorf("--%s wants KEY=VALUE, got %q", flag, spec)
		}
		if strings.TrimSpace(key) == "" {
			return usageErrorf("--%s %q: the key is empty", flag, spec)
		}
		if _, dup := into[key]; dup {
			return usageErrorf("--%s: %s is given more than once", flag, key)
		}
		into[key] = &metamcpv1.Value{Value: value, Secret: secret}
	}
	return nil
}

// parseFileValues turns repeated KEY=PATH flag values into secret Values
// read from the files.
func parseFileValues(flag string, specs []string, into map[string]*metamcpv1.Value) error {
	for _, spec := range specs {
		key, path, ok := strings.Cut(spec, "=")
		if !ok || strings.TrimSpace(key) == "" || path == "" {
			return usageErrorf("--%s wants KEY=PATH, got %q", flag, spec)
		}
		if _, dup := into[key]; dup {
			return usageErrorf("--%s: %s is given more than once", flag, key)
		}
		v := &metamcpv1.Value{Secret: true, FromFile: path}
		if err := resolveValue(v, "."); err != nil {
			return usageErrorf("--%s %s: %v", flag, key, err)
		}
		into[key] = v
	}
	return nil
}

// parseExpiry reads an expiry given as a duration from now (720h, 30d) or an
// RFC 3339 time. Empty means no expiry.
func parseExpiry(s string, now time.Time) (*timestamppb.Timestamp, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		if !t.After(now) {
			return nil, usageErrorf("--expires %s is in the past", s)
		}
		return timestamppb.New(t), nil
	}
	d, err := parseDays(s)
	if err != nil {
		return nil, usageErrorf("invalid --expires %q: use a duration (720h, 30d) or an RFC 3339 time (2027-01-31T00:00:00Z)", s)
	}
	if d <= 0 {
		return nil, usageErrorf("invalid --expires %q: must be in the future", s)
	}
	return timestamppb.New(now.Add(d).Truncate(time.Second)), nil
}

// parseDays is time.ParseDuration that also accepts a whole number of days
// ("30d").
func parseDays(s string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		days, err := strconv.Atoi(n)
		if err == nil {
			return time.Duration(days) * 24 * time.Hour, nil
		}
	}
	return time.ParseDuration(s)
}

// normalize lowercases an enum spelling and accepts '-' for '_'.
func normalize(s string) string {
	return strings.ReplaceAll(strings.ToLower(strings.TrimSpace(s)), "-", "_")
}

// parseEnumFlag reads the value of an enum flag in the one spelling enum
// values have everywhere ("per_client"), or an older one ("PER_CLIENT",
// "SESSION_MODE_PER_CLIENT", "per-client"), or one of aliases. Empty is the
// zero value.
func parseEnumFlag(flag, s string, ed protoreflect.EnumDescriptor, aliases map[string]string) (protoreflect.EnumNumber, error) {
	if strings.TrimSpace(s) == "" {
		return 0, nil
	}
	if a, ok := aliases[normalize(s)]; ok {
		s = a
	}
	ev, err := canonical.ParseEnum(ed, s)
	if err != nil || ev.Number() == 0 {
		return 0, usageErrorf("invalid --%s %q: use %s", flag, s, canonical.EnumChoices(ed))
	}
	return ev.Number(), nil
}

func parseSessionMode(s string) (metamcpv1.SessionMode, error) {
	n, err := parseEnumFlag("session-mode", s, metamcpv1.SessionMode(0).Descriptor(), nil)
	return metamcpv1.SessionMode(n), err
}

func parseRateLimitKey(s string) (metamcpv1.RateLimitKey, error) {
	n, err := parseEnumFlag("key", s, metamcpv1.RateLimitKey(0).Descriptor(),
		map[string]string{"user": "principal", "apikey": "api_key", "ip": "client_ip"})
	return metamcpv1.RateLimitKey(n), err
}

func parseFailureMode(s string) (metamcpv1.RateLimitFailureMode, error) {
	n, err := parseEnumFlag("on-redis-failure", s, metamcpv1.RateLimitFailureMode(0).Descriptor(), nil)
	return metamcpv1.RateLimitFailureMode(n), err
}

func parseTokenScope(s string) (metamcpv1.TokenScope, error) {
	if strings.TrimSpace(s) == "" {
		return 0, usageErrorf("--scope is required: admin (for mmctl) or sync (for a data plane)")
	}
	n, err := parseEnumFlag("scope", s, metamcpv1.TokenScope(0).Descriptor(), nil)
	if err != nil {
		return 0, usageErrorf("invalid --scope %q: use admin (for mmctl) or sync (for a data plane)", s)
	}
	return metamcpv1.TokenScope(n), nil
}

// parseMember reads a --server value: `gh` (prefix: the server's name),
// `gh:g` (prefix g) or `gh:` (no prefix).
func parseMember(spec string) (*metamcpv1.NamespaceMember, error) {
	server, prefix, hasPrefix := strings.Cut(spec, ":")
	if strings.TrimSpace(server) == "" {
		return nil, usageErrorf("invalid --server %q: use SERVER, SERVER:PREFIX or SERVER: (no prefix)", spec)
	}
	m := &metamcpv1.NamespaceMember{Server: server}
	if hasPrefix {
		m.Prefix = proto.String(prefix)
	}
	return m, nil
}
