package dataplane

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/dataplane/syncclient"
	"github.com/metamcp/metamcp/pkg/snapshot"
)

// lockedBuffer is a log sink the data plane writes from many goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestUpstreamURLNeverShown puts a credential in each part of three
// upstreams' URLs (userinfo, path, query): one down, one answering an HTTP
// error that echoes what it got (as a framework's 404 page does), one that
// never answers. A client's errors name each server but none of its URL,
// nor any address; the data plane's log keeps scheme and host only.
func TestUpstreamURLNeverShown(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	downAddr := lis.Addr().String()
	lis.Close()
	echo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, p, _ := r.BasicAuth()
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprintf(w, "Cannot %s %s (user %s:%s)", r.Method, r.URL.RequestURI(), u, p)
	}))
	defer echo.Close()
	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer slow.Close()
	defer close(release)

	var secrets []string
	urlWith := func(base, tag string) string {
		u, p, path, q := "u-"+tag+"-USERSECRET", "pw-"+tag+"-PASSSECRET", "p-"+tag+"-PATHSECRET", "q-"+tag+"-QUERYSECRET"
		secrets = append(secrets, u, p, path, q)
		return "http://" + u + ":" + p + "@" + strings.TrimPrefix(base, "http://") + "/mcp/" + path + "?token=" + q
	}
	server := func(name, url string) *metamcpv1.Server {
		s := &metamcpv1.Server{Name: name,
			Transport: &metamcpv1.Server_StreamableHttp{StreamableHttp: &metamcpv1.HTTPTransport{Url: url}},
			Timeouts:  &metamcpv1.Timeouts{Initialize: durationpb.New(300 * time.Millisecond), Call: durationpb.New(300 * time.Millisecond)},
		}
		if strings.HasPrefix(name, "sse") {
			s.Transport = &metamcpv1.Server_Sse{Sse: &metamcpv1.HTTPTransport{Url: url}}
		}
		return s
	}
	names := []string{"down", "echo", "slow", "ssedown", "sseecho", "sseslow"}
	cfg := &metamcpv1.Config{
		Servers: []*metamcpv1.Server{
			server("down", urlWith("http://"+downAddr, "down")),
			server("echo", urlWith(echo.URL, "echo")),
			server("slow", urlWith(slow.URL, "slow")),
			server("ssedown", urlWith("http://"+downAddr, "ssedown")),
			server("sseecho", urlWith(echo.URL, "sseecho")),
			server("sseslow", urlWith(slow.URL, "sseslow")),
		},
		Namespaces: []*metamcpv1.Namespace{{Name: "ns", Members: []*metamcpv1.NamespaceMember{
			{Server: "down"}, {Server: "echo"}, {Server: "slow"}, {Server: "ssedown"}, {Server: "sseecho"}, {Server: "sseslow"}}}},
		Endpoints: []*metamcpv1.Endpoint{{Name: "ep", Namespace: "ns", Auth: &metamcpv1.EndpointAuth{Anonymous: true}}},
	}
	logs := &lockedBuffer{}
	srv, base, stop := startServer(t, Options{
		Sync:     syncclient.Options{NodeID: "dp-redact"},
		ListWait: 200 * time.Millisecond,
		Logger:   slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	hash, err := snapshot.ConfigHash(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Cache().Apply(&metamcpv1.Snapshot{Revision: 2, Hash: hash, Nonce: "n2", Config: cfg}); err != nil {
		t.Fatal(err)
	}

	post := func(session, body string) (string, string) {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, base+"/metamcp/ep/mcp", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		if session != "" {
			req.Header.Set("Mcp-Session-Id", session)
			req.Header.Set("Mcp-Protocol-Version", "2025-11-25")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.Header.Get("Mcp-Session-Id"), string(b)
	}
	session, body := post("", `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"0"}}}`)
	if session == "" {
		t.Fatalf("initialize: no session: %s", body)
	}
	var client []string
	client = append(client, body)
	post(session, `{"jsonrpc":"2.0","method":"notifications/initialized"}`)
	_, body = post(session, `{"jsonrpc":"2.0","id":2,"method":"tools/list"}`)
	client = append(client, body)
	for i, name := range names {
		// Twice: the first connects, the second meets the backoff.
		for j := range 2 {
			_, body = post(session, fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"%s__x","arguments":{}}}`, 10+2*i+j, name))
			client = append(client, body)
			if !strings.Contains(body, `"error"`) || !strings.Contains(body, `upstream \"`+name+`\"`) {
				t.Errorf("tools/call %s__x: %s, want an error naming the server", name, body)
			}
		}
	}
	stop()

	all := strings.Join(client, "\n")
	t.Logf("client saw:\n%s", all)
	for _, s := range secrets {
		if strings.Contains(all, s) {
			t.Errorf("a client saw %q", s)
		}
		if strings.Contains(logs.String(), s) {
			t.Errorf("the log has %q", s)
		}
	}
	for _, addr := range []string{downAddr, strings.TrimPrefix(echo.URL, "http://"), strings.TrimPrefix(slow.URL, "http://"), "127.0.0.1"} {
		if strings.Contains(all, addr) {
			t.Errorf("a client saw the address %q", addr)
		}
	}
	// The log still says which host failed.
	if !strings.Contains(logs.String(), "http://"+downAddr) {
		t.Errorf("the log does not name the host of the server that is down:\n%s", logs)
	}
}
