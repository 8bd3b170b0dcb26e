package dataplane

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/metamcp/metamcp/dataplane/syncclient"
	"github.com/metamcp/metamcp/internal/testca"
)

// serveEdge serves h the way the data plane serves its client port, with
// o (defaults filled in), and returns the address.
func serveEdge(t *testing.T, h http.Handler, o HTTPOptions) string {
	t.Helper()
	o, err := o.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return serveEdgeOn(t, lis, h, o)
}

// serveEdgeOn is serveEdge on lis.
func serveEdgeOn(t *testing.T, lis net.Listener, h http.Handler, o HTTPOptions) string {
	t.Helper()
	o, err := o.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	hs := newHTTPServer(h, o, nil, slog.New(slog.DiscardHandler))
	done := make(chan error, 1)
	go func() { done <- hs.Serve(edgeListener(lis, o.MaxConns)) }()
	t.Cleanup(func() {
		_ = hs.Close()
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	})
	return lis.Addr().String()
}

// readErrs is where a test handler reports how its body read ended.
type readErrs chan error

func (ch readErrs) wait(t *testing.T, what string) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: the handler did not report within 10s", what)
		return nil
	}
}

// TestBodyTrickledAfterSplitHeadIsCut: a request whose head arrives in two
// segments, then whose body trickles a byte at a time, is cut at the body
// timeout: the handler's read fails with a deadline error and the
// connection is closed, long before the body would have been complete.
func TestBodyTrickledAfterSplitHeadIsCut(t *testing.T) {
	errs := make(readErrs, 1)
	addr := serveEdge(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := io.ReadAll(r.Body)
		errs <- err
		if err != nil {
			http.Error(w, "body: "+err.Error(), http.StatusRequestTimeout)
		}
	}), HTTPOptions{BodyTimeout: 300 * time.Millisecond})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const bodyLen = 1000
	head := "POST /metamcp/x/mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: " + strconv.Itoa(bodyLen) + "\r\n\r\n"
	// Two segments: TCP_NODELAY is Go's default, and the pause makes the
	// server read the first on its own.
	if _, err := io.WriteString(c, head[:20]); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // let the first segment be read alone
	if _, err := io.WriteString(c, head[20:]); err != nil {
		t.Fatal(err)
	}
	// Trickle: a byte every 20 ms would take 20 s for the whole body.
	stop := make(chan struct{})
	trickled := make(chan int, 1)
	go func() {
		n := 0
		defer func() { trickled <- n }()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for n < bodyLen {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			if _, err := c.Write([]byte{'x'}); err != nil {
				return
			}
			n++
		}
	}()
	err = errs.wait(t, "trickled body")
	close(stop)
	n := <-trickled
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the body read ended with %v, want a deadline error", err)
	}
	if n >= bodyLen {
		t.Fatalf("the whole body (%d bytes) was sent before the read was cut", n)
	}
	// The connection is closed after the answer.
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("read the answer: %v", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestTimeout || !resp.Close {
		t.Fatalf("answer %d (close %v), want 408 and the connection closed", resp.StatusCode, resp.Close)
	}
}

// TestBodyDeadlineEndsWithBody: once a body is read, its deadline no longer
// applies: a call may run far beyond it, and its context still ends when
// the client goes away.
func TestBodyDeadlineEndsWithBody(t *testing.T) {
	ended := make(chan error, 1)
	addr := serveEdge(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.ReadAll(r.Body); err != nil {
			ended <- err
			return
		}
		select {
		case <-r.Context().Done():
			ended <- r.Context().Err()
		case <-time.After(10 * time.Second):
			ended <- errors.New("the context did not end within 10s of the client leaving")
		}
	}), HTTPOptions{BodyTimeout: 100 * time.Millisecond})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(c, "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}"); err != nil {
		t.Fatal(err)
	}
	// Four body timeouts: the call must still be running.
	select {
	case err := <-ended:
		t.Fatalf("the call ended (%v) while its client was still there", err)
	case <-time.After(400 * time.Millisecond): // 4 body timeouts
	}
	c.Close()
	select {
	case err := <-ended:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("the call ended with %v, want its context cancelled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the call's context did not end within 10s of its client leaving")
	}
}

// TestWriteDeadlineSparesStreams: an answer that is not a stream is cut at
// the write deadline when its client stops reading; an event stream that
// outlives the deadline goes on.
func TestWriteDeadlineSparesStreams(t *testing.T) {
	writeErr := make(chan error, 1)
	addr := serveEdge(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/stream" {
			w.Header().Set("Content-Type", "text/event-stream")
			for i := range 3 {
				if _, err := io.WriteString(w, "data: "+strconv.Itoa(i)+"\n\n"); err != nil {
					return
				}
				http.NewResponseController(w).Flush()
				time.Sleep(200 * time.Millisecond) // past the write deadline
			}
			return
		}
		w.Header().Set("Content-Type", "application/json")
		chunk := make([]byte, 64<<10)
		for {
			if _, err := w.Write(chunk); err != nil {
				writeErr <- err
				return
			}
		}
	}), HTTPOptions{WriteTimeout: 150 * time.Millisecond})

	// A client that sends its request and never reads.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "GET /big HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-writeErr:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("the blocked write ended with %v, want a deadline error", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a write to a client that does not read was not cut within 10s")
	}

	resp, err := http.Get("http://" + addr + "/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read the stream: %v (after %q)", err, b)
	}
	if want := "data: 0\n\ndata: 1\n\ndata: 2\n\n"; string(b) != want {
		t.Fatalf("stream %q, want %q", b, want)
	}
}

// TestBodyBudget: bodies held at once beyond the budget are refused at once
// with 503 and a JSON-RPC error; once the held ones end, requests pass again.
func TestBodyBudget(t *testing.T) {
	release := make(chan struct{})
	reading := make(chan struct{}, 4)
	addr := serveEdge(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		buf := make([]byte, 10)
		_, _ = io.ReadFull(r.Body, buf)
		reading <- struct{}{}
		<-release
		_, _ = io.Copy(io.Discard, r.Body)
	}), HTTPOptions{BodyBudget: 5 << 20})
	// Two 2 MiB bodies fit in 5 MiB; they send 10 bytes and hold.
	var conns []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns = append(conns, c)
		if _, err := io.WriteString(c, "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: "+strconv.Itoa(2<<20)+"\r\n\r\n0123456789"); err != nil {
			t.Fatal(err)
		}
		select {
		case <-reading:
		case <-time.After(10 * time.Second):
			t.Fatal("a request within the budget did not reach its handler")
		}
	}
	post := func(n int) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/x", io.LimitReader(zeros{}, int64(n)))
		req.ContentLength = int64(n)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, string(b)
	}
	// A third is refused before its body is read: it sends only its head.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: "+strconv.Itoa(2<<20)+"\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("read the answer beyond the budget: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	body := string(b)
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, `"error":{"code":-32000`) || !strings.Contains(body, "memory budget") {
		t.Fatalf("a third 2 MiB body: %d %q, want 503 with a JSON-RPC error about the budget", resp.StatusCode, body)
	}
	close(release)
	for _, c := range conns {
		_ = c.Close()
	}
	// Held bodies are released when their requests end: a bounded wait for
	// the handlers to return, then the same request passes.
	deadline := time.Now().Add(10 * time.Second)
	for {
		status, body := post(2 << 20)
		if status == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the held requests ended: %d %q, want 200", status, body)
		}
		time.Sleep(10 * time.Millisecond) // polling for the handlers' return
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// TestContentLengthAndTransferEncodingEndsConnection: net/http reads a
// request with both Content-Length and Transfer-Encoding as chunked (and
// drops Content-Length without a trace); the data plane then closes the
// connection, so that a request smuggled behind the chunks (what a proxy
// going by Content-Length would have sent as the body) is never served.
func TestContentLengthAndTransferEncodingEndsConnection(t *testing.T) {
	_, base, _ := startServer(t, Options{Sync: syncclient.Options{NodeID: "edge"}})
	c, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	smuggled := "GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
	req := "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: " + strconv.Itoa(5+len(smuggled)) + "\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("read the answer: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(b) != "ok\n" || !resp.Close {
		t.Fatalf("answer %d %q (close %v), want /healthz's 200 with the connection closing", resp.StatusCode, b, resp.Close)
	}
	// Nothing more: the smuggled request is not served, the connection ends.
	if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
		t.Fatalf("after the answer: %q, %v; want the connection closed", rest, err)
	}
}

// TestH2C: with H2C, a Go client speaking HTTP/2 without TLS is served
// over HTTP/2, and HTTP/1.1 clients still are.
func TestH2C(t *testing.T) {
	_, base, _ := startServer(t, Options{Sync: syncclient.Options{NodeID: "edge"}, HTTP: HTTPOptions{H2C: true}})
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	defer tr.CloseIdleConnections()
	for _, c := range []struct {
		name   string
		client *http.Client
		major  int
	}{{"h2c", &http.Client{Transport: tr}, 2}, {"HTTP/1.1", http.DefaultClient, 1}} {
		resp, err := c.client.Get(base + "/healthz")
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.ProtoMajor != c.major {
			t.Fatalf("%s: %s %d %q, want HTTP/%d 200", c.name, resp.Proto, resp.StatusCode, b, c.major)
		}
	}
}

// TestTLSHTTP2AndCertReload: with a certificate, the client port speaks
// TLS and HTTP/2 to a Go client, and a certificate written over the files
// is served without a restart; a broken one is not, and the previous one
// stays in service.
func TestTLSHTTP2AndCertReload(t *testing.T) {
	ca := testca.New(t)
	dir := t.TempDir()
	caFile, certFile, keyFile := ca.WriteFiles(t, dir, "127.0.0.1")
	_ = caFile
	_, base, _ := startServer(t, Options{Sync: syncclient.Options{NodeID: "edge"}, HTTP: HTTPOptions{TLSCert: certFile, TLSKey: keyFile}})
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.CertPEM)
	serial := func() (string, int) {
		t.Helper()
		// A new connection each time: the certificate is chosen at the handshake.
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr}).Get(strings.Replace(base, "http://", "https://", 1) + "/healthz")
		if err != nil {
			t.Fatalf("GET over TLS: %v", err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET over TLS: %d", resp.StatusCode)
		}
		return resp.TLS.PeerCertificates[0].SerialNumber.String(), resp.ProtoMajor
	}
	first, major := serial()
	if major != 2 {
		t.Fatalf("over TLS the client got HTTP/%d, want HTTP/2", major)
	}
	// A broken renewal: the previous certificate stays in service.
	if err := os.WriteFile(certFile, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	time.Sleep(certCheckEvery + 100*time.Millisecond) // past the next check
	if got, _ := serial(); got != first {
		t.Fatalf("after a broken renewal the server serves %s, want the previous %s", got, first)
	}
	// A good renewal is served within a check or two.
	cert, key := ca.Issue(t, "127.0.0.1", false)
	for name, b := range map[string][]byte{filepath.Base(keyFile): key, filepath.Base(certFile): cert} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, _ := serial()
		if got != first {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the renewed certificate was not served within 10s (still %s)", got)
		}
		time.Sleep(100 * time.Millisecond) // polling for the reload
	}
}

// TestHTTPOptionsRefused: options that cannot be enforced are refused.
func TestHTTPOptionsRefused(t *testing.T) {
	for name, o := range map[string]HTTPOptions{
		"negative timeout": {BodyTimeout: -1},
		"cert without key": {TLSCert: "x.pem"},
		"key without cert": {TLSKey: "x.pem"},
	} {
		if _, err := o.withDefaults(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := New(Options{Sync: syncclient.Options{NodeID: "edge"}, HTTP: HTTPOptions{TLSCert: "/nonexistent/cert.pem", TLSKey: "/nonexistent/key.pem"}}); err == nil {
		t.Error("New accepted certificate files that do not exist")
	}
}

// failingListener fails its first accepts with an error net/http would
// not retry after on its own.
type failingListener struct {
	net.Listener
	fails atomic.Int32
}

func (l *failingListener) Accept() (net.Conn, error) {
	if l.fails.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: errors.New("no buffer space available")}
	}
	return l.Listener.Accept()
}

// TestAcceptErrorsDoNotEndServe: accept errors that are not temporary to
// net/http (ENOBUFS, say) do not end the server: it waits, retries, and
// serves the next connection.
func TestAcceptErrorsDoNotEndServe(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fl := &failingListener{Listener: lis}
	fl.fails.Store(3)
	addr := serveEdgeOn(t, fl, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok")
	}), HTTPOptions{})
	resp, err := http.Get("http://" + addr + "/")
	if err != nil {
		t.Fatalf("after failed accepts: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "ok" || fl.fails.Load() >= 0 {
		t.Fatalf("after failed accepts: %q (accepts left to fail %d)", b, fl.fails.Load())
	}
}

// TestH2CBodyDeadline: over HTTP/2 (h2c) too, a body read whole lifts its
// deadline (the call runs past it and answers), and a client that goes away
// ends the request's context.
func TestH2CBodyDeadline(t *testing.T) {
	gone := make(chan error, 1)
	started := make(chan struct{}, 1)
	addr := serveEdge(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if r.URL.Path == "/leave" {
			started <- struct{}{}
			select {
			case <-r.Context().Done():
				gone <- r.Context().Err()
			case <-time.After(10 * time.Second):
				gone <- errors.New("the context did not end within 10s of the client leaving")
			}
			return
		}
		time.Sleep(300 * time.Millisecond) // three body timeouts
		_, _ = w.Write(b)
	}), HTTPOptions{BodyTimeout: 100 * time.Millisecond, H2C: true})
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	resp, err := client.Post("http://"+addr+"/echo", "application/json", strings.NewReader(`{"a":1}`))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 || resp.StatusCode != http.StatusOK || string(b) != `{"a":1}` {
		t.Fatalf("%s %d %q, want HTTP/2 200 with the body echoed", resp.Proto, resp.StatusCode, b)
	}
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/leave", strings.NewReader(`{}`))
	errc := make(chan error, 1)
	go func() {
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("the request did not reach its handler within 10s")
	}
	// Past the body timeout: only the client leaving may end the request.
	time.Sleep(200 * time.Millisecond)
	select {
	case err := <-gone:
		t.Fatalf("the request ended (%v) while its client was there", err)
	default:
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("the cancelled request returned %v, want context.Canceled", err)
	}
	select {
	case err := <-gone:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("the request ended with %v, want its context cancelled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the handler did not report within 10s")
	}
}

// TestHeadLimits: a head larger than MaxHeaderBytes is refused with 431,
// and one that does not arrive whole within ReadHeaderTimeout ends its
// connection.
func TestHeadLimits(t *testing.T) {
	addr := serveEdge(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok")
	}), HTTPOptions{MaxHeaderBytes: 1 << 10, ReadHeaderTimeout: 200 * time.Millisecond})

	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/", nil)
	req.Header.Set("X-Big", strings.Repeat("b", 8<<10)) // net/http allows 4 KiB of slack
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("an 8 KiB head over a 1 KiB limit: %d, want 431", resp.StatusCode)
	}

	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n"); err != nil { // never finished
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("an unfinished head: %v after %q, want the connection closed within 10s", err, b)
	}
}
