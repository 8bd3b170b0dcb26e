package upstream

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/metamcp/metamcp/dataplane/rpc"
	"github.com/metamcp/metamcp/pkg/version"
)

// Upstreams that speak 2026-07-28 (SEP-2575). That revision has no
// initialize and no session: each request carries in its params' _meta the
// protocol version, the client's capabilities and identity, and over HTTP
// the MCP-Protocol-Version, Mcp-Method and Mcp-Name headers (Mcp-Param
// headers too, for a tool's annotated arguments). The server never sends a
// request of its own: what it needs from the client (sampling, elicitation,
// roots) comes back as an input_required result, which the client answers
// by calling again with inputResponses and the result's requestState.
//
// A session finds out what its server speaks with server/discover, sent as
// a 2026-07-28 request before anything else: a server that lists
// 2026-07-28 among its supportedVersions is spoken to that way (Info says
// 2026-07-28, and its capabilities are the discover result's); any other
// answer, an error or no answer within discoverTimeout, and the session
// initializes as before.
//
// Only Streamable HTTP servers are asked. One that lists 2026-07-28 there
// serves it statelessly, and could not send a request of its own anyway. A
// stdio server may list it while its tools still send requests the
// session-based way (go-sdk lists every revision on stdio, and refuses
// those requests at 2026-07-28): stdio stays session-based, as does
// legacy SSE.

// StatelessVersion is the revision spoken to upstreams that support it.
const StatelessVersion = "2026-07-28"

// discoverTimeout bounds the server/discover probe: a server that does
// not answer a method it does not know is initialized without further wait.
const discoverTimeout = 5 * time.Second

// sessionOnlyMemory is how long the pool remembers that a server answered
// the probe without 2026-07-28 (or not at all): its next sessions (per_client
// ones above all) initialize at once, and a server upgraded meanwhile is
// spoken to at 2026-07-28 from its first session after that.
const sessionOnlyMemory = 10 * time.Minute

// The per-request _meta keys of 2026-07-28.
const (
	metaProtocolVersion = "io.modelcontextprotocol/protocolVersion"
	metaClientCaps      = "io.modelcontextprotocol/clientCapabilities"
	metaClientInfo      = "io.modelcontextprotocol/clientInfo"
	metaLogLevel        = "io.modelcontextprotocol/logLevel"
	metaServerInfo      = "io.modelcontextprotocol/serverInfo"
)

// gatewayCapabilities are the client capabilities the data plane declares
// when a request is its own (list refreshes) or its client declared none.
var gatewayCapabilities = json.RawMessage(`{}`)

// RequestMeta is what a client's request carries to a 2026-07-28 upstream
// besides its params: the capabilities the client declared (the session's
// at initialize, or the request's own _meta), and the Mcp-Param headers
// of the tool's annotated arguments.
type RequestMeta struct {
	Capabilities json.RawMessage
	// ParamHeaders are header names (without "Mcp-Param-") to values,
	// already encoded as 2026-07-28 requires.
	ParamHeaders map[string]string
}

type requestMetaKey struct{}

// WithRequestMeta returns a context whose calls to a 2026-07-28 upstream
// carry m. Session-based upstreams ignore it.
func WithRequestMeta(ctx context.Context, m *RequestMeta) context.Context {
	return context.WithValue(ctx, requestMetaKey{}, m)
}

func requestMetaFrom(ctx context.Context) *RequestMeta {
	m, _ := ctx.Value(requestMetaKey{}).(*RequestMeta)
	return m
}

// Stateless reports whether a session speaks 2026-07-28 to its upstream.
func Stateless(s Session) bool {
	info := s.Info()
	return info != nil && info.ProtocolVersion >= StatelessVersion
}

// wireHeadersKey carries the per-request HTTP headers of a 2026-07-28
// request to the HTTP transport.
type wireHeadersKey struct{}

func wireHeadersFrom(ctx context.Context) http.Header {
	h, _ := ctx.Value(wireHeadersKey{}).(http.Header)
	return h
}

// discover asks the server whether it speaks 2026-07-28. True when it does:
// the session is then set up for it (s.info, s.stateless).
func (s *session) discover(ctx context.Context) bool {
	if _, ok := s.t.(*httpTransport); !ok || s.skipDiscover {
		return false
	}
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, discoverTimeout)
	defer cancel()
	params := s.statelessParams(ctx, "server/discover", nil)
	m, err := s.call(s.statelessContext(ctx, "server/discover", params), "server/discover", params)
	if err != nil || m.Error != nil {
		if err == nil {
			err = m.Error
		}
		s.log.Debug("the server does not answer server/discover: initializing a session", "err", err)
		s.forgetProbe()
		// Remembered, unless the session is being given up anyway.
		s.probedSession = parent.Err() == nil
		return false
	}
	var res struct {
		SupportedVersions []string        `json:"supportedVersions"`
		Capabilities      json.RawMessage `json:"capabilities"`
		Instructions      string          `json:"instructions"`
		Meta              struct {
			ServerInfo json.RawMessage `json:"io.modelcontextprotocol/serverInfo"`
		} `json:"_meta"`
	}
	if err := json.Unmarshal(m.Result, &res); err != nil || !slices.Contains(res.SupportedVersions, StatelessVersion) {
		s.log.Debug("the server does not speak "+StatelessVersion+": initializing a session", "versions", res.SupportedVersions)
		s.forgetProbe()
		s.probedSession = true
		return false
	}
	caps := res.Capabilities
	if len(caps) == 0 || caps[0] != '{' {
		caps = json.RawMessage(`{}`)
	}
	s.stateless = true
	s.info = &Info{ProtocolVersion: StatelessVersion, Capabilities: caps, ServerInfo: res.Meta.ServerInfo, Instructions: res.Instructions}
	s.setListCapabilities(caps)
	return true
}

// forgetProbe drops what a refused server/discover may have left on the
// transport (a session id), so that initialize starts clean.
func (s *session) forgetProbe() {
	if t, ok := s.t.(*httpTransport); ok {
		t.mu.Lock()
		t.sessionID, t.version = nil, nil
		t.mu.Unlock()
	}
}

// statelessParams returns params with the per-request _meta keys of
// 2026-07-28 set: the protocol version, the client's capabilities (from
// ctx's RequestMeta), the data plane's identity, and the log level (debug:
// the gateway filters log messages for each client, as for sessions).
func (s *session) statelessParams(ctx context.Context, method string, params json.RawMessage) json.RawMessage {
	var p map[string]json.RawMessage
	if len(params) > 0 && string(params) != "null" {
		if err := json.Unmarshal(params, &p); err != nil {
			return params // not an object: the upstream says what it thinks of it
		}
	}
	if p == nil {
		p = make(map[string]json.RawMessage, 1)
	}
	var meta map[string]json.RawMessage
	if raw, ok := p["_meta"]; ok {
		_ = json.Unmarshal(raw, &meta)
	}
	if meta == nil {
		meta = make(map[string]json.RawMessage, 4)
	}
	caps := gatewayCapabilities
	if m := requestMetaFrom(ctx); m != nil && len(m.Capabilities) > 0 && m.Capabilities[0] == '{' {
		caps = m.Capabilities
	}
	meta[metaProtocolVersion] = json.RawMessage(`"` + StatelessVersion + `"`)
	meta[metaClientCaps] = caps
	meta[metaClientInfo] = clientInfo()
	if s.info != nil && method != "server/discover" && hasCapability(s.info.Capabilities, "logging") {
		if _, ok := meta[metaLogLevel]; !ok {
			meta[metaLogLevel] = json.RawMessage(`"debug"`)
		}
	}
	mb, err := json.Marshal(meta)
	if err != nil {
		return params
	}
	p["_meta"] = mb
	out, err := json.Marshal(p)
	if err != nil {
		return params
	}
	return out
}

// statelessContext returns ctx carrying the HTTP headers of a 2026-07-28
// request of method with params.
func (s *session) statelessContext(ctx context.Context, method string, params json.RawMessage) context.Context {
	if _, ok := s.t.(*httpTransport); !ok {
		return ctx
	}
	h := http.Header{"Mcp-Method": {method}}
	if method == "server/discover" {
		// Later requests carry the version the transport negotiated.
		h["Mcp-Protocol-Version"] = []string{StatelessVersion}
	}
	field := ""
	switch method {
	case "tools/call", "prompts/get":
		field = "name"
	case "resources/read":
		field = "uri"
	}
	if field != "" {
		var p map[string]json.RawMessage
		if json.Unmarshal(params, &p) == nil {
			var name string
			if json.Unmarshal(p[field], &name) == nil && name != "" {
				h["Mcp-Name"] = []string{EncodeHeaderValue(name)}
			}
		}
	}
	if m := requestMetaFrom(ctx); m != nil && method == "tools/call" {
		for k, v := range m.ParamHeaders {
			h.Set("Mcp-Param-"+k, v)
		}
	}
	return context.WithValue(ctx, wireHeadersKey{}, h)
}

// EncodeHeaderValue encodes the value of an Mcp-Name or Mcp-Param header
// as 2026-07-28 requires: as it is when it is plain visible ASCII without
// surrounding blanks, else as =?base64?...?=.
func EncodeHeaderValue(v string) string {
	plain := len(v) == 0 || (v[0] != ' ' && v[0] != '\t' && v[len(v)-1] != ' ' && v[len(v)-1] != '\t')
	for i := 0; plain && i < len(v); i++ {
		if c := v[i]; c < 0x20 || c > 0x7e {
			plain = false
		}
	}
	if plain {
		return v
	}
	return "=?base64?" + base64.StdEncoding.EncodeToString([]byte(v)) + "?="
}

func clientInfo() json.RawMessage {
	b := append([]byte(`{"name":"metamcp","version":`), rpc.AppendString(nil, version.Version)...)
	return append(b, '}')
}

// hasCapability reports whether a capabilities object has name, non-null.
func hasCapability(caps json.RawMessage, name string) bool {
	var m map[string]json.RawMessage
	if json.Unmarshal(caps, &m) != nil {
		return false
	}
	v, ok := m[name]
	return ok && string(v) != "null"
}

// A 2026-07-28 server sends what is not an answer to a request (list
// changes, resource updates) only on a subscriptions/listen stream: a POST
// whose event-stream response lasts as long as the subscription, and names
// what the client wants. The session keeps one open when the server can
// announce anything: the list changes the server's capabilities announce,
// and the resources the gateway subscribed to (resources/subscribe and
// unsubscribe, which that revision removed, change the set and replace the
// stream). Replacing opens the new stream first, and ends the old one once
// the server acknowledged the new one.

// listenAckTimeout bounds the wait for a new stream's acknowledgement.
const listenAckTimeout = 5 * time.Second

// statelessListen is the listen stream state of a 2026-07-28 session.
type statelessListen struct {
	mu     sync.Mutex
	uris   map[string]bool
	cancel context.CancelFunc // ends the current stream
}

// listenFlags returns the list changes a server's capabilities announce,
// as subscriptions/listen names them.
func listenFlags(caps json.RawMessage) map[string]bool {
	var c map[string]struct {
		ListChanged bool `json:"listChanged"`
	}
	_ = json.Unmarshal(caps, &c)
	out := map[string]bool{}
	for kind, flag := range map[string]string{"tools": "toolsListChanged", "prompts": "promptsListChanged", "resources": "resourcesListChanged"} {
		if c[kind].ListChanged {
			out[flag] = true
		}
	}
	return out
}

// startListen opens the session's listen stream when there is something
// to hear.
func (s *session) startListen(ctx context.Context) {
	if len(listenFlags(s.info.Capabilities)) == 0 {
		return
	}
	if err := s.relisten(ctx); err != nil {
		s.log.Debug("could not open a subscriptions/listen stream", "err", err)
	}
}

// statelessSubscription serves resources/subscribe and unsubscribe for a
// 2026-07-28 upstream: the URI joins or leaves the listen stream's set.
func (s *session) statelessSubscription(ctx context.Context, method string, params json.RawMessage) (json.RawMessage, error) {
	var p struct {
		URI string `json:"uri"`
	}
	if err := json.Unmarshal(params, &p); err != nil || p.URI == "" {
		return nil, &rpc.Error{Code: rpc.CodeInvalidParams, Message: method + " needs params.uri"}
	}
	l := &s.listen
	l.mu.Lock()
	if l.uris == nil {
		l.uris = map[string]bool{}
	}
	had := l.uris[p.URI]
	if method == "resources/subscribe" {
		l.uris[p.URI] = true
	} else {
		delete(l.uris, p.URI)
	}
	l.mu.Unlock()
	if had == (method == "resources/subscribe") {
		return json.RawMessage(`{}`), nil
	}
	if err := s.relisten(ctx); err != nil {
		return nil, s.wrap(err)
	}
	return json.RawMessage(`{}`), nil
}

// relisten opens a listen stream for the current set, waits for the
// server's acknowledgement, and ends the previous stream.
func (s *session) relisten(ctx context.Context) error {
	t, ok := s.t.(*httpTransport)
	if !ok {
		return nil
	}
	l := &s.listen
	l.mu.Lock()
	notes := map[string]any{}
	for flag := range listenFlags(s.info.Capabilities) {
		notes[flag] = true
	}
	if len(l.uris) > 0 {
		uris := make([]string, 0, len(l.uris))
		for u := range l.uris {
			uris = append(uris, u)
		}
		slices.Sort(uris)
		notes["resourceSubscriptions"] = uris
	}
	l.mu.Unlock()
	nb, _ := json.Marshal(map[string]any{"notifications": notes})
	params := s.statelessParams(ctx, "subscriptions/listen", nb)
	id := s.nextID.Add(1)
	body := appendRequest(nil, id, "subscriptions/listen", params)
	sctx, cancel := context.WithCancel(s.life)
	sctx = s.statelessContext(sctx, "subscriptions/listen", params)
	acked := make(chan struct{})
	started := make(chan error, 1)
	if !s.goBackground(func() { t.listenStream(sctx, body, acked, started) }) {
		cancel()
		return errClosed
	}
	var err error
	select {
	case err = <-started:
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err == nil {
		select {
		case <-acked:
		case <-time.After(listenAckTimeout):
			// Not acknowledged (yet): the stream stays, as the server may
			// just be slow to say so.
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	if err != nil {
		cancel()
		return err
	}
	l.mu.Lock()
	old := l.cancel
	l.cancel = cancel
	l.mu.Unlock()
	if old != nil {
		old()
	}
	return nil
}

// listenStream posts a subscriptions/listen request and reads its stream
// until ctx ends or the stream does, handing what the server sends to the
// session. started gets the outcome of the POST; acked is closed when the
// server acknowledges the subscription.
func (t *httpTransport) listenStream(ctx context.Context, body []byte, acked chan struct{}, started chan<- error) {
	req, err := t.newRequest(ctx, http.MethodPost, body)
	if err != nil {
		started <- err
		return
	}
	req.Header["Accept"] = hdrAcceptBoth
	resp, err := t.client.Do(req)
	if err != nil {
		started <- err
		return
	}
	defer drain(resp)
	if resp.StatusCode != http.StatusOK {
		started <- statusErr(resp.Status, resp.Header.Get("Content-Type"), resp.Body)
		return
	}
	if mediaType(resp.Header.Get("Content-Type")) != "text/event-stream" {
		// An immediate answer: most likely an error.
		msg, rerr := t.readResponse(ctx, -1, resp.Header.Get("Content-Type"), resp.Body, resp.ContentLength)
		if rerr == nil && msg.Error != nil {
			rerr = msg.Error
		}
		if rerr == nil {
			rerr = errors.New("the server ended subscriptions/listen at once")
		}
		started <- rerr
		return
	}
	started <- nil
	t.listening.Store(true)
	once := sync.Once{}
	_ = readEvents(resp.Body, t.maxResponse, func(ev *sseEvent) bool {
		if ev.event != "" && ev.event != "message" {
			return true
		}
		msg, err := rpc.Parse(ev.data)
		if err != nil || !msg.IsNotification() {
			return true
		}
		if msg.Method == "notifications/subscriptions/acknowledged" {
			once.Do(func() { close(acked) })
			return true
		}
		if ctx.Err() != nil {
			// Replaced (or closed): what the server still sends here
			// before it notices belongs to a set no longer wanted.
			return false
		}
		t.onMsg(nil, msg)
		return true
	})
	if ctx.Err() == nil {
		// The server ended the stream: what it sends until the next one
		// opens is lost.
		t.listening.Store(false)
		if t.gap != nil {
			t.gap()
		}
	}
}
