package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/dataplane/rpc"
	"github.com/metamcp/metamcp/dataplane/session"
	"github.com/metamcp/metamcp/dataplane/upstream"
	"github.com/metamcp/metamcp/pkg/identity"
)

// Protocol revisions.
const (
	version20260728 = "2026-07-28"
	version20251125 = "2025-11-25"
	version20241105 = "2024-11-05"
)

// supportedVersions are the revisions the gateway speaks, newest first.
var supportedVersions = []string{version20260728, version20251125, "2025-06-18", "2025-03-26", version20241105}

// streamableVersions are the revisions of /mcp (2024-11-05 is /sse only):
// server/discover lists them, and so does the error for an unsupported one.
var streamableVersions = supportedVersions[:len(supportedVersions)-1]

// statelessVersions are the revisions a request without a session may use.
var statelessVersions = []string{version20260728}

// sessionVersions are the session-based (initialize) revisions.
var sessionVersions = []string{version20251125, "2025-06-18", "2025-03-26", version20241105}

// Request headers the gateway reads, in canonical form (see headerValue).
const (
	headerSessionID       = "Mcp-Session-Id"
	headerProtocolVersion = "Mcp-Protocol-Version"
	headerMethod          = "Mcp-Method"
	headerName            = "Mcp-Name"
	headerOrigin          = "Origin"
	headerAuthorization   = "Authorization"
	headerAPIKey          = "X-Api-Key"
	headerTraceparent     = "Traceparent"
	headerTracestate      = "Tracestate"
	headerBaggage         = "Baggage"
)

// headerValue is h.Get(key) for a key already in canonical form, as the
// header* constants are (TestHeaderKeysCanonical). Get canonicalises its
// key on every call: about 2% of the data plane's user-space instructions
// per proxied call, for the ten lookups a call makes. Both the lean server
// and net/http store keys in canonical form.
func headerValue(h http.Header, key string) string {
	if v := h[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

const (
	metaProtocolVersion = "io.modelcontextprotocol/protocolVersion"
	metaClientCaps      = "io.modelcontextprotocol/clientCapabilities"
	metaClientInfo      = "io.modelcontextprotocol/clientInfo"
	metaServerInfo      = "io.modelcontextprotocol/serverInfo"
)

// negotiate picks the session-based revision for a client's initialize, as
// go-sdk does: the client's if supported, else the latest session-based one.
func negotiate(client string) string {
	if slices.Contains(sessionVersions, client) {
		return client
	}
	return version20251125
}

// serveMCP serves /metamcp/{endpoint}/mcp.
func (g *Gateway) serveMCP(w http.ResponseWriter, r *http.Request) {
	t, ok := g.lookupEndpoint(w, r, false)
	if !ok {
		return
	}
	who, ok := g.authenticate(w, r, t)
	if !ok {
		return
	}
	switch r.Method {
	case http.MethodPost:
		g.postMCP(w, r, t, who)
	case http.MethodDelete:
		g.deleteMCP(w, r, t, who.Name)
	case http.MethodGet:
		g.getMCP(w, r, t, who.Name)
	default:
		w.Header().Set("Allow", "GET, POST, DELETE")
		writeHTTPError(w, http.StatusMethodNotAllowed, codeInvalidRequest, "method "+r.Method+" not allowed: use POST")
	}
}

// readBody reads a request body within the size limit, answering 413 or 400 itself.
func (g *Gateway) readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	if r.ContentLength > g.opts.MaxBodyBytes {
		writeHTTPError(w, http.StatusRequestEntityTooLarge, codeInvalidRequest, "request body too large: at most "+itoa(g.opts.MaxBodyBytes)+" bytes")
		return nil, false
	}
	var body []byte
	var err error
	if r.ContentLength >= 0 {
		// The length is known and within the limit: one allocation of
		// exactly that size, rather than ReadAll's growing buffer.
		body = make([]byte, r.ContentLength)
		_, err = io.ReadFull(r.Body, body)
	} else {
		body, err = io.ReadAll(http.MaxBytesReader(w, r.Body, g.opts.MaxBodyBytes))
	}
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeHTTPError(w, http.StatusRequestEntityTooLarge, codeInvalidRequest, "request body too large: at most "+itoa(g.opts.MaxBodyBytes)+" bytes")
			return nil, false
		}
		writeHTTPError(w, http.StatusBadRequest, codeInvalidRequest, "could not read the request body: "+err.Error())
		return nil, false
	}
	return body, true
}

// readMessage reads and parses the one JSON-RPC message of a POST.
func (g *Gateway) readMessage(w http.ResponseWriter, r *http.Request) (*rpc.Message, int, bool) {
	body, ok := g.readBody(w, r)
	if !ok {
		return nil, 0, false
	}
	msg, perr := parseMessage(body)
	if perr != nil {
		writeHTTPErrorID(w, http.StatusBadRequest, nil, perr)
		return nil, 0, false
	}
	return msg, len(body), true
}

// statelessRequest reports whether a POST without a session follows
// 2026-07-28: its MCP-Protocol-Version header or the protocolVersion of its
// params' _meta names that revision or a later one.
func statelessRequest(r *http.Request, msg *rpc.Message) bool {
	if standardHeadersRequired(r) {
		return true
	}
	if len(msg.Params) == 0 {
		return false
	}
	if meta, ok := rpc.RawField(msg.Params, "_meta"); ok {
		v, _ := rpc.StringField(meta, metaProtocolVersion)
		return v >= version20260728
	}
	return false
}

// removedMethods are the session-based methods 2026-07-28 dropped, with
// what to do instead: a stateless request for one gets 404 and -32601, as
// that revision requires.
var removedMethods = map[string]string{
	"initialize":            "a request with protocol version 2026-07-28 needs no session: send server/discover to learn the capabilities",
	"ping":                  "ping is not part of protocol version 2026-07-28",
	"logging/setLevel":      "with protocol version 2026-07-28 a request sets its log level in _meta \"io.modelcontextprotocol/logLevel\"",
	"resources/subscribe":   "resources/subscribe needs a session: with protocol version 2026-07-28 use subscriptions/listen with notifications.resourceSubscriptions",
	"resources/unsubscribe": "resources/unsubscribe needs a session: with protocol version 2026-07-28 a subscription ends with its subscriptions/listen request",
}

// checkRequestMeta checks what 2026-07-28 requires of a request (SEP-2575):
// the MCP-Protocol-Version header, and in params._meta the same
// protocolVersion, a supported one, and the client's capabilities as an
// object (its clientInfo, when given, an object too). It returns the
// version and the capabilities, or the HTTP status and error to refuse the
// request with.
func checkRequestMeta(r *http.Request, msg *rpc.Message, params *objectIndex) (version string, caps json.RawMessage, status int, rerr *rpc.Error) {
	header := headerValue(r.Header, headerProtocolVersion)
	if header == "" {
		return "", nil, http.StatusBadRequest, &rpc.Error{Code: codeHeaderMismatch, Message: "missing the MCP-Protocol-Version header, which protocol version 2026-07-28 requires on every request"}
	}
	meta, ok := params.raw(msg.Params, "_meta")
	if !ok || len(meta) == 0 || meta[0] != '{' {
		return "", nil, http.StatusBadRequest, &rpc.Error{Code: codeInvalidParams, Message: "missing params._meta: protocol version 2026-07-28 needs " + quote(metaProtocolVersion) + " and " + quote(metaClientCaps) + " in it on every request"}
	}
	raw, _ := rpc.RawField(meta, metaProtocolVersion)
	version = header
	// The usual case, the header's value as a plain JSON string, is
	// compared where it lies, without decoding it.
	if len(raw) != len(header)+2 || raw[0] != '"' || string(raw[1:len(raw)-1]) != header {
		if version, ok = rpc.Unquote(raw); !ok || version == "" {
			return "", nil, http.StatusBadRequest, &rpc.Error{Code: codeInvalidParams, Message: "missing or invalid _meta field " + quote(metaProtocolVersion)}
		}
	}
	if version != header {
		return "", nil, http.StatusBadRequest, &rpc.Error{Code: codeHeaderMismatch, Message: "header mismatch: MCP-Protocol-Version " + quote(header) + " does not match the _meta field " + quote(metaProtocolVersion) + " " + quote(version)}
	}
	if !slices.Contains(statelessVersions, version) {
		data, _ := json.Marshal(map[string]any{"supported": streamableVersions, "requested": version})
		return "", nil, http.StatusBadRequest, &rpc.Error{Code: codeUnsupportedProtocolVersion, Message: "unsupported protocol version " + quote(version), Data: data}
	}
	if caps, ok = rpc.RawField(meta, metaClientCaps); !ok || len(caps) == 0 || caps[0] != '{' {
		return "", nil, http.StatusBadRequest, &rpc.Error{Code: codeInvalidParams, Message: "missing or invalid _meta field " + quote(metaClientCaps) + ": send the client's capabilities as an object ({} when it has none)"}
	}
	if info, ok := rpc.RawField(meta, metaClientInfo); ok && (len(info) == 0 || info[0] != '{') {
		return "", nil, http.StatusBadRequest, &rpc.Error{Code: codeInvalidParams, Message: "invalid _meta field " + quote(metaClientInfo) + ": an object with name and version"}
	}
	return version, caps, 0, nil
}

func (g *Gateway) postMCP(w http.ResponseWriter, r *http.Request, t target, who *identity.Principal) {
	principal := who.Name
	msg, size, ok := g.readMessage(w, r)
	if !ok {
		return
	}
	// One allocation for the call, its relay and its response stream.
	pc := g.newPostCall(r, w, nil, call{t: t, principal: principal, who: who, clientIP: g.clientIP(r), reqBytes: size, trace: headerValue(r.Header, headerTraceparent)}, msg, nil)
	c := &pc.call
	c.obs = observe(w, r, c, msg)
	if msg.Method == "initialize" && !standardHeadersRequired(r) {
		g.initialize(w, r, c, msg)
		return
	}
	sid := headerValue(r.Header, headerSessionID)
	if sid == "" {
		if statelessRequest(r, msg) {
			g.stateless(w, r, pc, msg)
			return
		}
		writeHTTPErrorID(w, http.StatusBadRequest, msg.ID, &rpc.Error{Code: codeInvalidRequest, Message: "missing Mcp-Session-Id header: send initialize first (or use protocol version 2026-07-28, which needs no session)"})
		return
	}
	info, ok := g.sessions.Acquire(sid)
	if !ok {
		writeHTTPErrorID(w, http.StatusNotFound, msg.ID, &rpc.Error{Code: codeInvalidRequest, Message: "session not found: it ended or expired; initialize a new session"})
		return
	}
	defer g.release(sid)
	if info.Endpoint != t.name || info.Principal != principal {
		g.log.Warn("refused a request for another caller's session", "endpoint", t.name, "principal", principal)
		g.recordRefusal(r, t, c.who, http.StatusForbidden, metamcpv1.CallOutcome_CALL_OUTCOME_FORBIDDEN, "the session belongs to another caller or endpoint")
		writeHTTPErrorID(w, http.StatusForbidden, msg.ID, &rpc.Error{Code: codeInvalidRequest, Message: "this session belongs to another caller or endpoint: initialize your own session"})
		return
	}
	if !msg.IsRequest() {
		// Responses to server-to-client requests, cancellations, roots
		// changes; initialized and the rest are accepted.
		g.clientNotification(r.Context(), t, sid, msg)
		w.WriteHeader(http.StatusAccepted)
		return
	}
	c.clientID = sid
	c.version = info.ProtocolVersion
	c.caps = info.ClientCapabilities
	c.clientInfo = info.ClientInfo
	c.session = info.ID
	pc.relay.caps = info.ClientCapabilities
	g.addInflight(&pc.relay)
	result, rerr := g.dispatch(pc.context(traced(r, c)), c, msg)
	g.removeInflight(&pc.relay)
	pc.relay.finish()
	if pc.relay.wasCancelled() {
		// No response to a cancelled request: the POST ends as an event
		// stream without one.
		if !pc.out.Finish(nil) {
			w.Header()["Content-Type"] = []string{"text/event-stream"}
			w.WriteHeader(http.StatusOK)
		}
		return
	}
	g.finishResponse(w, &pc.out, msg.ID, result, rerr, false)
}

// stateless serves one 2026-07-28 request, with no session. What upstreams
// send about the call (progress, log messages) goes on its response, as for
// session-based clients; their requests are bridged (input_required).
func (g *Gateway) stateless(w http.ResponseWriter, r *http.Request, pc *postCall, msg *rpc.Message) {
	c := &pc.call
	if !msg.IsRequest() {
		// Notifications and responses have nothing to act on without a
		// session; a 2026-07-28 client cancels by closing its request.
		w.WriteHeader(http.StatusAccepted)
		return
	}
	version, caps, status, rerr := checkRequestMeta(r, msg, &c.params)
	if rerr != nil {
		writeHTTPErrorID(w, status, msg.ID, rerr)
		return
	}
	if why, ok := removedMethods[msg.Method]; ok {
		writeHTTPErrorID(w, http.StatusNotFound, msg.ID, &rpc.Error{Code: codeMethodNotFound, Message: "method " + quote(msg.Method) + " not found: " + why})
		return
	}
	if rerr := checkStandardHeaders(r, msg, &c.params); rerr != nil {
		writeHTTPErrorID(w, http.StatusBadRequest, msg.ID, rerr)
		return
	}
	c.version = version
	c.stateless = true
	c.caps = caps
	if g.opts.Calls != nil {
		if meta, ok := c.params.raw(msg.Params, "_meta"); ok {
			c.clientInfo, _ = rpc.RawField(meta, metaClientInfo)
		}
	}
	pc.relay.caps = c.caps
	if msg.Method == "tools/call" {
		if rerr := g.checkParamHeaders(r.Context(), c, r, msg.Params); rerr != nil {
			writeHTTPErrorID(w, http.StatusBadRequest, msg.ID, rerr)
			return
		}
	}
	if msg.Method == "subscriptions/listen" {
		g.listen(w, r, c, msg) // a long-lived event stream (listen.go)
		return
	}
	result, rerr := g.dispatch(pc.context(traced(r, c)), c, msg)
	pc.relay.finish()
	g.finishResponse(w, &pc.out, msg.ID, result, rerr, true)
}

// finishResponse writes a call's answer: as the last event of its response
// stream when related messages turned the response into one, else as
// application/json.
func (g *Gateway) finishResponse(w http.ResponseWriter, out *sseResponse, id, result json.RawMessage, rerr *rpc.Error, stateless bool) {
	b := g.responseBytes(id, result, rerr, stateless)
	if out.Finish(b) {
		return
	}
	w.Header()["Content-Type"] = contentTypeJSON
	writeStatus(w, rerr, stateless)
	_, _ = w.Write(b)
}

// writeResponse writes a JSON-RPC response as application/json.
func (g *Gateway) writeResponse(w http.ResponseWriter, id, result json.RawMessage, rerr *rpc.Error, stateless bool) {
	b := g.responseBytes(id, result, rerr, stateless)
	h := w.Header()
	h["Content-Type"] = contentTypeJSON
	writeStatus(w, rerr, stateless)
	_, _ = w.Write(b)
}

// writeStatus sets the HTTP status that 2026-07-28 gives some errors of a
// stateless request (SEP-2575): 404 for an unknown method, 400 for invalid
// params, an unsupported version, a missing client capability or a header
// mismatch. Other errors, and every error of a session, go with 200.
func writeStatus(w http.ResponseWriter, rerr *rpc.Error, stateless bool) {
	if status := limitStatus(w, rerr); status != 0 {
		// A rate limiter's refusal: 429 (or 503) for every client.
		w.WriteHeader(status)
		return
	}
	if !stateless || rerr == nil {
		return
	}
	switch rerr.Code {
	case codeMethodNotFound:
		w.WriteHeader(http.StatusNotFound)
	case codeInvalidParams, codeUnsupportedProtocolVersion, codeMissingClientCapability, codeHeaderMismatch:
		w.WriteHeader(http.StatusBadRequest)
	}
}

// responseBytes encodes a JSON-RPC response.
func (g *Gateway) responseBytes(id, result json.RawMessage, rerr *rpc.Error, stateless bool) []byte {
	if rerr != nil {
		return appendError(make([]byte, 0, 128+len(rerr.Message)+len(rerr.Data)), id, rerr)
	}
	if !stateless {
		return appendResult(make([]byte, 0, len(result)+len(id)+32), id, result)
	}
	b := appendResultHead(make([]byte, 0, len(result)+len(id)+len(g.infoMeta)+len(resultTypeComplete)+48), id)
	start := len(b)
	b = g.appendWithServerInfo(b, result)
	if len(result) > 0 && result[0] == '{' {
		if _, ok := rpc.RawField(result, "resultType"); !ok {
			// 2026-07-28 requires resultType on every result; what a
			// session-based upstream answers has none. One that asks for
			// input again (go-sdk fulfils one round with a session-based
			// client itself, and returns the next one so) is an
			// input_required one. The object holds _meta by now, so a
			// comma follows.
			rt := resultTypeComplete
			if inputRequired(result) {
				rt = resultTypeInputRequired
			}
			b = slices.Insert(b, start+1, rt...)
		}
	}
	return append(b, '}')
}

// resultTypeComplete is the member a complete 2026-07-28 result starts with.
var resultTypeComplete = []byte(`"resultType":"complete",`)

// resultTypeInputRequired is the member an input_required result without
// one gets.
var resultTypeInputRequired = []byte(`"resultType":"input_required",`)

var contentTypeJSON = []string{"application/json"}

// withServerInfo sets the per-response serverInfo key of 2026-07-28 in the
// result's _meta.
func (g *Gateway) withServerInfo(result json.RawMessage) json.RawMessage {
	return g.appendWithServerInfo(make([]byte, 0, len(result)+len(g.infoMeta)+16), result)
}

// appendWithServerInfo appends result to dst with the per-response
// serverInfo key of 2026-07-28 set in its _meta.
func (g *Gateway) appendWithServerInfo(dst []byte, result json.RawMessage) []byte {
	if len(result) == 0 || result[0] != '{' {
		return append(dst, result...)
	}
	if meta, ok := rpc.RawField(result, "_meta"); ok && len(meta) > 0 && meta[0] == '{' {
		m := rpc.ReplaceField(make([]byte, 0, len(meta)+len(g.info)+48), meta, metaServerInfo, g.info)
		return rpc.ReplaceField(dst, result, "_meta", m)
	}
	return rpc.ReplaceField(dst, result, "_meta", g.infoMeta)
}

// serverInfo is the gateway's Implementation object.
func serverInfo(version string) []byte {
	b := make([]byte, 0, 64)
	b = append(b, `{"name":"metamcp","version":`...)
	b = rpc.AppendString(b, version)
	return append(b, '}')
}

// serverInfoMeta is a _meta object that holds only info, under the
// serverInfo key of 2026-07-28.
func serverInfoMeta(info []byte) []byte {
	m := make([]byte, 0, len(info)+48)
	m = append(m, `{"`+metaServerInfo+`":`...)
	m = append(m, info...)
	return append(m, '}')
}

// initialize starts a downstream session.
func (g *Gateway) initialize(w http.ResponseWriter, r *http.Request, c *call, msg *rpc.Message) {
	if !msg.IsRequest() {
		writeHTTPErrorID(w, http.StatusBadRequest, nil, &rpc.Error{Code: codeInvalidRequest, Message: "initialize must be a request with an id"})
		return
	}
	var p struct {
		ProtocolVersion string          `json:"protocolVersion"`
		Capabilities    json.RawMessage `json:"capabilities"`
		ClientInfo      json.RawMessage `json:"clientInfo"`
	}
	if len(msg.Params) > 0 {
		if err := json.Unmarshal(msg.Params, &p); err != nil {
			writeHTTPErrorID(w, http.StatusBadRequest, msg.ID, &rpc.Error{Code: codeInvalidParams, Message: "invalid initialize params: " + err.Error()})
			return
		}
	}
	id, err := session.NewID()
	if err != nil {
		g.log.Error("could not create a session", "err", err)
		writeHTTPErrorID(w, http.StatusInternalServerError, msg.ID, &rpc.Error{Code: codeInternalError, Message: "could not create a session; retry"})
		return
	}
	info := &session.Info{
		ID:                 id,
		Endpoint:           c.t.name,
		Principal:          c.principal,
		ProtocolVersion:    negotiate(p.ProtocolVersion),
		ClientCapabilities: p.Capabilities,
		ClientInfo:         p.ClientInfo,
	}
	// The session id is sealed once the per_client upstream sessions exist
	// (initializeResult opens them, keyed by the ID), so that it carries
	// theirs; until then no request can name the session, and the idle
	// sweep does not see it.
	c.clientID = id
	c.version = info.ProtocolVersion
	c.clientInfo, c.session = p.ClientInfo, id
	start := time.Now()
	result := g.initializeResult(r.Context(), c, info.ProtocolVersion)
	info.Upstreams = g.upstreamRefs(id)
	sid, err := g.sessions.Create(info)
	if err != nil {
		if g.pool != nil {
			g.pool.CloseClient(id)
		}
		g.log.Error("could not create a session", "err", err)
		writeHTTPErrorID(w, http.StatusInternalServerError, msg.ID, &rpc.Error{Code: codeInternalError, Message: "could not create a session; retry"})
		return
	}
	w.Header().Set(headerSessionID, sid)
	g.record(c, "initialize", "", "", start, result, nil)
	g.writeResponse(w, msg.ID, result, nil, false)
}

// getMCP serves the standalone stream of a session (GET): what the
// upstreams send outside any call of the client (list_changed, log messages
// and requests of per_client upstreams, resources/updated), from whichever
// replica, through the session's stream topic.
//
// A session has one standalone stream at a time: a newer GET replaces the
// older one, on this replica or another (the older stream ends). A client
// that lost its connection without the server noticing can thus always
// reconnect, where answering 409 would lock it out until the old
// connection times out. Events carry ids so a reconnecting client sees
// progress, but a stream does not replay what it missed.
func (g *Gateway) getMCP(w http.ResponseWriter, r *http.Request, t target, principal string) {
	sid := headerValue(r.Header, headerSessionID)
	if sid == "" {
		if v := headerValue(r.Header, headerProtocolVersion); v >= version20260728 {
			w.Header().Set("Allow", "POST")
			writeHTTPError(w, http.StatusMethodNotAllowed, codeInvalidRequest, "protocol version "+v+" has no standalone stream (GET): send requests with POST")
			return
		}
		writeHTTPError(w, http.StatusBadRequest, codeInvalidRequest, "GET needs an Mcp-Session-Id header: initialize a session first (POST)")
		return
	}
	if !acceptsEventStream(r) {
		writeHTTPError(w, http.StatusNotAcceptable, codeInvalidRequest, "GET opens an event stream: send Accept: text/event-stream")
		return
	}
	info, ok := g.sessions.Acquire(sid)
	if !ok {
		writeHTTPError(w, http.StatusNotFound, codeInvalidRequest, "session not found: it ended or expired; initialize a new session")
		return
	}
	// An open stream is a live session, whatever the idle TTL.
	defer g.release(sid)
	if info.Endpoint != t.name || info.Principal != principal {
		g.log.Warn("refused a stream for another caller's session", "endpoint", t.name, "principal", principal)
		writeHTTPError(w, http.StatusForbidden, codeInvalidRequest, "this session belongs to another caller or endpoint: initialize your own session")
		return
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	g.mu.Lock()
	if g.ctx.Err() != nil {
		g.mu.Unlock()
		writeHTTPError(w, http.StatusServiceUnavailable, codeServerError, "the data plane is shutting down; retry")
		return
	}
	g.wg.Add(1)
	g.mu.Unlock()
	defer g.wg.Done()
	stop := context.AfterFunc(g.ctx, cancel)
	defer stop()
	bus, err := g.bus.Subscribe(ctx, streamTopic(sid))
	if err != nil {
		g.log.Warn("could not open a session stream", "err", err)
		writeHTTPError(w, http.StatusServiceUnavailable, codeServerError, "could not open the stream: the session bus is unavailable; retry")
		return
	}
	token := newToken()
	remove := g.addLocalStream(sid, t.name, cancel)
	defer remove()
	if _, err := g.bus.Publish(ctx, streamTopic(sid), []byte(ctlTakeover+token)); err != nil {
		g.log.Debug("could not announce a new session stream", "err", err)
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache, no-transform")
	w.WriteHeader(http.StatusOK)
	if http.NewResponseController(w).Flush() != nil {
		return
	}
	g.pumpStream(ctx, &streamWriter{w: w, ids: true}, bus, nil, token)
}

// acceptsEventStream reports whether the request accepts text/event-stream
// (or anything).
func acceptsEventStream(r *http.Request) bool {
	for _, v := range r.Header.Values("Accept") {
		for part := range strings.SplitSeq(v, ",") {
			mt, _, _ := strings.Cut(strings.TrimSpace(part), ";")
			switch strings.ToLower(strings.TrimSpace(mt)) {
			case "text/event-stream", "text/*", "*/*":
				return true
			}
		}
	}
	return false
}

// deleteMCP ends a session.
func (g *Gateway) deleteMCP(w http.ResponseWriter, r *http.Request, t target, principal string) {
	sid := headerValue(r.Header, headerSessionID)
	if sid == "" {
		writeHTTPError(w, http.StatusBadRequest, codeInvalidRequest, "DELETE needs an Mcp-Session-Id header")
		return
	}
	info, ok := g.sessions.Open(sid)
	if !ok {
		writeHTTPError(w, http.StatusNotFound, codeInvalidRequest, "session not found: it ended or expired")
		return
	}
	if info.Endpoint != t.name || info.Principal != principal {
		writeHTTPError(w, http.StatusForbidden, codeInvalidRequest, "this session belongs to another caller or endpoint")
		return
	}
	g.endSession(sid)
	g.announceEnded(sid)
	w.WriteHeader(http.StatusNoContent)
}

// release ends a request of session sid. When the session ended while the
// request ran (DELETE, Close), the request may have opened per_client
// upstream sessions after they were closed: close them too.
func (g *Gateway) release(sid string) {
	if !g.sessions.Release(sid) && g.pool != nil {
		g.pool.CloseClient(sid)
	}
}

// endSession ends a downstream session, its streams and its per_client
// upstream sessions.
func (g *Gateway) endSession(sid string) {
	g.sessions.End(sid)
	g.endStreams(sid)
	g.forgetSessionState(sid)
	g.dropClientAsync(sid)
	if g.pool != nil {
		g.pool.CloseClient(sid)
	}
}

// checkStandardHeaders refuses a 2026-07-28 request whose Mcp-Method or
// Mcp-Name header says something else than its body. Load balancers and
// firewalls may route or filter on these headers while the gateway acts on
// the body: the two must agree. A request whose Mcp-Protocol-Version header
// says 2026-07-28 must send them too (Mcp-Name for tools/call, prompts/get
// and resources/read), as that revision requires: a filter on a header is
// not to be passed by leaving the header out. (A stateless request without
// that header is refused before, by checkRequestMeta.)
func checkStandardHeaders(r *http.Request, msg *rpc.Message, params *objectIndex) *rpc.Error {
	required := standardHeadersRequired(r)
	m := headerValue(r.Header, headerMethod)
	switch {
	case m == "" && required:
		return &rpc.Error{Code: codeHeaderMismatch, Message: "missing the Mcp-Method header, which protocol version 2026-07-28 requires on every request"}
	case m != "" && m != msg.Method:
		return &rpc.Error{Code: codeHeaderMismatch, Message: "header mismatch: Mcp-Method " + quote(m) + " does not match the body's method " + quote(msg.Method)}
	}
	field := "name"
	switch msg.Method {
	case "tools/call", "prompts/get":
	case "resources/read":
		field = "uri"
	default:
		return nil
	}
	n := headerValue(r.Header, headerName)
	if n == "" {
		if required {
			return &rpc.Error{Code: codeHeaderMismatch, Message: "missing the Mcp-Name header, which protocol version 2026-07-28 requires on " + msg.Method + " (the body's params." + field + ")"}
		}
		return nil
	}
	if v, _ := params.str(msg.Params, field); v != n {
		return &rpc.Error{Code: codeHeaderMismatch, Message: "header mismatch: Mcp-Name " + quote(n) + " does not match the body's " + field + " " + quote(v)}
	}
	return nil
}

// standardHeadersRequired reports whether r's Mcp-Protocol-Version header
// names a revision that requires the standard headers (2026-07-28 or later).
func standardHeadersRequired(r *http.Request) bool {
	return headerValue(r.Header, headerProtocolVersion) >= version20260728
}

// traced returns r's context, carrying the client's W3C trace-context
// headers (traceparent, tracestate, baggage) to the HTTP upstreams of the
// call when it sent any, so that a trace crosses the gateway; when the data
// plane traces the call, the traceparent is that of its upstream span.
func traced(r *http.Request, c *call) context.Context {
	h := r.Header
	tp, ts, bg := headerValue(h, headerTraceparent), headerValue(h, headerTracestate), headerValue(h, headerBaggage)
	if up := c.obs.UpstreamTraceparent(); up != "" {
		tp = up
	}
	if tp == "" && ts == "" && bg == "" {
		return r.Context()
	}
	return upstream.WithTrace(r.Context(), upstream.TraceHeaders{Traceparent: tp, Tracestate: ts, Baggage: bg})
}
