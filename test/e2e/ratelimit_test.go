package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/metamcp/metamcp/dataplane/redisconn/redistest"
	"github.com/metamcp/metamcp/test/fixtures/fixture"
)

// countingUpstream is a Streamable HTTP MCP server with the tools
// create_page and search that counts the calls it receives per tool: a
// refused call must never reach it.
type countingUpstream struct {
	url   string
	mu    sync.Mutex
	calls map[string]int
}

func startCountingUpstream(t *testing.T) *countingUpstream {
	u := &countingUpstream{calls: map[string]int{}}
	s := mcp.NewServer(&mcp.Implementation{Name: "notion", Version: "1"}, nil)
	for _, name := range []string{"create_page", "search"} {
		mcp.AddTool(s, &mcp.Tool{Name: name}, func(_ context.Context, _ *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
			u.mu.Lock()
			u.calls[name]++
			u.mu.Unlock()
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: name}}}, nil, nil
		})
	}
	srv := httptest.NewServer(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s }, nil))
	t.Cleanup(srv.Close)
	u.url = srv.URL
	return u
}

func (u *countingUpstream) count(tool string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.calls[tool]
}

// statelessCall makes one 2026-07-28 tools/call and returns the status, the
// headers and the body.
func statelessCall(ctx context.Context, t *testing.T, url, key, tool string) (int, http.Header, string) {
	t.Helper()
	body := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"` + tool + `","arguments":{},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}`
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	h := req.Header
	h.Set("Authorization", "Bearer "+key)
	h.Set("Content-Type", "application/json")
	h.Set("Accept", "application/json, text/event-stream")
	h.Set("Mcp-Protocol-Version", "2026-07-28")
	h.Set("Mcp-Method", "tools/call")
	h.Set("Mcp-Name", tool)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Errorf("tools/call %s: %v", tool, err)
		return 0, nil, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

// TestRateLimitAcrossReplicas: three data planes behind nginx count in one
// Redis. A per-principal policy of 60 per minute, bursts of 10, admits over
// a window of calls from 4 clients of one principal, spread over the
// replicas, exactly what GCRA allows: the burst plus one call per second
// (the issue asks for 30 s within ±2%, i.e. exactly 40; this runs 10.5 s,
// whose exact answer is 20, to keep the suite short). Another principal is
// unaffected. The seed's scenario (one tool of one server, 1 per minute per
// principal) holds while the server's other tool stays free; refused calls
// never reach the upstream; mmctl ratelimit status and reset read and empty
// the caller's bucket.
func TestRateLimitAcrossReplicas(t *testing.T) {
	nginx := fixture.Nginx(t)
	up := startCountingUpstream(t)
	prefix := "e2e-rl-" + randomHex(t, 4) + ":"
	redisArgs := []string{"--redis-url", "redis://127.0.0.1:6379/0", "--redis-prefix", prefix}
	cp := startControlPlane(t, redisArgs...)
	// This test is about counting: a busy machine must not push a call past
	// the limiter's timeout (into the failure mode, open by default).
	dpArgs := append([]string{"--ratelimit-timeout", "10s"}, redisArgs...)
	dps := []*dataPlane{startDataPlane(t, cp, "dp-a", dpArgs...), startDataPlane(t, cp, "dp-b", dpArgs...), startDataPlane(t, cp, "dp-c", dpArgs...)}
	cp.ok(t, "create", "server", "notion", "--url", up.url+"/")
	cp.ok(t, "create", "namespace", "ns", "--server", "notion")
	// closed: should Redis fail anyway, the calls say so (503) instead of
	// being admitted uncounted.
	cp.ok(t, "create", "ratelimit", "per-user", "--rate", "60", "--per", "1m", "--burst", "10", "--key", "principal", "--on-redis-failure", "closed")
	cp.ok(t, "create", "ratelimit", "pages", "--rate", "1", "--per", "1m", "--server", "notion", "--tool", "notion__create_page")
	cp.ok(t, "create", "endpoint", "team", "--namespace", "ns", "--rate-limit", "per-user")
	cp.ok(t, "create", "endpoint", "crm", "--namespace", "ns", "--rate-limit", "pages")
	// A glob that can match no tool of the endpoint is warned about.
	cp.ok(t, "create", "ratelimit", "typo", "--rate", "1", "--tool", "notoin__*")
	if r := cp.ok(t, "create", "endpoint", "typo", "--namespace", "ns", "--rate-limit", "typo"); !strings.Contains(r.stderr, `"notoin__*" matches no tool of this endpoint`) {
		t.Errorf("no warning about a glob that matches no tool:\n%s", r)
	}
	alice := createKey(t, cp, "alice", "team", "crm")
	bob := createKey(t, cp, "bob", "team", "crm")
	waitApplied(t, cp, cp.revisionNum(t), dps...)
	ng := startNginx(t, nginx, dps[0].addr, dps[1].addr, [2]string{"server " + dps[1].addr + " max_fails=1 fail_timeout=5s;",
		"server " + dps[1].addr + " max_fails=1 fail_timeout=5s;\n        server " + dps[2].addr + " max_fails=1 fail_timeout=5s;"})
	base := "http://" + ng.addr + "/metamcp/"

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// The window: 4 clients of alice call as fast as they can.
	const window = 10500 * time.Millisecond
	var admitted, refused atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for time.Since(start) < window && ctx.Err() == nil {
				switch status, h, body := statelessCall(ctx, t, base+"team/mcp", alice, "notion__search"); status {
				case http.StatusOK:
					admitted.Add(1)
				case http.StatusTooManyRequests:
					refused.Add(1)
					if h.Get("Retry-After") == "" || !strings.Contains(h.Get("RateLimit-Policy"), `"per-user";q=60;w=60`) {
						t.Errorf("429 without its headers: %v", h)
					}
					time.Sleep(20 * time.Millisecond)
				default:
					t.Errorf("status %d: %s", status, body)
					return
				}
			}
		})
	}
	// Meanwhile bob, another principal, keeps his own budget.
	for i := range 5 {
		if status, _, body := statelessCall(ctx, t, base+"team/mcp", bob, "notion__search"); status != http.StatusOK {
			t.Fatalf("bob's call %d during alice's window: %d %s", i+1, status, body)
		}
	}
	wg.Wait()
	// GCRA: the burst at once, then one call per emission interval (1s).
	const want = 10 + 10
	t.Logf("alice: %d admitted, %d refused in %s over 3 data planes", admitted.Load(), refused.Load(), window)
	if got := admitted.Load(); got != want {
		t.Fatalf("alice: %d calls admitted in %s, want exactly %d (burst 10 + 1/s)", got, window, want)
	}
	if n := up.count("search"); n != want+5 {
		t.Fatalf("the upstream got %d search calls, want %d (alice's admitted and bob's 5): refused calls must not reach it", n, want+5)
	}

	// The seed's scenario: create_page once a minute per principal; search free.
	for i, wantStatus := range []int{200, 429, 429} {
		status, h, body := statelessCall(ctx, t, base+"crm/mcp", alice, "notion__create_page")
		if status != wantStatus {
			t.Fatalf("alice's create_page %d: %d %s, want %d", i+1, status, body, wantStatus)
		}
		if status == 429 {
			var resp struct {
				Error struct {
					Code int `json:"code"`
					Data struct {
						Policy       string `json:"policy"`
						Limit        int    `json:"limit"`
						RetryAfterMs int64  `json:"retryAfterMs"`
					} `json:"data"`
				} `json:"error"`
			}
			if err := json.Unmarshal([]byte(body), &resp); err != nil || resp.Error.Data.Policy != "pages" || resp.Error.Data.Limit != 1 ||
				resp.Error.Data.RetryAfterMs < 50_000 || resp.Error.Data.RetryAfterMs > 60_000 || h.Get("Retry-After") == "" {
				t.Fatalf("refusal: %v %s %v", err, body, h)
			}
		}
	}
	for i := range 5 {
		if status, _, body := statelessCall(ctx, t, base+"crm/mcp", alice, "notion__search"); status != 200 {
			t.Fatalf("alice's search %d on crm: %d %s", i+1, status, body)
		}
	}
	if status, _, body := statelessCall(ctx, t, base+"crm/mcp", bob, "notion__create_page"); status != 200 {
		t.Fatalf("bob's create_page: %d %s", status, body)
	}
	if n := up.count("create_page"); n != 2 {
		t.Fatalf("the upstream got %d create_page calls, want 2 (alice's first and bob's)", n)
	}

	// mmctl reads alice's bucket where the data planes count it, and resets it.
	r := cp.ok(t, "ratelimit", "status", "pages", "--principal", "alice")
	if !strings.Contains(r.stdout, "crm") || !strings.Contains(r.stdout, "0/1") || !strings.Contains(r.stdout, "redis") {
		t.Fatalf("mmctl ratelimit status:\n%s", r.stdout)
	}
	cp.ok(t, "ratelimit", "reset", "pages", "--principal", "alice")
	if status, _, body := statelessCall(ctx, t, base+"crm/mcp", alice, "notion__create_page"); status != 200 {
		t.Fatalf("alice's create_page after mmctl ratelimit reset: %d %s", status, body)
	}
	if rz := dps[0].readyz(t); !strings.Contains(rz.body, "ratelimit: redis ok") {
		t.Fatalf("readyz:\n%s", rz.body)
	}
}

// TestRateLimitRedisKilled: with Redis SIGKILLed mid-run, each policy does as
// its failure mode says: open admits, closed refuses saying the limiter is
// unavailable, local admits its share (a third, with three data planes) in
// process; no call waits for the dead Redis; once Redis is back, counting
// resumes there without a restart.
func TestRateLimitRedisKilled(t *testing.T) {
	up := startCountingUpstream(t)
	rds := redistest.StartPrivate(t)
	redisArgs := []string{"--redis-url", rds.URL(), "--ratelimit-timeout", "1s"}
	cp := startControlPlane(t)
	dps := []*dataPlane{startDataPlane(t, cp, "dp-a", redisArgs...), startDataPlane(t, cp, "dp-b", redisArgs...), startDataPlane(t, cp, "dp-c", redisArgs...)}
	cp.ok(t, "create", "server", "notion", "--url", up.url+"/")
	cp.ok(t, "create", "namespace", "ns", "--server", "notion")
	for _, mode := range []string{"open", "closed", "local"} {
		burst := "1"
		if mode == "local" {
			burst = "9"
		}
		cp.ok(t, "create", "ratelimit", mode, "--rate", "9", "--per", "1h", "--burst", burst, "--on-redis-failure", mode)
		cp.ok(t, "create", "endpoint", mode, "--namespace", "ns", "--rate-limit", mode)
	}
	key := createKey(t, cp, "alice", "*")
	waitApplied(t, cp, cp.revisionNum(t), dps...)
	dp := dps[0]
	url := func(ep string) string { return "http://" + dp.addr + "/metamcp/" + ep + "/mcp" }
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	calls := func(ep string, n int) (statuses []int, bodies []string) {
		for range n {
			start := time.Now()
			status, _, body := statelessCall(ctx, t, url(ep), key, "notion__search")
			// The limiter's timeout is 1s (long enough that a busy machine
			// does not hit it while Redis lives); the margin is for a busy
			// machine too.
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("a call to %s took %s with the limiter's timeout at 1s", ep, d)
			}
			statuses, bodies = append(statuses, status), append(bodies, body)
		}
		return statuses, bodies
	}
	// With Redis: the burst, then refusals, counted in Redis.
	if s, _ := calls("open", 2); s[0] != 200 || s[1] != 429 {
		t.Fatalf("open with Redis: %v", s)
	}
	if s, _ := calls("closed", 2); s[0] != 200 || s[1] != 429 {
		t.Fatalf("closed with Redis: %v", s)
	}
	if s, _ := calls("local", 10); s[8] != 200 || s[9] != 429 {
		t.Fatalf("local with Redis: %v", s)
	}
	eventually(t, "the data plane to learn that 3 data planes are live", func() (bool, string) {
		rz := dp.readyz(t)
		return strings.Contains(rz.body, "3 data planes live"), rz.body
	})

	rds.Kill()
	s, _ := calls("open", 5)
	for i, st := range s {
		if st != 200 {
			t.Fatalf("open without Redis: call %d got %d: %v", i+1, st, s)
		}
	}
	s, b := calls("closed", 3)
	for i, st := range s {
		if st != http.StatusServiceUnavailable || !strings.Contains(b[i], "rate limiter is unavailable") || strings.Contains(b[i], "rate limit exceeded") {
			t.Fatalf("closed without Redis: call %d: %d %s", i+1, st, b[i])
		}
	}
	// local: a third of the burst of 9 at this data plane, counted here.
	s, _ = calls("local", 5)
	if fmt.Sprint(s) != "[200 200 200 429 429]" {
		t.Fatalf("local without Redis, 3 data planes: %v, want 3 admitted", s)
	}
	if rz := dp.readyz(t); rz.code != 200 || !strings.Contains(rz.body, "ratelimit: redis unavailable") {
		t.Fatalf("readyz without Redis: %d\n%s", rz.code, rz.body)
	}

	// Redis returns (empty: no persistence); the next calls count there again.
	rds.Restart(t)
	eventually(t, "the closed policy counting in Redis again", func() (bool, string) {
		s, b := calls("closed", 1)
		return s[0] == 200, fmt.Sprint(s[0], b[0])
	})
	if s, _ := calls("closed", 1); s[0] != 429 {
		t.Fatalf("closed after Redis returned: %v, want the burst of 1 counted in Redis", s)
	}
	if rz := dp.readyz(t); !strings.Contains(rz.body, "ratelimit: redis ok") {
		t.Fatalf("readyz after Redis returned:\n%s", rz.body)
	}
}
