//go:build unix

package redistest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Private is a redis-server of one test's own, on a free loopback port, for
// tests that stop, freeze or kill Redis (never the shared one). It has a
// password of its own, so a test can never talk to another test's server
// by mistake: should two tests pick the same port, the second server fails
// to start and StartPrivate tries another port.
type Private struct {
	Addr     string
	Password string
	dir      string
	cmd      *exec.Cmd
	done     chan struct{}
}

// StartPrivate starts a private redis-server and stops it when the test ends.
func StartPrivate(t testing.TB) *Private {
	t.Helper()
	p := &Private{Password: randomHex(t), dir: t.TempDir()}
	for attempt := 0; ; attempt++ {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p.Addr = lis.Addr().String()
		lis.Close()
		if p.start(t) {
			return p
		}
		if attempt == 2 {
			t.Fatalf("a private redis-server did not start on three free ports")
		}
	}
}

// Restart starts the server again on the same address, after Kill.
func (p *Private) Restart(t testing.TB) {
	t.Helper()
	if !p.start(t) {
		t.Fatalf("the private redis-server did not start again on %s", p.Addr)
	}
}

// URL is the server's redis:// URL, password included.
func (p *Private) URL() string { return "redis://:" + p.Password + "@" + p.Addr + "/0" }

// Signal sends sig to the server (SIGSTOP freezes it, SIGCONT thaws it).
func (p *Private) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// Kill kills the server and waits for it.
func (p *Private) Kill() {
	_ = p.cmd.Process.Signal(syscall.SIGCONT)
	_ = p.cmd.Process.Kill()
	<-p.done
}

// start runs redis-server on p.Addr and reports whether it answers with
// p.Password within 10 s.
func (p *Private) start(t testing.TB) bool {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redis-server is not installed: run scripts/ensure-services.sh")
	}
	_, port, _ := net.SplitHostPort(p.Addr)
	p.cmd = exec.Command(bin, "--bind", "127.0.0.1", "--port", port, "--requirepass", p.Password,
		"--save", "", "--appendonly", "no", "--dir", p.dir)
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start redis-server: %v", err)
	}
	done := make(chan struct{})
	p.done = done
	go func() { _ = p.cmd.Wait(); close(done) }()
	t.Cleanup(p.Kill)
	c := redis.NewClient(&redis.Options{Addr: p.Addr, Password: p.Password, MaxRetries: -1})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-done:
			return false // the port was taken
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

func randomHex(t testing.TB) string {
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
