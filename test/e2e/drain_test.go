package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/metamcp/metamcp/internal/testharness"
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

// TestDrainBehindNginx: two data planes behind nginx (deploy/nginx/
// metamcp.conf), clients calling through it without pause; one data plane
// gets SIGTERM. Its /readyz turns 503 while its listener still answers, the
// calls in flight on it finish, nginx moves the new ones to the other data
// plane, and no call fails: each took 50 ms to 3 s, well within the
// --drain-timeout.
func TestDrainBehindNginx(t *testing.T) {
	nginx := fixture.Nginx(t)
	fx := fixture.Build(t)
	web := fixture.Start(t, fx, "http", "web", "--tools", "slow,cancelled")
	cp := startControlPlane(t)
	bus := []string{"--redis-url", "redis://127.0.0.1:6379/0", "--redis-prefix", "e2e-drain-" + randomHex(t, 4) + ":",
		"--drain-delay", "2s", "--drain-timeout", "20s"}
	dpA := startDataPlane(t, cp, "dp-drain-a", bus...)
	dpB := startDataPlane(t, cp, "dp-drain-b", bus...)
	cp.ok(t, "create", "server", "web", "--url", web)
	cp.ok(t, "create", "namespace", "drain", "--server", "web")
	cp.ok(t, "create", "endpoint", "drain", "--namespace", "drain")
	key := createAPIKey(t, cp, "drain-key", "drain")
	waitApplied(t, cp, cp.revisionNum(t), dpA, dpB)
	ng := startNginx(t, nginx, dpA.addr, dpB.addr)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// Clients: each its own session (initialized through nginx, on either
	// data plane), then tools/call of 50 ms in a loop until told to stop.
	const clients = 6
	var (
		mu       sync.Mutex
		failures []string
		ok       atomic.Int64
	)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range clients {
		c := &rawMCP{url: "http://" + ng.addr + "/metamcp/drain/mcp", key: key}
		c.initialize(ctx, t, "2025-11-25")
		wg.Go(func() {
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				r, err := c.do(ctx, fmt.Sprintf(`"c%d-%d"`, i, n), "tools/call", `{"name":"web__slow","arguments":{"ms":50,"tag":"load"}}`)
				if err == nil && (r.Error != nil || !strings.Contains(string(r.Result), "slept")) {
					err = fmt.Errorf("%s%s", r.Error, r.Result)
				}
				if err != nil {
					mu.Lock()
					failures = append(failures, fmt.Sprintf("client %d call %d: %v", i, n, err))
					mu.Unlock()
					continue
				}
				ok.Add(1)
			}
		})
	}
	defer func() {
		close(stop)
		wg.Wait()
	}()
	eventuallyWithin(t, 30*time.Second, "calls through nginx reach both data planes", func() (bool, string) {
		by := ng.servedBy(t)
		return by[dpA.addr] >= 20 && by[dpB.addr] >= 20, fmt.Sprint(by)
	})
	// Long calls in flight at SIGTERM: whichever data plane has them must
	// let them finish.
	long := make([]string, 4)
	var longWG sync.WaitGroup
	for i := range long {
		c := &rawMCP{url: "http://" + ng.addr + "/metamcp/drain/mcp", key: key}
		c.initialize(ctx, t, "2025-11-25")
		longWG.Go(func() {
			r, err := c.do(ctx, `"long"`, "tools/call", `{"name":"web__slow","arguments":{"ms":3000,"tag":"long"}}`)
			switch {
			case err != nil:
				long[i] = err.Error()
			case r.Error != nil:
				long[i] = string(r.Error)
			default:
				long[i] = string(r.Result)
			}
		})
	}
	probe := &rawMCP{url: "http://" + ng.addr + "/metamcp/drain/mcp", key: key}
	probe.initialize(ctx, t, "2025-11-25")
	eventuallyWithin(t, 10*time.Second, "the long calls reached the upstream", func() (bool, string) {
		r := probe.call(ctx, t, "tools/call", `{"name":"web__cancelled","arguments":{"tag":"long"}}`)
		return strings.Contains(string(r.Result), fmt.Sprintf("started=%d", len(long))), string(r.Result)
	})
	sigAt := ng.lines(t)
	if err := dpA.proc.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// Readiness fails first: a 503 is an answer, so the listener is open.
	eventuallyWithin(t, 2*time.Second, "/readyz answers 503 while the listener still answers", func() (bool, string) {
		r := dpA.readyz(t)
		return r.code == http.StatusServiceUnavailable, fmt.Sprint(r.code, " ", r.body)
	})
	if err := dpA.proc.Wait(t, 30*time.Second); err != nil {
		t.Errorf("the draining data plane exited with %v, want 0; its output:\n%s", err, testharness.Tail(dpA.logs.String(), 40))
	}
	eventuallyWithin(t, 5*time.Second, "the control plane marks the drained data plane disconnected", func() (bool, string) {
		dps, _ := cp.dataPlanes(t)
		d := dps["dp-drain-a"]
		return d != nil && !d.GetConnected(), describeDataPlanes(dps, 0)
	})
	// The load goes on on dp-b alone for a while.
	after := ok.Load()
	eventuallyWithin(t, 30*time.Second, "calls go on through nginx after the drain", func() (bool, string) {
		return ok.Load() >= after+100, fmt.Sprint(ok.Load()-after, " calls since the exit")
	})
	close(stop)
	wg.Wait()
	stop = make(chan struct{})
	longWG.Wait()
	for i, r := range long {
		if !strings.Contains(r, "slept") || strings.Contains(r, `"isError":true`) {
			t.Errorf("long call %d, in flight at SIGTERM: %s, want it to finish", i, r)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(failures) > 0 {
		t.Errorf("%d of %d calls failed while a data plane drained, want none:\n%s\nnginx errors:\n%s",
			len(failures), int(ok.Load())+len(failures), strings.Join(failures[:min(len(failures), 10)], "\n"), ng.errors())
	}
	by := ng.servedBySince(t, sigAt)
	t.Logf("%d calls succeeded; from SIGTERM on nginx sent requests to %v", ok.Load(), by)
	if by[dpA.addr] == 0 {
		t.Logf("no request reached the draining data plane after SIGTERM (nginx may have moved all at once)")
	}
}
