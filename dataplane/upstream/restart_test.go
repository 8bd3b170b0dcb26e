//go:build !windows

package upstream

import (
	"net"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/test/fixtures/fixture"
)

// startEverythingHTTP runs @modelcontextprotocol/server-everything over
// Streamable HTTP on port and waits until it listens.
func startEverythingHTTP(t *testing.T, npx string, port int) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(npx, "-y", "@modelcontextprotocol/server-everything", "streamableHttp")
	cmd.Env = append(MinimalEnviron(), "PORT="+strconv.Itoa(port))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start server-everything: %v", err)
	}
	stop := func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
	}
	t.Cleanup(stop)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	deadline := time.Now().Add(90 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			_ = c.Close()
			return cmd
		}
		if time.Now().After(deadline) {
			t.Fatalf("server-everything does not listen on %s: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestEverythingRestartStreamableHTTP: server-everything, restarted, answers
// the old session id with 400 "No valid session ID" (not 404). The shared
// session recovers within the next call: the refusal counts as a lost
// session, a new one is initialized and the call sent again.
func TestEverythingRestartStreamableHTTP(t *testing.T) {
	npx, err := exec.LookPath("npx")
	if err != nil {
		t.Fatalf("npx is needed to run @modelcontextprotocol/server-everything (install Node.js): %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()
	cmd := startEverythingHTTP(t, npx, port)
	srv := httpServer("everything", "http://127.0.0.1:"+strconv.Itoa(port)+"/mcp")
	p := newTestPool(t, PoolOptions{}, srv)
	if out := callTool(t, p, "everything", "", "echo", map[string]any{"message": "before"}); out == "" {
		t.Fatal("echo answered nothing")
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	_ = cmd.Wait()
	// npx is gone; its node child may take a moment more to let go of the port.
	addr := "127.0.0.1:" + strconv.Itoa(port)
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			break
		}
		_ = c.Close()
		if time.Now().After(deadline) {
			t.Fatal("the killed server-everything still listens")
		}
		time.Sleep(20 * time.Millisecond)
	}
	startEverythingHTTP(t, npx, port)

	ctx := ctxT(t, 30*time.Second)
	s, err := p.Session(ctx, "everything", "")
	if err != nil {
		t.Fatalf("session after the restart: %v", err)
	}
	out, err := toolText(ctx, s, "echo", map[string]any{"message": "after"})
	if err != nil {
		t.Fatalf("first call after the restart: %v; want it answered on a new session", err)
	}
	t.Logf("first call after the restart: %s", out)
	for _, us := range p.Status() {
		if us.GetState() != metamcpv1.UpstreamState_UPSTREAM_STATE_HEALTHY {
			t.Errorf("status after recovery: %v", us)
		}
	}
}

// TestRestarts: a server whose restart generation changes gets new sessions
// (a new process here); the others keep theirs, and a first generation
// restarts nothing.
func TestRestarts(t *testing.T) {
	bin := fixture.Build(t)
	p := newTestPool(t, PoolOptions{}, stdioServer(bin, "r"), stdioServer(bin, "keep"))
	p.Restarts(map[string]int64{"r": 3})
	pid1 := pidOf(t, callTool(t, p, "r", "", "whoami", nil))
	keep := pidOf(t, callTool(t, p, "keep", "", "whoami", nil))
	p.Restarts(map[string]int64{"r": 3})
	if pid := pidOf(t, callTool(t, p, "r", "", "whoami", nil)); pid != pid1 {
		t.Fatalf("an unchanged generation restarted the server (pid %d -> %d)", pid1, pid)
	}
	p.Restarts(map[string]int64{"r": 7})
	if pid := pidOf(t, callTool(t, p, "r", "", "whoami", nil)); pid == pid1 {
		t.Fatal("a new generation kept the server's process")
	}
	waitGone(t, pid1)
	if k := pidOf(t, callTool(t, p, "keep", "", "whoami", nil)); k != keep {
		t.Errorf("the other server was restarted too (pid %d -> %d)", keep, k)
	}
}
