package e2e

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/metamcp/metamcp/internal/testharness"
)

// TestErrors gives every kind of invalid input and checks that a person gets
// a clear error (no raw gRPC text, no stack trace), the right exit code, and
// that nothing was committed.
func TestErrors(t *testing.T) {
	t.Parallel()
	cp := startControlPlane(t)
	cp.ok(t, "create", "server", "github", "--stdio", "npx -y @modelcontextprotocol/server-github")
	cp.ok(t, "create", "namespace", "dev", "--server", "github:gh")
	cp.ok(t, "create", "ratelimit", "per-user", "--rate", "10")
	cp.ok(t, "create", "endpoint", "dev", "--namespace", "dev", "--rate-limit", "per-user")
	before := cp.revision(t)

	tests := []struct {
		name string
		args []string
		code int
		// want are substrings of stderr; the first line is always checked
		// to start with "error: ".
		want []string
		// maxLines bounds stderr's length in lines.
		maxLines int
	}{
		{"unknown kind", []string{"get", "pods"}, 2,
			[]string{`unknown kind "pods"`, "servers, namespaces, endpoints, ratelimits, apikeys, tokens, dataplanes"}, 1},
		{"unknown kind to create", []string{"create", "pod", "x"}, 2, []string{`unknown kind "pod"`}, 1},
		{"unknown command", []string{"destroy", "server", "x"}, 2, []string{`unknown command "destroy"`}, 3},
		{"missing kind", []string{"get"}, 2, []string{"needs a kind"}, 1},
		{"missing name (create)", []string{"create", "server", "--stdio", "npx x"}, 2, []string{"needs a NAME"}, 1},
		{"missing name (describe)", []string{"describe", "server"}, 2, []string{"needs a NAME"}, 1},
		{"missing name (delete)", []string{"delete", "ns"}, 2, []string{"needs a NAME"}, 1},
		{"missing transport", []string{"create", "server", "x"}, 2, []string{"needs a transport", "--stdio", "--url"}, 1},
		{"invalid name", []string{"create", "server", "My_Server", "--stdio", "npx x"}, 1,
			[]string{`invalid server "My_Server":`, "\n  Server/My_Server: name:", "lowercase"}, 3},
		{"namespace referencing a missing server", []string{"create", "namespace", "broken", "--server", "nope"}, 1,
			[]string{`invalid namespace "broken":`, "\n  Namespace/broken: members[0].server:", `"nope"`}, 3},
		{"endpoint on a missing namespace", []string{"create", "endpoint", "e2", "--namespace", "nope"}, 1,
			[]string{`invalid endpoint "e2":`, "nope"}, 3},
		{"endpoint with a missing rate limit", []string{"create", "endpoint", "e3", "--namespace", "dev", "--rate-limit", "nope"}, 1,
			[]string{`invalid endpoint "e3":`, "nope"}, 3},
		{"already exists", []string{"create", "server", "github", "--stdio", "npx x"}, 1, []string{`server "github" already exists: change it with mmctl edit server github`}, 1},
		{"not found", []string{"get", "ns", "nope"}, 1, []string{`namespace "nope" not found`}, 1},
		{"invalid duration flag", []string{"create", "server", "x", "--stdio", "npx x", "--call-timeout", "5 minutes"}, 2,
			[]string{`invalid argument "5 minutes" for "--call-timeout"`}, 1},
		{"invalid period flag", []string{"create", "ratelimit", "x", "--rate", "1", "--per", "fortnight"}, 2, []string{`"--per"`}, 1},
		{"invalid number flag", []string{"create", "ratelimit", "x", "--rate", "many"}, 2, []string{`invalid argument "many" for "--rate"`}, 1},
		{"invalid enum flag", []string{"create", "server", "x", "--stdio", "npx x", "--session-mode", "pooled"}, 2, []string{"shared or per_client"}, 1},
		{"invalid expiry", []string{"create", "apikey", "k", "--endpoint", "dev", "--expires", "next week"}, 2, []string{"invalid --expires"}, 1},
		{"unknown flag", []string{"get", "servers", "--all-namespaces"}, 2, []string{"unknown flag: --all-namespaces"}, 1},
		{"invalid output", []string{"get", "servers", "-o", "wide"}, 2, []string{`invalid --output "wide"`}, 1},
		{"deleting a server still in use", []string{"delete", "server", "github"}, 1,
			[]string{`cannot delete server "github"`, `namespace "dev"`}, 1},
		{"deleting a namespace still in use", []string{"delete", "namespace", "dev"}, 1,
			[]string{`cannot delete namespace "dev"`, `endpoint "dev"`}, 1},
		{"deleting a rate limit still in use", []string{"delete", "rl", "per-user"}, 1,
			[]string{`cannot delete ratelimit "per-user"`, `endpoint "dev"`}, 1},
		{"deleting a token", []string{"delete", "token", "x"}, 2, []string{"mmctl revoke token"}, 1},
		{"malformed YAML", []string{"apply", "-f", filepath.Join("testdata", "malformed.yaml")}, 1,
			[]string{"malformed.yaml", "invalid YAML", "line 4"}, 1},
		{"unknown YAML field", []string{"apply", "-f", filepath.Join("testdata", "unknown_field.yaml")}, 1,
			[]string{"unknown_field.yaml", `unknown field "argz"`, `did you mean "args"`}, 1},
		{"missing file", []string{"apply", "-f", "testdata/no-such-file.yaml"}, 1, []string{"no-such-file.yaml", "no such file"}, 1},
		{"import of a file that is not mcpServers JSON", []string{"import", filepath.Join("testdata", "config.yaml")}, 1,
			[]string{"config.yaml"}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := cp.fail(t, tt.code, tt.want, tt.args...)
			if n := len(lines(r.stderr)); n > tt.maxLines {
				t.Errorf("stderr has %d lines, want at most %d:\n%s", n, tt.maxLines, r)
			}
		})
	}

	// Connection problems.
	t.Run("wrong token", func(t *testing.T) {
		r := runMmctl(t, []string{"METAMCP_ADDR=" + cp.addr, "METAMCP_TOKEN=not-the-token"}, "", "get", "servers")
		checkFailure(t, r, 1, []string{"the control plane refused the token: pass --token or set METAMCP_TOKEN"})
	})
	t.Run("no token", func(t *testing.T) {
		r := runMmctl(t, []string{"METAMCP_ADDR=" + cp.addr}, "", "get", "servers")
		checkFailure(t, r, 1, []string{"needs an admin token: pass --token or set METAMCP_TOKEN"})
	})
	t.Run("token flag beats the environment", func(t *testing.T) {
		r := runMmctl(t, []string{"METAMCP_ADDR=" + cp.addr, "METAMCP_TOKEN=not-the-token"}, "", "--token", cp.token, "get", "servers")
		if r.code != 0 {
			t.Errorf("want success:\n%s", r)
		}
	})
	t.Run("control plane not running", func(t *testing.T) {
		dead := testharness.LoopbackAddr(t)
		r := runMmctl(t, []string{"METAMCP_ADDR=" + dead, "METAMCP_TOKEN=x"}, "", "get", "servers")
		checkFailure(t, r, 1, []string{"cannot reach the control plane at " + dead, "connection refused",
			"is it running? (set --addr or METAMCP_ADDR)"})
		if n := len(lines(r.stderr)); n != 1 {
			t.Errorf("stderr has %d lines:\n%s", n, r)
		}
		// The default address, when nothing is set.
		r = runMmctl(t, []string{"METAMCP_TOKEN=x"}, "", "--addr", dead, "revision")
		checkFailure(t, r, 1, []string{"cannot reach the control plane at " + dead})
	})
	t.Run("invalid environment value", func(t *testing.T) {
		r := runMmctl(t, []string{"METAMCP_ADDR=" + cp.addr, "METAMCP_TOKEN=" + cp.token, "METAMCP_TIMEOUT=soon"}, "", "get", "servers")
		checkFailure(t, r, 2, []string{"METAMCP_TIMEOUT"})
	})

	if after := cp.revision(t); after != before {
		t.Errorf("failed commands changed the revision from %s to %s", before, after)
	}
	for _, args := range [][]string{{"get", "server", "my-server"}, {"get", "ns", "broken"}, {"get", "server", "x"}, {"get", "ep", "e2"}} {
		r := cp.mmctl(t, args...)
		if r.code != 1 || !strings.Contains(r.stderr, "not found") {
			t.Errorf("a failed create left something behind:\n%s", r)
		}
	}
}
