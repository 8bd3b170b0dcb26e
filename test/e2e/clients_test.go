package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/metamcp/metamcp/internal/testharness"
)

// Versions of the third-party clients scripts/ensure-services.sh installs.
const (
	mcpRemoteVersion = "0.15.1"
	tsSDKVersion     = "1.32.2"
)

// thirdPartyClients returns the directory holding mcp-remote and the
// TypeScript SDK. Without it the test fails: `make test` installs them
// first.
func thirdPartyClients(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("METAMCP_CLIENTS_DIR")
	if dir == "" {
		cache := os.Getenv("XDG_CACHE_HOME")
		if cache == "" {
			home, err := os.UserHomeDir()
			if err != nil {
				t.Fatalf("no home directory to find the MCP clients in: %v", err)
			}
			cache = filepath.Join(home, ".cache")
		}
		dir = filepath.Join(cache, "metamcp", "clients-"+mcpRemoteVersion+"-"+tsSDKVersion)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "mcp-remote", "package.json")); err != nil {
		t.Fatal("mcp-remote and the TypeScript SDK are not installed in " + dir + ": run scripts/ensure-services.sh (make test does)")
	}
	return dir
}

// tsListTools lists url's tools with the official TypeScript SDK client and
// returns what it printed: a JSON array of names, or "ERROR: ..." with the
// message the SDK reports.
func tsListTools(t *testing.T, clients, url, authorization string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	script, err := filepath.Abs(filepath.Join("testdata", "tsclient.mjs"))
	if err != nil {
		t.Fatal(err)
	}
	args := []string{script, filepath.Join(clients, "node_modules", "@modelcontextprotocol", "sdk"), url}
	if authorization != "" {
		args = append(args, authorization)
	}
	out, err := exec.CommandContext(ctx, "node", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("TypeScript SDK client: %v\n%s", err, out)
	}
	return strings.TrimSpace(string(out))
}

// mcpRemote runs mcp-remote, the stdio bridge desktop clients use, against
// url with an Authorization header, sends it an initialize on stdin, and
// returns what it wrote to stdout and stderr by the time it answered or
// exited (stdin stays open until then, as a desktop client keeps it).
func mcpRemote(t *testing.T, clients, url, authorization string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	home := t.TempDir() // mcp-remote keeps OAuth state under ~/.mcp-auth
	cmd := exec.CommandContext(ctx, "node", filepath.Join(clients, "node_modules", "mcp-remote", "dist", "proxy.js"),
		url, "--header", "Authorization: "+authorization)
	cmd.Env = append(os.Environ(), "HOME="+home)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := testharness.Start(t, "mcp-remote", cmd)
	out := p.Output
	_, _ = io.WriteString(stdin, `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"e2e","version":"1"}}}`+"\n")
	// It answers, or exits non-zero on a refusal.
	if err := testharness.Poll(30*time.Second, func() error {
		if p.Exited() || strings.Contains(out.String(), `"serverInfo"`) {
			return nil
		}
		return errors.New("mcp-remote neither answered nor exited")
	}); err != nil {
		t.Error(err)
		return out.String()
	}
	_ = stdin.Close()
	p.Kill(t)
	return out.String()
}

// TestThirdPartyClientsSeeKeyErrors: a wrong API key on a key-only endpoint
// is reported by mcp-remote and the TypeScript SDK with the gateway's own
// message, not as a failed OAuth sign-in or client registration (OAuth
// clients start a sign-in on any 401, so key refusals are 403s); a right
// key lists the tools through both.
func TestThirdPartyClientsSeeKeyErrors(t *testing.T) {
	clients := thirdPartyClients(t)
	cp := startControlPlane(t)
	dp := startDataPlane(t, cp, "dp-clients")
	cp.ok(t, "create", "server", "demo", "--command", metamcpBin, "--arg", "demo-server")
	cp.ok(t, "create", "namespace", "dev", "--server", "demo")
	cp.ok(t, "create", "endpoint", "dev", "--namespace", "dev")
	key := createKey(t, cp, "alice", "dev")
	waitApplied(t, cp, cp.revisionNum(t), dp)
	url := "http://" + dp.addr + "/metamcp/dev/mcp"

	const wantMsg = "the API key is not valid"
	if out := tsListTools(t, clients, url, "Bearer "+key); !strings.Contains(out, `"demo__echo"`) {
		t.Fatalf("TypeScript SDK with the right key: %s, want the demo tools", out)
	}
	if out := tsListTools(t, clients, url, "Bearer mm_wrong"); !strings.Contains(out, wantMsg) {
		t.Errorf("TypeScript SDK with a wrong key: %s, want the gateway's message %q", out, wantMsg)
	}
	out := mcpRemote(t, clients, url, "Bearer mm_wrong")
	if !strings.Contains(out, wantMsg) || strings.Contains(out, "Registration") || strings.Contains(out, "OAuth callback") {
		t.Errorf("mcp-remote with a wrong key, want the gateway's message %q and no OAuth attempt:\n%s", wantMsg, out)
	}
	if out := mcpRemote(t, clients, url, "Bearer "+key); !strings.Contains(out, `"serverInfo"`) {
		t.Errorf("mcp-remote with the right key did not answer initialize:\n%s", out)
	}
}

// createKey creates an API key for endpoints and returns it.
func createKey(t *testing.T, cp *controlPlane, name string, endpoints ...string) string {
	t.Helper()
	args := []string{"create", "apikey", name, "-o", "json"}
	for _, e := range endpoints {
		args = append(args, "--endpoint", e)
	}
	r := cp.ok(t, args...)
	var created struct {
		Key string `json:"key"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &created); err != nil || !strings.HasPrefix(created.Key, "mm_") {
		t.Fatalf("create apikey %s: no key in the JSON output (%v):\n%s", name, err, r)
	}
	return created.Key
}
