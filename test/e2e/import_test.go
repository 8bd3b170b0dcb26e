package e2e

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

// importSecrets are the clear-text credentials in
// testdata/claude_desktop_config.json.
var importSecrets = []string{
	"ghp_importExampleNotARealToken1111",
	"pgImportExamplePassword2222",
	"lin_importExampleNotARealKey3333",
}

// TestImport imports a Claude Desktop config: the servers, a namespace of
// them and an endpoint on it, in one revision, with every env and header
// value stored as a secret.
func TestImport(t *testing.T) {
	t.Parallel()
	cp := startControlPlane(t)
	file := filepath.Join("testdata", "claude_desktop_config.json")
	created := []string{"server/github created", "server/filesystem created", "server/postgres created", "server/linear created",
		"namespace/dev created", "endpoint/dev created"}

	// Dry run: the same report, nothing committed.
	r := cp.ok(t, "import", file, "--namespace", "dev", "--endpoint", "dev", "--dry-run")
	want := make([]string, 0, len(created)+1)
	for _, c := range created {
		want = append(want, c+" (dry run)")
	}
	want = append(want, "revision 0 (dry run)")
	if got := lines(r.stdout); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("import --dry-run:\n%s\nwant:\n%s", r.stdout, strings.Join(want, "\n"))
	}
	if rev := cp.revision(t); rev != "0" {
		t.Fatalf("import --dry-run committed: revision %s", rev)
	}

	// The import: one Apply, one revision.
	r = cp.ok(t, "import", file, "--namespace", "dev", "--endpoint", "dev")
	if got := lines(r.stdout); strings.Join(got, "\n") != strings.Join(append(created, "revision 1"), "\n") {
		t.Errorf("import:\n%s", r)
	}
	if !strings.Contains(r.stderr, "mmctl create apikey NAME --endpoint dev") {
		t.Errorf("import does not say what to do next:\n%s", r)
	}
	for _, s := range importSecrets {
		if strings.Contains(r.stdout+r.stderr, s) {
			t.Errorf("import printed a secret:\n%s", r)
		}
	}

	// Servers as the client config had them, env and header values secret.
	r = cp.ok(t, "get", "servers")
	for _, want := range []string{
		"filesystem stdio npx -y @modelcontextprotocol/server-filesystem /Users/ali...",
		"github stdio npx -y @modelcontextprotocol/server-github",
		"linear sse https://mcp.linear.app/sse",
		"postgres stdio docker run -i --rm -e DATABASE_URL mcp/postgres",
	} {
		found := false
		for _, l := range lines(r.stdout) {
			if strings.HasPrefix(strings.Join(strings.Fields(l), " "), want+" ") {
				found = true
			}
		}
		if !found {
			t.Errorf("get servers lacks a row starting %q:\n%s", want, r.stdout)
		}
	}
	secretFields := map[string]string{
		"github":   "GITHUB_PERSONAL_ACCESS_TOKEN=<set>",
		"postgres": "DATABASE_URL=<set>",
		"linear":   "Authorization=<set>",
	}
	for server, want := range secretFields {
		if r := cp.ok(t, "describe", "server", server); !strings.Contains(r.stdout, want) {
			t.Errorf("describe server %s lacks %q:\n%s", server, want, r.stdout)
		}
	}
	var gh struct {
		Stdio struct {
			Env map[string]struct {
				Value  string `json:"value"`
				Secret bool   `json:"secret"`
				Set    bool   `json:"set"`
			} `json:"env"`
		} `json:"stdio"`
	}
	r = cp.ok(t, "get", "server", "github", "-o", "json")
	if err := json.Unmarshal([]byte(r.stdout), &gh); err != nil {
		t.Fatal(err)
	}
	if v := gh.Stdio.Env["GITHUB_PERSONAL_ACCESS_TOKEN"]; !v.Secret || !v.Set || v.Value != "" {
		t.Errorf("the imported token is not a stored secret: %+v", v)
	}

	// The namespace holds every server, each prefixed by its name; the
	// endpoint serves it.
	r = cp.ok(t, "get", "ns", "dev")
	if !strings.Contains(r.stdout, "github,filesystem,postgres,linear") {
		t.Errorf("get ns dev:\n%s", r.stdout)
	}
	r = cp.ok(t, "describe", "ns", "dev")
	if strings.Count(r.stdout, "Prefix:") != 4 || !strings.Contains(r.stdout, "Prefix:       linear") {
		t.Errorf("describe ns dev:\n%s", r.stdout)
	}
	if r := cp.ok(t, "get", "ep", "dev"); !strings.Contains(r.stdout, "dev    dev") {
		t.Errorf("get ep dev:\n%s", r.stdout)
	}

	// Importing again changes nothing.
	r = cp.ok(t, "import", file, "--namespace", "dev", "--endpoint", "dev")
	checkAllUnchanged(t, r, "1")

	// An endpoint without --namespace gets a namespace of its own name;
	// stdin works.
	r = cp.okIn(t, testdata(t, "claude_desktop_config.json"), "import", "-", "--endpoint", "all")
	if got := lines(r.stdout); len(got) != 7 || got[4] != "namespace/all created" || got[5] != "endpoint/all created" || got[6] != "revision 2" {
		t.Errorf("import - --endpoint all:\n%s", r)
	}
	if r := cp.ok(t, "get", "ep", "all"); !strings.Contains(r.stdout, "all    all") {
		t.Errorf("get ep all:\n%s", r.stdout)
	}

	// With --no-prefix, one server keeps its tool names; several would
	// collide, and mmctl says what to do before asking the control plane.
	r = cp.okIn(t, `{"mcpServers": {"time": {"command": "uvx", "args": ["mcp-server-time"]}}}`, "import", "-", "--namespace", "solo", "--no-prefix")
	if got := lines(r.stdout); len(got) != 3 || got[1] != "namespace/solo created" || got[2] != "revision 3" {
		t.Errorf("import of one server without prefixes:\n%s", r)
	}
	if r := cp.ok(t, "get", "ns", "solo"); !strings.Contains(r.stdout, "time:") {
		t.Errorf("get ns solo:\n%s", r.stdout)
	}
	cp.fail(t, 2, []string{"holds 4 servers", "drop --no-prefix"}, "import", file, "--namespace", "flat", "--no-prefix")

	// Usage and input errors.
	cp.fail(t, 2, []string{"--no-prefix needs --namespace"}, "import", file, "--no-prefix")
	cp.fail(t, 2, []string{"import takes one FILE"}, "import", "a.json", "b.json")
	r = cp.mmctlIn(t, `{"mcpServers": `, "import", "-")
	checkFailure(t, r, 1, []string{"stdin"})
	if rev := cp.revision(t); rev != "3" {
		t.Errorf("failed imports changed the revision to %s", rev)
	}
}
