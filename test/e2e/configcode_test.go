package e2e

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/metamcp/metamcp/internal/testharness"
	"github.com/metamcp/metamcp/test/fixtures/fixture"
)

// secretsConfig is a config whose secrets come from mmctl's environment and
// from a file next to it: the file itself holds none. %s is the fixture.
const secretsConfig = `kind: Server
name: vault
stdio:
  command: %s
  args: [--transport, stdio, --name, vault, --tools, getenv]
  env:
    FROM_ENV: {secret: true, fromEnv: CC_E2E_TOKEN}
    FROM_FILE: {secret: true, fromFile: token.txt}
---
kind: Namespace
name: cc
members: [{server: vault}]
---
kind: Endpoint
name: cc
namespace: cc
`

// TestSecretReferences applies one file with fromEnv and fromFile secrets to
// a control plane on Postgres and to `metamcp dev` on SQLite; through each,
// the upstream gets the values, and the file holds neither.
func TestSecretReferences(t *testing.T) {
	t.Parallel()
	fx := fixture.Build(t)
	envSecret, fileSecret := "env-"+randomHex(t, 8), "file-"+randomHex(t, 8)
	dir := t.TempDir()
	config := filepath.Join(dir, "metamcp.yaml")
	if err := writeFile(config, strings.Replace(secretsConfig, "%s", fx, 1)); err != nil {
		t.Fatal(err)
	}
	if err := writeFile(filepath.Join(dir, "token.txt"), fileSecret+"\n"); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(config); strings.Contains(string(b), envSecret) || strings.Contains(string(b), fileSecret) {
		t.Fatal("the config file holds a secret")
	}

	check := func(t *testing.T, env []string, dataPlane string) {
		r := runMmctl(t, append(env, "CC_E2E_TOKEN="+envSecret), "", "apply", "-f", config)
		if r.code != 0 || !strings.Contains(r.stdout, "server/vault created") {
			t.Fatalf("apply:\n%s", r)
		}
		// Without the variable, apply says which one is missing.
		r = runMmctl(t, env, "", "apply", "-f", config)
		if r.code != 1 || !strings.Contains(r.stderr, `stdio.env["FROM_ENV"]: fromEnv: $CC_E2E_TOKEN is not set`) {
			t.Errorf("apply without the variable:\n%s", r)
		}
		// Applying again with the same values changes nothing.
		r = runMmctl(t, append(env, "CC_E2E_TOKEN="+envSecret), "", "apply", "-f", config)
		if r.code != 0 || !strings.Contains(r.stdout, "server/vault unchanged") {
			t.Errorf("apply again:\n%s", r)
		}
		r = runMmctl(t, env, "", "create", "apikey", "cc-key", "--endpoint", "cc", "-o", "json")
		key := regexp.MustCompile(`"key":\s*"(mm_[^"]+)"`).FindStringSubmatch(r.stdout)
		if r.code != 0 || key == nil {
			t.Fatalf("create apikey:\n%s", r)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		client := mcp.NewClient(&mcp.Implementation{Name: "e2e-cc", Version: "v0"}, nil)
		var cs *mcp.ClientSession
		eventually(t, "the endpoint to serve", func() (bool, string) {
			var err error
			cs, err = client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: dataPlane + "/metamcp/cc/mcp",
				HTTPClient: &http.Client{Transport: bearer{key: key[1]}}}, nil)
			if err != nil {
				return false, err.Error()
			}
			return true, ""
		})
		defer cs.Close()
		if got := callText(ctx, t, cs, "vault__getenv", map[string]any{"name": "FROM_ENV"}); got != envSecret {
			t.Errorf("FROM_ENV upstream = %q, want the value of $CC_E2E_TOKEN", got)
		}
		if got := callText(ctx, t, cs, "vault__getenv", map[string]any{"name": "FROM_FILE"}); got != fileSecret {
			t.Errorf("FROM_FILE upstream = %q, want the content of token.txt", got)
		}
	}
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		cp := startControlPlane(t)
		dp := startDataPlane(t, cp, "dp-cc")
		check(t, []string{"METAMCP_ADDR=" + cp.addr, "METAMCP_TOKEN=" + cp.token}, "http://"+dp.addr)
	})
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		env, dataPlane := startDev(t)
		check(t, env, dataPlane)
	})
}

var devDataPlane = regexp.MustCompile(`Data plane:\s+(http://\S+)`)

// startDev runs `metamcp dev` (SQLite) and returns mmctl's environment for
// it and its data plane's base URL.
func startDev(t *testing.T) ([]string, string) {
	t.Helper()
	out := runDev(t).Output
	m, d := devExport.FindStringSubmatch(out.String()), devDataPlane.FindStringSubmatch(out.String())
	if m == nil || d == nil {
		t.Fatalf("the banner lacks the export line or the data plane:\n%s", out)
	}
	return []string{"METAMCP_ADDR=" + m[1], "METAMCP_TOKEN=" + m[2]}, d[1]
}

// runDev runs `metamcp dev` on free loopback ports with its state in a temp
// dir, until the test ends (SIGTERM, and a failure if it does not stop
// within 15 s), and returns it once it printed its banner.
func runDev(t *testing.T) *testharness.Proc {
	t.Helper()
	cmd := exec.Command(metamcpBin, "dev", "--data-dir", filepath.Join(t.TempDir(), "state"),
		"--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0")
	cmd.Env = baseEnv(t)
	p := testharness.Start(t, "metamcp dev", cmd)
	p.Await(t, "the dev banner", waitTimeout, func(string) bool { return strings.Contains(p.Stdout.String(), "Stop with Ctrl-C") })
	return p
}

// TestPruneEditDelete drives day-two work with mmctl: apply --prune (scoped
// by managedBy, references checked first), edit with a scripted $EDITOR,
// delete -f.
func TestPruneEditDelete(t *testing.T) {
	t.Parallel()
	cp := startControlPlane(t)
	dir := t.TempDir()
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := writeFile(p, content); err != nil {
			t.Fatal(err)
		}
		return p
	}
	const servers = "kind: Server\nname: keep\nstdio: {command: uvx, args: [keep]}\n---\nkind: Server\nname: drop\nstdio: {command: uvx, args: [drop]}\n---\n"
	full := file("full.yaml", servers+"kind: Namespace\nname: ns\nmembers: [{server: keep}, {server: drop}]\n")
	cp.ok(t, "apply", "-f", full)
	cp.ok(t, "create", "server", "by-hand", "--stdio", "uvx by-hand")
	if r := cp.ok(t, "describe", "server", "keep"); !strings.Contains(r.stdout, "Managed by:") || !strings.Contains(r.stdout, "apply") {
		t.Errorf("describe shows no managedBy:\n%s", r.stdout)
	}

	// drop leaves the file, but the namespace the file keeps still uses it.
	stillUsed := file("still-used.yaml", "kind: Server\nname: keep\nstdio: {command: uvx, args: [keep]}\n---\nkind: Namespace\nname: ns\nmembers: [{server: keep}, {server: drop}]\n")
	rev := cp.revision(t)
	cp.fail(t, 1, []string{`Server/drop: cannot be pruned: still used by namespace "ns"`}, "apply", "-f", stillUsed, "--prune")
	if cp.revision(t) != rev {
		t.Fatal("a refused prune committed")
	}

	// The namespace lets go of it: prune deletes drop, never by-hand.
	pruned := file("pruned.yaml", "kind: Server\nname: keep\nstdio: {command: uvx, args: [keep]}\n---\nkind: Namespace\nname: ns\nmembers: [{server: keep}]\n")
	r := cp.ok(t, "apply", "-f", pruned, "--prune", "--dry-run")
	want := "server/keep unchanged (dry run)\nnamespace/ns configured (fields: members) (dry run)\nserver/drop deleted (dry run)\nrevision " + rev + " (dry run)\n"
	if r.stdout != want {
		t.Errorf("apply --prune --dry-run:\n%s\nwant:\n%s", r.stdout, want)
	}
	cp.ok(t, "get", "server", "drop")
	r = cp.ok(t, "apply", "-f", pruned, "--prune")
	if !strings.Contains(r.stdout, "server/drop deleted\n") {
		t.Errorf("apply --prune:\n%s", r)
	}
	cp.fail(t, 1, []string{`server "drop" not found`}, "get", "server", "drop")
	cp.ok(t, "get", "server", "by-hand")
	// Another source's prune leaves this one's resources alone.
	other := file("other.yaml", "kind: Server\nname: theirs\nstdio: {command: uvx}\n")
	cp.ok(t, "apply", "-f", other, "--prune", "--managed-by", "team-b")
	cp.ok(t, "get", "server", "keep")

	// edit, with an editor scripted by $EDIT_MODE; $EDIT_STATE counts its runs.
	editor := file("editor.sh", `#!/bin/sh
n=$(cat "$EDIT_STATE" 2>/dev/null || echo 0); n=$((n+1)); echo $n > "$EDIT_STATE"
case "$EDIT_MODE-$n" in
  valid-1) printf 'description: edited in place\n' >> "$1" ;;
  invalid-1) printf 'sessionMode: sometimes\n' >> "$1" ;;
  invalid-2) grep -q 'unknown value "sometimes": use shared or per_client' "$1" || exit 3
             sed -i 's/sessionMode: sometimes/sessionMode: per-client/' "$1" ;;
  fail-1) printf 'sessionMode: sometimes\n' >> "$1" ;;
esac
`)
	if err := os.Chmod(editor, 0o700); err != nil {
		t.Fatal(err)
	}
	edit := func(mode string, args ...string) result {
		state := filepath.Join(t.TempDir(), "state")
		return runMmctl(t, []string{"METAMCP_ADDR=" + cp.addr, "METAMCP_TOKEN=" + cp.token,
			"EDITOR=" + editor, "EDIT_MODE=" + mode, "EDIT_STATE=" + state}, "", append([]string{"edit"}, args...)...)
	}
	rev = cp.revision(t)
	if r := edit("unchanged", "server", "keep"); r.code != 0 || !strings.Contains(r.stderr, "edit cancelled: no changes") || cp.revision(t) != rev {
		t.Errorf("edit, unchanged:\n%s", r)
	}
	if r := edit("valid", "server", "keep"); r.code != 0 || !strings.Contains(r.stdout, "server/keep configured (fields: description)") {
		t.Errorf("edit, valid:\n%s", r)
	}
	if r := cp.ok(t, "describe", "server", "keep"); !strings.Contains(r.stdout, "edited in place") || !strings.Contains(r.stdout, "apply") {
		t.Errorf("the edit is not applied, or lost managedBy:\n%s", r.stdout)
	}
	if r := edit("invalid", "server", "keep"); r.code != 0 || !strings.Contains(r.stderr, "reopening the file") ||
		!strings.Contains(r.stdout, "server/keep configured (fields: sessionMode)") {
		t.Errorf("edit, invalid then fixed:\n%s", r)
	}
	if r := cp.ok(t, "get", "server", "keep"); !strings.Contains(r.stdout, "per_client") {
		t.Errorf("the fixed edit is not applied:\n%s", r.stdout)
	}
	rev = cp.revision(t)
	if r := edit("fail", "server", "keep"); r.code != 1 || !strings.Contains(r.stderr, "edit cancelled") || cp.revision(t) != rev {
		t.Errorf("edit, invalid and left so:\n%s", r)
	}
	cp.fail(t, 1, []string{"already exists: change it with mmctl edit server keep"}, "create", "server", "keep", "--stdio", "uvx keep")

	// delete -f: all or nothing.
	cp.fail(t, 1, []string{`Server/keep: cannot be deleted: still used by namespace "ns"`}, "delete", "-f", file("keep.yaml", "kind: Server\nname: keep\n"))
	r = cp.ok(t, "delete", "-f", pruned)
	if !strings.Contains(r.stdout, "server/keep deleted\nnamespace/ns deleted\n") {
		t.Errorf("delete -f:\n%s", r)
	}
	cp.fail(t, 1, []string{`server "keep" not found`}, "get", "server", "keep")
}

// TestRoundTripEveryKind: export -> apply -> export is the same bytes, and a
// hand-written file that writes or omits defaults changes nothing, for every
// kind.
func TestRoundTripEveryKind(t *testing.T) {
	t.Parallel()
	cp := startControlPlane(t)
	const omitted = `kind: Server
name: fs
stdio: {command: uvx, args: [mcp-server-fs]}
---
kind: Server
name: web
streamableHttp: {url: "https://mcp.example.com/mcp", bearerToken: {secret: true, value: tok}}
sessionMode: per_client
---
kind: Namespace
name: dev
members: [{server: fs}, {server: web, prefix: w}]
---
kind: RateLimitPolicy
name: per-user
rate: 10
---
kind: Endpoint
name: dev
namespace: dev
rateLimits: [per-user]
`
	written := strings.NewReplacer(
		"stdio: {command: uvx, args: [mcp-server-fs]}", "stdio: {command: uvx, args: [mcp-server-fs]}\nsessionMode: SHARED",
		"members: [{server: fs}, {server: web, prefix: w}]", "members: [{server: fs}, {server: web, prefix: w}]\nseparator: \"__\"",
		"rate: 10", "rate: 10\nperiod: 60s\nkey: principal\nonRedisFailure: RATE_LIMIT_FAILURE_MODE_OPEN",
	).Replace(omitted)
	cp.okIn(t, written, "apply", "-f", "-")
	rev := cp.revision(t)
	checkAllUnchanged(t, cp.okIn(t, omitted, "apply", "-f", "-"), rev)
	exported := cp.ok(t, "export").stdout
	for _, bad := range []string{"SHARED", "separator", "period", "key:", "onRedisFailure", "tok"} {
		if strings.Contains(exported, bad) {
			t.Errorf("the export holds %q:\n%s", bad, exported)
		}
	}
	if !strings.Contains(exported, "sessionMode: per_client") {
		t.Errorf("the export lacks sessionMode: per_client:\n%s", exported)
	}
	checkAllUnchanged(t, cp.okIn(t, exported, "apply", "-f", "-"), rev)
	if again := cp.ok(t, "export").stdout; again != exported {
		t.Errorf("export -> apply -> export differs:\n%s\nwas:\n%s", again, exported)
	}
	if r := cp.ok(t, "get", "server", "web", "-o", "json"); !strings.Contains(r.stdout, `"sessionMode": "per_client"`) {
		t.Errorf("get -o json spells the enum otherwise:\n%s", r.stdout)
	}
}
