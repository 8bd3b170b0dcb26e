package upstream

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strings"
	"sync"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/dataplane/rpc"
)

// sseTransport speaks the 2024-11-05 HTTP+SSE transport: a long GET carries
// the server's messages; the first event names the URL to POST messages to.
type sseTransport struct {
	mux
	url     string
	client  *http.Client
	headers http.Header
	// maxResponse bounds one message from the server.
	maxResponse int64
	log         *slog.Logger
	onMsg       func(Caller, *rpc.Message)
	endpoint    string

	stop   context.CancelFunc
	reader sync.WaitGroup

	cmu   sync.Mutex
	cause error
	fin   chan struct{} // closed by the reader when it ends
}

func startSSE(ctx context.Context, cfg *metamcpv1.Server, client *http.Client, maxResponse int64, log *slog.Logger, onMsg func(Caller, *rpc.Message)) (*sseTransport, error) {
	t := &sseTransport{
		url: cfg.GetSse().GetUrl(), client: client, headers: httpHeaders(cfg.GetSse()), maxResponse: maxResponse,
		log: log, onMsg: onMsg, fin: make(chan struct{}),
	}
	life, stop := context.WithCancel(context.Background())
	t.stop = stop
	req, err := http.NewRequestWithContext(life, http.MethodGet, t.url, nil)
	if err != nil {
		stop()
		return nil, fmt.Errorf("build request: %w", err)
	}
	for k, v := range t.headers {
		req.Header[k] = v
	}
	req.Header["Accept"] = hdrAcceptSSE
	// The stream outlives ctx; ctx only bounds the wait for the endpoint.
	type result struct {
		resp *http.Response
		err  error
	}
	rc := make(chan result, 1)
	go func() {
		resp, err := client.Do(req) //nolint:bodyclose // closed by the reader, or drained below
		rc <- result{resp, err}
	}()
	var resp *http.Response
	select {
	case r := <-rc:
		if r.err != nil {
			stop()
			return nil, fmt.Errorf("GET %s: %w", redact(t.url), cleanURLError(r.err))
		}
		resp = r.resp
	case <-ctx.Done():
		stop()
		if r := <-rc; r.err == nil {
			drain(r.resp)
		}
		return nil, fmt.Errorf("GET %s: %w", redact(t.url), ctx.Err())
	}
	if resp.StatusCode != http.StatusOK {
		err := statusError(resp)
		drain(resp)
		stop()
		return nil, fmt.Errorf("GET %s: %w", redact(t.url), err)
	}
	if ct, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); ct != "text/event-stream" {
		drain(resp)
		stop()
		return nil, fmt.Errorf("GET %s: Content-Type %q is not text/event-stream (is this a Streamable HTTP server? use transport streamable_http)", redact(t.url), ct)
	}
	endpoint := make(chan string, 1)
	t.reader.Add(1)
	go t.read(resp, endpoint)
	select {
	case ep := <-endpoint:
		u, err := resp.Request.URL.Parse(ep)
		if err != nil {
			t.close()
			return nil, fmt.Errorf("the endpoint event %q is not a URL: %w", ep, err)
		}
		t.endpoint = u.String()
		return t, nil
	case <-t.fin:
		return nil, fmt.Errorf("the event stream ended before the endpoint event: %w", t.err())
	case <-ctx.Done():
		t.close()
		return nil, fmt.Errorf("no endpoint event: %w", ctx.Err())
	}
}

func (t *sseTransport) read(resp *http.Response, endpoint chan<- string) {
	defer t.reader.Done()
	sentEndpoint := false
	err := readEvents(resp.Body, t.maxResponse, func(ev *sseEvent) bool {
		switch ev.event {
		case "endpoint":
			if !sentEndpoint {
				sentEndpoint = true
				endpoint <- strings.TrimSpace(string(ev.data))
			}
		case "", "message":
			msg, err := rpc.Parse(ev.data)
			if err != nil {
				t.log.Warn("ignoring an event that is not JSON-RPC", "err", err)
				return true
			}
			if msg.IsResponse() {
				if !t.deliver(msg) {
					t.log.Debug("ignoring a response to no pending request", "id", string(msg.ID))
				}
				return true
			}
			t.onMsg(nil, msg) // SSE relates nothing on the wire
		}
		return true
	})
	_ = resp.Body.Close()
	if err == nil || errors.Is(err, io.EOF) {
		err = errors.New("the server closed the event stream")
	}
	t.setCause(fmt.Errorf("the event stream from %s broke: %w", redact(t.url), cleanURLError(err)))
	t.stop()
	close(t.fin)
}

// setCause records why the transport ends; the first cause wins.
func (t *sseTransport) setCause(cause error) {
	t.cmu.Lock()
	if t.cause == nil {
		t.cause = cause
	}
	t.cmu.Unlock()
}

func (t *sseTransport) processes() int        { return 0 }
func (t *sseTransport) done() <-chan struct{} { return t.fin }

func (t *sseTransport) err() error {
	select {
	case <-t.fin:
		t.cmu.Lock()
		defer t.cmu.Unlock()
		return t.cause
	default:
		return nil
	}
}

func (t *sseTransport) send(ctx context.Context, body []byte) error {
	if err := t.err(); err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.endpoint, strings.NewReader(string(body)))
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	for k, v := range t.headers {
		req.Header[k] = v
	}
	req.Header["Content-Type"] = hdrJSON
	if tr := TraceFrom(ctx); tr != nil {
		tr.set(req.Header)
	}
	resp, err := t.client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("POST %s: %w", redact(t.endpoint), cleanURLError(err))
	}
	defer drain(resp)
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if refusedSession(resp.StatusCode, b) {
			// 404, or 400 "No transport found for sessionId": the server
			// forgot the stream's session (it restarted).
			t.setCause(errSessionExpired)
			t.stop()
			return errSessionExpired
		}
		return fmt.Errorf("POST %s: %w", redact(t.endpoint), statusErr(resp.Status, resp.Header.Get("Content-Type"), bytes.NewReader(b)))
	}
	return nil
}

func (t *sseTransport) roundTrip(ctx context.Context, id int64, body []byte) (*rpc.Message, error) {
	return t.wait(ctx, id, body, t.send, t.fin, t.err)
}

// close ends the event stream and waits for its reader.
func (t *sseTransport) close() {
	t.setCause(errClosed)
	t.stop()
	t.reader.Wait()
}
