package upstream

import (
	"bufio"
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

func newFakeMCP(t *testing.T, idleTimeout time.Duration, call func(w http.ResponseWriter, r *http.Request, id json.RawMessage, tool string)) *fakeMCP {
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
	f.srv.Start()
	t.Cleanup(f.srv.Close)
	return f
}

// waitEnds waits, for at most ten seconds, until the ends of the bodies
// left unfinished on the session's idle connections have arrived: until
// then the next call may pass a connection over.
func waitEnds(t *testing.T, s Session) {
	t.Helper()
	h := s.(*session).t.(*httpTransport).h1
	for range 1000 {
		h.mu.Lock()
		arrived := true
		for _, c := range h.idle {
			if c.unfinished && c.endArrived(time.Now(), h.finishWait) != endHere {
				arrived = false
			}
		}
		h.mu.Unlock()
		if arrived {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("the ends of the last responses did not arrive")
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

func fakeSession(t *testing.T, f *fakeMCP, events Events) Session {
	t.Helper()
	p := newTestPool(t, PoolOptions{Events: events}, httpServer("fake", f.srv.URL+"/mcp"))
	s, err := p.Session(ctxT(t, 30*time.Second), "fake", "")
	if err != nil {
		t.Fatalf("session: %v", err)
	}
	if tr, ok := s.(*session).t.(*httpTransport); !ok || tr.h1 == nil {
		t.Fatalf("the session does not use the h1 client")
	}
	return s
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

func TestH1Bodies(t *testing.T) {
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
			s := fakeSession(t, f, rec)
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
				waitEnds(t, s) // else the next call may pass the connection over
			}
			// Every POST went over the one kept-alive connection (the
			// initialize handshake included).
			if n := f.postConns(); n != 1 {
				t.Errorf("%d connections for sequential calls, want 1", n)
			}
			if tc.name == "sse" {
				if n := rec.count(" notifications/progress"); n != 5 {
					t.Errorf("%d progress notifications handed to Events, want 5 (%v)", n, rec.notes)
				}
			}
		})
	}
}

func TestH1ServerClosesIdleConn(t *testing.T) {
	f := newFakeMCP(t, 50*time.Millisecond, func(w http.ResponseWriter, _ *http.Request, id json.RawMessage, tool string) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"jsonrpc":"2.0","id":`+string(id)+`,"result":`+resultText(tool)+`}`)
	})
	s := fakeSession(t, f, nil)
	ctx := ctxT(t, 30*time.Second)
	for i := range 3 {
		if _, err := toolText(ctx, s, "echo", nil); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		time.Sleep(300 * time.Millisecond) // the server closes the idle connection
	}
	if n := f.calls.Load(); n != 3 {
		t.Errorf("the server saw %d calls, want 3", n)
	}
	if n := f.postConns(); n < 3 {
		t.Errorf("%d connections, want a fresh one after each idle close", n)
	}

	// CloseClientConnections closes idle connections at once.
	if _, err := toolText(ctx, s, "echo", nil); err != nil {
		t.Fatal(err)
	}
	f.srv.CloseClientConnections()
	if _, err := toolText(ctx, s, "echo", nil); err != nil {
		t.Fatalf("call after the server closed the connection: %v", err)
	}
}

// A request that reached the server is never sent twice: a POST is not
// idempotent.
func TestH1NoRetryAfterWrite(t *testing.T) {
	f := newFakeMCP(t, 0, func(w http.ResponseWriter, _ *http.Request, id json.RawMessage, tool string) {
		if tool == "drop" {
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				_ = conn.Close()
			}
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"jsonrpc":"2.0","id":`+string(id)+`,"result":`+resultText(tool)+`}`)
	})
	s := fakeSession(t, f, nil)
	ctx := ctxT(t, 30*time.Second)
	if _, err := toolText(ctx, s, "echo", nil); err != nil {
		t.Fatal(err)
	}
	_, err := toolText(ctx, s, "drop", nil)
	var uerr *Error
	if err == nil || !errors.As(err, &uerr) || uerr.Server != "fake" {
		t.Fatalf("err = %v, want an *upstream.Error naming the server", err)
	}
	if n := f.calls.Load(); n != 2 {
		t.Errorf("the server saw %d calls, want 2 (no retry of a written request)", n)
	}
}

func TestH1ContextCancel(t *testing.T) {
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
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"jsonrpc":"2.0","id":`+string(id)+`,"result":`+resultText(tool)+`}`)
	})
	t.Cleanup(func() { close(release) })
	s := fakeSession(t, f, nil)
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

func TestH1Eligibility(t *testing.T) {
	cases := []struct {
		url     string
		headers http.Header
		want    bool
	}{
		{"http://127.0.0.1:1234/mcp", nil, true},
		{"http://127.0.0.1:1234/mcp?x=1", http.Header{"X-Api-Key": {"k"}}, true},
		{"https://127.0.0.1:1234/mcp", nil, false},
		{"http://u:p@127.0.0.1:1234/mcp", nil, false},
		{"http://127.0.0.1:1234/mcp", http.Header{"Host": {"other"}}, false},
		{"http://127.0.0.1:1234/mcp", http.Header{"X-Bad": {"a\r\nb: c"}}, false},
	}
	for _, tc := range cases {
		if got := newH1Client(tc.url, tc.headers) != nil; got != tc.want {
			t.Errorf("newH1Client(%q, %v) used = %v, want %v", tc.url, tc.headers, got, tc.want)
		}
	}
}

func TestH1IdleExpiry(t *testing.T) {
	h := newH1Client("http://127.0.0.1:1/mcp", nil)
	conn := func(age time.Duration) (*h1Conn, net.Conn) {
		a, b := net.Pipe()
		t.Cleanup(func() { _ = b.Close() })
		return &h1Conn{nc: a, used: time.Now().Add(-age)}, b
	}
	old, oldPeer := conn(2 * h1IdleTimeout)
	h.idle = append(h.idle, old)
	fresh, _ := conn(0)
	h.put(fresh)
	if len(h.idle) != 1 || h.idle[0] != fresh {
		t.Fatalf("idle = %v, want only the fresh connection", h.idle)
	}
	_ = oldPeer.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := oldPeer.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("the expired connection was not closed: %v", err)
	}
	h.close()
	if len(h.idle) != 0 {
		t.Errorf("idle after close = %d", len(h.idle))
	}
}

func TestH1ReturnsBeforeTheLastChunk(t *testing.T) {
	// The server sends the response event, then holds its last chunk until
	// the test says. The call returns with the event; the next call on the
	// connection reads the end first and reuses it; an end that never
	// comes costs a fresh connection, not an error.
	gate := make(chan struct{}, 10)
	f := newFakeMCP(t, 0, func(w http.ResponseWriter, r *http.Request, id json.RawMessage, tool string) {
		writeResultEvent(w, id, tool)
		if tool == "hang" {
			<-r.Context().Done() // until the client gives the connection up
			return
		}
		select {
		case <-gate:
		case <-r.Context().Done():
		}
	})
	s := fakeSession(t, f, nil)
	ctx := ctxT(t, 30*time.Second)
	for i := range 3 {
		got, err := toolText(ctx, s, "held", nil)
		if err != nil || got != "held" {
			t.Fatalf("call %d: %q, %v", i, got, err)
		}
		gate <- struct{}{} // now the server ends the response
		waitEnds(t, s)
	}
	if n := f.postConns(); n != 1 {
		t.Errorf("%d connections, want 1: the connection was not reused after a deferred end", n)
	}
	if got, err := toolText(ctx, s, "hang", nil); err != nil || got != "hang" {
		t.Fatalf("hang: %q, %v", got, err)
	}
	gate <- struct{}{}
	if got, err := toolText(ctx, s, "after", nil); err != nil || got != "after" {
		t.Fatalf("after a response that never ended: %q, %v", got, err)
	}
	if n := f.postConns(); n != 2 {
		t.Errorf("%d connections, want 2: a connection whose response never ended must be replaced", n)
	}
}

// TestH1PassesOverALateEnd: a call does not wait for the end of the last
// response on a connection whose server has not sent it yet; it takes
// another connection, and the first goes back to the pool, not closed.
func TestH1PassesOverALateEnd(t *testing.T) {
	gate := make(chan struct{}, 10)
	f := newFakeMCP(t, 0, func(w http.ResponseWriter, r *http.Request, id json.RawMessage, tool string) {
		writeResultEvent(w, id, tool)
		select {
		case <-gate:
		case <-r.Context().Done():
		}
	})
	s := fakeSession(t, f, nil)
	// A slow machine must not turn the held end into an overdue one.
	h := s.(*session).t.(*httpTransport).h1
	h.mu.Lock()
	h.finishWait = time.Minute
	h.mu.Unlock()
	ctx := ctxT(t, 30*time.Second)
	for _, tool := range []string{"first", "second"} {
		// The end of "first" is held: "second" goes on another
		// connection, without waiting for it.
		if got, err := toolText(ctx, s, tool, nil); err != nil || got != tool {
			t.Fatalf("%s: %q, %v", tool, got, err)
		}
	}
	if n := f.postConns(); n != 2 {
		t.Errorf("%d connections, want 2", n)
	}
	gate <- struct{}{}
	gate <- struct{}{}
	waitEnds(t, s)
	for i := range 4 {
		gate <- struct{}{} // this one ends at once
		tool := fmt.Sprintf("after-%d", i)
		if got, err := toolText(ctx, s, tool, nil); err != nil || got != tool {
			t.Fatalf("%s: %q, %v", tool, got, err)
		}
		waitEnds(t, s)
	}
	if n := f.postConns(); n != 2 {
		t.Errorf("%d connections, want 2: the pooled connections were not reused", n)
	}
	if n := f.postsClosed.Load(); n != 0 {
		t.Errorf("%d connections closed, want 0: a connection whose end came late was given up", n)
	}
}

// TestH1EndBuffered: a chunked body ends without reading the connection
// only when exactly its last chunk is buffered; anything else is left, whole,
// to the reading path.
func TestH1EndBuffered(t *testing.T) {
	cases := []struct {
		name     string
		crlf     bool
		n        int64
		buffered string
		ended    bool
	}{
		{"crlf and last chunk", true, 0, "\r\n0\r\n\r\n", true},
		{"last chunk", false, 0, "0\r\n\r\n", true},
		{"last chunk not all here", true, 0, "\r\n0\r\n", false},
		{"more after the last chunk", true, 0, "\r\n0\r\n\r\nHTTP/1.1", false},
		{"a trailer", false, 0, "0\r\nX-T: 1\r\n\r\n", false},
		{"a chunk extension", false, 0, "0;x=1\r\n\r\n", false},
		{"another chunk", true, 0, "\r\n5\r\nhello\r\n0\r\n\r\n", false},
		{"inside a chunk", false, 3, "abc\r\n0\r\n\r\n", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			br := bufio.NewReader(strings.NewReader(tc.buffered))
			if _, err := br.Peek(len(tc.buffered)); err != nil {
				t.Fatal(err)
			}
			b := &h1Body{br: br, chunked: true, n: tc.n, crlf: tc.crlf, keepAlive: true}
			if got := b.endBuffered(); got != tc.ended {
				t.Fatalf("endBuffered = %v, want %v", got, tc.ended)
			}
			if tc.ended {
				if !b.reusable() || br.Buffered() != 0 {
					t.Fatalf("ended: reusable %v, %d bytes left", b.reusable(), br.Buffered())
				}
				return
			}
			if br.Buffered() != len(tc.buffered) || b.done || b.crlf != tc.crlf || b.n != tc.n {
				t.Fatalf("not ended, yet consumed: %d of %d bytes left, done %v", br.Buffered(), len(tc.buffered), b.done)
			}
			// The reading path still ends the body (or finds it is not
			// ended) from the same bytes.
			b.finish(1 << 10)
		})
	}
}

// TestTrimEOL checks that trimEOL strips what bytes.TrimRight(line, "\r\n")
// strips, whatever the mix of CR and LF at the end.
func TestTrimEOL(t *testing.T) {
	for _, line := range []string{"", "\n", "\r\n", "\r", "a", "a\n", "a\r\n", "a\r\r\n", "a\n\r", "\ra\r", "a b\r\n\n", "a\rb\n"} {
		if got, want := string(trimEOL([]byte(line))), strings.TrimRight(line, "\r\n"); got != want {
			t.Errorf("trimEOL(%q) = %q, want %q", line, got, want)
		}
	}
}

// TestH1ReuseAfterDeadline: a connection that stayed idle past the deadline
// of its last call is reused, not taken for closed.
func TestH1ReuseAfterDeadline(t *testing.T) {
	f := newFakeMCP(t, 0, func(w http.ResponseWriter, _ *http.Request, id json.RawMessage, tool string) {
		writeResultEvent(w, id, tool)
	})
	s := fakeSession(t, f, nil)
	for i := range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		got, err := toolText(ctx, s, "short", nil)
		cancel()
		if err != nil || got != "short" {
			t.Fatalf("call %d: %q, %v", i, got, err)
		}
		waitEnds(t, s)
		// The call's deadline passes while the connection is idle.
		h := s.(*session).t.(*httpTransport).h1
		h.mu.Lock()
		for _, c := range h.idle {
			c.deadline = time.Now().Add(-time.Millisecond)
			_ = c.nc.SetDeadline(c.deadline)
		}
		h.mu.Unlock()
	}
	if n := f.postConns(); n != 1 {
		t.Errorf("%d connections, want 1: a connection idle past its last call's deadline was given up", n)
	}
}
