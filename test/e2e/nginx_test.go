package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/metamcp/metamcp/internal/testharness"
	"github.com/metamcp/metamcp/test/fixtures/fixture"
)

// nginxCalls is the number of tools/call the client makes through nginx.
const nginxCalls = 200

// TestTwoDataPlanesBehindNginx runs two data planes behind nginx (Debian's
// package, configured from deploy/nginx/metamcp.conf: plain round robin, no
// stickiness). A session-based go-sdk client (2025-11-25) makes 200
// tools/call through nginx, alternating between a shared and a per_client
// Streamable HTTP upstream; nginx's access log shows the calls spread over
// both data planes. Halfway, one data plane is killed (SIGKILL): the client
// goes on with the same session on the other, with no failure and no new
// initialize. A session id altered by one byte is refused; after one
// `mmctl rotate session-key` the session goes on, after a second it is
// refused.
func TestTwoDataPlanesBehindNginx(t *testing.T) {
	nginx := fixture.Nginx(t)
	fx := fixture.Build(t)
	sharedURL := fixture.Start(t, fx, "http", "web")
	mineURL := fixture.Start(t, fx, "http", "mine")

	cp := startControlPlane(t)
	// The replicas share a session bus on Redis, as in production; without
	// Redis they warn and go on (the calls here need no bus).
	bus := []string{"--redis-url", "redis://127.0.0.1:6379/0", "--redis-prefix", "e2e-nginx-" + randomHex(t, 4) + ":"}
	dpA := startDataPlane(t, cp, "dp-a", bus...)
	dpB := startDataPlane(t, cp, "dp-b", bus...)
	cp.ok(t, "create", "server", "web", "--url", sharedURL)
	cp.ok(t, "create", "server", "mine", "--url", mineURL, "--session-mode", "per_client")
	cp.ok(t, "create", "namespace", "lb", "--server", "web", "--server", "mine")
	cp.ok(t, "create", "endpoint", "lb", "--namespace", "lb")
	r := cp.ok(t, "create", "apikey", "alice", "--endpoint", "lb", "-o", "json")
	var created struct {
		Key string `json:"key"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &created); err != nil || created.Key == "" {
		t.Fatalf("create apikey: %v\n%s", err, r)
	}
	waitApplied(t, cp, cp.revisionNum(t), dpA, dpB)

	ng := startNginx(t, nginx, dpA.addr, dpB.addr)
	url := "http://" + ng.addr + "/metamcp/lb/mcp"

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	client := mcp.NewClient(&mcp.Implementation{Name: "e2e-nginx", Version: "v0"}, nil)
	cs, err := client.Connect(ctx, &mcp.StreamableClientTransport{
		Endpoint:   url,
		HTTPClient: &http.Client{Transport: bearer{key: created.Key}},
		MaxRetries: 3,
	}, &mcp.ClientSessionOptions{ProtocolVersion: "2025-11-25"})
	if err != nil {
		t.Fatalf("connect through nginx: %v\nnginx errors:\n%s", err, ng.errors())
	}
	defer cs.Close()
	sid := cs.ID()
	if sid == "" {
		t.Fatal("a 2025-11-25 session got no session id")
	}
	t.Logf("sealed session id: %d bytes", len(sid))

	// A 2024-11-05 client: its initialize POST reaches, round robin, the
	// replica that does not hold its SSE stream, and is carried there.
	legacy, err := client.Connect(ctx, &mcp.SSEClientTransport{
		Endpoint:   "http://" + ng.addr + "/metamcp/lb/sse",
		HTTPClient: &http.Client{Transport: bearer{key: created.Key}},
	}, nil)
	if err != nil {
		t.Fatalf("connect a 2024-11-05 client through nginx: %v\nnginx errors:\n%s", err, ng.errors())
	}
	for i := range 4 {
		res, err := legacy.CallTool(ctx, &mcp.CallToolParams{Name: "web__echo", Arguments: map[string]any{"text": fmt.Sprint("legacy ", i)}})
		if err != nil || res.IsError || !strings.HasPrefix(res.Content[0].(*mcp.TextContent).Text, "legacy ") {
			t.Fatalf("2024-11-05 call %d through nginx: %+v %v", i, res, err)
		}
	}
	_ = legacy.Close()

	var killedAt int
	for i := range nginxCalls {
		if i == nginxCalls/2 {
			// Halfway: one replica dies without a goodbye.
			before := ng.servedBy(t)
			t.Logf("before the kill, nginx sent requests to %v", before)
			if len(before) != 2 || before[dpA.addr] < nginxCalls/8 || before[dpB.addr] < nginxCalls/8 {
				t.Fatalf("the first %d calls did not alternate between both data planes: %v (want both %s and %s)", i, before, dpA.addr, dpB.addr)
			}
			dpA.proc.Kill(t)
			killedAt = ng.lines(t)
		}
		tool, want := "web__echo", fmt.Sprintf("call %d", i)
		args := map[string]any{"text": want}
		if i%2 == 1 {
			tool, want, args = "mine__whoami", "mine ", nil
		}
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: args})
		if err != nil {
			t.Fatalf("call %d (%s): %v\nnginx errors:\n%s\ndp-b logs:\n%s", i, tool, err, ng.errors(), testharness.Tail(dpB.logs.String(), 40))
		}
		if res.IsError || len(res.Content) != 1 || !strings.HasPrefix(res.Content[0].(*mcp.TextContent).Text, want) {
			t.Fatalf("call %d (%s): %+v, want text %q", i, tool, res.Content, want)
		}
	}
	if cs.ID() != sid {
		t.Errorf("the session id changed from %q to %q: the client re-initialized", sid, cs.ID())
	}
	// nginx logs a request once it has sent the response: the last line
	// may come a moment after the client has its answer.
	var after map[string]int
	eventually(t, "the calls after the kill in nginx's access log", func() (bool, string) {
		after = ng.servedBySince(t, killedAt)
		return after[dpB.addr] >= nginxCalls/2, fmt.Sprintf("%s served %d requests since the kill, want all %d calls: %v", dpB.addr, after[dpB.addr], nginxCalls/2, after)
	})
	t.Logf("after the kill, nginx sent requests to %v", after)

	// A session id altered by one byte is refused, through nginx.
	rawList := func(id string) int {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(`{"jsonrpc":"2.0","id":9,"method":"tools/list"}`))
		req.Header.Set("Authorization", "Bearer "+created.Key)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("Mcp-Session-Id", id)
		req.Header.Set("Mcp-Protocol-Version", "2025-11-25")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	alt := []byte(sid)
	alt[len(alt)/2] ^= 0x01
	if status := rawList(string(alt)); status != http.StatusNotFound {
		t.Errorf("a session id altered by one byte: %d, want 404", status)
	}
	if status := rawList(sid); status != http.StatusOK {
		t.Fatalf("the session's own id: %d, want 200", status)
	}

	// Key rotation through mmctl: the session survives one, not two.
	cp.ok(t, "rotate", "session-key")
	waitApplied(t, cp, cp.revisionNum(t), dpB)
	if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "web__echo", Arguments: map[string]any{"text": "rotated"}}); err != nil {
		t.Fatalf("a call after one key rotation: %v", err)
	}
	cp.ok(t, "rotate", "session-key")
	waitApplied(t, cp, cp.revisionNum(t), dpB)
	if status := rawList(sid); status != http.StatusNotFound {
		t.Errorf("the session's id after two key rotations: %d, want 404", status)
	}
}

// nginxProc is an nginx started by a test.
type nginxProc struct {
	addr string
	dir  string
	proc *testharness.Proc
}

// startNginx runs nginx with deploy/nginx/metamcp.conf, pointed at the two
// data planes and listening on a free loopback port, with its pid, logs and
// temp files under a temp dir, and each of edits (old, new) applied to the
// config once. It is stopped at cleanup.
func startNginx(t *testing.T, bin, dpA, dpB string, edits ...[2]string) *nginxProc {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	shipped, err := os.ReadFile(filepath.Join(filepath.Dir(file), "..", "..", "deploy", "nginx", "metamcp.conf"))
	if err != nil {
		t.Fatalf("read the shipped nginx config: %v", err)
	}
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil { // workers may run as nobody
		t.Fatal(err)
	}
	n := &nginxProc{addr: testharness.LoopbackAddr(t), dir: dir}
	conf := string(shipped)
	for _, rep := range [][2]string{
		{"worker_processes auto;", "worker_processes 1;"}, // one round-robin state
		{"server 127.0.0.1:12008 ", "server " + dpA + " "},
		{"server 127.0.0.1:12018 ", "server " + dpB + " "},
		{"listen 8080;", "listen " + n.addr + ";"},
		{"/var/log/nginx/metamcp.access.log", filepath.Join(dir, "access.log")},
		{"http {\n", "http {\n    client_body_temp_path " + dir + "/body;\n    proxy_temp_path " + dir + "/proxy;\n" +
			"    fastcgi_temp_path " + dir + "/fastcgi;\n    uwsgi_temp_path " + dir + "/uwsgi;\n    scgi_temp_path " + dir + "/scgi;\n"},
	} {
		if strings.Count(conf, rep[0]) != 1 {
			t.Fatalf("deploy/nginx/metamcp.conf no longer has exactly one %q: update this test", rep[0])
		}
		conf = strings.Replace(conf, rep[0], rep[1], 1)
	}
	for _, rep := range edits {
		if !strings.Contains(conf, rep[0]) {
			t.Fatalf("deploy/nginx/metamcp.conf no longer has %q: update this test", rep[0])
		}
		conf = strings.ReplaceAll(conf, rep[0], rep[1])
	}
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-p", dir, "-c", confPath, "-e", filepath.Join(dir, "error.log"),
		"-g", "daemon off; pid "+filepath.Join(dir, "nginx.pid")+";")
	// SIGTERM at cleanup is nginx's fast shutdown; the process group takes
	// the workers along should the master not.
	n.proc = testharness.Start(t, "nginx", cmd)
	testharness.WaitHTTP(t, n.proc, "http://"+n.addr+"/nginx-healthz", waitTimeout)
	return n
}

func (n *nginxProc) errors() string {
	b, _ := os.ReadFile(filepath.Join(n.dir, "error.log"))
	return testharness.Tail(string(b), 30)
}

func (n *nginxProc) accessLines(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(n.dir, "access.log"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return lines(string(b))
}

// lines is the number of requests logged so far (nginx writes each line
// when its request ends, unbuffered).
func (n *nginxProc) lines(t *testing.T) int { return len(n.accessLines(t)) }

var upstreamField = regexp.MustCompile(`"POST /metamcp/\S+ [^"]*" (\d+) upstream="([^"]*)"`)

// servedBy counts the POSTs each data plane answered.
func (n *nginxProc) servedBy(t *testing.T) map[string]int { return n.servedBySince(t, 0) }

// servedBySince counts the POSTs each data plane answered, from line from on.
// A request nginx retried on another data plane names both ("a, b"): it counts
// for the one that answered.
func (n *nginxProc) servedBySince(t *testing.T, from int) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, l := range n.accessLines(t)[from:] {
		m := upstreamField.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		addrs := strings.Split(m[2], ",")
		out[strings.TrimSpace(addrs[len(addrs)-1])]++
	}
	return out
}
