package gateway

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/dataplane/upstream"
)

// serveHTTP serves an MCP server over Streamable HTTP on loopback.
func serveHTTP(t testing.TB, s *mcp.Server) string {
	srv := httptest.NewServer(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s }, nil))
	t.Cleanup(srv.Close)
	return srv.URL
}

func httpUpstream(name, url string) *metamcpv1.Server {
	return &metamcpv1.Server{Name: name, Transport: &metamcpv1.Server_StreamableHttp{StreamableHttp: &metamcpv1.HTTPTransport{Url: url}}}
}

// gatedServer is a fixture server whose tools/list waits until release is
// closed.
func gatedServer(name string) (*mcp.Server, func()) {
	gate := make(chan struct{})
	var once sync.Once
	s := fixtureServer(name, nil)
	s.AddReceivingMiddleware(func(next mcp.MethodHandler) mcp.MethodHandler {
		return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
			if method == "tools/list" {
				select {
				case <-gate:
				case <-ctx.Done():
					return nil, ctx.Err()
				}
			}
			return next(ctx, method, req)
		}
	})
	return s, func() { once.Do(func() { close(gate) }) }
}

// hangingListener accepts connections and never answers until the test ends.
func hangingListener(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	return "http://" + ln.Addr().String() + "/mcp"
}

// TestSlowUpstreamDoesNotStall: an upstream that does not answer tools/list,
// and one that never finishes connecting, delay neither initialize nor
// tools/list beyond the list wait (the list timeout is a minute here); the
// slow list reaches the client later through list_changed, and from then on
// is served kept.
func TestSlowUpstreamDoesNotStall(t *testing.T) {
	gated, release := gatedServer("gated")
	t.Cleanup(release)
	cfg := testConfig(&metamcpv1.NamespaceMember{Server: "fast"}, &metamcpv1.NamespaceMember{Server: "gated"}, &metamcpv1.NamespaceMember{Server: "hung"})
	cfg.Servers = append(cfg.Servers,
		httpUpstream("fast", serveHTTP(t, fixtureServer("fast", nil))),
		httpUpstream("gated", serveHTTP(t, gated)),
		httpUpstream("hung", hangingListener(t)),
	)
	holder := &configHolder{}
	holder.set(t, cfg)
	newPool := realPool(t, nil, upstream.PoolOptions{DefaultInitTimeout: time.Minute, DefaultListTimeout: time.Minute}, holder)
	h := newHarness(t, cfg, map[string]*mcp.Server{}, func(o *Options) {
		o.Config = holder
		o.Pool = newPool
		o.ListWait = 200 * time.Millisecond
	})

	changed := make(chan struct{}, 16)
	// The test's context (20 s) is far below the list and initialize
	// timeouts: a gateway that waited for them would fail here.
	cs := h.connectWith(t, "main", keyAlice, "2025-11-25", &mcp.ClientOptions{
		ToolListChangedHandler: func(context.Context, *mcp.ToolListChangedRequest) {
			select {
			case changed <- struct{}{}:
			default:
			}
		},
	})
	h.waitStreams(t, "main", 1)
	names := toolNames(t, cs)
	if !slices.Contains(names, "fast__echo") || slices.Contains(names, "gated__echo") {
		t.Fatalf("tools while gated hangs: %v; want fast's without gated's", names)
	}
	release()
	select {
	case <-changed:
	case <-testCtx(t).Done():
		t.Fatal("no tools/list_changed once the slow upstream answered")
	}
	deadline := time.Now().Add(10 * time.Second)
	for names = toolNames(t, cs); !slices.Contains(names, "gated__echo"); names = toolNames(t, cs) {
		if time.Now().After(deadline) {
			t.Fatalf("tools after list_changed: %v; want gated's too", names)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if slices.ContainsFunc(names, func(n string) bool { return len(n) > 6 && n[:6] == "hung__" }) {
		t.Errorf("the hung upstream has tools: %v", names)
	}
}
