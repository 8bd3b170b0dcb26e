// Package urluser hides the userinfo of upstream URLs (https://TOKEN@host/...)
// from what mmctl prints, and puts the stored one back when such a printed
// URL is applied again, as secret values are.
package urluser

import (
	"fmt"
	"net/url"
	"strings"
)

// Placeholder stands for the userinfo of a URL that is not printed.
const Placeholder = "REDACTED"

// Hide returns raw with its userinfo replaced by Placeholder; raw as it is
// when it has none. A URL that does not parse is hidden whole after its
// scheme when it holds an '@' (it may still be a credential).
func Hide(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		scheme, rest, ok := strings.Cut(raw, "://")
		if at := strings.LastIndex(rest, "@"); ok && at >= 0 {
			return scheme + "://" + Placeholder + rest[at:]
		}
		return raw
	}
	if u.User == nil || u.User.String() == Placeholder {
		return raw
	}
	u.User = url.User(Placeholder)
	return u.String()
}

// Hidden reports whether raw carries the placeholder for its userinfo.
func Hidden(raw string) bool {
	u, err := url.Parse(raw)
	return err == nil && u.User != nil && u.User.String() == Placeholder
}

// Restore returns the URL to store when next is applied over the stored
// prev: next itself unless its userinfo is the placeholder, in which case
// prev's userinfo is put back. It refuses to send prev's userinfo to
// another scheme or host than prev's.
func Restore(prev, next string) (string, error) {
	if !Hidden(next) {
		return next, nil
	}
	if prev != "" && Hide(prev) == next {
		return prev, nil
	}
	p, err := url.Parse(prev)
	if prev == "" || err != nil || p.User == nil {
		return "", fmt.Errorf("the URL's userinfo is %s, but the stored URL has none to keep: write it out", Placeholder)
	}
	n, _ := url.Parse(next)
	if n.Scheme != p.Scheme || n.Host != p.Host {
		return "", fmt.Errorf("the URL's userinfo is %s, which keeps the stored one only for the same scheme and host (%s://%s): write it out", Placeholder, p.Scheme, p.Host)
	}
	n.User = p.User
	return n.String(), nil
}
