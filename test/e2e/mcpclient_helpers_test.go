package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
)

// gatewayEndpoint creates a namespace and an endpoint named name over
// members (mmctl --server values: "server" or "server:prefix") and an API
// key for it, waits until dp serves the result, and returns the endpoint's
// base URL (http://ADDR/metamcp/NAME) and the key.
func gatewayEndpoint(t *testing.T, cp *controlPlane, dp *dataPlane, name string, members ...string) (string, string) {
	t.Helper()
	args := []string{"create", "namespace", name}
	for _, m := range members {
		args = append(args, "--server", m)
	}
	cp.ok(t, args...)
	cp.ok(t, "create", "endpoint", name, "--namespace", name)
	key := createAPIKey(t, cp, name+"-key", name)
	waitApplied(t, cp, cp.revisionNum(t), dp)
	return "http://" + dp.addr + "/metamcp/" + name, key
}

// createAPIKey creates an API key (a principal) for endpoint and returns it.
func createAPIKey(t *testing.T, cp *controlPlane, name, endpoint string) string {
	t.Helper()
	r := cp.ok(t, "create", "apikey", name, "--endpoint", endpoint, "-o", "json")
	var created struct {
		Key string `json:"key"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &created); err != nil || created.Key == "" {
		t.Fatalf("create apikey: no key in the JSON output (%v):\n%s", err, r)
	}
	return created.Key
}

// rpcResponse is one JSON-RPC response as a client received it: the raw
// bytes of its members, untouched.
type rpcResponse struct {
	ID     json.RawMessage `json:"id"`
	Result json.RawMessage `json:"result"`
	Error  json.RawMessage `json:"error"`
	// header is the HTTP response's header.
	header http.Header
	// body is the whole HTTP body, for failure messages.
	body string
}

// rawMCP is a hand-driven Streamable HTTP client: it posts JSON-RPC text and
// returns the response members as raw bytes, so tests can compare them byte
// for byte (the go-sdk client would decode and re-encode them).
type rawMCP struct {
	url     string
	key     string
	version string // MCP-Protocol-Version header once known
	sid     string // Mcp-Session-Id, "" for stateless
	nextID  atomic.Int64
}

// initialize starts a session at version (a session-based revision).
func (c *rawMCP) initialize(ctx context.Context, t *testing.T, version string) {
	t.Helper()
	resp := c.call(ctx, t, "initialize", `{"protocolVersion":"`+version+`","capabilities":{},"clientInfo":{"name":"e2e-raw","version":"0"}}`)
	if resp.Error != nil {
		t.Fatalf("initialize: error %s", resp.Error)
	}
	var res struct {
		ProtocolVersion string `json:"protocolVersion"`
	}
	if err := json.Unmarshal(resp.Result, &res); err != nil || res.ProtocolVersion != version {
		t.Fatalf("initialize: negotiated %q (%v), want %s; body:\n%s", res.ProtocolVersion, err, version, resp.body)
	}
	c.sid = resp.header.Get("Mcp-Session-Id")
	if c.sid == "" {
		t.Fatalf("initialize: no Mcp-Session-Id in the answer")
	}
	c.version = version
	if code, body := c.post(ctx, t, `{"jsonrpc":"2.0","method":"notifications/initialized"}`); code != http.StatusAccepted {
		t.Fatalf("notifications/initialized: HTTP %d %s", code, body)
	}
}

// call sends one request and returns its response (read from a JSON body or
// from an event stream, where it is the message with the request's id).
func (c *rawMCP) call(ctx context.Context, t *testing.T, method, params string) rpcResponse {
	t.Helper()
	r, err := c.do(ctx, fmt.Sprintf(`"raw-%d"`, c.nextID.Add(1)), method, params)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// do is call with the request id (raw JSON) given, returning failures.
func (c *rawMCP) do(ctx context.Context, id, method, params string) (rpcResponse, error) {
	msg := `{"jsonrpc":"2.0","id":` + id + `,"method":"` + method + `"`
	if params != "" {
		msg += `,"params":` + params
	}
	msg += "}"
	req, err := c.newRequest(ctx, msg)
	if err != nil {
		return rpcResponse{}, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return rpcResponse{}, fmt.Errorf("%s: %w", method, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return rpcResponse{}, fmt.Errorf("%s: read the answer: %w", method, err)
	}
	if resp.StatusCode != http.StatusOK {
		return rpcResponse{}, fmt.Errorf("%s: HTTP %d %s", method, resp.StatusCode, body)
	}
	var msgs [][]byte
	switch ct := resp.Header.Get("Content-Type"); {
	case strings.HasPrefix(ct, "application/json"):
		msgs = [][]byte{body}
	case strings.HasPrefix(ct, "text/event-stream"):
		msgs = sseData(body)
	default:
		return rpcResponse{}, fmt.Errorf("%s: Content-Type %q, want application/json or text/event-stream; body:\n%s", method, ct, body)
	}
	for _, m := range msgs {
		var r rpcResponse
		if err := json.Unmarshal(m, &r); err != nil {
			return rpcResponse{}, fmt.Errorf("%s: a message that is not JSON-RPC: %w\n%s", method, err, m)
		}
		if string(r.ID) == id {
			r.header = resp.Header
			r.body = string(body)
			return r, nil
		}
	}
	return rpcResponse{}, fmt.Errorf("%s: no response with id %s in the answer:\n%s", method, id, body)
}

// post sends one message and returns the HTTP status and body.
func (c *rawMCP) post(ctx context.Context, t *testing.T, msg string) (int, string) {
	t.Helper()
	req, err := c.newRequest(ctx, msg)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// newRequest is a POST of msg with the client's headers.
func (c *rawMCP) newRequest(ctx context.Context, msg string) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, strings.NewReader(msg))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Authorization", "Bearer "+c.key)
	if c.version != "" {
		req.Header.Set("MCP-Protocol-Version", c.version)
	}
	if c.sid != "" {
		req.Header.Set("Mcp-Session-Id", c.sid)
	}
	return req, nil
}

// sseData returns the data of each event of an event stream.
func sseData(body []byte) [][]byte {
	var out [][]byte
	var cur []byte
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 0, 64*1024), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		switch {
		case len(line) == 0:
			if cur != nil {
				out = append(out, cur)
				cur = nil
			}
		case bytes.HasPrefix(line, []byte("data:")):
			d := bytes.TrimPrefix(bytes.TrimPrefix(line, []byte("data:")), []byte(" "))
			if cur != nil {
				cur = append(cur, '\n')
			}
			cur = append(cur, d...)
		}
	}
	if cur != nil {
		out = append(out, cur)
	}
	return out
}
