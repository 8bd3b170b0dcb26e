package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// configChanges are what applying testdata/config.yaml to an empty control
// plane reports, in order.
var configChanges = []string{
	"server/github",
	"server/sentry",
	"server/legacy",
	"ratelimit/per-user",
	"namespace/dev",
	"endpoint/dev",
}

// wantApply checks apply output: one line per resource with the action, then
// the revision line.
func wantApply(t *testing.T, r result, actions []string, revision string, dryRun bool) {
	t.Helper()
	suffix := ""
	if dryRun {
		suffix = " (dry run)"
	}
	want := make([]string, 0, len(actions)+1)
	for i, a := range actions {
		want = append(want, configChanges[i]+" "+a+suffix)
	}
	want = append(want, "revision "+revision+suffix)
	if got := lines(r.stdout); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("apply output:\n%s\nwant:\n%s\n\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"), r)
	}
}

func repeat(s string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = s
	}
	return out
}

// TestApply applies a multi-document YAML, re-applies it, round-trips it
// through export, and checks that --dry-run commits nothing.
func TestApply(t *testing.T) {
	t.Parallel()
	cp := startControlPlane(t)
	config := filepath.Join("testdata", "config.yaml")

	// A dry run on an empty control plane: all "created", nothing committed.
	r := cp.ok(t, "apply", "-f", config, "--dry-run")
	wantApply(t, r, repeat("created", 6), "0", true)
	if rev := cp.revision(t); rev != "0" {
		t.Fatalf("--dry-run committed: revision %s", rev)
	}
	cp.fail(t, 1, []string{`server "github" not found`}, "get", "server", "github")

	// The real apply: one revision for the whole file.
	r = cp.ok(t, "apply", "-f", config)
	wantApply(t, r, repeat("created", 6), "1", false)
	if r := cp.ok(t, "get", "servers"); len(lines(r.stdout)) != 4 {
		t.Errorf("get servers after apply:\n%s", r.stdout)
	}
	if r := cp.ok(t, "describe", "server", "github"); !strings.Contains(r.stdout, "GITHUB_PERSONAL_ACCESS_TOKEN=<set>") ||
		!strings.Contains(r.stdout, "1m30s") {
		t.Errorf("describe an applied server:\n%s", r.stdout)
	}

	// Re-apply: every line unchanged, revision unchanged.
	r = cp.ok(t, "apply", "-f", config)
	wantApply(t, r, repeat("unchanged", 6), "1", false)

	// export -> apply is a no-op, in YAML and in JSON, through stdin and a file.
	exported := cp.ok(t, "export").stdout
	if !strings.HasPrefix(exported, "# MetaMCP config exported from "+cp.addr+" at revision 1.\n") {
		t.Errorf("export header:\n%s", exported)
	}
	for _, secret := range []string{"ghp_e2eExampleNotARealToken0000", "sntrys_e2eExampleNotARealToken"} {
		if strings.Contains(exported, secret) {
			t.Errorf("export shows a secret:\n%s", exported)
		}
	}
	r = cp.okIn(t, exported, "apply", "-f", "-")
	checkAllUnchanged(t, r, "1")
	exportedJSON := cp.ok(t, "export", "-o", "json").stdout
	if !strings.HasPrefix(exportedJSON, "[\n") {
		t.Errorf("export -o json:\n%s", exportedJSON)
	}
	jsonFile := filepath.Join(t.TempDir(), "export.json")
	if err := os.WriteFile(jsonFile, []byte(exportedJSON), 0o600); err != nil {
		t.Fatal(err)
	}
	r = cp.ok(t, "apply", "-f", jsonFile)
	checkAllUnchanged(t, r, "1")
	if again := cp.ok(t, "export").stdout; again != exported {
		t.Errorf("export changed after applying the export:\n%s\nwas:\n%s", again, exported)
	}

	// A change: dry run shows it without committing; then it commits as one
	// revision with the changed fields named.
	changed := strings.NewReplacer(
		"rate: 60", "rate: 120",
		"description: Everything a developer needs", "description: Everything a developer wants",
	).Replace(testdata(t, "config.yaml"))
	r = cp.okIn(t, changed, "apply", "-f", "-", "--dry-run")
	wantApply(t, r, []string{"unchanged", "unchanged", "unchanged", "configured (fields: rate)", "configured (fields: description)", "unchanged"}, "1", true)
	if rev := cp.revision(t); rev != "1" {
		t.Fatalf("--dry-run of a change committed: revision %s", rev)
	}
	if r := cp.ok(t, "describe", "rl", "per-user"); !strings.Contains(r.stdout, "60/1m") {
		t.Errorf("--dry-run changed the policy:\n%s", r.stdout)
	}
	r = cp.okIn(t, changed, "apply", "-f", "-")
	wantApply(t, r, []string{"unchanged", "unchanged", "unchanged", "configured (fields: rate)", "configured (fields: description)", "unchanged"}, "2", false)
	if r := cp.ok(t, "describe", "rl", "per-user"); !strings.Contains(r.stdout, "120/1m") {
		t.Errorf("apply did not change the policy:\n%s", r.stdout)
	}

	// A directory: every *.yaml, *.yml and *.json in it, other files ignored.
	dir := t.TempDir()
	docs := strings.Split(changed, "\n---\n")
	if len(docs) != 6 {
		t.Fatalf("testdata/config.yaml has %d documents, want 6", len(docs))
	}
	files := map[string]string{
		"1-servers.yaml":  strings.Join(docs[:3], "\n---\n"),
		"2-policies.yml":  docs[3],
		"3-rest.yaml":     strings.Join(docs[4:], "\n---\n"),
		"README.md":       "# not config\n",
		"scratch.yaml~":   "not: [valid",
		"4-empty.yaml":    "# nothing yet\n",
		"5-extra.json":    `{"kind": "Server", "name": "extra", "stdio": {"command": "uvx", "args": ["mcp-server-time"]}}`,
		"6-notes.txt.bak": "ignored",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	r = cp.ok(t, "apply", "-f", dir)
	if got := lines(r.stdout); len(got) != 8 || got[6] != "server/extra created" || got[7] != "revision 3" {
		t.Errorf("apply -f DIR:\n%s", r)
	}
	checkAllUnchanged(t, cp.ok(t, "apply", "-f", dir), "3")

	// Several -f at once, and an invalid resource among valid ones: nothing
	// of the bundle is committed.
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("kind: Namespace\nname: broken\nmembers: [{server: missing}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	newServer := filepath.Join(t.TempDir(), "new.yaml")
	if err := os.WriteFile(newServer, []byte("kind: Server\nname: newer\nstdio: {command: uvx}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r = cp.fail(t, 1, []string{"invalid config:", "Namespace/broken", "missing"}, "apply", "-f", newServer, "-f", bad)
	if rev := cp.revision(t); rev != "3" {
		t.Errorf("a failed apply committed: revision %s", rev)
	}
	cp.fail(t, 1, []string{`server "newer" not found`}, "get", "server", "newer")
}

// checkAllUnchanged asserts every apply line says unchanged and the revision
// is rev.
func checkAllUnchanged(t *testing.T, r result, rev string) {
	t.Helper()
	got := lines(r.stdout)
	if len(got) < 2 || got[len(got)-1] != "revision "+rev {
		t.Errorf("want revision %s:\n%s", rev, r)
		return
	}
	for _, l := range got[:len(got)-1] {
		if !strings.HasSuffix(l, " unchanged") {
			t.Errorf("line %q is not unchanged:\n%s", l, r)
		}
	}
}

// TestWarnings: a write that works but will likely hurt succeeds and says so
// on stderr, once, whether it came from a create or an apply.
func TestWarnings(t *testing.T) {
	t.Parallel()
	cp := startControlPlane(t)
	r := cp.okIn(t, "tok\n", "create", "server", "api", "--url", "https://mcp.example.com/mcp",
		"--secret-header", "Authorization=Bearer other", "--bearer-token-stdin")
	if r.stdout != "server/api created (revision 1)\n" || !strings.HasPrefix(r.stderr, "warning: ") ||
		!strings.Contains(r.stderr, "bearerToken is set too") || len(lines(r.stderr)) != 1 {
		t.Errorf("create with a warning:\n%s", r)
	}

	r = cp.okIn(t, `kind: Namespace
name: ns
members: [{server: api}]
---
kind: Endpoint
name: closed
namespace: ns
transports: {disableStreamableHttp: true, disableSse: true}
`, "apply", "-f", "-")
	if got := lines(r.stdout); len(got) != 3 || got[2] != "revision 2" {
		t.Errorf("apply with a warning:\n%s", r)
	}
	if !strings.HasPrefix(r.stderr, "warning: ") || !strings.Contains(r.stderr, `endpoint "closed": transports:`) ||
		!strings.Contains(r.stderr, "no client can connect") {
		t.Errorf("apply with a warning:\n%s", r)
	}
	for _, l := range lines(r.stderr) {
		if strings.Count(r.stderr, l) != 1 {
			t.Errorf("a warning is printed twice:\n%s", r.stderr)
		}
	}
}
