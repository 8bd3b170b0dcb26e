package httpserver

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// served reports which loop served a request: "lean" or "std".
func served(w http.ResponseWriter) string {
	if _, ok := w.(*response); ok {
		return "lean"
	}
	return "std"
}

// start serves h on a loopback port and returns its address.
func start(t *testing.T, h http.Handler, opts Options) (*Server, string) {
	t.Helper()
	opts.Handler = h
	s := New(opts)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	return s, l.Addr().String()
}

// echo answers with which loop served, the method, path, body and a few headers.
var echo = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	w.Header().Set("X-Served", served(w))
	fmt.Fprintf(w, "%s %s %s q=%s host=%s len=%d body=%s ua=%s", served(w), r.Method, r.URL.Path, r.URL.RawQuery, r.Host, r.ContentLength, b, r.Header.Get("User-Agent"))
})

// rawConn is a client connection that writes bytes as given and reads
// responses with net/http's parser.
type rawConn struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

func dial(t *testing.T, addr string) *rawConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return &rawConn{t: t, c: c, br: bufio.NewReader(c)}
}

func (rc *rawConn) send(s string) {
	rc.t.Helper()
	if _, err := io.WriteString(rc.c, s); err != nil {
		rc.t.Fatal(err)
	}
}

// reply is a response as read by net/http's parser.
type reply struct {
	StatusCode       int
	Header           http.Header
	ContentLength    int64
	TransferEncoding []string
	Close            bool
}

// read reads one response and its body.
func (rc *rawConn) read(method string) (reply, string) {
	rc.t.Helper()
	resp, err := http.ReadResponse(rc.br, &http.Request{Method: method})
	if err != nil {
		rc.t.Fatalf("read response: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		rc.t.Fatalf("read body: %v", err)
	}
	return reply{resp.StatusCode, resp.Header, resp.ContentLength, resp.TransferEncoding, resp.Close}, string(b)
}

// closed reports whether the server closed the connection.
func (rc *rawConn) closed() bool {
	_ = rc.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := rc.br.ReadByte()
	return errors.Is(err, io.EOF)
}

func TestLeanRequests(t *testing.T) {
	_, addr := start(t, echo, Options{})
	rc := dial(t, addr)
	cases := []struct {
		req, want string
	}{
		{"GET /a HTTP/1.1\r\nHost: x\r\nUser-Agent: t\r\n\r\n", "lean GET /a q= host=x len=0 body= ua=t"},
		{"POST /metamcp/e/mcp HTTP/1.1\r\nHost: 127.0.0.1:1\r\nContent-Length: 5\r\n\r\nhello", "lean POST /metamcp/e/mcp q= host=127.0.0.1:1 len=5 body=hello ua="},
		{"DELETE /p?x=1&y=%20 HTTP/1.1\r\nhost: h\r\ncontent-length: 0\r\n\r\n", "lean DELETE /p q=x=1&y=%20 host=h len=0 body= ua="},
		{"GET /a%2Fb HTTP/1.1\r\nHost: x\r\nuser-agent: lower\r\n\r\n", "lean GET /a/b q= host=x len=0 body= ua=lower"},
	}
	for _, tc := range cases {
		rc.send(tc.req)
		resp, body := rc.read("GET")
		if resp.StatusCode != 200 || body != tc.want {
			t.Errorf("%q: got %d %q, want 200 %q", tc.req, resp.StatusCode, body, tc.want)
		}
		if resp.ContentLength != int64(len(body)) || resp.TransferEncoding != nil {
			t.Errorf("%q: Content-Length %d, Transfer-Encoding %v: want the length of a response never flushed", tc.req, resp.ContentLength, resp.TransferEncoding)
		}
		if resp.Header.Get("Date") == "" {
			t.Errorf("%q: no Date header", tc.req)
		}
	}
}

func TestHandedOffToNetHTTP(t *testing.T) {
	_, addr := start(t, echo, Options{})
	long := strings.Repeat("a", headBufferSize)
	cases := []struct {
		name, req, method string
		status            int
		want              string // a prefix of the body
	}{
		{"chunked body", "POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", "POST", 200, "std POST /c q= host=x len=-1 body=hello"},
		{"HTTP/1.0", "GET /old HTTP/1.0\r\nHost: x\r\n\r\n", "GET", 200, "std GET /old"},
		{"HEAD", "HEAD /h HTTP/1.1\r\nHost: x\r\n\r\n", "HEAD", 200, ""},
		{"PUT", "PUT /u HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nz", "PUT", 200, "std PUT /u q= host=x len=1 body=z"},
		{"expect continue", "POST /e HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi", "POST", 200, "std POST /e"},
		{"no Host", "GET /n HTTP/1.1\r\n\r\n", "GET", 400, ""},
		{"two Hosts", "GET /n HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "GET", 400, ""},
		{"two lengths", "POST /n HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", "POST", 400, ""},
		{"bad length", "POST /n HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", "POST", 400, ""},
		{"bad request line", "GARBAGE\r\nHost: a\r\n\r\n", "GET", 400, ""},
		{"space in header name", "GET /n HTTP/1.1\r\nHost: a\r\nBad Name: v\r\n\r\n", "GET", 400, ""},
		{"bare LF", "GET /lf HTTP/1.1\nHost: x\n\n", "GET", 200, "std GET /lf"},
		{"head over the lean buffer", "GET /big HTTP/1.1\r\nHost: x\r\nX-Long: " + long + "\r\n\r\n", "GET", 200, "std GET /big"},
		{"absolute form", "GET http://x/abs HTTP/1.1\r\nHost: x\r\n\r\n", "GET", 200, "std GET /abs"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rc := dial(t, addr)
			rc.send(tc.req)
			resp, body := rc.read(tc.method)
			if resp.StatusCode == http.StatusContinue {
				resp, body = rc.read(tc.method)
			}
			if resp.StatusCode != tc.status || !strings.HasPrefix(body, tc.want) {
				t.Errorf("got %d %q, want %d %q...", resp.StatusCode, body, tc.status, tc.want)
			}
			if tc.status == 200 && tc.method != "HEAD" && resp.Header.Get("X-Served") != "std" {
				t.Errorf("served by %q, want std", resp.Header.Get("X-Served"))
			}
		})
	}
	t.Run("the connection stays with net/http", func(t *testing.T) {
		rc := dial(t, addr)
		rc.send("POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
		rc.read("POST")
		rc.send("GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
		if _, body := rc.read("GET"); !strings.HasPrefix(body, "std GET /next") {
			t.Errorf("next request: %q, want it served by std", body)
		}
	})
}

func TestPipelined(t *testing.T) {
	_, addr := start(t, echo, Options{})
	rc := dial(t, addr)
	rc.send("POST /1 HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\naGET /2 HTTP/1.1\r\nHost: x\r\n\r\nGET /3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	for _, want := range []string{"lean POST /1", "lean GET /2", "lean GET /3"} {
		if _, body := rc.read("GET"); !strings.HasPrefix(body, want) {
			t.Errorf("got %q, want %q...", body, want)
		}
	}
	if !rc.closed() {
		t.Error("the connection stayed open after Connection: close")
	}
}

func TestUnreadBody(t *testing.T) {
	ignore := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ignored") })
	_, addr := start(t, ignore, Options{})

	rc := dial(t, addr)
	rc.send("POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbodyGET /b HTTP/1.1\r\nHost: x\r\n\r\n")
	rc.read("POST")
	if _, body := rc.read("GET"); body != "ignored" {
		t.Errorf("after a small unread body: %q", body)
	}

	rc = dial(t, addr)
	rc.send(fmt.Sprintf("POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", maxDrain+1))
	rc.read("POST")
	if !rc.closed() {
		t.Error("a connection whose large body was left unread stayed open")
	}
}

func TestStreaming(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for i := range 3 {
			fmt.Fprintf(w, "data: %d\n\n", i)
			if err := http.NewResponseController(w).Flush(); err != nil {
				t.Errorf("flush: %v", err)
			}
		}
	})
	_, addr := start(t, h, Options{})
	rc := dial(t, addr)
	for range 2 {
		rc.send("GET /s HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, body := rc.read("GET")
		if len(resp.TransferEncoding) != 1 || resp.TransferEncoding[0] != "chunked" {
			t.Errorf("Transfer-Encoding %v, want chunked", resp.TransferEncoding)
		}
		if body != "data: 0\n\ndata: 1\n\ndata: 2\n\n" {
			t.Errorf("body %q", body)
		}
	}
}

func TestLargeResponseIsChunked(t *testing.T) {
	big := strings.Repeat("x", 3*flushThreshold+7)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, big) })
	_, addr := start(t, h, Options{})
	rc := dial(t, addr)
	rc.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, body := rc.read("GET")
	if body != big || resp.Header.Get("Content-Type") == "" {
		t.Errorf("got %d bytes (Content-Type %q), want %d", len(body), resp.Header.Get("Content-Type"), len(big))
	}
}

func TestStatusWithoutBody(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
		if _, err := io.WriteString(w, "no"); !errors.Is(err, http.ErrBodyNotAllowed) {
			t.Errorf("write after 204: %v", err)
		}
	})
	_, addr := start(t, h, Options{})
	rc := dial(t, addr)
	rc.send("DELETE / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
	for range 2 {
		resp, body := rc.read("GET")
		if resp.StatusCode != 204 || body != "" || resp.Header.Get("Content-Length") != "" {
			t.Errorf("got %d %q Content-Length %q", resp.StatusCode, body, resp.Header.Get("Content-Length"))
		}
	}
}

func TestHeaderValuesCannotSplit(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header()["X-Evil"] = []string{"a\r\nSet-Cookie: x=1"}
		w.Header()["Bad Name"] = []string{"v"}
	})
	_, addr := start(t, h, Options{})
	rc := dial(t, addr)
	rc.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, _ := rc.read("GET")
	if resp.Header.Get("Set-Cookie") != "" || resp.Header.Get("X-Evil") != "a  Set-Cookie: x=1" {
		t.Errorf("headers %v", resp.Header)
	}
	if _, ok := resp.Header["Bad Name"]; ok {
		t.Error("an invalid header name was sent")
	}
}

func TestClientGoneCancelsRequest(t *testing.T) {
	cancelled := make(chan error, 1)
	started := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
		close(started)
		select {
		case <-r.Context().Done():
			cancelled <- r.Context().Err()
		case <-time.After(10 * time.Second):
			cancelled <- errors.New("not cancelled within 10s of the client closing")
		}
	})
	_, addr := start(t, h, Options{WatchAfter: time.Millisecond})
	rc := dial(t, addr)
	rc.send("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
	<-started
	time.Sleep(20 * time.Millisecond) // past WatchAfter
	rc.c.Close()
	if err := <-cancelled; !errors.Is(err, context.Canceled) {
		t.Error(err)
	}
}

func TestSlowRequestKeepsConnection(t *testing.T) {
	// A request that runs past WatchAfter is watched; the watch must stop
	// cleanly so the next request on the connection is served.
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(30 * time.Millisecond)
		_, _ = io.WriteString(w, r.URL.Path)
	})
	_, addr := start(t, h, Options{WatchAfter: time.Millisecond})
	rc := dial(t, addr)
	for _, p := range []string{"/1", "/2", "/3"} {
		rc.send("GET " + p + " HTTP/1.1\r\nHost: x\r\n\r\n")
		if _, body := rc.read("GET"); body != p {
			t.Errorf("got %q, want %q", body, p)
		}
	}
	// A pipelined request sent while the first one runs is answered too.
	rc.send("GET /4 HTTP/1.1\r\nHost: x\r\n\r\n")
	time.Sleep(10 * time.Millisecond)
	rc.send("GET /5 HTTP/1.1\r\nHost: x\r\n\r\n")
	for _, p := range []string{"/4", "/5"} {
		if _, body := rc.read("GET"); body != p {
			t.Errorf("got %q, want %q", body, p)
		}
	}
}

func TestPanicClosesConnection(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/panic" {
			panic("boom")
		}
		_, _ = io.WriteString(w, "ok")
	})
	_, addr := start(t, h, Options{})
	rc := dial(t, addr)
	rc.send("GET /panic HTTP/1.1\r\nHost: x\r\n\r\n")
	if !rc.closed() {
		t.Error("the connection stayed open after a panic")
	}
	rc = dial(t, addr)
	rc.send("GET /after HTTP/1.1\r\nHost: x\r\n\r\n")
	if _, body := rc.read("GET"); body != "ok" {
		t.Errorf("after a panic: %q", body)
	}
}

func TestNetHTTPClient(t *testing.T) {
	// The standard client, keep-alive on, against both loops.
	_, addr := start(t, echo, Options{})
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	defer client.CloseIdleConnections()
	for i := range 20 {
		method := http.MethodPost
		var body io.Reader = strings.NewReader(fmt.Sprint(i))
		if i%5 == 4 {
			method = http.MethodPut // handed off: later requests go to a new connection or std
		}
		req, _ := http.NewRequest(method, "http://"+addr+"/k", body)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(b), fmt.Sprintf("%s /k q= host=%s len=%d body=%d", method, addr, len(fmt.Sprint(i)), i)) {
			t.Errorf("request %d: %q", i, b)
		}
	}
}

func TestShutdown(t *testing.T) {
	release := make(chan struct{})
	var inHandler atomic.Bool
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			inHandler.Store(true)
			<-release
		}
		_, _ = io.WriteString(w, "done")
	})
	s := New(Options{Handler: h})
	var onShutdown atomic.Bool
	s.RegisterOnShutdown(func() { onShutdown.Store(true) })
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(l) }()
	addr := l.Addr().String()

	idle := dial(t, addr)
	idle.send("GET /fast HTTP/1.1\r\nHost: x\r\n\r\n")
	idle.read("GET")
	handedOff := dial(t, addr)
	handedOff.send("GET /old HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
	handedOff.read("GET")
	busy := dial(t, addr)
	busy.send("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
	for !inHandler.Load() {
		time.Sleep(time.Millisecond)
	}

	stopped := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		stopped <- s.Shutdown(ctx)
	}()
	if !idle.closed() {
		t.Error("an idle connection stayed open during shutdown")
	}
	if !handedOff.closed() {
		t.Error("an idle handed-off connection stayed open during shutdown")
	}
	select {
	case err := <-stopped:
		t.Fatalf("Shutdown returned (%v) while a request was running", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	resp, body := busy.read("GET")
	if body != "done" || !resp.Close {
		t.Errorf("the running request got %q (close %v), want done and Connection: close", body, resp.Close)
	}
	if err := <-stopped; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		t.Errorf("Serve: %v", err)
	}
	if !onShutdown.Load() {
		t.Error("the RegisterOnShutdown function did not run")
	}
	if _, err := net.Dial("tcp", addr); err == nil {
		t.Error("the listener still accepts")
	}
}

func TestIdleTimeout(t *testing.T) {
	_, addr := start(t, echo, Options{IdleTimeout: 50 * time.Millisecond})
	rc := dial(t, addr)
	rc.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	rc.read("GET")
	if !rc.closed() {
		t.Error("an idle connection outlived the idle timeout")
	}
}

// TestIdleTimeoutKeptAcrossRequests: the idle deadline is not set again
// for every request, but a connection still closes once idle, and it does
// not close while requests keep coming.
func TestIdleTimeoutKeptAcrossRequests(t *testing.T) {
	_, addr := start(t, echo, Options{IdleTimeout: 200 * time.Millisecond})
	rc := dial(t, addr)
	deadline := time.Now().Add(600 * time.Millisecond) // three idle timeouts
	for i := 0; time.Now().Before(deadline); i++ {
		rc.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		rc.read("GET")
		time.Sleep(10 * time.Millisecond)
	}
	if !rc.closed() {
		t.Error("an idle connection outlived the idle timeout")
	}
}

// TestLongRequestOutlivesIdleTimeout: a request that runs longer than the
// idle timeout is watched without the idle deadline: it is not taken for
// a client gone, and its connection serves on.
func TestLongRequestOutlivesIdleTimeout(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
		select {
		case <-time.After(300 * time.Millisecond):
		case <-r.Context().Done():
			http.Error(w, "cancelled", http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, r.URL.Path)
	})
	_, addr := start(t, h, Options{IdleTimeout: 50 * time.Millisecond, WatchAfter: time.Millisecond})
	rc := dial(t, addr)
	for _, p := range []string{"/1", "/2"} {
		rc.send("POST " + p + " HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
		if r, body := rc.read("POST"); r.StatusCode != http.StatusOK || body != p {
			t.Fatalf("%s: %d %q, want 200 %q", p, r.StatusCode, body, p)
		}
	}
	if !rc.closed() {
		t.Error("the connection outlived the idle timeout after its requests")
	}
}

// TestStalledBodyTimesOut: a body that stops coming is bounded by the idle
// timeout: the handler's read fails and the connection is closed.
func TestStalledBodyTimesOut(t *testing.T) {
	readErr := make(chan error, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := io.ReadAll(r.Body)
		readErr <- err
	})
	_, addr := start(t, h, Options{IdleTimeout: 100 * time.Millisecond})
	rc := dial(t, addr)
	rc.send("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{}")
	if err := <-readErr; err == nil {
		t.Error("reading a body that stopped coming succeeded")
	}
	rc.read("POST") // what the handler answered
	if !rc.closed() {
		t.Error("the connection of a stalled body was kept")
	}
}

func TestHeadTimeout(t *testing.T) {
	_, addr := start(t, echo, Options{ReadHeaderTimeout: 50 * time.Millisecond})
	rc := dial(t, addr)
	rc.send("GET / HTTP/1.1\r\nHost:")
	if !rc.closed() {
		t.Error("a connection stalled mid-head outlived the head timeout")
	}
}

func TestRepeatedHeaders(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%q %q %q %q", r.Header["X-Dup"], r.Header["X-Other"], r.Header["Accept"], r.Header["X-Empty"])
	})
	_, addr := start(t, h, Options{})
	rc := dial(t, addr)
	rc.send("GET / HTTP/1.1\r\nHost: x\r\nX-Dup: a\r\nX-Other: b\r\nx-dup:  c \r\nAccept: text/event-stream\r\nX-Empty:\r\n\r\n")
	if _, body := rc.read("GET"); body != `["a" "c"] ["b"] ["text/event-stream"] [""]` {
		t.Errorf("headers seen by the handler: %s", body)
	}
}

func TestCloseCancelsRequests(t *testing.T) {
	started := make(chan struct{})
	cancelled := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-r.Context().Done()
		close(cancelled)
	})
	s := New(Options{Handler: h})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(l) }()
	rc := dial(t, l.Addr().String())
	rc.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	<-started
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-cancelled:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not cancel the running request's context")
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		t.Errorf("Serve: %v", err)
	}
}

// wrapped is a ResponseWriter wrapper with an Unwrap method, as middleware
// writes them.
type wrapped struct{ http.ResponseWriter }

func (w wrapped) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func TestDetach(t *testing.T) {
	release := make(chan struct{})
	handlerDone := make(chan string, 4)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/detach", "/detach-streamed":
			_, _ = io.ReadAll(r.Body)
			ww := wrapped{w}
			if !CanDetach(ww) {
				t.Error("CanDetach = false for a lean request whose body was read")
			}
			if r.URL.Path == "/detach-streamed" {
				fmt.Fprint(w, "part 1, ")
				http.NewResponseController(w).Flush()
			}
			fmt.Fprint(w, "answered early")
			// Detach on another goroutine, as a bridge does; the handler
			// waits for it, then runs on without the connection.
			detached := make(chan bool)
			go func() { detached <- Detach(ww) }()
			if !<-detached {
				t.Error("Detach = false")
			}
			if _, err := w.Write([]byte("late")); !errors.Is(err, errHandlerDone) {
				t.Errorf("write after Detach: %v, want errHandlerDone", err)
			}
			<-release
			handlerDone <- r.URL.Path
			panic(http.ErrAbortHandler) // costs nothing: the connection went on
		case "/unread":
			handlerDone <- fmt.Sprintf("CanDetach=%v Detach=%v", CanDetach(w), Detach(w))
		default:
			echo(w, r)
		}
	})
	_, addr := start(t, h, Options{})
	rc := dial(t, addr)

	rc.send("POST /detach HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
	if resp, body := rc.read("POST"); resp.StatusCode != 200 || body != "answered early" || resp.ContentLength != int64(len(body)) {
		t.Fatalf("detached response: %+v %q", resp, body)
	}
	// The connection serves on while the first handler still runs.
	rc.send("POST /detach-streamed HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
	if resp, body := rc.read("POST"); resp.StatusCode != 200 || body != "part 1, answered early" {
		t.Fatalf("detached streamed response: %+v %q", resp, body)
	}
	rc.send("GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
	if _, body := rc.read("GET"); !strings.HasPrefix(body, "lean GET /next") {
		t.Fatalf("request after detaching: %q", body)
	}
	close(release)
	for range 2 {
		<-handlerDone
	}
	rc.send("GET /again HTTP/1.1\r\nHost: x\r\n\r\n")
	if _, body := rc.read("GET"); !strings.HasPrefix(body, "lean GET /again") {
		t.Fatalf("request after the detached handlers returned: %q", body)
	}

	// A body left unread: nothing to detach.
	rc.send("POST /unread HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
	if resp, _ := rc.read("POST"); resp.StatusCode != 200 {
		t.Errorf("unread body: status %d", resp.StatusCode)
	}
	if got := <-handlerDone; got != "CanDetach=false Detach=false" {
		t.Errorf("with the body unread: %s", got)
	}
	// net/http's requests (HTTP/1.0 goes there) cannot be detached.
	rc2 := dial(t, addr)
	rc2.send("POST /unread HTTP/1.0\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
	rc2.read("POST")
	if got := <-handlerDone; got != "CanDetach=false Detach=false" {
		t.Errorf("net/http request: %s", got)
	}
}

// TestWatchKeepsItsByte: a watch that read the first byte of the client's
// next request holds it for the request loop; another watch (a timer that
// fired late, with the next request's watch armed) must not read on and
// overwrite it. Seen as "method OST not allowed" under valgrind's slow
// scheduling.
func TestWatchKeepsItsByte(t *testing.T) {
	s := New(Options{Handler: echo})
	client, server := net.Pipe()
	defer client.Close()
	defer server.Close()
	_ = server.SetReadDeadline(time.Now().Add(10 * time.Second))
	c := newConn(s, server)
	go func() { _, _ = client.Write([]byte("PO")) }()
	c.mu.Lock()
	c.watchArmed = true
	c.mu.Unlock()
	c.watch() // reads "P"
	c.watch() // must leave "O" alone
	got, err := c.br.Peek(2)
	if err != nil || string(got) != "PO" {
		t.Fatalf("the request loop reads %q (%v), want \"PO\"", got, err)
	}
}

// TestTokenBytes checks the token table against RFC 9110's tchar.
func TestTokenBytes(t *testing.T) {
	const tchar = "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	for c := range 256 {
		if want := strings.IndexByte(tchar, byte(c)) >= 0; isTokenByte(byte(c)) != want {
			t.Errorf("isTokenByte(%q) = %v, want %v", byte(c), !want, want)
		}
	}
}

// BenchmarkParseHead parses the head of a stateless MCP tools/call, as the
// benchmark's clients send it.
func BenchmarkParseHead(b *testing.B) {
	head := []byte("POST /metamcp/bench/mcp HTTP/1.1\r\n" +
		"Host: 127.0.0.1:12008\r\n" +
		"User-Agent: Go-http-client/1.1\r\n" +
		"Content-Length: 412\r\n" +
		"Accept: application/json, text/event-stream\r\n" +
		"Authorization: Bearer mmk_0123456789abcdef0123456789abcdef\r\n" +
		"Content-Type: application/json\r\n" +
		"Mcp-Method: tools/call\r\n" +
		"Mcp-Name: fx__echo\r\n" +
		"Mcp-Protocol-Version: 2026-07-28\r\n" +
		"Accept-Encoding: gzip\r\n\r\n")
	b.ReportAllocs()
	for b.Loop() {
		var p parsedHead
		if !parseHead(head, &p) {
			b.Fatal("parseHead refused the head")
		}
	}
}
