package e2e

import (
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/metamcp/metamcp/internal/testharness"
)

// TestSyncRealProcesses runs one control plane and three data planes as
// processes and walks config sync through its life: ACKs from all, a partial
// ACK from the one data plane that may not run a server of a snapshot, a
// control-plane crash and restart on the same port (data planes keep
// serving, a restarted data plane serves its cache, everyone converges, the
// registry loses nothing), and a revoked sync token.
func TestSyncRealProcesses(t *testing.T) {
	cp := startControlPlane(t)
	dp1 := startDataPlane(t, cp, "dp-1", "--stdio-allow", "npx ...,/bin/sh")
	dp2 := startDataPlane(t, cp, "dp-2", "--stdio-allow", "npx ...,/bin/sh")
	// dp-3 may run npx with packages of @modelcontextprotocol only, and node:
	// a snapshot with another stdio command or package is one it cannot
	// serve whole. dp-1 and dp-2 run npx with any arguments and /bin/sh.
	dp3 := startDataPlane(t, cp, "dp-3", "--stdio-allow", "npx -y @modelcontextprotocol/server-*,node ...")
	all := []*dataPlane{dp1, dp2, dp3}

	// A change made with mmctl is ACKed by all three.
	cp.ok(t, "create", "server", "github", "--stdio", "npx -y @modelcontextprotocol/server-github")
	rev1 := cp.revisionNum(t)
	waitApplied(t, cp, rev1, all...)
	table := cp.ok(t, "get", "dataplanes").stdout
	for _, dp := range all {
		if !lineWith(table, dp.node, " ok") {
			t.Errorf("mmctl get dataplanes does not show %s as ok:\n%s", dp.node, table)
		}
	}

	// Servers dp-3 may not run (a command, an argument outside its pattern)
	// and one no data plane runs without --stdio-allow-env (LD_PRELOAD): each
	// is left out with its reason, the rest is applied and served.
	cp.ok(t, "create", "server", "shell", "--stdio", "/bin/sh")
	cp.ok(t, "create", "server", "other", "--stdio", "npx -y other-package")
	cp.ok(t, "create", "server", "preload", "--stdio", "npx -y @modelcontextprotocol/server-memory", "--env", "LD_PRELOAD=/tmp/evil.so")
	rev2 := cp.revisionNum(t)
	waitApplied(t, cp, rev2, all...)
	reasons := map[string]map[string]string{
		"dp-1": {"preload": "LD_PRELOAD changes what the process loads"},
		"dp-2": {"preload": "LD_PRELOAD changes what the process loads"},
		"dp-3": {
			"shell":   `stdio command "/bin/sh" is not allowed`,
			"other":   `arguments of stdio command "npx" match no --stdio-allow pattern`,
			"preload": "LD_PRELOAD changes what the process loads",
		},
	}
	for node, want := range reasons {
		eventually(t, node+" reports the servers it leaves out", func() (bool, string) {
			reg, current := cp.dataPlanes(t)
			d := reg[node]
			if d == nil || len(d.GetRefusedServers()) != len(want) {
				return false, describeDataPlanes(reg, current)
			}
			for _, r := range d.GetRefusedServers() {
				if w, ok := want[r.GetServer()]; !ok || !strings.Contains(r.GetReason(), w) {
					return false, describeDataPlanes(reg, current)
				}
			}
			return true, ""
		})
	}
	table = cp.ok(t, "get", "dataplanes").stdout
	if !lineWith(table, "dp-3", "partial: ", "/bin/sh") || !lineWith(table, "dp-1", "partial: preload: ", "LD_PRELOAD") {
		t.Errorf("mmctl get dataplanes does not show the servers left out:\n%s", table)
	}
	for _, dp := range all {
		if rz := dp.readyz(t); rz.code != http.StatusOK || rz.revision != rev2 || !strings.Contains(rz.body, "server preload left out: ") {
			t.Errorf("%s /readyz = %d revision %d, want 200 serving %d without preload:\n%s", dp.node, rz.code, rz.revision, rev2, rz.body)
		}
	}
	if !strings.Contains(dp3.logs.String(), "applied snapshot without the servers this data plane may not run") {
		t.Errorf("dp-3 does not log the servers it leaves out:\n%s", dp3.logs)
	}

	// Without them every data plane serves the whole config again.
	cp.ok(t, "delete", "server", "shell")
	cp.ok(t, "delete", "server", "other")
	cp.ok(t, "delete", "server", "preload")
	rev3 := cp.revisionNum(t)
	waitApplied(t, cp, rev3, all...)
	reg, _ := cp.dataPlanes(t)
	for _, dp := range all {
		if d := reg[dp.node]; len(d.GetRefusedServers()) != 0 || d.GetLastError() != "" {
			t.Errorf("%s still shows refused servers %v / error %q after applying revision %d", dp.node, d.GetRefusedServers(), d.GetLastError(), rev3)
		}
	}

	// The control plane crashes: data planes keep serving rev3.
	cpAddr := cp.addr
	cp.kill(t)
	for _, dp := range all {
		eventually(t, dp.node+" notices the control plane is gone", func() (bool, string) {
			rz := dp.readyz(t)
			return rz.code == http.StatusOK && rz.revision == rev3 && strings.Contains(rz.body, "unreachable"), rz.body
		})
	}
	// A data plane restarted while the control plane is down serves its cache.
	dp2.stop(t)
	dp2.launch(t)
	if rz := dp2.readyz(t); rz.code != http.StatusOK || rz.revision != rev3 {
		t.Fatalf("dp-2 restarted with the control plane down: /readyz = %d %q, want 200 serving its cached revision %d\nlogs:\n%s", rz.code, rz.body, rev3, dp2.logs)
	}

	// The control plane comes back on the same port: nothing is lost.
	cp.launch(t, cpAddr)
	reg, current := cp.dataPlanes(t)
	if current != rev3 {
		t.Errorf("control plane restarted at revision %d, want %d", current, rev3)
	}
	for _, dp := range all {
		if reg[dp.node] == nil {
			t.Errorf("registry lost %s across the control-plane restart:\n%s", dp.node, describeDataPlanes(reg, current))
		}
	}
	cp.ok(t, "get", "server", "github")
	waitApplied(t, cp, rev3, all...)
	cp.ok(t, "create", "server", "sentry", "--url", "https://mcp.sentry.dev/mcp")
	rev4 := cp.revisionNum(t)
	waitApplied(t, cp, rev4, all...)

	// Revoking dp-1's token closes its stream; it gets no later revision.
	cp.ok(t, "revoke", "token", "dp-1")
	cp.ok(t, "create", "server", "linear", "--url", "https://mcp.linear.app/mcp")
	rev5 := cp.revisionNum(t)
	waitApplied(t, cp, rev5, dp2, dp3)
	eventually(t, "dp-1 disconnected after its token was revoked", func() (bool, string) {
		reg, current := cp.dataPlanes(t)
		d := reg["dp-1"]
		return d != nil && !d.GetConnected(), describeDataPlanes(reg, current)
	})
	// dp-1 tries again (a refused token is retried): once the control
	// plane has refused it a second time (the first closed its stream), it
	// has reconnected at least once and could (wrongly) have synced.
	eventually(t, "dp-1 refused when it reconnects", func() (bool, string) {
		return strings.Count(dp1.logs.String(), "the control plane refused the sync token") >= 2, testharness.Tail(dp1.logs.String(), 20)
	})
	reg, current = cp.dataPlanes(t)
	if d := reg["dp-1"]; d.GetConnected() || d.GetAppliedRevision() != rev4 {
		t.Errorf("dp-1 after revocation: connected=%v applied=%d, want disconnected at %d\n%s", d.GetConnected(), d.GetAppliedRevision(), rev4, describeDataPlanes(reg, current))
	}
	if rz := dp1.readyz(t); rz.code != http.StatusOK || rz.revision != rev4 {
		t.Errorf("dp-1 /readyz after revocation = %d %q, want 200 still serving revision %d", rz.code, rz.body, rev4)
	}
	table = cp.ok(t, "get", "dataplanes").stdout
	if !lineWith(table, "dp-1", " no ", "stale") {
		t.Errorf("mmctl get dataplanes does not show dp-1 as disconnected and stale:\n%s", table)
	}
}

// TestSyncLargeConfig applies a config of 10,000 tools' worth (200 servers,
// 50 described tool overrides each) and checks three data planes ACK it: the
// snapshot is far above gRPC's default 4 MiB message limit.
func TestSyncLargeConfig(t *testing.T) {
	cp := startControlPlane(t)
	dps := []*dataPlane{startDataPlane(t, cp, "dp-1"), startDataPlane(t, cp, "dp-2"), startDataPlane(t, cp, "dp-3")}

	const servers, tools = 200, 50
	desc := strings.Repeat("Looks up records in the upstream system and returns them as JSON. ", 7)
	var b strings.Builder
	for i := range servers {
		fmt.Fprintf(&b, "kind: Server\nname: s%03d\nstdio:\n  command: npx\n  args: [\"-y\", \"server-%03d\"]\n---\n", i, i)
	}
	b.WriteString("kind: Namespace\nname: big\nmembers:\n")
	for i := range servers {
		fmt.Fprintf(&b, "  - server: s%03d\n    toolOverrides:\n", i)
		for j := range tools {
			fmt.Fprintf(&b, "      tool_%02d: {description: %q}\n", j, fmt.Sprintf("%s (server %d, tool %d)", desc, i, j))
		}
	}
	file := writeTemp(t, "big.yaml", b.String())
	cp.ok(t, "apply", "-f", file)
	rev := cp.revisionNum(t)
	waitApplied(t, cp, rev, dps...)

	// The cache file is the snapshot's uncompressed protobuf encoding.
	for _, dp := range dps {
		fi, err := os.Stat(dp.cacheFile)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() <= 4<<20 {
			t.Errorf("%s: snapshot is %d bytes; the test needs more than 4 MiB to prove the limit is raised", dp.node, fi.Size())
		}
		t.Logf("%s applied revision %d: snapshot %.1f MiB", dp.node, rev, float64(fi.Size())/(1<<20))
	}
}

// lineWith reports whether one line of out contains every one of parts.
func lineWith(out string, parts ...string) bool {
	for _, l := range strings.Split(out, "\n") {
		ok := true
		for _, p := range parts {
			if !strings.Contains(l, p) {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

// writeTemp writes content to a file in a temp dir and returns its path.
func writeTemp(t *testing.T, name, content string) string {
	t.Helper()
	path := t.TempDir() + "/" + name
	if err := writeFile(path, content); err != nil {
		t.Fatal(err)
	}
	return path
}
