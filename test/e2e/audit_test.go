package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/metamcp/metamcp/internal/testharness"
)

// auditRecord is a line of `mmctl logs -o json`.
type auditRecord struct {
	ID            string `json:"id"`
	NodeID        string `json:"nodeId"`
	Endpoint      string `json:"endpoint"`
	Principal     string `json:"principal"`
	PrincipalKind string `json:"principalKind"`
	KeyID         string `json:"keyId"`
	Method        string `json:"method"`
	Target        string `json:"target"`
	Server        string `json:"server"`
	Outcome       string `json:"outcome"`
	Destructive   bool   `json:"destructive"`
	HTTPStatus    int    `json:"httpStatus"`
	Arguments     string `json:"arguments"`
	ClientName    string `json:"clientName"`
	SessionID     string `json:"sessionId"`
}

// parseLogs decodes `mmctl logs -o json`: one record per line.
func parseLogs(t *testing.T, r result) []auditRecord {
	t.Helper()
	var out []auditRecord
	for _, l := range lines(r.stdout) {
		var rec auditRecord
		if err := json.Unmarshal([]byte(l), &rec); err != nil {
			t.Fatalf("mmctl logs -o json: a line that is not one JSON record (%v): %q\n%s", err, l, r)
		}
		out = append(out, rec)
	}
	return out
}

// connectMCP opens a go-sdk session to an endpoint URL with an API key.
func connectMCP(ctx context.Context, t *testing.T, url, key string) *mcp.ClientSession {
	t.Helper()
	client := mcp.NewClient(&mcp.Implementation{Name: "e2e-audit", Version: "v1"}, nil)
	cs, err := client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: url, HTTPClient: &http.Client{Transport: bearer{key: key}}}, nil)
	if err != nil {
		t.Fatalf("connect to %s: %v", url, err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs
}

// checkLogsCommand drives `mmctl logs` against a running control plane
// whose endpoint serves the demo server as "demo" and whose principal is
// user; call makes one echo call with the text given. It checks filters,
// the summary and follow mode.
func checkLogsCommand(t *testing.T, env []string, endpoint, user string, call func(text string)) {
	t.Helper()
	mm := mmctlOK(t, env)
	for i := range 3 {
		call(fmt.Sprint("logs-", i))
	}
	// Records reach the control plane within moments.
	var recs []auditRecord
	eventually(t, "three echo records", func() (bool, string) {
		r := mm("logs", "-o", "json", "--tool", "demo__echo", "--user", user, "--limit", "0")
		recs = parseLogs(t, r)
		return len(recs) >= 3, r.stdout
	})
	for _, rec := range recs {
		if rec.Endpoint != endpoint || rec.Principal != user || rec.PrincipalKind != "apikey" || rec.Method != "tools/call" ||
			rec.Server != "demo" || rec.Outcome != "ok" || rec.ID == "" || rec.NodeID == "" || rec.ClientName != "e2e-audit" {
			t.Errorf("echo record = %+v", rec)
		}
	}
	// Filters that select nothing, and the glob that selects the tools.
	for _, args := range [][]string{
		{"--user", "nobody"},
		{"--endpoint", "nowhere"},
		{"--server", "nothing"},
		{"--tool", "other__*"},
		{"--outcome", "forbidden", "--tool", "demo__*"},
		{"--since", "2000-01-01T00:00:00Z", "--until", "2000-01-02T00:00:00Z"},
		{"--until", "1h", "--tool", "demo__echo"},
	} {
		if got := parseLogs(t, mm(append([]string{"logs", "-o", "json"}, args...)...)); len(got) != 0 {
			t.Errorf("mmctl logs %v: %d records, want none", args, len(got))
		}
	}
	if got := parseLogs(t, mm("logs", "-o", "json", "--tool", "demo__e*", "--since", "1h", "--outcome", "ok", "--method", "tools/call", "--server", "demo", "--endpoint", endpoint)); len(got) < 3 {
		t.Errorf("mmctl logs with every filter matching: %d records, want at least 3", len(got))
	}
	if got := parseLogs(t, mm("logs", "-o", "json", "--tool", "demo__echo", "--limit", "2")); len(got) != 2 {
		t.Errorf("mmctl logs --limit 2: %d records", len(got))
	}
	table := mm("logs", "--tool", "demo__echo", "--since", "1h")
	if !strings.Contains(table.stdout, "PRINCIPAL") || !strings.Contains(table.stdout, "demo__echo") || !strings.Contains(table.stdout, user) {
		t.Errorf("mmctl logs (table):\n%s", table)
	}
	yml := mm("logs", "-o", "yaml", "--tool", "demo__echo", "--limit", "1")
	if !strings.Contains(yml.stdout, "target: demo__echo") {
		t.Errorf("mmctl logs -o yaml:\n%s", yml)
	}

	// The summary: calls per principal and tool, with latencies.
	sum := mm("logs", "--summary", "--since", "1h", "--user", user)
	if !strings.Contains(sum.stdout, "P95") || !lineWith(sum.stdout, user, "demo__echo") {
		t.Errorf("mmctl logs --summary:\n%s", sum)
	}
	var sj struct {
		Rows []struct {
			Principal string `json:"principal"`
			Target    string `json:"target"`
			Calls     string `json:"calls"`
			P95       string `json:"p95"`
		} `json:"rows"`
	}
	if err := json.Unmarshal([]byte(mm("logs", "--summary", "--since", "1h", "--tool", "demo__echo", "-o", "json").stdout), &sj); err != nil {
		t.Fatal(err)
	}
	if len(sj.Rows) != 1 || sj.Rows[0].Principal != user {
		t.Errorf("mmctl logs --summary -o json: %+v", sj)
	} else if n, _ := strconv.Atoi(sj.Rows[0].Calls); n < 3 || sj.Rows[0].P95 == "" {
		t.Errorf("summary row %+v: want at least 3 calls and a p95", sj.Rows[0])
	}

	// Follow: a new call shows while mmctl logs -f runs.
	follow := exec.Command(mmctlBin, "logs", "-f", "-o", "json", "--tool", "demo__echo", "--limit", "1")
	follow.Env = baseEnv(t, env...)
	out := testharness.Start(t, "mmctl logs -f", follow).Output
	// The newest record comes first: then the stream is up.
	eventually(t, "mmctl logs -f printing the newest record", func() (bool, string) {
		return strings.Contains(out.String(), `"logs-2"`) || strings.Count(out.String(), "\n") >= 1, out.String()
	})
	start := time.Now()
	call("followed")
	eventually(t, "the new call in mmctl logs -f", func() (bool, string) {
		return strings.Contains(out.String(), `"target":"demo__echo"`) && strings.Count(out.String(), "\n") >= 2, out.String()
	})
	t.Logf("mmctl logs -f showed a new call %v after it was made", time.Since(start).Round(time.Millisecond))
	if n := strings.Count(out.String(), "\n"); n != 2 {
		t.Errorf("mmctl logs -f printed %d lines, want the newest record and the new one:\n%s", n, out)
	}
}

// mmctlOK returns an mmctl runner with env that expects success.
func mmctlOK(t *testing.T, env []string) func(args ...string) result {
	return func(args ...string) result {
		t.Helper()
		r := runMmctl(t, env, "", args...)
		if r.code != 0 {
			t.Fatalf("want success:\n%s", r)
		}
		return r
	}
}

const auditConfig = `kind: Server
name: demo
stdio:
  command: %s
  args: [demo-server]
---
kind: Namespace
name: audit
members:
  - server: demo
    toolOverrides:
      echo:
        annotations: {destructiveHint: true}
---
kind: Endpoint
name: audit
namespace: audit
audit:
  captureArguments: true
  redactKeys: [ssn]
---
kind: Endpoint
name: other
namespace: audit
`

// TestAuditTrailPostgres: on a control plane on Postgres, every request
// through the data plane is recorded once, refusals with their outcomes and
// a destructive tool's calls marked, payloads shown only when asked for and
// redacted; mmctl logs filters, summarizes and follows.
func TestAuditTrailPostgres(t *testing.T) {
	cp := startControlPlane(t)
	dp := startDataPlane(t, cp, "dp-audit", "--auth-failures-per-minute", "3")
	cp.okIn(t, fmt.Sprintf(auditConfig, metamcpBin), "apply", "-f", "-")
	alice := createAPIKey(t, cp, "alice", "audit")
	bob := createAPIKey(t, cp, "bob", "other")
	waitApplied(t, cp, cp.revisionNum(t), dp)
	url := "http://" + dp.addr + "/metamcp/audit/mcp"
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cs := connectMCP(ctx, t, url, alice)
	env := []string{"METAMCP_ADDR=" + cp.addr, "METAMCP_TOKEN=" + cp.token}
	mm := mmctlOK(t, env)

	// A call whose arguments hold a secret the endpoint redacts.
	if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "demo__add", Arguments: map[string]any{"a": 1, "b": 2, "ssn": "123-45-6789"}}); err != nil {
		t.Fatal(err)
	}
	checkLogsCommand(t, env, "audit", "alice", func(text string) { callText(ctx, t, cs, "demo__echo", map[string]any{"text": text}) })
	// Refusals, last (the throttle then holds this address back a while):
	// bob's key is for another endpoint (forbidden), an unknown key
	// (unauthorized, answered 403 on an endpoint of API keys), and after
	// three failures the throttle (429).
	for i, key := range []string{bob, "mm_unknown", "mm_unknown", "mm_unknown"} {
		code, _, _ := mcpPost(t, url, "Bearer "+key)
		if want := http.StatusForbidden; i < 3 && code != want || i == 3 && code != http.StatusTooManyRequests {
			t.Errorf("refused request %d: status %d", i, code)
		}
	}

	var all []auditRecord
	eventually(t, "the refusals' records", func() (bool, string) {
		r := mm("logs", "-o", "json", "--limit", "0", "--outcome", "unauthorized,forbidden,rate_limited")
		all = parseLogs(t, r)
		return len(all) == 4, r.stdout
	})
	counts := map[string]int{}
	for _, rec := range all {
		counts[rec.Outcome]++
		if rec.Outcome == "forbidden" && (rec.Principal != "bob" || rec.KeyID != "bob" || rec.HTTPStatus != 403) {
			t.Errorf("forbidden record = %+v, want bob's key, 403", rec)
		}
		if rec.Endpoint != "audit" || rec.Method != "" {
			t.Errorf("refusal record = %+v", rec)
		}
	}
	if counts["forbidden"] != 1 || counts["unauthorized"] != 2 || counts["rate_limited"] != 1 {
		t.Errorf("refusals by outcome = %v, want 1 forbidden, 2 unauthorized, 1 rate_limited", counts)
	}

	// The destructive tool is marked; payloads only with --payloads.
	destructive := parseLogs(t, mm("logs", "-o", "json", "--destructive", "--limit", "0"))
	if len(destructive) < 4 {
		t.Errorf("--destructive: %d records, want every echo call (4)", len(destructive))
	}
	for _, rec := range destructive {
		if rec.Target != "demo__echo" || !rec.Destructive || rec.Arguments != "" {
			t.Errorf("destructive record = %+v (no payload without --payloads)", rec)
		}
	}
	if got := parseLogs(t, mm("logs", "-o", "json", "--destructive=false", "--tool", "demo__echo")); len(got) != 0 {
		t.Errorf("--destructive=false --tool demo__echo: %d records", len(got))
	}
	adds := parseLogs(t, mm("logs", "-o", "json", "--payloads", "--tool", "demo__add"))
	if len(adds) != 1 || adds[0].Arguments != `{"a":1,"b":2,"ssn":"[REDACTED]"}` {
		t.Errorf("add with --payloads: %+v, want the arguments with ssn redacted", adds)
	}
	// Each request once: initialize, the list the client made, the calls.
	every := parseLogs(t, mm("logs", "-o", "json", "--limit", "0", "--endpoint", "audit"))
	ids := map[string]int{}
	for _, rec := range every {
		ids[rec.ID]++
	}
	for id, n := range ids {
		if n != 1 {
			t.Errorf("record %s listed %d times", id, n)
		}
	}
	if r := cp.mmctl(t, "logs", "--outcome", "bogus"); r.code != 2 || !strings.Contains(r.stderr, "unauthorized") {
		t.Errorf("an unknown outcome: want a usage error listing the outcomes:\n%s", r)
	}
}

// TestAuditTrailDev: mmctl logs against `metamcp dev` (its SQLite store).
func TestAuditTrailDev(t *testing.T) {
	out := runDev(t).Output
	banner := out.String()
	m, u, k := devExport.FindStringSubmatch(banner), devURL.FindStringSubmatch(banner), devKey.FindStringSubmatch(banner)
	if m == nil || u == nil || k == nil {
		t.Fatalf("the banner lacks the export line, the URL or the key:\n%s", banner)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cs := connectMCP(ctx, t, u[1], k[1])
	checkLogsCommand(t, []string{"METAMCP_ADDR=" + m[1], "METAMCP_TOKEN=" + m[2]}, "default", "dev", func(text string) { callText(ctx, t, cs, "demo__echo", map[string]any{"text": text}) })
}

// TestAuditTrailSurvivesRestarts: calls through three data planes while the
// control plane is killed (SIGKILL) and comes back, and one data plane is
// restarted while it holds records the control plane has not stored: every
// call appears exactly once in mmctl logs. The measure is 10,000
// calls; CI makes 3 x 4 x METAMCP_E2E_AUDIT_CALLS (default 50) calls.
func TestAuditTrailSurvivesRestarts(t *testing.T) {
	perPhase := 50
	if v, err := strconv.Atoi(os.Getenv("METAMCP_E2E_AUDIT_CALLS")); err == nil && v > 0 {
		perPhase = v
	}
	cp := startControlPlane(t)
	dps := []*dataPlane{startDataPlane(t, cp, "dp-a"), startDataPlane(t, cp, "dp-b"), startDataPlane(t, cp, "dp-c")}
	cp.okIn(t, fmt.Sprintf(auditConfig, metamcpBin), "apply", "-f", "-")
	key := createAPIKey(t, cp, "loader", "audit")
	waitApplied(t, cp, cp.revisionNum(t), dps...)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	var (
		mu   sync.Mutex
		sent = map[string]bool{}
	)
	// phase makes perPhase calls through each data plane, concurrently,
	// each with an argument of its own.
	phase := func(name string) {
		var wg sync.WaitGroup
		for i, dp := range dps {
			wg.Go(func() {
				cs := connectMCP(ctx, t, "http://"+dp.addr+"/metamcp/audit/mcp", key)
				defer cs.Close()
				for j := range perPhase {
					arg := fmt.Sprintf("%s-%d-%d", name, i, j)
					res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "demo__echo", Arguments: map[string]any{"text": arg}})
					if err != nil || res.IsError {
						t.Errorf("call %s through %s: %v %+v", arg, dp.node, err, res)
						return
					}
					mu.Lock()
					sent[arg] = true
					mu.Unlock()
				}
			})
		}
		wg.Wait()
	}

	phase("before")
	cp.kill(t)
	phase("cp-away")
	// dp-b restarts while the control plane is away: what it spooled is
	// sent after its restart.
	dps[1].stop(t)
	dps[1].extraArgs = append(dps[1].extraArgs, "--listen", dps[1].addr)
	dps[1].launch(t)
	phase("dp-restarted")
	cp.launch(t, cp.addr)
	phase("cp-back")

	want := len(sent)
	if want != 4*3*perPhase {
		t.Fatalf("%d calls succeeded, want %d", want, 4*3*perPhase)
	}
	mm := mmctlOK(t, []string{"METAMCP_ADDR=" + cp.addr, "METAMCP_TOKEN=" + cp.token})
	var recs []auditRecord
	eventually(t, "every call in mmctl logs", func() (bool, string) {
		r := mm("logs", "-o", "json", "--payloads", "--tool", "demo__echo", "--limit", "0")
		recs = parseLogs(t, r)
		return len(recs) >= want, fmt.Sprintf("%d of %d records", len(recs), want)
	})
	seen := map[string]int{}
	nodes := map[string]int{}
	for _, rec := range recs {
		var args struct {
			Text string `json:"text"`
		}
		if err := json.Unmarshal([]byte(rec.Arguments), &args); err != nil {
			t.Fatalf("record arguments %q: %v", rec.Arguments, err)
		}
		seen[args.Text]++
		nodes[rec.NodeID]++
	}
	for arg := range sent {
		if seen[arg] != 1 {
			t.Errorf("call %s is in mmctl logs %d times, want once", arg, seen[arg])
		}
	}
	if len(seen) != want || len(recs) != want {
		t.Errorf("mmctl logs has %d records of %d calls, want %d", len(recs), len(seen), want)
	}
	t.Logf("records per data plane: %v", nodes)
}

// TestAuditTrailOutage: calls flow through a data plane at full speed while
// the control plane is away (SIGKILL, then a restart on the same address):
// once it is back every record arrives, each once. The measure is
// 60 s at 2,000 calls a second; CI keeps the control plane away for
// METAMCP_E2E_AUDIT_OUTAGE (default 3s) with 8 clients.
func TestAuditTrailOutage(t *testing.T) {
	outage := 3 * time.Second
	if d, err := time.ParseDuration(os.Getenv("METAMCP_E2E_AUDIT_OUTAGE")); err == nil && d > 0 {
		outage = d
	}
	workers := 8
	if v, err := strconv.Atoi(os.Getenv("METAMCP_E2E_AUDIT_WORKERS")); err == nil && v > 0 {
		workers = v
	}
	cp := startControlPlane(t)
	dp := startDataPlane(t, cp, "dp-load")
	cp.okIn(t, fmt.Sprintf(auditConfig, metamcpBin), "apply", "-f", "-")
	key := createAPIKey(t, cp, "loader", "audit")
	waitApplied(t, cp, cp.revisionNum(t), dp)
	ctx, cancel := context.WithTimeout(context.Background(), outage+5*time.Minute)
	defer cancel()

	var (
		mu     sync.Mutex
		sent   = map[string]bool{}
		during int
		away   bool
	)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			cs := connectMCP(ctx, t, "http://"+dp.addr+"/metamcp/audit/mcp", key)
			defer cs.Close()
			for j := 0; ; j++ {
				select {
				case <-stop:
					return
				default:
				}
				arg := fmt.Sprintf("w%d-%d", w, j)
				res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "demo__echo", Arguments: map[string]any{"text": arg}})
				if err != nil || res.IsError {
					t.Errorf("call %s: %v %+v", arg, err, res)
					return
				}
				mu.Lock()
				sent[arg] = true
				if away {
					during++
				}
				mu.Unlock()
			}
		})
	}
	// sentAtLeast waits until the clients have made n calls in all.
	sentAtLeast := func(what string, n int) {
		t.Helper()
		eventually(t, what, func() (bool, string) {
			mu.Lock()
			defer mu.Unlock()
			return len(sent) >= n, fmt.Sprintf("%d calls of %d", len(sent), n)
		})
	}
	sentAtLeast("calls flowing before the outage", 10*workers)
	cp.kill(t)
	mu.Lock()
	away = true
	mu.Unlock()
	start := time.Now()
	time.Sleep(outage)
	mu.Lock()
	away = false
	n := during
	mu.Unlock()
	t.Logf("control plane away %v: %d calls (%.0f a second)", time.Since(start).Round(time.Millisecond), n, float64(n)/time.Since(start).Seconds())
	cp.launch(t, cp.addr)
	back := time.Now()
	mu.Lock()
	before := len(sent)
	mu.Unlock()
	sentAtLeast("calls flowing after the control plane came back", before+10*workers)
	close(stop)
	wg.Wait()

	mu.Lock()
	want := len(sent)
	mu.Unlock()
	mm := mmctlOK(t, []string{"METAMCP_ADDR=" + cp.addr, "METAMCP_TOKEN=" + cp.token})
	eventually(t, "every call in the control plane", func() (bool, string) {
		r := mm("logs", "--summary", "--tool", "demo__echo", "-o", "json")
		var sum struct {
			Records string `json:"records"`
		}
		_ = json.Unmarshal([]byte(r.stdout), &sum)
		got, _ := strconv.Atoi(sum.Records)
		return got >= want, fmt.Sprintf("%d of %d records", got, want)
	})
	t.Logf("all %d records stored %v after the control plane came back", want, time.Since(back).Round(time.Millisecond))
	recs := parseLogs(t, mm("logs", "-o", "json", "--payloads", "--tool", "demo__echo", "--limit", "0", "--timeout", "5m"))
	seen := map[string]int{}
	for _, rec := range recs {
		var args struct {
			Text string `json:"text"`
		}
		_ = json.Unmarshal([]byte(rec.Arguments), &args)
		seen[args.Text]++
	}
	missing, twice := 0, 0
	for arg := range sent {
		switch seen[arg] {
		case 0:
			missing++
		case 1:
		default:
			twice++
		}
	}
	if missing > 0 || twice > 0 || len(recs) != want {
		t.Errorf("%d calls, %d records: %d missing, %d more than once", want, len(recs), missing, twice)
	}
	if r := dp.readyz(t); !strings.Contains(r.body, "0 lost") {
		t.Errorf("/readyz: %s, want no record lost", r.body)
	}
}
