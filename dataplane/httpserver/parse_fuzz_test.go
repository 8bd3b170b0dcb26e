package httpserver

import (
	"bufio"
	"bytes"
	"math/rand/v2"
	"net/http"
	"net/textproto"
	"slices"
	"strings"
	"testing"
)

// FuzzParseHead checks the lean parser against net/http's: whatever head
// parseHead accepts, http.ReadRequest accepts too and reads the same method,
// target, host, length and header values. A head the two read differently
// is how request smuggling starts.
func FuzzParseHead(f *testing.F) {
	for _, seed := range []string{
		"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST /metamcp/e/mcp HTTP/1.1\r\nHost: 127.0.0.1:12008\r\nContent-Type: application/json\r\nContent-Length: 2\r\nMcp-Session-Id: abc\r\n\r\n",
		"DELETE /p?q=1 HTTP/1.1\r\nhost: h\r\nx-a: 1\r\nX-A: 2\r\nConnection: keep-alive, close\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
		"GET /a%20b/./c HTTP/1.1\r\nHost: [::1]:80\r\nX: \t v \t\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: +1\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\naccept: a\r\nX-Accept: c\r\nACCEPT: b\r\nmcp-session-id: s\r\nMcp-Session-Id: t\r\n\r\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, head []byte) {
		n := headEnd(head)
		if n == 0 {
			return
		}
		head = head[:n]
		var p parsedHead
		if !parseHead(head, &p) {
			return // net/http serves it
		}
		req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(head)))
		if err != nil {
			t.Fatalf("parseHead accepted %q, net/http refuses it: %v", head, err)
		}
		if req.Method != p.method || req.RequestURI != p.uri || req.Host != p.host || req.URL.Path != p.url.Path || req.URL.RawQuery != p.url.RawQuery {
			t.Fatalf("%q: lean %s %s host %q path %q query %q; net/http %s %s host %q path %q query %q",
				head, p.method, p.uri, p.host, p.url.Path, p.url.RawQuery, req.Method, req.RequestURI, req.Host, req.URL.Path, req.URL.RawQuery)
		}
		if req.ContentLength != p.contentLength {
			t.Fatalf("%q: Content-Length lean %d, net/http %d", head, p.contentLength, req.ContentLength)
		}
		if req.Close != p.close {
			t.Fatalf("%q: close lean %v, net/http %v", head, p.close, req.Close)
		}
		for k, v := range p.header {
			if k == "Host" {
				continue // net/http moves it to req.Host
			}
			if !slices.Equal(req.Header[k], v) {
				t.Fatalf("%q: header %s lean %q, net/http %q", head, k, v, req.Header[k])
			}
		}
		for k := range req.Header {
			if _, ok := p.header[k]; !ok {
				t.Fatalf("%q: header %s only net/http read", head, k)
			}
		}
	})
}

// TestValidValueWords checks the word-at-a-time validValue against the
// bytewise rule, for every byte at every position of values of 0 to 24
// bytes, on backgrounds of plain text, tabs and high bytes.
func TestValidValueWords(t *testing.T) {
	bytewise := func(b []byte) bool {
		for _, c := range b {
			if c < ' ' && c != '\t' || c == 0x7f {
				return false
			}
		}
		return true
	}
	for _, bg := range []byte{'a', '\t', 0x80, 0xff, ' ', 0x7e} {
		for n := range 25 {
			v := bytes.Repeat([]byte{bg}, n)
			if got, want := validValue(v), bytewise(v); got != want {
				t.Fatalf("validValue(%q) = %v, want %v", v, got, want)
			}
			for i := range n {
				for c := range 256 {
					v[i] = byte(c)
					if got, want := validValue(v), bytewise(v); got != want {
						t.Fatalf("validValue(%q) = %v, want %v", v, got, want)
					}
				}
				v[i] = bg
			}
		}
	}
	// Several interesting bytes at once, where borrows could interact.
	r := rand.New(rand.NewPCG(1, 2))
	pick := []byte{0x00, 0x01, '\t', 0x1f, ' ', '!', 0x7e, 0x7f, 0x80, 0x9f, 0xff}
	for range 20000 {
		v := randomFrom(r, pick, r.IntN(40))
		if got, want := validValue(v), bytewise(v); got != want {
			t.Fatalf("validValue(%q) = %v, want %v", v, got, want)
		}
	}
}

// TestSimplePath checks simplePath against its definition: letters, digits
// and -._~/ only, and no "/." or "//".
func TestSimplePath(t *testing.T) {
	def := func(b []byte) bool {
		for _, c := range b {
			if !isAlnum(c) && !bytes.ContainsRune([]byte("/-._~"), rune(c)) {
				return false
			}
		}
		return !bytes.Contains(b, []byte("/.")) && !bytes.Contains(b, []byte("//"))
	}
	r := rand.New(rand.NewPCG(3, 4))
	pick := []byte("/./a-_~Z9%?")
	for range 50000 {
		b := randomFrom(r, pick, r.IntN(12))
		if got, want := simplePath(b), def(b); got != want {
			t.Fatalf("simplePath(%q) = %v, want %v", b, got, want)
		}
	}
}

// TestHeaderKey checks that headerKey gives what
// textproto.CanonicalMIMEHeaderKey gives: for the common keys in any case,
// and for random tokens.
func TestHeaderKey(t *testing.T) {
	check := func(b []byte) {
		t.Helper()
		got, i := headerKey(b)
		want := textproto.CanonicalMIMEHeaderKey(string(b))
		if wantI := slices.Index(commonKeys, want); got != want || i != wantI {
			t.Fatalf("headerKey(%q) = %q, %d; want %q, %d", b, got, i, want, wantI)
		}
	}
	for _, k := range commonKeys {
		check([]byte(k))
		check([]byte(strings.ToLower(k)))
		check([]byte(strings.ToUpper(k)))
		check([]byte(k[:len(k)-1] + "^"))
	}
	r := rand.New(rand.NewPCG(5, 6))
	pick := []byte("aAcCeEnNtT-^~_xX")
	for range 50000 {
		check(randomFrom(r, pick, 1+r.IntN(20)))
	}
}

// TestCommonKeysFit: parseHead tracks the common keys it met in a uint64 by
// index, and commonKeyIndex files them by length.
func TestCommonKeysFit(t *testing.T) {
	if len(commonKeys) > 64 {
		t.Fatalf("%d common keys; parseHead's bit set holds 64", len(commonKeys))
	}
	for i, k := range commonKeys {
		if textproto.CanonicalMIMEHeaderKey(k) != k {
			t.Errorf("common key %q is not canonical", k)
		}
		if len(k) >= len(commonKeysByLen) {
			t.Errorf("common key %q is longer than commonKeysByLen allows", k)
		} else if got := commonKeyIndex([]byte(strings.ToLower(k))); got != i {
			t.Errorf("commonKeyIndex(%q) = %d, want %d", strings.ToLower(k), got, i)
		}
	}
}

// randomFrom returns n bytes drawn at random from pick.
func randomFrom(r *rand.Rand, pick []byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = pick[r.IntN(len(pick))]
	}
	return b
}
