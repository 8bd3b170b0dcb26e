package upstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/dataplane/rpc"
)

// fakeMCP is a minimal Streamable HTTP server whose answers to tools/call a
// test chooses; it counts connections, the connections that carried POSTs,
// and tools/call requests.
type fakeMCP struct {
	srv   *httptest.Server
	conns atomic.Int64
	// postsClosed counts the connections POSTs came on that closed.
	postsClosed atomic.Int64
	posts       sync.Map // remote address of each connection a POST came on
	calls       atomic.Int64
	// call answers one tools/call: the request id's JSON and the tool name.
	call func(w http.ResponseWriter, r *http.Request, id json.RawMessage, tool string)
}

// newFakeMCP starts a fakeMCP over plain HTTP/1.1 whose server closes
// connections idle for idleTimeout (never when 0).
func newFakeMCP(t *testing.T, idleTimeout time.Duration, call func(w http.ResponseWriter, r *http.Request, id json.RawMessage, tool string)) *fakeMCP {
	f := newUnstartedFakeMCP(idleTimeout, call)
	f.srv.Start()
	t.Cleanup(f.srv.Close)
	return f
}

func newUnstartedFakeMCP(idleTimeout time.Duration, call func(w http.ResponseWriter, r *http.Request, id json.RawMessage, tool string)) *fakeMCP {
	f := &fakeMCP{call: call}
	f.srv = httptest.NewUnstartedServer(http.HandlerFunc(f.serve))
	f.srv.Config.IdleTimeout = idleTimeout
	f.srv.Config.ConnState = func(nc net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			f.conns.Add(1)
		case http.StateClosed, http.StateHijacked:
			if _, ok := f.posts.Load(nc.RemoteAddr().String()); ok {
				f.postsClosed.Add(1)
			}
		}
	}
	return f
}

// postConns is the number of connections POSTs came on. Unlike conns, it
// leaves out the standalone GET stream's, which the session opens on its
// own goroutine: when it connects is not the test's to know.
func (f *fakeMCP) postConns() int {
	n := 0
	f.posts.Range(func(any, any) bool { n++; return true })
	return n
}

func (f *fakeMCP) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.WriteHeader(http.StatusMethodNotAllowed)
		return
	}
	f.posts.Store(r.RemoteAddr, true)
	b, _ := io.ReadAll(r.Body)
	m, err := rpc.Parse(b)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if r.Header.Get("Content-Type") != "application/json" || !strings.Contains(r.Header.Get("Accept"), "text/event-stream") {
		http.Error(w, "bad headers", http.StatusBadRequest)
		return
	}
	switch m.Method {
	case "initialize":
		w.Header().Set("Mcp-Session-Id", "sess-1")
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"result":{"protocolVersion":%q,"capabilities":{},"serverInfo":{"name":"fake","version":"1"}}}`, m.ID, ProtocolVersion)
	case "notifications/initialized", "notifications/cancelled":
		w.WriteHeader(http.StatusAccepted)
	case "tools/call":
		if r.Header.Get("Mcp-Session-Id") != "sess-1" || r.Header.Get("Mcp-Protocol-Version") != ProtocolVersion {
			http.Error(w, "missing session headers", http.StatusBadRequest)
			return
		}
		f.calls.Add(1)
		name, _ := rpc.StringField(m.Params, "name")
		f.call(w, r, m.ID, name)
	default:
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"error":{"code":-32601,"message":"no"}}`, m.ID)
	}
}

// fakeSession opens a session of a pool on f (server "fake").
func fakeSession(t *testing.T, f *fakeMCP, opts PoolOptions, headers map[string]*metamcpv1.Value) Session {
	t.Helper()
	srv := httpServer("fake", f.srv.URL+"/mcp")
	srv.GetStreamableHttp().Headers = headers
	p := newTestPool(t, opts, srv)
	s, err := p.Session(ctxT(t, 30*time.Second), "fake", "")
	if err != nil {
		t.Fatalf("session: %v", err)
	}
	return s
}

// writeJSONResult answers a tools/call with its result as JSON.
func writeJSONResult(w http.ResponseWriter, id json.RawMessage, text string) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, `{"jsonrpc":"2.0","id":`+string(id)+`,"result":`+resultText(text)+`}`)
}

// writeResultEvent starts an event stream with the tool call's result,
// flushed, and leaves the stream's end to the handler's return.
func writeResultEvent(w http.ResponseWriter, id json.RawMessage, text string) {
	w.Header().Set("Content-Type", "text/event-stream")
	_, _ = io.WriteString(w, "data: {\"jsonrpc\":\"2.0\",\"id\":"+string(id)+",\"result\":"+resultText(text)+"}\n\n")
	w.(http.Flusher).Flush()
}

func resultText(text string) string {
	b, _ := json.Marshal(text)
	return `{"content":[{"type":"text","text":` + string(b) + `}]}`
}

// TestHTTPBodies: every shape of answer (a length, chunks, an event stream
// with more after the response) comes back whole, and sequential calls
// share one kept-alive connection: each body is read to its end.
func TestHTTPBodies(t *testing.T) {
	big := strings.Repeat("0123456789abcdef", 20<<10) // 320 KiB: many chunks, many buffer fills
	cases := []struct {
		name  string
		write func(w http.ResponseWriter, id json.RawMessage, text string)
	}{
		{"content-length", func(w http.ResponseWriter, id json.RawMessage, text string) {
			body := `{"jsonrpc":"2.0","id":` + string(id) + `,"result":` + resultText(text) + `}`
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Content-Length", fmt.Sprint(len(body)))
			_, _ = io.WriteString(w, body)
		}},
		{"chunked", func(w http.ResponseWriter, id json.RawMessage, text string) {
			body := `{"jsonrpc":"2.0","id":` + string(id) + `,"result":` + resultText(text) + `}`
			w.Header().Set("Content-Type", "application/json; charset=utf-8")
			for len(body) > 0 {
				n := min(len(body), 7777)
				_, _ = io.WriteString(w, body[:n])
				w.(http.Flusher).Flush()
				body = body[n:]
			}
		}},
		{"sse", func(w http.ResponseWriter, id json.RawMessage, text string) {
			w.Header().Set("Content-Type", "text/event-stream")
			_, _ = io.WriteString(w, ": keep-alive\n\n")
			_, _ = io.WriteString(w, "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{}}\n\n")
			w.(http.Flusher).Flush()
			_, _ = io.WriteString(w, "data: {\"jsonrpc\":\"2.0\",\"id\":999999,\"result\":{}}\n\n") // not ours
			_, _ = io.WriteString(w, "id: 1\ndata: {\"jsonrpc\":\"2.0\",\"id\":"+string(id)+",\r\ndata: \"result\":"+resultText(text)+"}\r\n\r\n")
		}},
		{"sse-then-more", func(w http.ResponseWriter, id json.RawMessage, text string) {
			// What follows the response event (20 KiB in flushed chunks)
			// is read past before the connection's next request.
			w.Header().Set("Content-Type", "text/event-stream")
			_, _ = io.WriteString(w, "data: {\"jsonrpc\":\"2.0\",\"id\":"+string(id)+",\"result\":"+resultText(text)+"}\n\n")
			w.(http.Flusher).Flush()
			for range 5 {
				_, _ = io.WriteString(w, ": "+strings.Repeat("x", 4<<10)+"\n\n")
				w.(http.Flusher).Flush()
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeMCP(t, 0, func(w http.ResponseWriter, _ *http.Request, id json.RawMessage, tool string) {
				text := tool
				if tool == "big" {
					text = big
				}
				tc.write(w, id, text)
			})
			rec := &recorder{}
			s := fakeSession(t, f, PoolOptions{Events: rec}, nil)
			ctx := ctxT(t, 30*time.Second)
			for i := range 5 {
				tool := "small"
				if i%2 == 1 {
					tool = "big"
				}
				got, err := toolText(ctx, s, tool, nil)
				if err != nil {
					t.Fatalf("call %d: %v", i, err)
				}
				want := tool
				if tool == "big" {
					want = big
				}
				if got != want {
					t.Fatalf("call %d: got %d bytes, want %d", i, len(got), len(want))
				}
			}
			// The POSTs went over one kept-alive connection (the initialize
			// handshake included), or two: the standalone GET stream's
			// connection, back in the pool after its 405, may carry some.
			if n := f.postConns(); n > 2 {
				t.Errorf("%d connections for sequential calls, want at most 2: the connections were not reused", n)
			}
			if tc.name == "sse" {
				if n := rec.count(" notifications/progress"); n != 5 {
					t.Errorf("%d progress notifications handed to Events, want 5 (%v)", n, rec.notes)
				}
			}
		})
	}
}

// TestHTTPServerClosesIdleConn: an upstream that closes keep-alive
// connections idle for 50 ms fails no call of a series spaced past that.
func TestHTTPServerClosesIdleConn(t *testing.T) {
	f := newFakeMCP(t, 50*time.Millisecond, func(w http.ResponseWriter, _ *http.Request, id json.RawMessage, tool string) {
		writeJSONResult(w, id, tool)
	})
	s := fakeSession(t, f, PoolOptions{}, nil)
	ctx := ctxT(t, 30*time.Second)
	const calls = 10
	failed := 0
	for i := range calls {
		if _, err := toolText(ctx, s, "echo", nil); err != nil {
			failed++
			t.Errorf("call %d: %v", i, err)
		}
		// Past the server's idle timeout: it closes the connection.
		time.Sleep(150 * time.Millisecond)
	}
	if failed != 0 {
		t.Fatalf("%d of %d calls failed", failed, calls)
	}
	if n := f.calls.Load(); n != calls {
		t.Errorf("the server saw %d calls, want %d", n, calls)
	}
	// The server did close them: the calls came on fresh connections.
	if n := f.postConns(); n < calls {
		t.Errorf("%d connections, want a fresh one after each idle close", n)
	}
	// (A close that crosses a request on the wire, microseconds before the
	// Transport's reader sees it, still fails that call: its bytes may
	// have reached the server, and net/http rightly does not resend a
	// POST then. TestHTTPNoRetryAfterWrite is that case.)
}

// TestHTTPNoRetryAfterWrite: a POST that reached the server is never sent
// again, on a kept-alive connection (where net/http retries what it
// may), with or without an Idempotency-Key header (which makes net/http
// take a POST for replayable).
func TestHTTPNoRetryAfterWrite(t *testing.T) {
	for _, header := range []string{"", "Idempotency-Key", "X-Idempotency-Key"} {
		t.Run("header="+header, func(t *testing.T) {
			var drops atomic.Int64
			f := newFakeMCP(t, 0, func(w http.ResponseWriter, _ *http.Request, id json.RawMessage, tool string) {
				if tool == "drop" {
					// Read the whole request, then hang up without a word:
					// what net/http reports as a server that closed an
					// idle connection.
					drops.Add(1)
					conn, _, err := w.(http.Hijacker).Hijack()
					if err == nil {
						_ = conn.Close()
					}
					return
				}
				writeJSONResult(w, id, tool)
			})
			var headers map[string]*metamcpv1.Value
			if header != "" {
				headers = map[string]*metamcpv1.Value{header: {Value: "k1"}}
			}
			s := fakeSession(t, f, PoolOptions{}, headers)
			ctx := ctxT(t, 30*time.Second)
			if _, err := toolText(ctx, s, "echo", nil); err != nil {
				t.Fatal(err)
			}
			_, err := toolText(ctx, s, "drop", nil)
			var uerr *Error
			if err == nil || !errors.As(err, &uerr) || uerr.Server != "fake" {
				t.Fatalf("err = %v, want an *upstream.Error naming the server", err)
			}
			if n := drops.Load(); n != 1 {
				t.Errorf("the server got the dropped call %d times, want 1 (no retry of a written request)", n)
			}
		})
	}
}

// TestHTTPHeldStreamEnd: a server that sends the response event and then
// holds its stream open costs the call at most finishWait and the
// connection, not a call that waits for the stream to end.
func TestHTTPHeldStreamEnd(t *testing.T) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	f := newFakeMCP(t, 0, func(w http.ResponseWriter, r *http.Request, id json.RawMessage, tool string) {
		writeResultEvent(w, id, tool)
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	s := fakeSession(t, f, PoolOptions{}, nil)
	ctx := ctxT(t, 30*time.Second)
	for i := range 3 {
		tool := fmt.Sprintf("held-%d", i)
		done := make(chan error, 1)
		go func() {
			got, err := toolText(ctx, s, tool, nil)
			if err == nil && got != tool {
				err = fmt.Errorf("got %q", got)
			}
			done <- err
		}()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("%s: %v", tool, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: the call waited for the end of a held stream", tool)
		}
	}
}

// TestHTTPContextCancel: a call ends when its context does, and the
// session goes on serving.
func TestHTTPContextCancel(t *testing.T) {
	release := make(chan struct{})
	f := newFakeMCP(t, 0, func(w http.ResponseWriter, r *http.Request, id json.RawMessage, tool string) {
		if tool == "hang" {
			select {
			case <-r.Context().Done():
			case <-release:
			case <-time.After(20 * time.Second):
			}
			return
		}
		writeJSONResult(w, id, tool)
	})
	t.Cleanup(func() { close(release) })
	s := fakeSession(t, f, PoolOptions{}, nil)
	for _, mode := range []string{"cancel", "deadline"} {
		t.Run(mode, func(t *testing.T) {
			var ctx context.Context
			var cancel context.CancelFunc
			if mode == "cancel" {
				ctx, cancel = context.WithCancel(context.Background())
				time.AfterFunc(100*time.Millisecond, cancel)
			} else {
				ctx, cancel = context.WithTimeout(context.Background(), 100*time.Millisecond)
			}
			defer cancel()
			done := make(chan error, 1)
			go func() {
				_, err := toolText(ctx, s, "hang", nil)
				done <- err
			}()
			select {
			case err := <-done:
				want := context.Canceled
				if mode == "deadline" {
					want = context.DeadlineExceeded
				}
				if !errors.Is(err, want) {
					t.Fatalf("err = %v, want %v", err, want)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the call did not return after its context ended")
			}
			// The session survives: the next call works.
			if _, err := toolText(ctxT(t, 30*time.Second), s, "echo", nil); err != nil {
				t.Fatalf("call after %s: %v", mode, err)
			}
		})
	}
}

// TestHTTP2ToHTTPSUpstream: an https upstream that offers HTTP/2 is spoken
// to over HTTP/2, with HTTPOptions.TLSClientConfig trusting its CA.
func TestHTTP2ToHTTPSUpstream(t *testing.T) {
	var protos sync.Map
	f := newUnstartedFakeMCP(0, func(w http.ResponseWriter, r *http.Request, id json.RawMessage, tool string) {
		protos.Store(r.Proto, true)
		writeResultEvent(w, id, tool)
	})
	f.srv.EnableHTTP2 = true
	f.srv.StartTLS()
	t.Cleanup(f.srv.Close)
	tlsConf := f.srv.Client().Transport.(*http.Transport).TLSClientConfig
	s := fakeSession(t, f, PoolOptions{HTTP: HTTPOptions{TLSClientConfig: tlsConf}}, nil)
	ctx := ctxT(t, 30*time.Second)
	for i := range 3 {
		if got, err := toolText(ctx, s, "echo", nil); err != nil || got != "echo" {
			t.Fatalf("call %d: %q, %v", i, got, err)
		}
	}
	var seen []string
	protos.Range(func(k, _ any) bool { seen = append(seen, k.(string)); return true })
	if len(seen) != 1 || seen[0] != "HTTP/2.0" {
		t.Errorf("the upstream saw calls over %v, want only HTTP/2.0", seen)
	}
}

// TestHTTPNoRedirect: an upstream's redirect is its answer, an error naming
// the status; the POST is not sent on to where it points.
func TestHTTPNoRedirect(t *testing.T) {
	var elsewhere atomic.Int64
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		elsewhere.Add(1)
		w.WriteHeader(http.StatusTeapot)
	}))
	t.Cleanup(other.Close)
	f := newFakeMCP(t, 0, func(w http.ResponseWriter, r *http.Request, id json.RawMessage, tool string) {
		if tool == "moved" {
			http.Redirect(w, r, other.URL+"/mcp", http.StatusTemporaryRedirect)
			return
		}
		writeJSONResult(w, id, tool)
	})
	s := fakeSession(t, f, PoolOptions{}, nil)
	_, err := toolText(ctxT(t, 30*time.Second), s, "moved", nil)
	if err == nil || !strings.Contains(err.Error(), "307") {
		t.Fatalf("err = %v, want one naming HTTP 307", err)
	}
	if n := elsewhere.Load(); n != 0 {
		t.Errorf("the call was sent on to the redirect's target %d times", n)
	}
}
