package upstream

import (
	"net/url"
	"regexp"
	"sort"
	"strings"
	"sync"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
)

// An upstream URL can be a secret: a token in its userinfo, its path or its
// query. Errors and log lines keep its scheme and host only (redact), and
// the text of an upstream's errors has every part of its URL but those
// removed (scrubText), even when an upstream echoes them (a 404 page that
// quotes the path). What reaches a client loses the host and any network
// address as well (ClientText).

// redacted replaces a secret part of an upstream URL in error text.
const redacted = "[redacted]"

// urlParts are, per server name, the secret parts of the URLs it has had
// (longest first) and its hosts. Names are few and change with the config.
var urlParts = struct {
	sync.RWMutex
	secrets map[string][]string
	hosts   map[string][]string
}{secrets: map[string][]string{}, hosts: map[string][]string{}}

// rememberURLs records the secret parts of cfg's URL under its name, on top
// of the previous URL's (sessions of the old definition may still fail).
func rememberURLs(name string, cfg *metamcpv1.Server) {
	raw := cfg.GetStreamableHttp().GetUrl()
	if raw == "" {
		raw = cfg.GetSse().GetUrl()
	}
	if raw == "" {
		return
	}
	secrets, hosts := urlSecrets(raw)
	urlParts.Lock()
	defer urlParts.Unlock()
	urlParts.secrets[name] = mergeLongestFirst(urlParts.secrets[name], secrets)
	urlParts.hosts[name] = mergeLongestFirst(urlParts.hosts[name], hosts)
}

func mergeLongestFirst(a, b []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range append(append([]string(nil), a...), b...) {
		if s != "" && !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	// Keep the list bounded across many config changes.
	if len(out) > 64 {
		out = out[len(out)-64:]
	}
	sort.SliceStable(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

// urlSecrets returns the parts of raw that must not appear in text (the
// URL itself, its userinfo, path, query, fragment and their pieces) and its
// host names.
func urlSecrets(raw string) (secrets, hosts []string) {
	secrets = append(secrets, raw)
	u, err := url.Parse(raw)
	if err != nil {
		return secrets, nil
	}
	add := func(s string, minLen int) {
		if len(s) >= minLen {
			secrets = append(secrets, s)
			if un, err := url.PathUnescape(s); err == nil && un != s {
				secrets = append(secrets, un)
			}
			if un, err := url.QueryUnescape(s); err == nil && un != s {
				secrets = append(secrets, un)
			}
		}
	}
	if u.User != nil {
		add(u.User.String(), 1)
		add(u.User.Username(), 3)
		if p, ok := u.User.Password(); ok {
			add(p, 1)
		}
	}
	if p := u.EscapedPath(); p != "" && p != "/" {
		add(p, 2)
		add(u.Path, 2)
		for _, seg := range strings.Split(u.Path, "/") {
			add(seg, 6)
		}
	}
	if u.RawQuery != "" {
		add(u.RawQuery, 1)
		for _, kv := range strings.Split(u.RawQuery, "&") {
			add(kv, 3)
			if _, v, ok := strings.Cut(kv, "="); ok {
				add(v, 3)
			}
		}
	}
	add(u.Fragment, 1)
	if u.Host != "" {
		hosts = append(hosts, u.Host)
		if h := u.Hostname(); h != u.Host {
			hosts = append(hosts, h)
		}
	}
	return secrets, hosts
}

// redact returns the scheme and host of an upstream URL, for errors and logs.
func redact(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" {
		return "the server URL"
	}
	return u.Scheme + "://" + u.Host
}

// scrubText removes the secret parts of server's URLs from s.
func scrubText(server, s string) string {
	urlParts.RLock()
	secrets := urlParts.secrets[server]
	urlParts.RUnlock()
	for _, sec := range secrets {
		if strings.Contains(s, sec) {
			s = strings.ReplaceAll(s, sec, redacted)
		}
	}
	return s
}

var (
	anyURL = regexp.MustCompile(`[a-zA-Z][a-zA-Z0-9+.-]*://[^\s"'<>]*[^\s"'<>:;,.)]`)
	ipv4   = regexp.MustCompile(`\b\d{1,3}(\.\d{1,3}){3}(:\d+)?\b`)
	ipv6   = regexp.MustCompile(`\[[0-9a-fA-F:.]*:[0-9a-fA-F:.]*(%[^\]]*)?\](:\d+)?`)
)

// ClientText is the text of err fit for a client of the gateway: it names
// no part of server's URLs, not even its host, and no network address (a
// dial error names the upstream's internal address). The server's name,
// which the caller adds, says which upstream failed; the data plane's log
// has the host.
func ClientText(server string, err error) string {
	if err == nil {
		return ""
	}
	s := scrubText(server, err.Error())
	urlParts.RLock()
	hosts := urlParts.hosts[server]
	urlParts.RUnlock()
	s = anyURL.ReplaceAllString(s, "the server URL")
	for _, h := range hosts {
		s = strings.ReplaceAll(s, h, "the server")
	}
	s = ipv6.ReplaceAllString(s, "an address")
	s = ipv4.ReplaceAllString(s, "an address")
	return s
}

// redactedError is err with the secret parts of server's URLs removed from
// its text; errors.Is and errors.As see err.
type redactedError struct {
	server string
	err    error
}

func (e *redactedError) Error() string { return scrubText(e.server, e.err.Error()) }
func (e *redactedError) Unwrap() error { return e.err }

func redactErr(server string, err error) error {
	if err == nil {
		return nil
	}
	return &redactedError{server: server, err: err}
}
