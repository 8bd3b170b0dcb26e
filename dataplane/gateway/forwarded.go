package gateway

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// Headers set by reverse proxies, believed only from Options.TrustedProxies.
const (
	headerForwardedFor   = "X-Forwarded-For"
	headerForwardedProto = "X-Forwarded-Proto"
	headerForwardedHost  = "X-Forwarded-Host"
)

// remoteAddr is the address of the peer of the connection.
func remoteAddr(r *http.Request) netip.Addr {
	host := r.RemoteAddr
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	a, _ := netip.ParseAddr(host)
	return a.Unmap()
}

// trusted reports whether a is one of the trusted proxies.
func (g *Gateway) trusted(a netip.Addr) bool {
	if !a.IsValid() {
		return false
	}
	for _, p := range g.opts.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// clientIP is the address of the client: the connection's peer, or, when
// that is a trusted proxy, the last address of X-Forwarded-For that is not
// one (a client may write anything into the header, so only what the
// trusted proxies appended counts).
func (g *Gateway) clientIP(r *http.Request) string {
	peer := remoteAddr(r)
	if !peer.IsValid() {
		return r.RemoteAddr
	}
	if len(g.opts.TrustedProxies) == 0 || !g.trusted(peer) {
		return peer.String()
	}
	hops := r.Header.Values(headerForwardedFor)
	for i := len(hops) - 1; i >= 0; i-- {
		parts := strings.Split(hops[i], ",")
		for j := len(parts) - 1; j >= 0; j-- {
			a, err := netip.ParseAddr(strings.TrimSpace(parts[j]))
			if err != nil {
				// Not an address: stop at what we cannot read rather than
				// trust what stands before it.
				return peer.String()
			}
			a = a.Unmap()
			if !g.trusted(a) {
				return a.String()
			}
			peer = a
		}
	}
	return peer.String()
}

// baseURL is the scheme and host clients use to reach this data plane: the
// configured public URL, or what a trusted proxy says in X-Forwarded-Proto
// and X-Forwarded-Host, or the request's own.
func (g *Gateway) baseURL(r *http.Request) string {
	if g.opts.PublicURL != "" {
		return g.opts.PublicURL
	}
	scheme, host := "http", r.Host
	if r.TLS != nil {
		scheme = "https"
	}
	if len(g.opts.TrustedProxies) > 0 && g.trusted(remoteAddr(r)) {
		if p := firstForwarded(headerValue(r.Header, headerForwardedProto)); p == "http" || p == "https" {
			scheme = p
		}
		if h := firstForwarded(headerValue(r.Header, headerForwardedHost)); h != "" && validHost(h) {
			host = h
		}
	}
	return scheme + "://" + host
}

// firstForwarded is the first of a comma-separated forwarded header's values:
// what the proxy nearest the client saw.
func firstForwarded(v string) string {
	if i := strings.IndexByte(v, ','); i >= 0 {
		v = v[:i]
	}
	return strings.ToLower(strings.TrimSpace(v))
}

// validHost reports whether h can stand as the host of a URL: a name or
// address with an optional port, nothing that would change the URL's shape.
func validHost(h string) bool {
	if h == "" || len(h) > 255 {
		return false
	}
	for i := 0; i < len(h); i++ {
		switch c := h[i]; {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '.', c == '-', c == ':', c == '[', c == ']', c == '_':
		default:
			return false
		}
	}
	return true
}
