package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/metamcp/metamcp/test/fixtures/fixture"
)

// Churn test parameters (issue 4: "1,000 downstream sessions opened and
// closed against a per_client stdio server").
const (
	churnSessions    = 1000
	churnConcurrency = 16
	churnMaxProcs    = 8
	// churnIdleTTL sweeps the abandoned half; a request in flight keeps its
	// session however long it waits for a process slot.
	churnIdleTTL = "500ms"
)

// TestChurnPerClientStdio opens 1,000 downstream sessions through one data
// plane process against a per_client stdio fixture limited to 8 processes,
// 16 at a time: each initializes, calls whoami (which needs its own upstream
// process), and half end with DELETE while the other half are abandoned and
// left to the idle sweep. A sampler walking /proc every 20ms never sees more
// than 8 fixture processes; at the end no fixture process is left (nor
// reported by the data plane in its status) and its goroutine count (from
// --debug-listen's /debug/pprof/) is back near its baseline.
func TestChurnPerClientStdio(t *testing.T) {
	fx := fixture.Build(t)
	cp := startControlPlane(t)
	dp := startDataPlane(t, cp, "dp-churn", "--log-level", "info", "--session-idle-ttl", churnIdleTTL, "--debug-listen", "127.0.0.1:0")
	debugAddr := dp.debugAddr(t)

	fxArgs := []string{fx, "--transport", "stdio", "--name", "churn", "--tools", "whoami"}
	create := []string{"create", "server", "churn", "--command", fx, "--session-mode", "per_client", "--max-processes", strconv.Itoa(churnMaxProcs)}
	for _, a := range fxArgs[1:] {
		create = append(create, "--arg", a)
	}
	cp.ok(t, create...)
	cp.ok(t, "create", "namespace", "churn", "--server", "churn")
	cp.ok(t, "create", "endpoint", "churn", "--namespace", "churn")
	r := cp.ok(t, "create", "apikey", "churner", "--endpoint", "churn", "-o", "json")
	var created struct {
		Key string `json:"key"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &created); err != nil || created.Key == "" {
		t.Fatalf("create apikey: %v\n%s", err, r)
	}
	waitApplied(t, cp, cp.revisionNum(t), dp)
	dpPid := dp.proc.Cmd.Process.Pid

	baseline := goroutines(t, debugAddr)
	t.Logf("data plane goroutines before the churn: %d", baseline)

	// Sample the fixture processes every 20ms while the churn runs.
	var maxLive, samples atomic.Int64
	seen := map[int]bool{} // every fixture pid seen, to tell how many were started
	stopSampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			pids := fixtureProcesses(dpPid, fxArgs)
			samples.Add(1)
			if n := int64(len(pids)); n > maxLive.Load() {
				maxLive.Store(n)
			}
			for _, p := range pids {
				seen[p] = true
			}
			select {
			case <-stopSampling:
				return
			case <-tick.C:
			}
		}
	}()

	url := "http://" + dp.addr + "/metamcp/churn/mcp"
	tr := &http.Transport{MaxIdleConnsPerHost: churnConcurrency}
	client := &http.Client{Transport: tr}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var (
		mu       sync.Mutex
		failures []string
		failed   int
		done     atomic.Int64
	)
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range churnConcurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				err := churnSession(ctx, client, url, created.Key, i%2 == 0)
				if err != nil {
					mu.Lock()
					failed++
					if len(failures) < 10 {
						failures = append(failures, fmt.Sprintf("session %d: %v", i, err))
					}
					mu.Unlock()
				}
				done.Add(1)
			}
		}()
	}
	start := time.Now()
	for i := range churnSessions {
		select {
		case jobs <- i:
		case <-ctx.Done():
		}
	}
	close(jobs)
	wg.Wait()
	t.Logf("%d sessions (half abandoned) in %v", done.Load(), time.Since(start).Round(time.Millisecond))
	if failed > 0 {
		t.Errorf("%d of %d sessions failed; the first ones:\n%s", failed, churnSessions, strings.Join(failures, "\n"))
	}

	// Everything winds down: the abandoned sessions are swept, their
	// processes reaped.
	tr.CloseIdleConnections()
	eventually(t, "no fixture process left, none reported", func() (bool, string) {
		pids := fixtureProcesses(dpPid, fxArgs)
		reg, _ := cp.dataPlanes(t)
		ups := reg[dp.node].GetUpstreams()
		reported := len(ups) == 1 && ups[0].GetServer() == "churn" && ups[0].GetProcesses() == 0 && ups[0].GetSessions() == 0
		return len(pids) == 0 && reported, fmt.Sprintf("fixture processes %v; upstreams reported %v", pids, ups)
	})
	close(stopSampling)
	<-sampled
	t.Logf("%d samples; at most %d fixture processes at once; %d fixture processes seen in all", samples.Load(), maxLive.Load(), len(seen))
	if got := maxLive.Load(); got > churnMaxProcs {
		t.Errorf("at most %d fixture processes were allowed, %d were live at once", churnMaxProcs, got)
	}
	if len(seen) < churnSessions/10 {
		t.Errorf("only %d fixture processes seen for %d per_client sessions: did the sessions reach the upstream?", len(seen), churnSessions)
	}

	// Goroutines back near the baseline: a few may belong to connections
	// still closing, none to a session or an upstream.
	const slack = 10
	var now int
	eventually(t, "data plane goroutines back near the baseline", func() (bool, string) {
		now = goroutines(t, debugAddr)
		return now <= baseline+slack, fmt.Sprintf("%d goroutines, baseline %d; profile:\n%s", now, baseline, goroutineProfile(t, debugAddr))
	})
	t.Logf("data plane goroutines after the churn: %d (baseline %d)", now, baseline)
}

// churnSession is one downstream session over raw Streamable HTTP at
// 2025-06-18: initialize, notifications/initialized, tools/call
// churn__whoami, then DELETE unless abandon.
func churnSession(ctx context.Context, client *http.Client, url, key string, abandon bool) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	// post returns the status, the session id header and the body.
	post := func(sid, body string) (int, string, []byte, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
		if err != nil {
			return 0, "", nil, err
		}
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		if sid != "" {
			req.Header.Set("Mcp-Session-Id", sid)
			req.Header.Set("Mcp-Protocol-Version", "2025-06-18")
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, "", nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("Mcp-Session-Id"), b, err
	}
	status, sid, b, err := post("", `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"churn","version":"v0"}}}`)
	if err != nil {
		return fmt.Errorf("initialize: %w", err)
	}
	if status != http.StatusOK || sid == "" || !bytes.Contains(b, []byte(`"result"`)) {
		return fmt.Errorf("initialize: HTTP %d session %q: %s", status, sid, b)
	}
	if status, _, b, err = post(sid, `{"jsonrpc":"2.0","method":"notifications/initialized"}`); err != nil {
		return fmt.Errorf("notifications/initialized: %w", err)
	} else if status != http.StatusAccepted {
		return fmt.Errorf("notifications/initialized: HTTP %d: %s", status, b)
	}
	status, _, b, err = post(sid, `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"churn__whoami","arguments":{}}}`)
	if err != nil {
		return fmt.Errorf("tools/call: %w", err)
	}
	var out struct {
		Result struct {
			IsError bool `json:"isError"`
			Content []struct {
				Text string `json:"text"`
			} `json:"content"`
		} `json:"result"`
	}
	if status != http.StatusOK || json.Unmarshal(b, &out) != nil || out.Result.IsError ||
		len(out.Result.Content) == 0 || !strings.HasPrefix(out.Result.Content[0].Text, "churn ") {
		return fmt.Errorf("tools/call churn__whoami: HTTP %d: %s", status, b)
	}
	if abandon {
		return nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Mcp-Session-Id", sid)
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("DELETE: %w", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		return fmt.Errorf("DELETE: HTTP %d", resp.StatusCode)
	}
	return nil
}

// fixtureProcesses lists the live processes running the fixture with args
// (exactly) or descending from the data plane with the fixture binary as
// their program. Zombies have no command line and are not counted.
func fixtureProcesses(dpPid int, args []string) []int {
	want := strings.Join(args, "\x00") + "\x00"
	var out []int
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, "cmdline"))
		if err != nil || len(b) == 0 {
			continue
		}
		pid, err := strconv.Atoi(filepath.Base(d))
		if err != nil {
			continue
		}
		prog, _, _ := strings.Cut(string(b), "\x00")
		if string(b) == want || (prog == args[0] && descendsFrom(pid, dpPid)) {
			out = append(out, pid)
		}
	}
	return out
}

// descendsFrom reports whether pid's parent chain reaches ancestor.
func descendsFrom(pid, ancestor int) bool {
	for range 64 {
		ppid := parentPid(pid)
		if ppid <= 1 {
			return false
		}
		if ppid == ancestor {
			return true
		}
		pid = ppid
	}
	return false
}

// parentPid reads the PPid line of /proc/PID/status (0 when unknown).
func parentPid(pid int) int {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "PPid:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	return 0
}

var goroutineTotal = regexp.MustCompile(`^goroutine profile: total (\d+)`)

// goroutines is the data plane's goroutine count, from the first line of
// /debug/pprof/goroutine?debug=1.
func goroutines(t *testing.T, debugAddr string) int {
	t.Helper()
	p := goroutineProfile(t, debugAddr)
	m := goroutineTotal.FindStringSubmatch(p)
	if m == nil {
		t.Fatalf("no goroutine total in the data plane's profile:\n%.500s", p)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

func goroutineProfile(t *testing.T, debugAddr string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+debugAddr+"/debug/pprof/goroutine?debug=1", nil)
	if err != nil {
		t.Fatal(err)
	}
	// Its own connection, closed after: it must not count in the next sample.
	req.Close = true
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("read the data plane's goroutine profile: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("read the data plane's goroutine profile: HTTP %d %v", resp.StatusCode, err)
	}
	return string(b)
}
