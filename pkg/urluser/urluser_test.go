package urluser

import (
	"strings"
	"testing"
)

func TestHideRestore(t *testing.T) {
	stored := "https://bot:s3cr%2Ft@mcp.example.com/v1/mcp?x=1"
	hidden := Hide(stored)
	if hidden != "https://REDACTED@mcp.example.com/v1/mcp?x=1" || strings.Contains(hidden, "s3cr") || strings.Contains(hidden, "bot") {
		t.Fatalf("Hide = %q", hidden)
	}
	for _, plain := range []string{"https://mcp.example.com/mcp", "http://127.0.0.1:9/sse", ""} {
		if Hide(plain) != plain {
			t.Errorf("Hide(%q) = %q", plain, Hide(plain))
		}
	}
	if got := Hide("https://u:pa%zz@h/x"); got != "https://REDACTED@h/x" {
		t.Errorf("Hide of a URL that does not parse = %q", got)
	}
	if got, err := Restore(stored, hidden); err != nil || got != stored {
		t.Errorf("Restore of the printed URL = %q, %v; want the stored one", got, err)
	}
	if got, err := Restore(stored, "https://REDACTED@mcp.example.com/v2/mcp"); err != nil || got != "https://bot:s3cr%2Ft@mcp.example.com/v2/mcp" {
		t.Errorf("Restore with a new path = %q, %v", got, err)
	}
	if got, err := Restore(stored, "https://other:pw@mcp.example.com/mcp"); err != nil || got != "https://other:pw@mcp.example.com/mcp" {
		t.Errorf("Restore of a URL written out = %q, %v", got, err)
	}
	for _, bad := range []string{"https://REDACTED@evil.example.com/v1/mcp?x=1", "http://REDACTED@mcp.example.com/v1/mcp?x=1"} {
		if got, err := Restore(stored, bad); err == nil {
			t.Errorf("Restore(%q) = %q: the stored userinfo went to another host", bad, got)
		}
	}
	if _, err := Restore("https://mcp.example.com/mcp", hidden); err == nil {
		t.Error("Restore without a stored userinfo succeeded")
	}
	if _, err := Restore("", hidden); err == nil {
		t.Error("Restore of a new server with the placeholder succeeded")
	}
}
