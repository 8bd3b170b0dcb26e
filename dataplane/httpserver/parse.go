package httpserver

import (
	"bytes"
	"encoding/binary"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"
)

// parsedHead is a request head the lean loop serves.
type parsedHead struct {
	method, uri, host string
	url               *url.URL
	header            http.Header
	contentLength     int64
	close             bool
}

// parseHead parses head into p; false when the request is not one the lean
// loop serves (anything but a well-formed HTTP/1.1 GET, POST or DELETE with
// a single Content-Length or no body), so net/http takes the connection and
// answers it, errors included. The request line's target and the header
// values are substrings of one copy of the head: a request costs a few
// allocations, not two per header.
func parseHead(head []byte, p *parsedHead) bool {
	line, rest, ok := cutLine(head)
	if !ok {
		return false
	}
	sp1 := bytes.IndexByte(line, ' ')
	if sp1 < 0 {
		return false
	}
	switch string(line[:sp1]) {
	case http.MethodPost:
		p.method = http.MethodPost
	case http.MethodGet:
		p.method = http.MethodGet
	case http.MethodDelete:
		p.method = http.MethodDelete
	default:
		return false
	}
	line = line[sp1+1:]
	sp2 := bytes.IndexByte(line, ' ')
	if sp2 <= 0 || string(line[sp2+1:]) != "HTTP/1.1" {
		return false
	}
	uri := line[:sp2]
	if uri[0] != '/' {
		return false
	}
	text := string(head) // every string below is a part of this one
	sub := func(b []byte) string {
		if len(b) == 0 {
			return "" // an empty value may be nil
		}
		i := cap(head) - cap(b) // b is a subslice of head
		return text[i : i+len(b)]
	}
	p.uri = sub(uri)
	if simplePath(uri) {
		p.url = &url.URL{Path: p.uri}
	} else {
		u, err := url.ParseRequestURI(p.uri)
		if err != nil {
			return false
		}
		p.url = u
	}

	lines := bytes.Count(rest, []byte{'\n'})
	p.header = make(http.Header, lines-1) // the last line ends the head
	values := make([]string, 0, lines)    // one backing array for the values
	p.contentLength = 0
	p.close = false
	sawHost, sawLength := false, false
	var seen uint64 // the commonKeys met so far, by index
	for {
		line, rest, ok = cutLine(rest)
		if !ok {
			return false
		}
		if len(line) == 0 {
			break
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return false
		}
		key, ki := headerKey(line[:colon])
		if ki < 0 && !validToken(line[:colon]) { // a common name is a token
			return false // also obs-fold continuation lines, which start with a space
		}
		value := trimOWS(line[colon+1:])
		if !validValue(value) {
			return false
		}
		switch key {
		case "Host":
			if sawHost || !validHost(value) {
				return false
			}
			sawHost = true
			p.host = sub(value)
		case "Content-Length":
			n, ok := parseLength(value)
			if sawLength || !ok {
				return false
			}
			sawLength = true
			p.contentLength = n
		case "Transfer-Encoding", "Expect", "Upgrade", "Te", "Trailer":
			return false
		case "Connection":
			for tok := range bytes.SplitSeq(value, []byte{','}) {
				tok = trimOWS(tok)
				switch {
				case bytes.EqualFold(tok, []byte("close")):
					p.close = true
				case bytes.EqualFold(tok, []byte("upgrade")):
					return false
				}
			}
		}
		v := sub(value)
		// A repeated header: the common ones are tracked by index, the
		// rest looked up (no other name has a common key's canonical form).
		if ki >= 0 {
			dup := seen&(1<<ki) != 0
			seen |= 1 << ki
			if dup {
				p.header[key] = append(p.header[key], v)
				continue
			}
		} else if prev, dup := p.header[key]; dup {
			p.header[key] = append(prev, v)
			continue
		}
		values = append(values, v)
		n := len(values)
		p.header[key] = values[n-1 : n : n]
	}
	return sawHost
}

// cutLine returns the line before the next CRLF and what follows; false
// for a bare LF (net/http decides about those).
func cutLine(b []byte) (line, rest []byte, ok bool) {
	i := bytes.IndexByte(b, '\n')
	if i <= 0 || b[i-1] != '\r' {
		return nil, nil, false
	}
	return b[:i-1], b[i+1:], true
}

// simplePath reports whether a request target is a plain path that needs no
// decoding: letters, digits and -._~/ only.
func simplePath(b []byte) bool {
	prev := byte(0)
	for _, c := range b {
		switch {
		case isAlnum(c), c == '-', c == '_', c == '~':
		case c == '/', c == '.':
			if prev == '/' {
				return false // "//", "/." and "/..": net/url decides
			}
		default:
			return false
		}
		prev = c
	}
	return true
}

// parseLength parses a Content-Length value: decimal digits only.
func parseLength(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// validToken reports whether b is an HTTP token (RFC 9110, 5.6.2).
func validToken[T string | []byte](b T) bool {
	for i := 0; i < len(b); i++ {
		if !isTokenByte(b[i]) {
			return false
		}
	}
	return len(b) > 0
}

func isTokenByte(c byte) bool { return tokenBytes[c] }

// tokenBytes marks the bytes of an HTTP token: a table, because every
// byte of every header name is checked.
var tokenBytes = func() (t [256]bool) {
	for c := range 256 {
		t[c] = isAlnum(byte(c)) || strings.IndexByte("!#$%&'*+-.^_`|~", byte(c)) >= 0
	}
	return t
}()

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

// validValue reports whether b is a header field value without control
// characters other than tab. It tests eight bytes at a time (SWAR): values
// such as session ids and bearer tokens run to hundreds of bytes.
func validValue(b []byte) bool {
	const (
		ones  = 0x0101010101010101
		highs = 0x8080808080808080
	)
	i := 0
	for ; i+8 <= len(b); i += 8 {
		x := binary.LittleEndian.Uint64(b[i:])
		// A byte is flagged (its high bit set in m) when it is below 0x20
		// or equal to 0x7f (a zero byte of d). Borrows can flag the bytes
		// after a true hit, never one before it; a tab is flagged too. The
		// bytewise loop below decides from the first flagged word on.
		d := x ^ (ones * 0x7f)
		if ((x-ones*0x20)&^x|(d-ones)&^d)&highs != 0 {
			break
		}
	}
	for ; i < len(b); i++ {
		if c := b[i]; c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// validHost reports whether b is a plausible Host value (what net/http's
// check accepts: a host name or IP literal, an optional port).
func validHost(b []byte) bool {
	for _, c := range b {
		if !isAlnum(c) && bytes.IndexByte([]byte("-._~:[]%!$&'()*+,;=@"), c) < 0 {
			return false
		}
	}
	return true
}

// commonKeys are the canonical forms of the header names MCP clients send,
// so that parsing them allocates no key.
var commonKeys = []string{
	"Accept", "Accept-Encoding", "Accept-Language", "Authorization", "Baggage",
	"Cache-Control", "Connection", "Content-Length", "Content-Type", "Expect",
	"Host", "Last-Event-Id", "Mcp-Method", "Mcp-Name", "Mcp-Protocol-Version",
	"Mcp-Session-Id", "Origin", "Referer", "Sec-Fetch-Mode", "Te", "Trailer",
	"Traceparent", "Tracestate", "Transfer-Encoding", "Upgrade", "User-Agent",
	"X-Api-Key", "X-Forwarded-For", "X-Forwarded-Proto", "X-Real-Ip",
}

// trimOWS trims the spaces and tabs around a header value (RFC 9110's
// optional whitespace), returning a subslice of b.
func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// headerKey returns the canonical form of a header name, and its index in
// commonKeys or -1.
func headerKey(b []byte) (string, int) {
	if i := commonKeyIndex(b); i >= 0 {
		return commonKeys[i], i
	}
	return textproto.CanonicalMIMEHeaderKey(string(b)), -1
}

// commonKeyIndex returns the index in commonKeys of the header name b in
// any case, or -1.
func commonKeyIndex(b []byte) int {
	if len(b) == 0 || len(b) >= len(commonKeysByLen) {
		return -1
	}
	first := b[0] | 0x20 // lower case, for letters
	for _, i := range commonKeysByLen[len(b)] {
		if k := commonKeys[i]; k[0]|0x20 == first && equalFold(k, b) {
			return int(i)
		}
	}
	return -1
}

// commonKeysByLen lists the indexes in commonKeys of the keys of each
// length: a name is compared with at most a few.
var commonKeysByLen = func() (t [24][]uint8) {
	for i, k := range commonKeys {
		t[len(k)] = append(t[len(k)], uint8(i))
	}
	return t
}()

// equalFold reports whether ASCII s and b are equal ignoring case.
func equalFold(s string, b []byte) bool {
	for i := range len(s) {
		x, y := s[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
