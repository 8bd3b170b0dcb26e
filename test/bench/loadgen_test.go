package bench

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// mode is how a client speaks MCP.
type mode string

const (
	// sessionMode: initialize (2025-11-25), then every call carries the
	// Mcp-Session-Id the server returned.
	sessionMode mode = "session"
	// statelessMode: no handshake; every call carries the 2026-07-28 _meta
	// keys and the Mcp-Protocol-Version, Mcp-Method and Mcp-Name headers.
	statelessMode mode = "stateless"
	// statelessRootsMode is statelessMode from a client that declares the
	// roots capability, as go-sdk clients do by default: an upstream could
	// ask it for input, so the gateway runs each call on a bridge
	// (input_required) rather than on the request's goroutine.
	statelessRootsMode mode = "stateless-roots"
)

var modes = []mode{sessionMode, statelessMode, statelessRootsMode}

const (
	sessionVersion   = "2025-11-25"
	statelessVersion = "2026-07-28"
)

// target is where a client sends its calls: the upstream itself (direct) or
// the gateway's endpoint (proxied, with an API key).
type target struct {
	url    string
	tool   string // echo direct, fx__echo through the gateway
	apiKey string // "" for the upstream
}

// client is the load generator: a raw JSON-RPC client on net/http with its
// own keep-alive connection and, in session mode, its own MCP session. It
// builds the request body and headers once and reads every response into one
// reused buffer, so that it costs little CPU next to what it measures.
type client struct {
	t    target
	mode mode
	hc   *http.Client
	hdr  http.Header
	body []byte
	want []byte
	buf  bytes.Buffer
}

// newClient opens a client on t; in session mode it initializes a session.
func newClient(ctx context.Context, t target, m mode) (*client, error) {
	c := &client{
		t:    t,
		mode: m,
		// One connection per client, kept alive.
		hc:   &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1, DisableCompression: true}, Timeout: 30 * time.Second},
		hdr:  http.Header{},
		want: []byte(`"text":"` + echoText + `"`),
	}
	c.hdr.Set("Content-Type", "application/json")
	c.hdr.Set("Accept", "application/json, text/event-stream")
	if t.apiKey != "" {
		c.hdr.Set("Authorization", "Bearer "+t.apiKey)
	}
	switch m {
	case sessionMode:
		init := `{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"` + sessionVersion +
			`","capabilities":{},"clientInfo":{"name":"bench","version":"1"}}}`
		resp, body, err := c.post(ctx, []byte(init), c.hdr)
		if err != nil {
			return nil, fmt.Errorf("initialize: %w", err)
		}
		sid := resp.Header.Get("Mcp-Session-Id")
		if resp.StatusCode != http.StatusOK || sid == "" || !bytes.Contains(body, []byte(`"result"`)) {
			return nil, fmt.Errorf("initialize at %s: HTTP %d, session %q: %s", t.url, resp.StatusCode, sid, body)
		}
		c.hdr.Set("Mcp-Session-Id", sid)
		c.hdr.Set("Mcp-Protocol-Version", sessionVersion)
		resp, body, err = c.post(ctx, []byte(`{"jsonrpc":"2.0","method":"notifications/initialized"}`), c.hdr)
		if err != nil {
			return nil, fmt.Errorf("notifications/initialized: %w", err)
		}
		if resp.StatusCode != http.StatusAccepted && resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("notifications/initialized at %s: HTTP %d: %s", t.url, resp.StatusCode, body)
		}
		c.body = []byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"` + t.tool +
			`","arguments":{"text":"` + echoText + `"}}}`)
	case statelessMode, statelessRootsMode:
		caps := `{}`
		if m == statelessRootsMode {
			caps = `{"roots":{"listChanged":true}}`
		}
		c.hdr.Set("Mcp-Protocol-Version", statelessVersion)
		c.hdr.Set("Mcp-Method", "tools/call")
		c.hdr.Set("Mcp-Name", t.tool)
		c.body = []byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"` + t.tool +
			`","arguments":{"text":"` + echoText + `"},"_meta":{"io.modelcontextprotocol/protocolVersion":"` + statelessVersion +
			`","io.modelcontextprotocol/clientCapabilities":` + caps + `,"io.modelcontextprotocol/clientInfo":{"name":"bench","version":"1"}}}}`)
	default:
		return nil, fmt.Errorf("unknown mode %q", m)
	}
	return c, nil
}

// response is what post read: the status, the headers and the body (in
// c.buf, valid until the next post).
type response struct {
	StatusCode int
	Header     http.Header
}

// post sends body with hdr and reads the whole response into c.buf.
func (c *client) post(ctx context.Context, body []byte, hdr http.Header) (response, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.t.url, bytes.NewReader(body))
	if err != nil {
		return response{}, nil, err
	}
	req.Header = hdr
	resp, err := c.hc.Do(req)
	if err != nil {
		return response{}, nil, err
	}
	defer resp.Body.Close()
	c.buf.Reset()
	if _, err := c.buf.ReadFrom(resp.Body); err != nil {
		return response{}, nil, fmt.Errorf("read the response: %w", err)
	}
	return response{StatusCode: resp.StatusCode, Header: resp.Header}, c.buf.Bytes(), nil
}

// call makes one tools/call and checks that the echo came back.
func (c *client) call(ctx context.Context) error {
	resp, body, err := c.post(ctx, c.body, c.hdr)
	if err != nil {
		return fmt.Errorf("tools/call %s at %s: %w", c.t.tool, c.t.url, err)
	}
	if resp.StatusCode != http.StatusOK || !bytes.Contains(body, c.want) || bytes.Contains(body, []byte(`"isError":true`)) {
		return fmt.Errorf("tools/call %s at %s: HTTP %d: %s", c.t.tool, c.t.url, resp.StatusCode, body)
	}
	return nil
}

// close ends the client's session (DELETE) and its connection.
func (c *client) close() {
	if c.mode == sessionMode {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		req, err := http.NewRequestWithContext(ctx, http.MethodDelete, c.t.url, nil)
		if err == nil {
			req.Header = c.hdr
			if resp, err := c.hc.Do(req); err == nil {
				resp.Body.Close()
			}
		}
		cancel()
	}
	c.hc.CloseIdleConnections()
}

// openClients opens n clients on t, each its own session and connection;
// they are closed by the returned func.
func openClients(ctx context.Context, t target, m mode, n int) ([]*client, func(), error) {
	var cs []*client
	closeAll := func() {
		for _, c := range cs {
			c.close()
		}
	}
	for range n {
		c, err := newClient(ctx, t, m)
		if err != nil {
			closeAll()
			return nil, nil, err
		}
		cs = append(cs, c)
	}
	return cs, closeAll, nil
}

// latencies makes n sequential calls with c and returns how long each took.
func latencies(ctx context.Context, c *client, n int, into []time.Duration) ([]time.Duration, error) {
	for range n {
		start := time.Now()
		if err := c.call(ctx); err != nil {
			return into, err
		}
		into = append(into, time.Since(start))
	}
	return into, nil
}

// percentile is the p-th percentile (0..100) of d, which it sorts.
func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	i := int(float64(len(d)-1) * p / 100)
	return d[i]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// run makes n calls in all spread over the clients, each client calling in a
// loop, and returns how long that took.
func run(ctx context.Context, clients []*client, n int) (time.Duration, error) {
	var left atomic.Int64
	left.Store(int64(n))
	var (
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	for _, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for left.Add(-1) >= 0 {
				if err := c.call(ctx); err != nil {
					errOnce.Do(func() { firstErr = err; cancel() })
					return
				}
			}
		}()
	}
	wg.Wait()
	return time.Since(start), firstErr
}
