package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/metamcp/metamcp/test/fixtures/fixture"
)

// Parameters of the idle-session churn (issue 5: "30,000 sessions
// initialized and abandoned; after the idle sweep the data plane's heap
// returns to within 10% of its starting size").
const (
	idleChurnSessions    = 30000
	idleChurnConcurrency = 16
	idleChurnTTL         = 8 * time.Second
)

var heapAllocLine = regexp.MustCompile(`(?m)^# HeapAlloc = (\d+)$`)

// TestIdleSessionChurn initializes 30,000 downstream sessions through one
// data plane process (an endpoint with one shared Streamable HTTP upstream)
// and abandons them all. It reads the data plane's live heap (after a
// collection, from --debug-listen's heap profile) before, right after the
// churn and after the idle sweep: the heap must return to within 10% of its
// starting size. The bytes per idle session are logged.
func TestIdleSessionChurn(t *testing.T) {
	fx := fixture.Build(t)
	webURL := fixture.Start(t, fx, "http", "web", "--tools", "echo")
	cp := startControlPlane(t)
	dp := startDataPlane(t, cp, "dp-idle", "--log-level", "info", "--session-idle-ttl", idleChurnTTL.String(), "--debug-listen", "127.0.0.1:0")
	debugAddr := dp.debugAddr(t)
	cp.ok(t, "create", "server", "web", "--url", webURL)
	cp.ok(t, "create", "namespace", "idle", "--server", "web")
	cp.ok(t, "create", "endpoint", "idle", "--namespace", "idle")
	r := cp.ok(t, "create", "apikey", "idler", "--endpoint", "idle", "-o", "json")
	var created struct {
		Key string `json:"key"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &created); err != nil || created.Key == "" {
		t.Fatalf("create apikey: %v\n%s", err, r)
	}
	waitApplied(t, cp, cp.revisionNum(t), dp)

	url := "http://" + dp.addr + "/metamcp/idle/mcp"
	tr := &http.Transport{MaxIdleConnsPerHost: idleChurnConcurrency}
	client := &http.Client{Transport: tr}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	// Warm up (upstream session, connections, buffers), let the warm-up
	// sessions be swept, then take the baseline.
	if err := initializeMany(ctx, client, url, created.Key, 200); err != nil {
		t.Fatalf("warm-up: %v", err)
	}
	tr.CloseIdleConnections()
	waitNoSessions(t, cp, dp)
	baseline := heapAlloc(t, debugAddr)

	start := time.Now()
	if err := initializeMany(ctx, client, url, created.Key, idleChurnSessions); err != nil {
		t.Fatalf("churn: %v", err)
	}
	took := time.Since(start)
	tr.CloseIdleConnections()
	peak := heapAlloc(t, debugAddr)
	perSession := float64(int64(peak)-int64(baseline)) / idleChurnSessions
	note := ""
	if took > idleChurnTTL/2 {
		note = " (a lower bound: the churn took long enough for the sweep to end some sessions before the measure)"
	}
	t.Logf("%d sessions initialized in %v; heap %d bytes before, %d with them idle: %.0f bytes per idle session%s",
		idleChurnSessions, took.Round(time.Millisecond), baseline, peak, perSession, note)
	if peak <= baseline {
		t.Fatalf("the heap did not grow with %d live sessions (%d -> %d): is the measure right?", idleChurnSessions, baseline, peak)
	}

	waitNoSessions(t, cp, dp)
	var after uint64
	eventually(t, "the data plane's heap back within 10% of its start", func() (bool, string) {
		after = heapAlloc(t, debugAddr)
		return float64(after) <= 1.1*float64(baseline), fmt.Sprintf("heap %d bytes, started at %d (peak %d)", after, baseline, peak)
	})
	t.Logf("after the idle sweep: heap %d bytes (%.1f%% of the start)", after, 100*float64(after)/float64(baseline))
}

// initializeMany initializes n sessions (2025-06-18, raw Streamable HTTP),
// idleChurnConcurrency at a time, and abandons them.
func initializeMany(ctx context.Context, client *http.Client, url, key string, n int) error {
	var (
		next   atomic.Int64
		mu     sync.Mutex
		first  error
		failed int
	)
	var wg sync.WaitGroup
	for range idleChurnConcurrency {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				if err := initializeOnce(ctx, client, url, key); err != nil {
					mu.Lock()
					failed++
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	if failed > 0 {
		return fmt.Errorf("%d of %d initializes failed, the first: %w", failed, n, first)
	}
	return nil
}

func initializeOnce(ctx context.Context, client *http.Client, url, key string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(
		`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{"roots":{"listChanged":true},"sampling":{}},"clientInfo":{"name":"churn","version":"1.0.0"}}}`))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Mcp-Session-Id") == "" {
		return fmt.Errorf("initialize: %d %s", resp.StatusCode, body)
	}
	return nil
}

// heapAlloc is the data plane's live heap after a collection.
func heapAlloc(t *testing.T, debugAddr string) uint64 {
	t.Helper()
	resp, err := http.Get("http://" + debugAddr + "/debug/pprof/heap?gc=1&debug=1")
	if err != nil {
		t.Fatalf("heap profile: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	m := heapAllocLine.FindSubmatch(b)
	if m == nil {
		t.Fatalf("no HeapAlloc in the heap profile (%d): %.300s", resp.StatusCode, b)
	}
	v, _ := strconv.ParseUint(string(m[1]), 10, 64)
	return v
}

// waitNoSessions waits until the control plane's registry reports no live
// session on dp (the data plane reports its count every few seconds).
func waitNoSessions(t *testing.T, cp *controlPlane, dp *dataPlane) {
	t.Helper()
	eventually(t, "no live session left on "+dp.node, func() (bool, string) {
		reg, _ := cp.dataPlanes(t)
		d := reg[dp.node]
		return d != nil && d.GetActiveSessions() == 0, fmt.Sprintf("%v", d)
	})
}
