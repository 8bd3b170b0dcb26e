package gateway

import (
	"net/http"
	"net/textproto"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestHeaderKeysCanonical: headerValue looks keys up as they are, so every
// key it is given must be a header* constant in canonical form.
func TestHeaderKeysCanonical(t *testing.T) {
	keys := map[string]string{
		"headerSessionID":       headerSessionID,
		"headerProtocolVersion": headerProtocolVersion,
		"headerMethod":          headerMethod,
		"headerName":            headerName,
		"headerOrigin":          headerOrigin,
		"headerAuthorization":   headerAuthorization,
		"headerAPIKey":          headerAPIKey,
		"headerTraceparent":     headerTraceparent,
		"headerTracestate":      headerTracestate,
		"headerBaggage":         headerBaggage,
		"headerForwardedProto":  headerForwardedProto,
		"headerForwardedHost":   headerForwardedHost,
	}
	for name, k := range keys {
		if c := textproto.CanonicalMIMEHeaderKey(k); c != k {
			t.Errorf("%s = %q, want the canonical %q", name, k, c)
		}
	}
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	// A call, not the declaration: its arguments have no types.
	call := regexp.MustCompile(`headerValue\(([^,()]+),\s*([^)]+)\)`)
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range call.FindAllStringSubmatch(string(src), -1) {
			if strings.Contains(m[1], " ") {
				continue // func headerValue(h http.Header, key string)
			}
			if _, ok := keys[m[2]]; !ok {
				t.Errorf("%s: %s: the key is not one of the header* constants checked here", f, m[0])
			}
		}
	}
	h := http.Header{}
	h.Set("x-api-key", "k")
	if got := headerValue(h, headerAPIKey); got != "k" {
		t.Errorf("headerValue(X-Api-Key) = %q, want the value Set stored", got)
	}
	if got := headerValue(h, headerOrigin); got != "" {
		t.Errorf("headerValue(absent) = %q, want empty", got)
	}
}
