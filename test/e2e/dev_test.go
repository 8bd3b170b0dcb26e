package e2e

import (
	"context"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

var (
	devExport = regexp.MustCompile(`export METAMCP_ADDR=(\S+) METAMCP_TOKEN=(\S+)`)
	devURL    = regexp.MustCompile(`MCP endpoint:\s+(\S+)`)
	devKey    = regexp.MustCompile(`API key:\s+(mm_\S+)`)
)

// TestDevWithMmctl runs `metamcp dev` the way a person does and drives it
// with mmctl and an MCP client, using only what the banner printed: the
// seeded endpoint answers, a server added with mmctl shows up in the next
// tools/list, and mmctl get dataplanes shows the in-process data plane.
func TestDevWithMmctl(t *testing.T) {
	p := runDev(t)
	stderr := p.Stderr
	banner := p.Stdout.String()
	m, u, k := devExport.FindStringSubmatch(banner), devURL.FindStringSubmatch(banner), devKey.FindStringSubmatch(banner)
	if m == nil || u == nil || k == nil {
		t.Fatalf("the banner lacks the export line, the URL or the key:\n%s", banner)
	}
	env := []string{"METAMCP_ADDR=" + m[1], "METAMCP_TOKEN=" + m[2]}
	mm := func(args ...string) result {
		t.Helper()
		r := runMmctl(t, env, "", args...)
		if r.code != 0 {
			t.Fatalf("want success:\n%s", r)
		}
		return r
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	client := mcp.NewClient(&mcp.Implementation{Name: "e2e-dev", Version: "v0"}, nil)
	cs, err := client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: u[1], HTTPClient: &http.Client{Transport: bearer{key: k[1]}}}, nil)
	if err != nil {
		t.Fatalf("connect to %s: %v\n%s", u[1], err, stderr)
	}
	defer cs.Close()
	if got := callText(ctx, t, cs, "demo__echo", map[string]any{"text": "hello"}); got != "hello" {
		t.Errorf("demo__echo = %q", got)
	}

	// A second demo server, mounted with mmctl, shows up without a restart.
	mm("create", "server", "other", "--command", metamcpBin, "--arg", "demo-server")
	mm("apply", "-f", writeTemp(t, "ns.yaml", "kind: Namespace\nname: default\nmembers:\n  - server: demo\n  - server: other\n    prefix: o\n"))
	eventually(t, "o__echo in tools/list", func() (bool, string) {
		names := toolNames(ctx, t, cs)
		return slices.Contains(names, "o__echo") && slices.Contains(names, "demo__echo"), strings.Join(names, " ")
	})
	// The registry records ACKs in batches, a moment after the data plane
	// swapped the config in.
	eventually(t, "mmctl get dataplanes to show the dev data plane connected and current", func() (bool, string) {
		table := mm("get", "dataplanes").stdout
		return lineWith(table, "dev ", "yes", " ok"), table
	})
}
