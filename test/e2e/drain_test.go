package e2e

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/metamcp/metamcp/test/fixtures/fixture"
)

// TestDrainOnSIGTERM: a data plane told to stop turns /readyz to 503 while
// it still accepts connections, lets the calls in flight finish, ends its
// GET streams so that their clients reconnect elsewhere, exits cleanly, and
// the control plane marks it disconnected at once.
func TestDrainOnSIGTERM(t *testing.T) {
	fx := fixture.Build(t)
	cp := startControlPlane(t)
	dp := startDataPlane(t, cp, "dp-drain", "--drain-delay", "1s", "--drain-timeout", "20s")
	args := []string{"create", "server", "fx", "--command", fx}
	for _, a := range fixture.StdioArgs("fx", "--tools", "slow,cancelled") {
		args = append(args, "--arg", a)
	}
	cp.ok(t, args...)
	url, key := gatewayEndpoint(t, cp, dp, "drain", "fx")

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := &rawMCP{url: url + "/mcp", key: key}
	c.initialize(ctx, t, "2025-11-25")

	// A session's GET stream: it must end when the data plane drains.
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, c.url, nil)
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Mcp-Session-Id", c.sid)
	req.Header.Set("MCP-Protocol-Version", c.version)
	resp, err := http.DefaultClient.Do(req) //nolint:bodyclose // closed by the reader below and at the end
	if err != nil {
		t.Fatalf("GET stream: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET stream: HTTP %d", resp.StatusCode)
	}
	streamEnded := make(chan struct{})
	go func() {
		defer close(streamEnded)
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}()

	// Calls in flight when SIGTERM comes: each takes 3 s.
	const calls = 3
	var wg sync.WaitGroup
	results := make([]string, calls)
	for i := range calls {
		wg.Go(func() {
			r, err := c.do(ctx, `"slow-`+string(rune('a'+i))+`"`, "tools/call", `{"name":"fx__slow","arguments":{"ms":3000,"tag":"drain"}}`)
			switch {
			case err != nil:
				results[i] = err.Error()
			case r.Error != nil:
				results[i] = string(r.Error)
			default:
				results[i] = string(r.Result)
			}
		})
	}
	eventuallyWithin(t, 10*time.Second, "the slow calls started", func() (bool, string) {
		r := c.call(ctx, t, "tools/call", `{"name":"fx__cancelled","arguments":{"tag":"drain"}}`)
		return strings.Contains(string(r.Result), "started=3"), string(r.Result)
	})

	if err := dp.proc.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// Readiness fails while the listener still answers.
	eventuallyWithin(t, 5*time.Second, "/readyz answers 503 after SIGTERM", func() (bool, string) {
		r := dp.readyz(t)
		return r.code == http.StatusServiceUnavailable && strings.Contains(r.body, "shutting down"), r.body
	})
	select {
	case <-streamEnded:
	case <-time.After(15 * time.Second):
		t.Error("the GET stream did not end while the data plane drained")
	}
	wg.Wait()
	for i, r := range results {
		if !strings.Contains(r, "slept") || strings.Contains(r, `"isError":true`) {
			t.Errorf("call %d in flight at SIGTERM: %s, want it to finish", i, r)
		}
	}
	if err := dp.proc.Wait(t, 15*time.Second); err != nil {
		t.Errorf("the data plane exited with %v after SIGTERM, want 0; its output:\n%s", err, dp.logs)
	}
	// The control plane saw its stream end: disconnected at once, not once
	// its record goes stale.
	eventuallyWithin(t, 5*time.Second, "the control plane marks the data plane disconnected", func() (bool, string) {
		dps, _ := cp.dataPlanes(t)
		d := dps["dp-drain"]
		return d != nil && !d.GetConnected(), describeDataPlanes(dps, 0)
	})
}

// TestBootstrapSyncToken: a control plane started with a bootstrap sync
// token lets a data plane holding it sync at once, with no token made by
// mmctl; another token is still refused.
func TestBootstrapSyncToken(t *testing.T) {
	file := filepath.Join(t.TempDir(), "sync-token")
	token := "bootstrap-" + randomHex(t, 16)
	if err := os.WriteFile(file, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cp := startControlPlane(t, "--bootstrap-sync-token-file", file)
	if strings.Contains(cp.logs.String(), token) {
		t.Error("the control plane logged the bootstrap sync token")
	}
	dp := &dataPlane{node: "dp-boot", token: token, cacheFile: filepath.Join(t.TempDir(), "snapshot.pb"), cpAddr: cp.addr}
	dp.launch(t)
	cp.ok(t, "create", "namespace", "boot")
	waitApplied(t, cp, cp.revisionNum(t), dp)

	bad := &dataPlane{node: "dp-bad", token: "bootstrap-" + randomHex(t, 16), cacheFile: filepath.Join(t.TempDir(), "snapshot.pb"), cpAddr: cp.addr}
	bad.launch(t)
	eventuallyWithin(t, 10*time.Second, "a data plane with another token is refused", func() (bool, string) {
		return strings.Contains(bad.logs.String(), "the control plane refused the sync token"), bad.logs.String()
	})
	if r := bad.readyz(t); r.code == http.StatusOK {
		t.Errorf("a data plane with a token the control plane never issued is ready: %s", r.body)
	}
}
