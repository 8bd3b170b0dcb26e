//go:build linux

package upstream

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/test/fixtures/fixture"
)

// TestParentDeathSignal: a stdio server that ignores both its closed stdin
// and SIGTERM still dies with a data plane killed by SIGKILL. The data plane
// is this test binary run again as a helper.
func TestParentDeathSignal(t *testing.T) {
	if bin := os.Getenv("METAMCP_PDEATH_HELPER"); bin != "" {
		srv := &metamcpv1.Server{Name: "stubborn", Transport: &metamcpv1.Server_Stdio{Stdio: &metamcpv1.StdioTransport{
			Command: bin, Args: []string{"--transport", "stdio", "--name", "stubborn", "--stubborn"},
		}}}
		p := newTestPool(t, PoolOptions{}, srv)
		fmt.Printf("PID %d\n", pidOf(t, callTool(t, p, "stubborn", "", "whoami", nil)))
		time.Sleep(time.Minute) // until killed
		return
	}
	bin := fixture.Build(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestParentDeathSignal$")
	cmd.Env = append(os.Environ(), "METAMCP_PDEATH_HELPER="+bin)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	pid := 0
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "PID "); ok {
			pid, _ = strconv.Atoi(rest)
			break
		}
	}
	if pid == 0 {
		t.Fatal("the helper data plane reported no server pid")
	}
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })
	_ = cmd.Process.Signal(syscall.SIGKILL)
	_ = cmd.Wait()
	waitGone(t, pid)
}
