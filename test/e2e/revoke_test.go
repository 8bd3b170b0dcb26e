package e2e

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// TestRevocationReachesEveryReplica runs three data planes, one of which may
// not run the endpoint's server (--stdio-allow npx): it serves the rest of
// every snapshot, says so in mmctl get dataplanes, and answers a call to the
// server's tools with the reason. `mmctl revoke apikey` reaches all three:
// each refuses the key soon after (the figure is logged).
func TestRevocationReachesEveryReplica(t *testing.T) {
	cp := startControlPlane(t)
	dp1 := startDataPlane(t, cp, "dp-1")
	dp2 := startDataPlane(t, cp, "dp-2")
	dp3 := startDataPlane(t, cp, "dp-3", "--stdio-allow", "npx")
	all := []*dataPlane{dp1, dp2, dp3}

	cp.ok(t, "create", "server", "demo", "--command", metamcpBin, "--arg", "demo-server")
	cp.ok(t, "create", "namespace", "dev", "--server", "demo")
	cp.ok(t, "create", "endpoint", "dev", "--namespace", "dev")
	key := createAPIKey(t, cp, "alice", "dev")
	waitApplied(t, cp, cp.revisionNum(t), all...)

	table := cp.ok(t, "get", "dataplanes").stdout
	if !lineWith(table, "dp-3", "partial: demo: ", "is not allowed") || !lineWith(table, "dp-1", " ok") {
		t.Errorf("mmctl get dataplanes does not show dp-3 leaving out demo:\n%s", table)
	}

	if rz := dp3.readyz(t); !strings.Contains(rz.body, "server demo left out: ") {
		t.Errorf("dp-3 /readyz does not say it leaves demo out:\n%s", rz.body)
	}
	// dp-3 lists no tool of demo and names the reason when one is called.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "e2e", Version: "v0"}, nil).Connect(ctx, &mcp.StreamableClientTransport{
		Endpoint: "http://" + dp3.addr + "/metamcp/dev/mcp", HTTPClient: &http.Client{Transport: bearer{key: key}},
	}, nil)
	if err != nil {
		t.Fatalf("connect to dp-3: %v\n%s", err, dp3.logs)
	}
	defer cs.Close()
	if got := toolNames(ctx, t, cs); len(got) != 0 {
		t.Errorf("dp-3 lists %v, want no tool", got)
	}
	_, err = cs.CallTool(ctx, &mcp.CallToolParams{Name: "demo__echo", Arguments: map[string]any{"text": "x"}})
	if err == nil || !strings.Contains(err.Error(), `does not run server "demo"`) || !strings.Contains(err.Error(), "not allowed") {
		t.Errorf("dp-3 demo__echo: %v, want an error naming the server and the reason", err)
	}

	for _, dp := range all {
		if code := listStatus(t, dp, key); isRefusal(code) {
			t.Fatalf("%s refuses the key (HTTP %d) before it is revoked", dp.node, code)
		}
	}
	start := time.Now()
	cp.ok(t, "revoke", "apikey", "alice")
	returned := time.Now()
	refused := map[string]time.Duration{}
	deadline := returned.Add(waitTimeout)
	for len(refused) < len(all) {
		for _, dp := range all {
			if _, done := refused[dp.node]; !done && isRefusal(listStatus(t, dp, key)) {
				refused[dp.node] = time.Since(returned)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the revoked key is still accepted after %v; refused by %v", waitTimeout, refused)
		}
		time.Sleep(5 * time.Millisecond)
	}
	var slowest time.Duration
	for node, d := range refused {
		t.Logf("%s refuses the revoked key %v after mmctl returned", node, d.Round(time.Millisecond))
		slowest = max(slowest, d)
	}
	t.Logf("mmctl revoke apikey took %v; every data plane refused the key %v after it returned", returned.Sub(start).Round(time.Millisecond), slowest.Round(time.Millisecond))
	rev := cp.revisionNum(t)
	eventually(t, "dp-3 applies the revocation's revision without demo", func() (bool, string) {
		reg, current := cp.dataPlanes(t)
		d := reg["dp-3"]
		return d.GetAppliedRevision() == rev && len(d.GetRefusedServers()) == 1, describeDataPlanes(reg, current)
	})
}

// isRefusal says whether code refuses a credential (401, or 403 for an API
// key that is not valid, which must not start OAuth in clients).
func isRefusal(code int) bool {
	return code == http.StatusUnauthorized || code == http.StatusForbidden
}

// listStatus is the HTTP status of a tools/list outside any session on dp's
// endpoint dev with key: 400 (no session) once the key is accepted.
func listStatus(t *testing.T, dp *dataPlane, key string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, "http://"+dp.addr+"/metamcp/dev/mcp", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s: %v", dp.node, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestDataPlaneOfAnotherStore: a data plane serving revision 58 of one
// control plane's store is pointed at a control plane on a fresh store at a
// lower revision: it takes that store's config, logs why, and mmctl get
// dataplanes says what it had.
func TestDataPlaneOfAnotherStore(t *testing.T) {
	a := startControlPlane(t)
	dp := startDataPlane(t, a, "dp-1")
	for i := 0; a.revisionNum(t) < 58; i++ {
		a.ok(t, "create", "server", fmt.Sprintf("old-%d", i), "--stdio", "npx")
	}
	revA := a.revisionNum(t)
	waitApplied(t, a, revA, dp)
	dp.stop(t)
	a.stop(t)

	b := startControlPlane(t)
	b.ok(t, "create", "server", "new", "--stdio", "npx")
	dp.token, dp.cpAddr = b.createSyncToken(t, "dp-1"), b.addr
	revB := b.revisionNum(t)
	if revB >= revA {
		t.Fatalf("the fresh store is at revision %d, not behind %d", revB, revA)
	}
	dp.launch(t)
	waitApplied(t, b, revB, dp)
	table := b.ok(t, "get", "dataplanes").stdout
	if !lineWith(table, "dp-1", fmt.Sprintf("took this store's config over revision %d of another store", revA)) {
		t.Errorf("mmctl get dataplanes does not flag dp-1:\n%s", table)
	}
	if !strings.Contains(dp.logs.String(), "the control plane's store is not the one the served config came from") {
		t.Errorf("dp-1 does not log the change of store:\n%s", dp.logs)
	}
	if !strings.Contains(b.logs.String(), "data plane serves a config this store did not make") {
		t.Errorf("the control plane does not log the change of store:\n%s", b.logs)
	}
}
