package configfile

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
)

// FuzzParse: Parse never panics, and whatever it accepts Marshal writes back
// to the same resources (secret values aside).
func FuzzParse(f *testing.F) {
	for _, name := range []string{"example.yaml", "export.golden.yaml"} {
		if b, err := os.ReadFile(filepath.Join("testdata", name)); err == nil {
			f.Add(string(b))
		}
	}
	f.Add("kind: Server\nname: a\nstdio: {command: x}\n---\n--- {kind: Namespace, name: n}\n...\n")
	f.Add(`[{"kind": "RateLimitPolicy", "name": "r", "rate": "5", "period": "1.5s"}]`)
	f.Fuzz(func(t *testing.T, in string) {
		res, err := Parse(strings.NewReader(in))
		if err != nil {
			return
		}
		var buf bytes.Buffer
		if err := Marshal(&buf, res); err != nil {
			t.Fatalf("Marshal of parsed resources: %v", err)
		}
		back, err := Parse(&buf)
		if err != nil {
			t.Fatalf("Parse(Marshal(x)): %v\n%s", err, buf.String())
		}
		want := withoutSecretsAndOutputOnly(res)
		if len(back) != len(want) {
			t.Fatalf("round trip: %d resources, want %d", len(back), len(want))
		}
		for i := range back {
			if !proto.Equal(back[i], want[i]) {
				t.Fatalf("round trip of resource %d:\n got %v\nwant %v\nYAML:\n%s", i+1, back[i], want[i], buf.String())
			}
		}
	})
}

// FuzzParseMCPServers: any bytes give servers or an error, never a panic.
func FuzzParseMCPServers(f *testing.F) {
	for _, name := range []string{"claude_desktop_config.json", "vscode_mcp.json", "cursor_mcp.json"} {
		if b, err := os.ReadFile(filepath.Join("testdata", name)); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		servers, _, err := ParseMCPServers(data)
		if err != nil {
			return
		}
		for _, s := range servers {
			if s.GetName() == "" || s.GetTransport() == nil {
				t.Fatalf("server without name or transport: %v", s)
			}
		}
	})
}
