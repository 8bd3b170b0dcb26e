//go:build unix

package dataplane

import (
	"net"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/metamcp/metamcp/dataplane/syncclient"
)

// TestFrozenRedisIsDegraded freezes a private Redis (SIGSTOP): its sockets
// stay open, so the bus's subscription looks up, but /readyz's bounded ping
// notices, and notices again when it thaws.
func TestFrozenRedisIsDegraded(t *testing.T) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("this test runs its own redis-server: %v", err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().(*net.TCPAddr)
	lis.Close()
	cmd := exec.Command(bin, "--bind", "127.0.0.1", "--port", strconv.Itoa(addr.Port), "--save", "", "--appendonly", "no", "--dir", t.TempDir())
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGCONT)
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	_, base, _ := startServer(t, Options{
		Sync:  syncclient.Options{NodeID: "dp-frozen"},
		Redis: RedisOptions{URL: "redis://" + addr.String() + "/0"},
	})
	pollReadyz(t, base, "redis: ok")

	if err := cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	body := pollReadyz(t, base, "redis: degraded (no answer to a ping within 1s)")
	if !strings.Contains(body, "ready: revision 1") {
		t.Fatalf("/readyz = %q, want ready at revision 1", body)
	}
	t.Logf("a frozen Redis read degraded after %v", time.Since(start).Round(time.Millisecond))

	if err := cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	pollReadyz(t, base, "redis: ok")
}
