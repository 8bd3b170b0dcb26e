package e2e

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/metamcp/metamcp/internal/testharness"
)

// lowerFileLimit sets the process's file limit (soft and hard) to n.
func lowerFileLimit(t *testing.T, pid, n int) {
	t.Helper()
	lim := unix.Rlimit{Cur: uint64(n), Max: uint64(n)}
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, &lim, nil); err != nil {
		t.Fatalf("lower the data plane's file limit to %d: %v", n, err)
	}
}

// TestIdleConnectionsAtTheFileLimit re-runs the trial that made the old
// data plane exit: with its file limit at 1,024, 1,100 connections opened
// and left idle exhaust its file descriptors (accept fails with EMFILE);
// it keeps running, closes them at the read-header timeout, and serves
// other clients.
func TestIdleConnectionsAtTheFileLimit(t *testing.T) {
	cp := startControlPlane(t)
	dp := startDataPlane(t, cp, "edge-fd", "--http-read-header-timeout", "2s")
	lowerFileLimit(t, dp.proc.Cmd.Process.Pid, 1024)

	const idle = 1100
	conns := make([]net.Conn, 0, idle)
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	for i := range idle {
		c, err := net.DialTimeout("tcp", dp.addr, 10*time.Second)
		if err != nil {
			t.Fatalf("idle connection %d: %v", i, err)
		}
		conns = append(conns, c)
	}
	// The data plane ran out of descriptors (else this test proves nothing)...
	dp.proc.Await(t, "accept failing with too many open files", waitTimeout, func(out string) bool {
		return strings.Contains(out, "too many open files")
	})
	// ...and serves another client once the idle ones are closed.
	testharness.Eventually(t, waitTimeout, func() error {
		code, err := testharness.GetStatus("http://" + dp.addr + "/healthz")
		if err != nil {
			return err
		}
		if code != http.StatusOK {
			return fmt.Errorf("/healthz: %d", code)
		}
		return nil
	})
	if dp.proc.Exited() {
		t.Fatalf("the data plane exited: %v\n%s", dp.proc.Err(), testharness.Tail(dp.logs.String(), 20))
	}
	// The idle connections were closed by the data plane, not kept.
	closed := 0
	for _, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		if _, err := c.Read(make([]byte, 1)); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			closed++
		}
	}
	if closed < idle-100 {
		t.Fatalf("%d of %d idle connections were closed by the data plane, want nearly all", closed, idle)
	}
}

// vmRSS is a process's resident memory, from /proc.
func vmRSS(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("VmRSS %q: %v", rest, err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmRSS in /proc/PID/status")
	return 0
}

// TestUnfinishedBodiesStayWithinBudget re-runs the trial that took the old
// data plane to 1 GB: 300 connections each send 3 MB of a 4 MiB body to an
// MCP endpoint, with a valid key, and stop. The body budget admits what it
// holds (128 MiB: 32 bodies) and answers the rest 503 at once; the data
// plane's RSS stays under the budget plus a 128 MiB margin (its own
// baseline, about 40 MiB, and the garbage collector's slack).
func TestUnfinishedBodiesStayWithinBudget(t *testing.T) {
	const (
		budgetMiB = 128
		marginMiB = 128
		conns     = 300
		bodyLen   = 4 << 20
		sent      = 3_000_000
	)
	cp := startControlPlane(t)
	dp := startDataPlane(t, cp, "edge-rss", "--http-body-budget", strconv.Itoa(budgetMiB))
	cp.ok(t, "create", "namespace", "rss")
	cp.ok(t, "create", "endpoint", "rss", "--namespace", "rss")
	r := cp.ok(t, "create", "apikey", "rss", "--endpoint", "rss", "-o", "json")
	var created struct {
		Key string `json:"key"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &created); err != nil || created.Key == "" {
		t.Fatalf("create apikey: %v\n%s", err, r)
	}
	waitApplied(t, cp, cp.revisionNum(t), dp)
	pid := dp.proc.Cmd.Process.Pid
	before := vmRSS(t, pid)

	head := "POST /metamcp/rss/mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\n" +
		"Authorization: Bearer " + created.Key + "\r\nContent-Length: " + strconv.Itoa(bodyLen) + "\r\n\r\n"
	chunk := []byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":{"pad":"` + strings.Repeat("a", 64<<10))
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		held     []net.Conn
		refused  int
		otherErr []string
	)
	for range conns {
		wg.Go(func() {
			c, err := net.DialTimeout("tcp", dp.addr, 10*time.Second)
			if err != nil {
				mu.Lock()
				otherErr = append(otherErr, err.Error())
				mu.Unlock()
				return
			}
			_ = c.SetDeadline(time.Now().Add(2 * time.Minute))
			werr := func() error {
				if _, err := io.WriteString(c, head); err != nil {
					return err
				}
				for n := 0; n < sent; n += len(chunk) {
					if _, err := c.Write(chunk[:min(len(chunk), sent-n)]); err != nil {
						return err
					}
				}
				return nil
			}()
			// A refused request is answered at once (or its connection
			// reset while we wrote); a held one gets no answer.
			_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
			resp, rerr := http.ReadResponse(bufio.NewReader(c), nil)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case rerr == nil:
				resp.Body.Close()
				if resp.StatusCode == http.StatusServiceUnavailable {
					refused++
				} else {
					otherErr = append(otherErr, "status "+resp.Status)
				}
				_ = c.Close()
			case werr != nil:
				refused++ // reset by the data plane after its 503
				_ = c.Close()
			case errors.Is(rerr, os.ErrDeadlineExceeded):
				held = append(held, c)
			default:
				otherErr = append(otherErr, rerr.Error())
				_ = c.Close()
			}
		})
	}
	wg.Wait()
	defer func() {
		for _, c := range held {
			_ = c.Close()
		}
	}()
	if len(otherErr) > 0 {
		t.Fatalf("%d connections ended otherwise than held or refused, e.g. %s", len(otherErr), otherErr[0])
	}
	maxHeld := budgetMiB << 20 / bodyLen
	if len(held) > maxHeld || len(held) < maxHeld/2 {
		t.Fatalf("%d bodies held (%d refused), want at most %d and most of them", len(held), refused, maxHeld)
	}
	// The held bodies are in the data plane's memory: it read what was
	// sent (else the measure below proves nothing).
	rss := vmRSS(t, pid)
	testharness.Eventually(t, waitTimeout, func() error {
		rss = vmRSS(t, pid)
		if want := before + int64(len(held))*sent*3/4; rss < want {
			return fmt.Errorf("RSS %d MiB, want at least %d MiB once the held bodies are read", rss>>20, want>>20)
		}
		return nil
	})
	if limit := int64(budgetMiB+marginMiB) << 20; rss > limit {
		t.Fatalf("RSS %d MiB with %d bodies held (%d MiB before), want under %d MiB", rss>>20, len(held), before>>20, limit>>20)
	}
	t.Logf("RSS %d MiB before, %d MiB with %d bodies held and %d refused", before>>20, rss>>20, len(held), refused)
	if dp.proc.Exited() {
		t.Fatalf("the data plane exited: %v", dp.proc.Err())
	}
}
