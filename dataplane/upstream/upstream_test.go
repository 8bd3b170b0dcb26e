package upstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/dataplane/rpc"
	"github.com/metamcp/metamcp/test/fixtures/fixture"
)

func TestMain(m *testing.M) {
	code := m.Run()
	fixture.Cleanup()
	os.Exit(code)
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(b []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

func stdioServer(bin, name string, extra ...string) *metamcpv1.Server {
	return &metamcpv1.Server{
		Name:      name,
		Transport: &metamcpv1.Server_Stdio{Stdio: &metamcpv1.StdioTransport{Command: bin, Args: fixture.StdioArgs(name, extra...)}},
	}
}

func httpServer(name, url string) *metamcpv1.Server {
	return &metamcpv1.Server{Name: name, Transport: &metamcpv1.Server_StreamableHttp{StreamableHttp: &metamcpv1.HTTPTransport{Url: url}}}
}

func sseServer(name, url string) *metamcpv1.Server {
	return &metamcpv1.Server{Name: name, Transport: &metamcpv1.Server_Sse{Sse: &metamcpv1.HTTPTransport{Url: url}}}
}

func newTestPool(t testing.TB, opts PoolOptions, servers ...*metamcpv1.Server) *Pool {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	p := NewPool(opts)
	t.Cleanup(func() { _ = p.Close() })
	m := make(map[string]*metamcpv1.Server)
	for _, s := range servers {
		m[s.GetName()] = s
	}
	p.Update(m)
	return p
}

func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// toolText calls a tool and returns the text of its first content item.
func toolText(ctx context.Context, s Session, tool string, args any) (string, error) {
	params, _ := json.Marshal(map[string]any{"name": tool, "arguments": args})
	res, err := s.Call(ctx, "tools/call", params)
	if err != nil {
		return "", err
	}
	var r struct {
		Content []struct {
			Text string `json:"text"`
		} `json:"content"`
		IsError bool `json:"isError"`
	}
	if err := json.Unmarshal(res, &r); err != nil {
		return "", fmt.Errorf("decode %s: %w", res, err)
	}
	if len(r.Content) == 0 {
		return "", fmt.Errorf("no content in %s", res)
	}
	if r.IsError {
		return r.Content[0].Text, errors.New("tool error: " + r.Content[0].Text)
	}
	return r.Content[0].Text, nil
}

func callTool(t testing.TB, p *Pool, server, client, tool string, args any) string {
	t.Helper()
	ctx := ctxT(t, 60*time.Second)
	s, err := p.Session(ctx, server, client)
	if err != nil {
		t.Fatalf("session %s/%s: %v", server, client, err)
	}
	out, err := toolText(ctx, s, tool, args)
	if err != nil {
		t.Fatalf("%s on %s: %v", tool, server, err)
	}
	return out
}

// transports starts the fixture on each transport and returns its server config.
func transports(t *testing.T) map[string]func(t *testing.T, name string) *metamcpv1.Server {
	bin := fixture.Build(t)
	return map[string]func(t *testing.T, name string) *metamcpv1.Server{
		"stdio": func(t *testing.T, name string) *metamcpv1.Server { return stdioServer(bin, name) },
		"sse": func(t *testing.T, name string) *metamcpv1.Server {
			return sseServer(name, fixture.Start(t, bin, "sse", name))
		},
		"http": func(t *testing.T, name string) *metamcpv1.Server {
			return httpServer(name, fixture.Start(t, bin, "http", name))
		},
	}
}

func TestTransports(t *testing.T) {
	for tname, mk := range transports(t) {
		t.Run(tname, func(t *testing.T) {
			srv := mk(t, "fx")
			p := newTestPool(t, PoolOptions{}, srv)
			ctx := ctxT(t, 60*time.Second)
			s, err := p.Session(ctx, "fx", "")
			if err != nil {
				t.Fatalf("Session: %v", err)
			}
			if s.Server() != "fx" {
				t.Errorf("Server() = %q", s.Server())
			}
			info := s.Info()
			if info.ProtocolVersion != ProtocolVersion {
				t.Errorf("protocol version %q, want %q", info.ProtocolVersion, ProtocolVersion)
			}
			if name, _ := rpc.StringField(info.ServerInfo, "name"); name != "fx" {
				t.Errorf("serverInfo %s", info.ServerInfo)
			}
			if info.Instructions != "Test fixture fx." || !strings.Contains(string(info.Capabilities), "tools") {
				t.Errorf("info %+v", info)
			}

			// tools/list
			res, err := s.Call(ctx, "tools/list", json.RawMessage(`{}`))
			if err != nil {
				t.Fatalf("tools/list: %v", err)
			}
			var list struct{ Tools []struct{ Name string } }
			if err := json.Unmarshal(res, &list); err != nil || len(list.Tools) != 10 {
				t.Fatalf("tools/list = %s (%v)", res, err)
			}

			// tools/call echo, with newlines in the params (stdio framing).
			res, err = s.Call(ctx, "tools/call", json.RawMessage("{\n  \"name\": \"echo\",\n  \"arguments\": {\"text\": \"line1\\nline2\"}\n}"))
			if err != nil {
				t.Fatalf("echo: %v", err)
			}
			if !strings.Contains(string(res), `"text":"line1\nline2"`) {
				t.Errorf("echo result %s", res)
			}

			// A JSON-RPC error passes through as *rpc.Error.
			var rerr *rpc.Error
			_, err = s.Call(ctx, "no/such/method", nil)
			if tname == "stdio" {
				if !errors.As(err, &rerr) || rerr.Code != rpc.CodeMethodNotFound {
					t.Errorf("unknown method: %v (%T), want *rpc.Error %d", err, err, rpc.CodeMethodNotFound)
				}
			} else if err == nil {
				// The go-sdk's HTTP handlers refuse unknown methods with HTTP 400.
				t.Errorf("unknown method: no error")
			}
			_, err = s.Call(ctx, "prompts/get", json.RawMessage(`{"name":"nope"}`))
			if !errors.As(err, &rerr) {
				t.Errorf("unknown prompt: %v (%T), want *rpc.Error", err, err)
			}
			_, err = s.Call(ctx, "tools/call", json.RawMessage(`{"name":"nope"}`))
			if !errors.As(err, &rerr) {
				t.Errorf("unknown tool: %v (%T), want *rpc.Error", err, err)
			}
			// A tool error is a result, not an error.
			if out, err := toolText(ctx, s, "fail", map[string]any{"message": "bad"}); out != "bad" || err == nil {
				t.Errorf("fail = %q, %v", out, err)
			}

			// A call timeout is an *Error wrapping DeadlineExceeded; the session survives.
			cctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
			start := time.Now()
			_, err = s.Call(cctx, "tools/call", json.RawMessage(`{"name":"slow","arguments":{"ms":10000}}`))
			cancel()
			var uerr *Error
			if !errors.As(err, &uerr) || uerr.Server != "fx" || !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("timeout: %v (%T)", err, err)
			}
			if time.Since(start) > 5*time.Second {
				t.Errorf("timeout returned after %s", time.Since(start))
			}
			if out, err := toolText(ctx, s, "echo", map[string]any{"text": "still here"}); err != nil || out != "still here" {
				t.Errorf("after timeout: %q, %v", out, err)
			}

			// 50 concurrent calls on the one shared session.
			var wg sync.WaitGroup
			errs := make(chan error, 50)
			for i := range 50 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					s2, err := p.Session(ctx, "fx", "")
					if err != nil {
						errs <- err
						return
					}
					if s2 != s {
						errs <- errors.New("a shared server gave out a second session")
						return
					}
					want := fmt.Sprintf("call-%d", i)
					out, err := toolText(ctx, s2, "echo", map[string]any{"text": want})
					if err == nil && out != want {
						err = fmt.Errorf("got %q, want %q", out, want)
					}
					if err != nil {
						errs <- err
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			st := p.Status()
			if len(st) != 1 || st[0].State != metamcpv1.UpstreamState_UPSTREAM_STATE_HEALTHY || st[0].Sessions != 1 {
				t.Errorf("status %v", st)
			}
		})
	}
}

// recorder is an Events that records notifications and answers sampling.
type recorder struct {
	mu    sync.Mutex
	notes []string
	reqs  []string
}

func (r *recorder) Notification(server, clientID string, msg *rpc.Message) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.notes = append(r.notes, server+"/"+clientID+" "+msg.Method)
}

func (r *recorder) Request(_ context.Context, server, clientID string, msg *rpc.Message) (json.RawMessage, error) {
	r.mu.Lock()
	r.reqs = append(r.reqs, server+"/"+clientID+" "+msg.Method)
	r.mu.Unlock()
	if msg.Method != "sampling/createMessage" {
		return nil, rpc.NewError(rpc.CodeMethodNotFound, "no")
	}
	return json.RawMessage(`{"role":"assistant","content":{"type":"text","text":"sampled!"},"model":"test"}`), nil
}

func (r *recorder) count(prefix string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, s := range r.notes {
		if strings.HasSuffix(s, prefix) {
			n++
		}
	}
	return n
}

func TestEvents(t *testing.T) {
	for tname, mk := range transports(t) {
		t.Run(tname, func(t *testing.T) {
			rec := &recorder{}
			srv := mk(t, "ev")
			p := newTestPool(t, PoolOptions{Events: rec}, srv)
			ctx := ctxT(t, 60*time.Second)
			s, err := p.Session(ctx, "ev", "")
			if err != nil {
				t.Fatal(err)
			}
			out, err := toolText(ctx, s, "progress", map[string]any{"count": 3})
			if err != nil || out != "done" {
				t.Fatalf("progress: %q, %v", out, err)
			}
			deadline := time.Now().Add(10 * time.Second)
			for rec.count("notifications/progress") < 3 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if n := rec.count("notifications/progress"); n != 3 {
				t.Errorf("got %d progress notifications, want 3", n)
			}
			out, err = toolText(ctx, s, "sample", map[string]any{"prompt": "hi"})
			if err != nil || out != "sampled!" {
				t.Errorf("sample: %q, %v (requests %v)", out, err, rec.reqs)
			}
			// list_changed comes outside any request (on the standalone GET
			// stream for Streamable HTTP).
			if _, err := toolText(ctx, s, "addtool", map[string]any{"name": "late"}); err != nil {
				t.Fatal(err)
			}
			deadline = time.Now().Add(10 * time.Second)
			for rec.count("ev/ notifications/tools/list_changed") < 1 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if rec.count("ev/ notifications/tools/list_changed") != 1 {
				t.Errorf("no list_changed notification; got %v", rec.notes)
			}
			if out, err := toolText(ctx, s, "late", map[string]any{"text": "x"}); err != nil || out != "x" {
				t.Errorf("added tool: %q, %v", out, err)
			}
		})
	}
}

func TestEverythingServer(t *testing.T) {
	npx, err := exec.LookPath("npx")
	if err != nil {
		t.Fatalf("npx is needed to run @modelcontextprotocol/server-everything (install Node.js): %v", err)
	}
	srv := &metamcpv1.Server{
		Name: "everything",
		Transport: &metamcpv1.Server_Stdio{Stdio: &metamcpv1.StdioTransport{
			Command: npx, Args: []string{"-y", "@modelcontextprotocol/server-everything"},
		}},
		Timeouts: &metamcpv1.Timeouts{Initialize: durationpb.New(120 * time.Second)},
	}
	p := newTestPool(t, PoolOptions{}, srv)
	ctx := ctxT(t, 150*time.Second)
	s, err := p.Session(ctx, "everything", "")
	if err != nil {
		t.Fatalf("Session: %v", err)
	}
	t.Logf("server-everything: %s %s", s.Info().ProtocolVersion, s.Info().ServerInfo)
	res, err := s.Call(ctx, "tools/list", nil)
	if err != nil {
		t.Fatalf("tools/list: %v", err)
	}
	var list struct{ Tools []struct{ Name string } }
	if err := json.Unmarshal(res, &list); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tl := range list.Tools {
		names = append(names, tl.Name)
	}
	if !strings.Contains(","+strings.Join(names, ",")+",", ",echo,") {
		t.Fatalf("no echo tool in %v", names)
	}
	out, err := toolText(ctx, s, "echo", map[string]any{"message": "hello everything"})
	if err != nil || !strings.Contains(out, "hello everything") {
		t.Errorf("echo = %q, %v", out, err)
	}
}

func pidOf(t testing.TB, whoami string) int {
	t.Helper()
	f := strings.Fields(whoami)
	pid, err := strconv.Atoi(f[len(f)-1])
	if err != nil {
		t.Fatalf("whoami %q: %v", whoami, err)
	}
	return pid
}

// gone reports whether pid no longer exists (not even as a zombie).
func gone(pid int) (bool, string) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true, ""
	}
	// pid (comm) STATE ...
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return false, s[i+2 : i+3]
	}
	return false, "?"
}

func waitGone(t testing.TB, pids ...int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for _, pid := range pids {
		for {
			ok, state := gone(pid)
			if ok {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("process %d still exists (state %s)", pid, state)
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

func TestCrashRecovery(t *testing.T) {
	bin := fixture.Build(t)
	for _, how := range []string{"crash tool", "kill"} {
		t.Run(how, func(t *testing.T) {
			p := newTestPool(t, PoolOptions{MinBackoff: 300 * time.Millisecond}, stdioServer(bin, "fx"))
			pid1 := pidOf(t, callTool(t, p, "fx", "", "whoami", nil))
			ctx := ctxT(t, 30*time.Second)
			s, err := p.Session(ctx, "fx", "")
			if err != nil {
				t.Fatal(err)
			}
			if how == "kill" {
				if err := syscall.Kill(pid1, syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
			}
			var uerr *Error
			_, err = toolText(ctx, s, "crash", nil) // after a kill: fails the same way
			if !errors.As(err, &uerr) || uerr.Server != "fx" {
				t.Fatalf("call on a dying server: %v (%T), want *upstream.Error", err, err)
			}
			t.Logf("in-flight error: %v", err)
			// The next call fails at once with the server named: either the
			// pool already knows (Session fails), or the write that broke
			// the pipe is still being turned into the session's death (the
			// session is handed out, and its call fails).
			if s2, err2 := p.Session(ctx, "fx", ""); err2 == nil {
				_, err = toolText(ctx, s2, "whoami", nil)
			} else {
				err = err2
			}
			if !errors.As(err, &uerr) || uerr.Server != "fx" {
				t.Fatalf("next call: %v (%T), want *upstream.Error", err, err)
			}
			t.Logf("next call: %v", err)
			// The pool notices the death in the background.
			deadline := time.Now().Add(5 * time.Second)
			for p.Status()[0].State != metamcpv1.UpstreamState_UPSTREAM_STATE_DOWN && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			if st := p.Status(); st[0].State != metamcpv1.UpstreamState_UPSTREAM_STATE_DOWN || !strings.Contains(st[0].Error, "process exited") {
				t.Errorf("status after the crash: %v", st)
			}
			// After the backoff a fresh process answers.
			deadline = time.Now().Add(20 * time.Second)
			var pid2 int
			for {
				s, err := p.Session(ctx, "fx", "")
				if err == nil {
					out, err := toolText(ctx, s, "whoami", nil)
					if err == nil {
						pid2 = pidOf(t, out)
						break
					}
				}
				if time.Now().After(deadline) {
					t.Fatalf("no recovery: %v", err)
				}
				time.Sleep(50 * time.Millisecond)
			}
			if pid2 == pid1 {
				t.Errorf("same pid %d after the crash", pid1)
			}
			if st := p.Status(); st[0].State != metamcpv1.UpstreamState_UPSTREAM_STATE_HEALTHY || st[0].Processes != 1 {
				t.Errorf("status after recovery: %v", st)
			}
			waitGone(t, pid1)
		})
	}
}

func TestStartFailureBacksOff(t *testing.T) {
	srv := &metamcpv1.Server{Name: "bad", Transport: &metamcpv1.Server_Stdio{Stdio: &metamcpv1.StdioTransport{Command: "/nonexistent/mcp-server"}}}
	p := newTestPool(t, PoolOptions{MinBackoff: 5 * time.Second}, srv)
	ctx := ctxT(t, 10*time.Second)
	_, err := p.Session(ctx, "bad", "")
	var uerr *Error
	if !errors.As(err, &uerr) || !strings.Contains(err.Error(), `upstream "bad"`) || !strings.Contains(err.Error(), "start process") {
		t.Fatalf("first: %v", err)
	}
	start := time.Now()
	_, err = p.Session(ctx, "bad", "")
	if !errors.As(err, &uerr) || !strings.Contains(err.Error(), "retrying in") {
		t.Fatalf("second: %v", err)
	}
	if time.Since(start) > time.Second {
		t.Errorf("a backing-off Session took %s", time.Since(start))
	}
	st := p.Status()
	if st[0].State != metamcpv1.UpstreamState_UPSTREAM_STATE_DOWN || !strings.Contains(st[0].Error, "nonexistent") {
		t.Errorf("status %v", st)
	}
	if _, err := p.Session(ctx, "missing", ""); err == nil || !strings.Contains(err.Error(), "no such server") {
		t.Errorf("unknown server: %v", err)
	}
}

func TestUnreachableHTTP(t *testing.T) {
	p := newTestPool(t, PoolOptions{}, httpServer("down", "http://127.0.0.1:1/mcp"), sseServer("down-sse", "http://127.0.0.1:1/sse"))
	ctx := ctxT(t, 20*time.Second)
	for _, name := range []string{"down", "down-sse"} {
		_, err := p.Session(ctx, name, "")
		var uerr *Error
		if !errors.As(err, &uerr) || !strings.Contains(err.Error(), "connection refused") {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestEnvAndSecrets(t *testing.T) {
	bin := fixture.Build(t)
	srv := stdioServer(bin, "env")
	srv.GetStdio().Env = map[string]*metamcpv1.Value{"API_TOKEN": {Value: "s3cret", Secret: true}}
	p := newTestPool(t, PoolOptions{Environ: []string{"BASE=1"}}, srv)
	if got := callTool(t, p, "env", "", "getenv", map[string]any{"name": "API_TOKEN"}); got != "s3cret" {
		t.Errorf("API_TOKEN = %q", got)
	}
	if got := callTool(t, p, "env", "", "getenv", map[string]any{"name": "BASE"}); got != "1" {
		t.Errorf("BASE = %q", got)
	}
	if got := callTool(t, p, "env", "", "getenv", map[string]any{"name": "HOME"}); got != "" {
		t.Errorf("HOME leaked into the environment: %q", got)
	}
}

// TestMinimalEnviron: with no base environment given (as the data plane
// runs), a stdio server gets PATH and the like, not the rest of the data
// plane's environment.
func TestMinimalEnviron(t *testing.T) {
	bin := fixture.Build(t)
	t.Setenv("METAMCP_SYNC_TOKEN", "mmt_not-for-upstreams")
	t.Setenv("PATH", os.Getenv("PATH")+string(os.PathListSeparator)+"/minimal-environ-test")
	p := newTestPool(t, PoolOptions{}, stdioServer(bin, "env"))
	if got := callTool(t, p, "env", "", "getenv", map[string]any{"name": "METAMCP_SYNC_TOKEN"}); got != "" {
		t.Errorf("METAMCP_SYNC_TOKEN leaked into the environment: %q", got)
	}
	if got := callTool(t, p, "env", "", "getenv", map[string]any{"name": "PATH"}); got != os.Getenv("PATH") {
		t.Errorf("PATH = %q, want the data plane's %q", got, os.Getenv("PATH"))
	}
}

func TestPerClientAndLimits(t *testing.T) {
	bin := fixture.Build(t)
	srv := stdioServer(bin, "pc")
	srv.SessionMode = metamcpv1.SessionMode_SESSION_MODE_PER_CLIENT
	srv.Limits = &metamcpv1.Limits{MaxProcesses: 2}
	srv.Timeouts = &metamcpv1.Timeouts{Initialize: durationpb.New(500 * time.Millisecond)}
	p := newTestPool(t, PoolOptions{}, srv)
	a := pidOf(t, callTool(t, p, "pc", "a", "whoami", nil))
	b := pidOf(t, callTool(t, p, "pc", "b", "whoami", nil))
	if a == b {
		t.Fatal("two clients share a per_client process")
	}
	if a2 := pidOf(t, callTool(t, p, "pc", "a", "whoami", nil)); a2 != a {
		t.Errorf("client a got a second process")
	}
	ctx := ctxT(t, 10*time.Second)
	start := time.Now()
	_, err := p.Session(ctx, "pc", "c")
	var le *LimitError
	if !errors.As(err, &le) || !strings.Contains(err.Error(), "all 2 processes its limits allow (limits.maxProcesses) are in use") {
		t.Fatalf("third client: %v", err)
	}
	if d := time.Since(start); d < 400*time.Millisecond {
		t.Errorf("gave up after %s, before the initialize timeout", d)
	}
	if _, err := p.Session(ctx, "pc", ""); err == nil {
		t.Error("per_client server without a client id")
	}
	// A freed slot goes to a waiting client.
	done := make(chan error, 1)
	go func() {
		s, err := p.Session(ctx, "pc", "c")
		if err == nil {
			_, err = toolText(ctx, s, "echo", map[string]any{"text": "c"})
		}
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	p.CloseClient("a")
	if err := <-done; err != nil {
		t.Errorf("client c after a closed: %v", err)
	}
	waitGone(t, a)
	if st := p.Status(); st[0].Processes != 2 || st[0].Sessions != 2 {
		t.Errorf("status %v", st)
	}
}

// TestEvictIdlest: at its limit, a per_client server's session idle longest
// (for at least EvictIdleAfter) makes room for a new client, rather than
// the new client waiting until the idle TTL; one in use is never taken.
func TestEvictIdlest(t *testing.T) {
	bin := fixture.Build(t)
	srv := stdioServer(bin, "pc")
	srv.SessionMode = metamcpv1.SessionMode_SESSION_MODE_PER_CLIENT
	srv.Limits = &metamcpv1.Limits{MaxProcesses: 2}
	srv.Timeouts = &metamcpv1.Timeouts{Initialize: durationpb.New(2 * time.Second)}
	p := newTestPool(t, PoolOptions{EvictIdleAfter: 300 * time.Millisecond}, srv)
	a := pidOf(t, callTool(t, p, "pc", "a", "whoami", nil))
	time.Sleep(10 * time.Millisecond)
	b := pidOf(t, callTool(t, p, "pc", "b", "whoami", nil))

	// Both idle for less than EvictIdleAfter: c waits, then is refused.
	ctx := ctxT(t, 10*time.Second)
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	_, err := p.Session(short, "pc", "c")
	cancel()
	var le *LimitError
	if !errors.As(err, &le) {
		t.Fatalf("c while a and b were just used: %v, want a LimitError", err)
	}

	// Idle long enough: c takes a's slot (a was used first), and a's
	// process goes; b's stays.
	time.Sleep(400 * time.Millisecond)
	c := pidOf(t, callTool(t, p, "pc", "c", "whoami", nil))
	if c == a || c == b {
		t.Fatalf("c got pid %d (a %d, b %d)", c, a, b)
	}
	waitGone(t, a)
	if err := syscall.Kill(b, 0); err != nil {
		t.Errorf("b's process is gone: %v", err)
	}
	if st := p.Status(); st[0].Processes != 2 {
		t.Errorf("status %v, want 2 processes", st)
	}

	// A session in use is not taken: b's call runs while a comes back; a
	// waits for b's and c's sessions to be idle long enough and gets c's.
	done := make(chan string, 1)
	go func() { done <- callTool(t, p, "pc", "b", "slow", map[string]any{"ms": 900}) }()
	time.Sleep(100 * time.Millisecond)
	a2 := pidOf(t, callTool(t, p, "pc", "a", "whoami", nil))
	if a2 == a || a2 == b || a2 == c {
		t.Errorf("a came back with pid %d (old a %d, b %d, c %d)", a2, a, b, c)
	}
	waitGone(t, c)
	if got := <-done; got != "slept" {
		t.Errorf("b's call during the eviction: %q", got)
	}
}

func TestIdleTTL(t *testing.T) {
	bin := fixture.Build(t)
	srv := stdioServer(bin, "idle")
	srv.Limits = &metamcpv1.Limits{IdleTtl: durationpb.New(200 * time.Millisecond)}
	p := newTestPool(t, PoolOptions{}, srv)
	pid := pidOf(t, callTool(t, p, "idle", "", "whoami", nil))
	waitGone(t, pid)
	deadline := time.Now().Add(5 * time.Second)
	for p.Status()[0].Sessions != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if st := p.Status(); st[0].Sessions != 0 || st[0].State != metamcpv1.UpstreamState_UPSTREAM_STATE_HEALTHY {
		t.Errorf("status %v", st)
	}
	// A busy session is not reaped: a call longer than the TTL completes.
	if got := callTool(t, p, "idle", "", "slow", map[string]any{"ms": 600}); got != "slept" {
		t.Errorf("slow = %q", got)
	}
	if pid2 := pidOf(t, callTool(t, p, "idle", "", "whoami", nil)); pid2 == pid {
		t.Error("reaped process reused")
	}
}

func TestUpdate(t *testing.T) {
	bin := fixture.Build(t)
	p := newTestPool(t, PoolOptions{}, stdioServer(bin, "u"), stdioServer(bin, "keep"))
	ctx := ctxT(t, 30*time.Second)
	pid1 := pidOf(t, callTool(t, p, "u", "", "whoami", nil))
	keep := pidOf(t, callTool(t, p, "keep", "", "whoami", nil))

	// A call in flight while the definition changes finishes on the old process.
	s, err := p.Session(ctx, "u", "")
	if err != nil {
		t.Fatal(err)
	}
	slow := make(chan error, 1)
	go func() {
		out, err := toolText(ctx, s, "slow", map[string]any{"ms": 500})
		if err == nil && out != "slept" {
			err = fmt.Errorf("slow = %q", out)
		}
		slow <- err
	}()
	time.Sleep(100 * time.Millisecond)
	changed := stdioServer(bin, "u", "--tools", "echo,whoami")
	changed.Revision = 9 // output-only fields do not count as a change
	keepSrv := stdioServer(bin, "keep")
	keepSrv.Revision = 5
	p.Update(map[string]*metamcpv1.Server{"u": changed, "keep": keepSrv})
	if err := <-slow; err != nil {
		t.Errorf("in-flight call across Update: %v", err)
	}
	pid2 := pidOf(t, callTool(t, p, "u", "", "whoami", nil))
	if pid2 == pid1 {
		t.Error("changed server kept its process")
	}
	waitGone(t, pid1)
	if k := pidOf(t, callTool(t, p, "keep", "", "whoami", nil)); k != keep {
		t.Error("unchanged server lost its process")
	}
	p.Update(map[string]*metamcpv1.Server{"keep": keepSrv})
	waitGone(t, pid2)
	if _, err := p.Session(ctx, "u", ""); err == nil || !strings.Contains(err.Error(), "no such server") {
		t.Errorf("removed server: %v", err)
	}
	if st := p.Status(); len(st) != 1 || st[0].Server != "keep" {
		t.Errorf("status %v", st)
	}
}

// eachProc calls fn with every process's pid and the fields of its
// /proc/PID/stat after the command name (state ppid pgrp ...).
func eachProc(fn func(pid int, fields []string)) {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		s := string(b)
		if i := strings.LastIndexByte(s, ')'); i >= 0 {
			fn(pid, strings.Fields(s[i+1:]))
		}
	}
}

// children lists the pids of live child processes of this test running bin.
func children(bin string) []int {
	me := strconv.Itoa(os.Getpid())
	var out []int
	eachProc(func(pid int, f []string) {
		if len(f) < 2 || f[1] != me {
			return
		}
		if exe, err := os.Readlink(filepath.Join("/proc", strconv.Itoa(pid), "exe")); err == nil && exe != bin && f[0] != "Z" {
			return
		}
		out = append(out, pid)
	})
	return out
}

// group lists the live processes of process group pgid.
func group(pgid int) []int {
	var out []int
	eachProc(func(pid int, f []string) {
		if len(f) >= 3 && f[2] == strconv.Itoa(pgid) && f[0] != "Z" {
			out = append(out, pid)
		}
	})
	return out
}

func TestPerClientChurn(t *testing.T) {
	bin := fixture.Build(t)
	srv := stdioServer(bin, "churn", "--tools", "echo,whoami")
	srv.SessionMode = metamcpv1.SessionMode_SESSION_MODE_PER_CLIENT
	srv.Limits = &metamcpv1.Limits{MaxProcesses: 8}
	baseline := runtime.NumGoroutine()
	p := NewPool(PoolOptions{Logger: testLogger(t)})
	p.Update(map[string]*metamcpv1.Server{"churn": srv})

	var maxPool, maxProc atomic.Int32
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
			if n := p.Status()[0].Processes; n > maxPool.Load() {
				maxPool.Store(n)
			}
			if n := int32(len(children(bin))); n > maxProc.Load() {
				maxProc.Store(n)
			}
		}
	}()
	ctx := ctxT(t, 5*time.Minute)
	const total, batch = 1000, 16
	var failures atomic.Int32
	for start := 0; start < total; start += batch {
		var wg sync.WaitGroup
		for i := start; i < start+batch && i < total; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				id := fmt.Sprintf("client-%d", i)
				defer p.CloseClient(id)
				s, err := p.Session(ctx, "churn", id)
				if err == nil {
					var out string
					out, err = toolText(ctx, s, "echo", map[string]any{"text": id})
					if err == nil && out != id {
						err = fmt.Errorf("echo %q", out)
					}
				}
				if err != nil {
					if failures.Add(1) <= 5 {
						t.Errorf("%s: %v", id, err)
					}
				}
			}()
		}
		wg.Wait()
	}
	close(stop)
	<-sampled
	if n := failures.Load(); n > 0 {
		t.Errorf("%d of %d clients failed", n, total)
	}
	t.Logf("max processes: pool %d, /proc %d", maxPool.Load(), maxProc.Load())
	if maxPool.Load() > 8 || maxProc.Load() > 8 {
		t.Errorf("more than 8 processes at once: pool %d, /proc %d", maxPool.Load(), maxProc.Load())
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if left := children(bin); len(left) > 0 {
		t.Errorf("children left after Close: %v", left)
	}
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > baseline+3 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > baseline+3 {
		buf := make([]byte, 1<<20)
		t.Errorf("goroutines: %d, baseline %d\n%s", n, baseline, buf[:runtime.Stack(buf, true)])
	}
}

func TestCloseReapsEverything(t *testing.T) {
	bin := fixture.Build(t)
	pc := stdioServer(bin, "pc")
	pc.SessionMode = metamcpv1.SessionMode_SESSION_MODE_PER_CLIENT
	// A server that ignores SIGTERM and a closed stdin, and has a child of
	// its own, must still be killed with its whole process group.
	stubborn := &metamcpv1.Server{Name: "stubborn", Transport: &metamcpv1.Server_Stdio{Stdio: &metamcpv1.StdioTransport{
		Command: "/bin/sh",
		Args:    []string{"-c", `sleep 600 & exec ` + bin + ` --transport stdio --name stubborn --stubborn`},
	}}}
	p := NewPool(PoolOptions{Logger: testLogger(t)})
	p.Update(map[string]*metamcpv1.Server{"pc": pc, "shared": stdioServer(bin, "shared"), "stubborn": stubborn})
	var pids []int
	for i := range 4 {
		pids = append(pids, pidOf(t, callTool(t, p, "pc", fmt.Sprint(i), "whoami", nil)))
	}
	pids = append(pids, pidOf(t, callTool(t, p, "shared", "", "whoami", nil)))
	pids = append(pids, pidOf(t, callTool(t, p, "stubborn", "", "whoami", nil)))
	// A call in flight during Close fails instead of hanging.
	ctx := ctxT(t, 30*time.Second)
	s, err := p.Session(ctx, "shared", "")
	if err != nil {
		t.Fatal(err)
	}
	inflight := make(chan error, 1)
	go func() {
		_, err := toolText(ctx, s, "slow", map[string]any{"ms": 20000})
		inflight <- err
	}()
	time.Sleep(100 * time.Millisecond)
	start := time.Now()
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("Close took %s", time.Since(start))
	var uerr *Error
	if err := <-inflight; !errors.As(err, &uerr) {
		t.Errorf("in-flight call: %v", err)
	}
	for _, pid := range pids {
		if ok, state := gone(pid); !ok {
			t.Errorf("process %d left after Close (state %s)", pid, state)
		}
		if left := group(pid); len(left) > 0 {
			t.Errorf("process group %d still has %v", pid, left)
		}
	}
	if left := children(bin); len(left) > 0 {
		t.Errorf("children left: %v", left)
	}
	if _, err := p.Session(ctx, "shared", ""); err == nil {
		t.Error("Session after Close")
	}
}

func TestTimeoutHelpers(t *testing.T) {
	s := &metamcpv1.Server{Timeouts: &metamcpv1.Timeouts{Call: durationpb.New(3 * time.Second)}}
	cases := []struct {
		name string
		got  time.Duration
		want time.Duration
	}{
		{"call set", CallTimeout(s, time.Second), 3 * time.Second},
		{"list default arg", ListTimeout(s, 2*time.Second), 2 * time.Second},
		{"init package default", InitTimeout(s, 0), DefaultInitTimeout},
		{"nil server", CallTimeout(nil, 0), DefaultCallTimeout},
		{"nil list", ListTimeout(nil, 0), DefaultListTimeout},
	}
	for _, tc := range cases {
		if tc.got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, tc.got, tc.want)
		}
	}
}

func benchCall(b *testing.B, srv *metamcpv1.Server) {
	p := newTestPool(b, PoolOptions{Logger: slog.New(slog.DiscardHandler)}, srv)
	ctx := context.Background()
	s, err := p.Session(ctx, srv.GetName(), "")
	if err != nil {
		b.Fatal(err)
	}
	params := json.RawMessage(`{"name":"echo","arguments":{"text":"hello, benchmark"}}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Call(ctx, "tools/call", params); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCallStdio(b *testing.B) {
	bin := fixture.Build(b)
	benchCall(b, stdioServer(bin, "bench"))
}

func BenchmarkCallHTTP(b *testing.B) {
	bin := fixture.Build(b)
	benchCall(b, httpServer("bench", fixture.Start(b, bin, "http", "bench")))
}

// TestHTTPServerRestart: the upstream restarts, so its sessions are gone (404
// for Streamable HTTP, a closed event stream for SSE). Over Streamable HTTP
// the next call is answered on a new session; over SSE it fails naming the
// server, and a later one succeeds on a new session.
func TestHTTPServerRestart(t *testing.T) {
	bin := fixture.Build(t)
	for _, tr := range []string{"http", "sse"} {
		t.Run(tr, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			addr := ln.Addr().String()
			_ = ln.Close()
			url, cmd := fixture.StartProcess(t, bin, tr, "rs", "--listen", addr)
			srv := httpServer("rs", url)
			if tr == "sse" {
				srv = sseServer("rs", url)
			}
			p := newTestPool(t, PoolOptions{MinBackoff: 200 * time.Millisecond}, srv)
			pid1 := pidOf(t, callTool(t, p, "rs", "", "whoami", nil))
			if pid1 != cmd.Process.Pid {
				t.Fatalf("whoami pid %d, started %d", pid1, cmd.Process.Pid)
			}
			_ = cmd.Process.Kill()
			waitGone(t, pid1)
			fixture.StartProcess(t, bin, tr, "rs", "--listen", addr)

			ctx := ctxT(t, 30*time.Second)
			s, err := p.Session(ctx, "rs", "")
			if err == nil {
				_, err = toolText(ctx, s, "whoami", nil)
			}
			if tr == "http" {
				// The 404 says the server is up and never ran the call:
				// a new session takes it.
				if err != nil {
					t.Fatalf("first call after the restart: %v; want it answered on a new session", err)
				}
				return
			}
			var uerr *Error
			if !errors.As(err, &uerr) || uerr.Server != "rs" {
				t.Fatalf("first call after the restart: %v (%T), want *upstream.Error", err, err)
			}
			t.Logf("first call after the restart: %v", err)
			deadline := time.Now().Add(20 * time.Second)
			for {
				s, err := p.Session(ctx, "rs", "")
				if err == nil {
					var out string
					if out, err = toolText(ctx, s, "whoami", nil); err == nil {
						if pidOf(t, out) == pid1 {
							t.Fatal("answered by the killed process")
						}
						break
					}
				}
				if time.Now().After(deadline) {
					t.Fatalf("no recovery: %v", err)
				}
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
}

// TestNoLeaksHTTP: sessions over HTTP and SSE (with their event streams and
// keep-alive connections) leave no goroutine behind after Close.
func TestNoLeaksHTTP(t *testing.T) {
	bin := fixture.Build(t)
	httpURL := fixture.Start(t, bin, "http", "a")
	sseURL := fixture.Start(t, bin, "sse", "b")
	pc := httpServer("c", httpURL)
	pc.SessionMode = metamcpv1.SessionMode_SESSION_MODE_PER_CLIENT
	time.Sleep(100 * time.Millisecond)
	baseline := runtime.NumGoroutine()
	p := NewPool(PoolOptions{Logger: testLogger(t)})
	p.Update(map[string]*metamcpv1.Server{"a": httpServer("a", httpURL), "b": sseServer("b", sseURL), "c": pc})
	ctx := ctxT(t, 30*time.Second)
	for _, name := range []string{"a", "b", "c"} {
		for i := range 3 {
			callTool(t, p, name, fmt.Sprint(i), "echo", map[string]any{"text": "x"})
		}
		s, err := p.Session(ctx, name, "0")
		if err != nil {
			t.Fatal(err)
		}
		cctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		_, _ = s.Call(cctx, "tools/call", json.RawMessage(`{"name":"slow","arguments":{"ms":300}}`))
		cancel()
	}
	p.CloseClient("1")
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > baseline+2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > baseline+2 {
		buf := make([]byte, 1<<20)
		t.Errorf("goroutines: %d, baseline %d\n%s", n, baseline, buf[:runtime.Stack(buf, true)])
	}
}

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"https://user:pw@example.com/mcp/tok?api_key=abc#x": "https://example.com",
		"http://127.0.0.1:8080/message?sessionId=1":         "http://127.0.0.1:8080",
		"://bad":    "the server URL",
		"/relative": "the server URL",
	} {
		if got := redact(in); got != want {
			t.Errorf("redact(%q) = %q, want %q", in, got, want)
		}
	}
}
