package upstream

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/dataplane/rpc"
	"github.com/metamcp/metamcp/pkg/version"
)

// ErrSessionClosed is the cause of a call on a session the pool has closed
// (idle TTL, Update, CloseClient) after handing it out: get a new session
// from the pool and try again.
var ErrSessionClosed = errors.New("session closed")

var errClosed = ErrSessionClosed

// transport carries JSON-RPC messages to one upstream. Inbound messages that
// are not responses to roundTrip go to the session's onMessage.
type transport interface {
	// roundTrip sends the request body (whose id is id) and returns the
	// response with that id.
	roundTrip(ctx context.Context, id int64, body []byte) (*rpc.Message, error)
	// send sends a notification or a response.
	send(ctx context.Context, body []byte) error
	// close ends the transport and releases everything it holds; it returns
	// when that is done. Safe to call more than once.
	close()
	// done is closed once the transport has ended and released its resources;
	// err then says why.
	done() <-chan struct{}
	err() error
	// processes is 1 for a stdio transport, 0 otherwise.
	processes() int
}

// session implements Session on top of a transport.
type session struct {
	server   string
	clientID string
	cfg      *metamcpv1.Server
	defCall  time.Duration
	defList  time.Duration
	// defListMaxAge is PoolOptions.DefaultListMaxAge.
	defListMaxAge time.Duration
	events        Events
	log           *slog.Logger

	t      transport
	info   *Info
	nextID atomic.Int64
	// stateless is set when the upstream speaks 2026-07-28 (stateless.go):
	// each request carries what a session would have, and there is none.
	stateless bool
	// listen is the subscriptions/listen stream of a stateless session.
	listen statelessListen
	// skipDiscover: the pool knows the server answers server/discover
	// without 2026-07-28; probedSession: this session's probe found so.
	skipDiscover, probedSession bool
	// related is set when the transport relates messages to calls on the
	// wire (Streamable HTTP: on the call's response stream). Otherwise the
	// session attributes them to the calls in flight (callers).
	related bool

	// renew, set by the pool, replaces the session after the upstream
	// refused it (errSessionExpired) with a fresh, initialized one.
	renew func(ctx context.Context) (*session, error)

	// life ends when the session closes; it bounds replies to server requests.
	life     context.Context
	stopLife context.CancelFunc
	wg       sync.WaitGroup // goroutines answering server requests

	mu       sync.Mutex
	inflight int
	lastUsed time.Time
	retiring bool
	closing  bool
	onIdle   func() // called (without mu) when a retiring session becomes idle
	// callers are the Callers of the calls in flight, one entry per call,
	// kept only when !related.
	callers []Caller
	// tokens maps the progress tokens the session put in calls' params to
	// their Caller and the client's own token (only when !related).
	tokens   map[string]progressOwner
	tokenSeq int64

	// lists are the session's kept lists (lists.go), under mu.
	lists lists
	// keptHits counts pages served from them.
	keptHits atomic.Int64
}

// progressOwner is the call behind a progress token the session assigned.
type progressOwner struct {
	caller Caller
	token  json.RawMessage // the client's token
}

func newSession(server, clientID string, cfg *metamcpv1.Server, opts *PoolOptions, log *slog.Logger) *session {
	life, stop := context.WithCancel(context.Background())
	return &session{
		server: server, clientID: clientID, cfg: cfg,
		defCall: opts.DefaultCallTimeout, defList: opts.DefaultListTimeout, defListMaxAge: opts.DefaultListMaxAge,
		events: opts.Events, log: log, life: life, stopLife: stop,
		lastUsed: time.Now(),
		related:  cfg.GetStreamableHttp() != nil,
	}
}

func (s *session) Server() string { return s.server }
func (s *session) Info() *Info    { return s.info }

func (s *session) wrap(err error) error {
	var rerr *rpc.Error
	if errors.As(err, &rerr) {
		return rerr
	}
	var uerr *Error
	if errors.As(err, &uerr) {
		return err
	}
	return &Error{Server: s.server, Err: err}
}

// acquire counts a call in flight; false when the session has ended.
func (s *session) acquire() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	select {
	case <-s.t.done():
		return false
	default:
	}
	s.inflight++
	return true
}

func (s *session) release() {
	s.mu.Lock()
	s.inflight--
	s.lastUsed = time.Now()
	idle := s.retiring && s.inflight == 0 && !s.closing
	if idle {
		s.closing = true
	}
	f := s.onIdle
	s.mu.Unlock()
	if idle && f != nil {
		f()
	}
}

// retire marks the session to be closed once no call is in flight. It
// reports whether the session is idle now (the caller closes it then).
func (s *session) retire(onIdle func()) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.retiring = true
	s.onIdle = onIdle
	if s.inflight == 0 && !s.closing {
		s.closing = true
		return true
	}
	return false
}

// idleSince reports when the session was last used, and false while a call
// is in flight or the session is retiring.
func (s *session) touch() {
	s.mu.Lock()
	s.lastUsed = time.Now()
	s.mu.Unlock()
}

func (s *session) idleSince() (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.inflight > 0 || s.retiring || s.closing {
		return time.Time{}, false
	}
	return s.lastUsed, true
}

func (s *session) dead() bool {
	select {
	case <-s.t.done():
		return true
	default:
		return false
	}
}

// close ends the session and waits until its transport released everything.
func (s *session) close() {
	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()
	s.end()
	s.t.close()
	s.wg.Wait()
}

// end stops the session's own goroutines from starting and cancels those
// running; after it, s.wg only goes down.
func (s *session) end() {
	s.mu.Lock()
	s.stopLife()
	s.mu.Unlock()
}

// goBackground runs f in a goroutine the session owns, unless it has
// ended; it reports whether f runs.
func (s *session) goBackground(f func()) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.life.Err() != nil {
		return false
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
	return true
}

func isList(method string) bool { return strings.HasSuffix(method, "/list") }

// Call implements Session. When the upstream refuses the session (it
// restarted, or expired the session), the request never ran there: the pool
// opens a fresh session and Call sends it once more on that one.
func (s *session) Call(ctx context.Context, method string, params json.RawMessage) (json.RawMessage, error) {
	res, err := s.callOnce(ctx, method, params)
	if err == nil || s.renew == nil || !errors.Is(err, errSessionExpired) || ctx.Err() != nil {
		return res, err
	}
	ns, rerr := s.renew(ctx)
	if rerr != nil {
		return nil, rerr
	}
	return ns.callOnce(ctx, method, params)
}

func (s *session) callOnce(ctx context.Context, method string, params json.RawMessage) (json.RawMessage, error) {
	if !s.acquire() {
		return nil, s.deadErr()
	}
	defer s.release()
	if s.stateless && (method == "resources/subscribe" || method == "resources/unsubscribe") {
		return s.statelessSubscription(ctx, method, params)
	}
	if !s.related {
		if c := CallerFrom(ctx); c != nil {
			s.addCaller(c)
			defer s.removeCaller(c)
			if bytes.Contains(params, progressTokenKey) {
				var tok string
				params, tok = s.mapProgress(c, params)
				if tok != "" {
					defer s.unmapProgress(tok)
				}
			}
		}
	}
	if s.stateless {
		params = s.statelessParams(ctx, method, params)
		ctx = s.statelessContext(ctx, method, params)
	}
	if _, ok := ctx.Deadline(); !ok {
		d := CallTimeout(s.cfg, s.defCall)
		if isList(method) {
			d = ListTimeout(s.cfg, s.defList)
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d)
		defer cancel()
	}
	m, err := s.call(ctx, method, params)
	if err != nil {
		return nil, err
	}
	if m.Error != nil {
		return nil, m.Error
	}
	return m.Result, nil
}

func (s *session) deadErr() error {
	if err := s.t.err(); errors.Is(err, errSessionExpired) {
		return &Error{Server: s.server, Err: err}
	} else if err != nil && !errors.Is(err, errClosed) {
		return &Error{Server: s.server, Err: fmt.Errorf("unavailable: %w", err)}
	}
	return &Error{Server: s.server, Err: errClosed}
}

// call sends one request and waits for its response.
func (s *session) call(ctx context.Context, method string, params json.RawMessage) (*rpc.Message, error) {
	id := s.nextID.Add(1)
	bp := getBuf()
	body := appendRequest((*bp)[:0], id, method, params)
	m, err := s.t.roundTrip(ctx, id, body)
	*bp = body
	putBuf(bp)
	if err == nil {
		return m, nil
	}
	if ctxErr := ctx.Err(); ctxErr != nil {
		s.cancelled(id, ctxErr)
		if errors.Is(ctxErr, context.DeadlineExceeded) {
			return nil, &Error{Server: s.server, Err: fmt.Errorf("%s timed out: %w", method, ctxErr)}
		}
		return nil, &Error{Server: s.server, Err: fmt.Errorf("%s: %w", method, ctxErr)}
	}
	return nil, s.wrap(err)
}

// cancelled tells the upstream that the request id is no longer wanted.
func (s *session) cancelled(id int64, cause error) {
	if s.dead() {
		return
	}
	if _, ok := s.t.(*httpTransport); ok && s.stateless {
		// At 2026-07-28 over HTTP, a request is cancelled by closing its
		// POST, which the caller's context did.
		return
	}
	reason := "request cancelled"
	if errors.Is(cause, context.DeadlineExceeded) {
		reason = "request timed out"
	}
	params := make([]byte, 0, 64)
	params = append(params, `{"requestId":`...)
	params = appendInt(params, id)
	params = append(params, `,"reason":`...)
	params = rpc.AppendString(params, reason)
	params = append(params, '}')
	s.goBackground(func() {
		ctx, cancel := context.WithTimeout(s.life, 2*time.Second)
		defer cancel()
		_ = s.t.send(ctx, rpc.AppendMessage(nil, &rpc.Message{Method: "notifications/cancelled", Params: params}))
	})
}

// Notify implements Session.
func (s *session) Notify(ctx context.Context, method string, params json.RawMessage) error {
	if !s.acquire() {
		return s.deadErr()
	}
	defer s.release()
	bp := getBuf()
	body := rpc.AppendMessage((*bp)[:0], &rpc.Message{Method: method, Params: params})
	err := s.t.send(ctx, body)
	*bp = body
	putBuf(bp)
	if err != nil {
		return s.wrap(err)
	}
	return nil
}

func (s *session) addCaller(c Caller) {
	s.mu.Lock()
	s.callers = append(s.callers, c)
	s.mu.Unlock()
}

func (s *session) removeCaller(c Caller) {
	s.mu.Lock()
	for i, x := range s.callers {
		if x == c {
			last := len(s.callers) - 1
			s.callers[i] = s.callers[last]
			s.callers[last] = nil
			s.callers = s.callers[:last]
			break
		}
	}
	s.mu.Unlock()
}

// soleCaller is the Caller to which a message that the wire relates to no
// call belongs: the one call with a Caller in flight, or the first of them
// when all share a CallerID (one downstream session). Calls parked waiting
// for their client (Parker) are left out while others are in flight: one
// that a client abandoned would otherwise make every other call's message
// nobody's until it times out. Nil when there is none or they belong to
// different downstream sessions.
func (s *session) soleCaller() Caller {
	s.mu.Lock()
	defer s.mu.Unlock()
	callers := s.callers
	if len(callers) > 1 {
		var active []Caller
		for _, c := range callers {
			if p, ok := c.(Parker); !ok || !p.Parked() {
				active = append(active, c)
			}
		}
		if len(active) > 0 {
			callers = active
		}
	}
	if len(callers) == 0 {
		return nil
	}
	first := callers[0]
	if len(callers) > 1 {
		id := first.CallerID()
		for _, c := range callers[1:] {
			if c.CallerID() != id {
				return nil
			}
		}
	}
	return first
}

var progressTokenKey = []byte(`"progressToken"`)

// mapProgress gives the call of c a progress token unique on this session
// in place of the client's, so that two clients' tokens never meet on a
// session that cannot relate notifications to calls: stdio and SSE
// upstreams send notifications/progress apart from the call, and only the
// token tells whose it is. It returns the params to send and the token
// ("" when params carry none).
func (s *session) mapProgress(c Caller, params json.RawMessage) (json.RawMessage, string) {
	var p map[string]json.RawMessage
	if json.Unmarshal(params, &p) != nil {
		return params, ""
	}
	var meta map[string]json.RawMessage
	if json.Unmarshal(p["_meta"], &meta) != nil {
		return params, ""
	}
	orig, ok := meta["progressToken"]
	if !ok || len(orig) == 0 || string(orig) == "null" {
		return params, ""
	}
	s.mu.Lock()
	s.tokenSeq++
	tok := `"mm-` + strconv.FormatInt(s.tokenSeq, 10) + `"`
	if s.tokens == nil {
		s.tokens = make(map[string]progressOwner)
	}
	s.tokens[tok] = progressOwner{caller: c, token: orig}
	s.mu.Unlock()
	meta["progressToken"] = json.RawMessage(tok)
	mb, err1 := json.Marshal(meta)
	p["_meta"] = mb
	out, err2 := json.Marshal(p)
	if err1 != nil || err2 != nil {
		s.unmapProgress(tok)
		return params, ""
	}
	return out, tok
}

func (s *session) unmapProgress(tok string) {
	s.mu.Lock()
	delete(s.tokens, tok)
	s.mu.Unlock()
}

// progressOwnerOf finds the call behind a notifications/progress the
// session's token mapping made, and returns the message with the client's
// token back in place.
func (s *session) progressOwnerOf(m *rpc.Message) (Caller, *rpc.Message) {
	s.mu.Lock()
	n := len(s.tokens)
	s.mu.Unlock()
	if n == 0 {
		return nil, m
	}
	var p map[string]json.RawMessage
	if json.Unmarshal(m.Params, &p) != nil {
		return nil, m
	}
	s.mu.Lock()
	owner, ok := s.tokens[string(p["progressToken"])]
	s.mu.Unlock()
	if !ok {
		return nil, m
	}
	p["progressToken"] = owner.token
	params, err := json.Marshal(p)
	if err != nil {
		return nil, m
	}
	return owner.caller, &rpc.Message{Method: m.Method, Params: params}
}

// onMessage handles what the upstream sends that is not a response: c is
// the Caller of the call it came with, nil when the wire relates it to no
// call.
func (s *session) onMessage(c Caller, m *rpc.Message) {
	if mask := listChangedMask(m.Method); mask != 0 && m.IsNotification() {
		// Before anyone hears of it: a list asked for after the
		// notification is asked of the upstream.
		s.dropLists(mask)
	}
	if c == nil && !s.related && m.Method == "notifications/progress" {
		if owner, mm := s.progressOwnerOf(m); owner != nil {
			owner.Notification(mm)
			return
		}
	}
	if c == nil && !s.related {
		c = s.soleCaller()
	}
	switch {
	case m.IsNotification():
		switch {
		case c != nil:
			c.Notification(m)
		case s.events != nil:
			s.events.Notification(s.server, s.clientID, m)
		default:
			s.log.Debug("upstream notification", "method", m.Method)
		}
	case m.IsRequest():
		s.goBackground(func() { s.answer(c, m) })
	default:
		s.log.Debug("ignoring an upstream response to no pending request", "id", string(m.ID))
	}
}

// answer replies to a server-to-client request, through c when the request
// belongs to a call, else through the pool's Events.
func (s *session) answer(c Caller, m *rpc.Message) {
	reply := &rpc.Message{ID: m.ID}
	switch {
	case m.Method == "ping":
		reply.Result = json.RawMessage(`{}`)
	case c == nil && s.events == nil:
		reply.Error = rpc.NewError(rpc.CodeMethodNotFound, "metamcp cannot route "+m.Method+" to a client: the request belongs to no client call")
	default:
		var res json.RawMessage
		var err error
		if c != nil {
			res, err = c.Request(s.life, m)
		} else {
			res, err = s.events.Request(s.life, s.server, s.clientID, m)
		}
		var rerr *rpc.Error
		switch {
		case errors.As(err, &rerr):
			reply.Error = rerr
		case err != nil:
			reply.Error = rpc.NewError(rpc.CodeInternalError, err.Error())
		default:
			reply.Result = res
		}
	}
	if reply.Error != nil {
		s.log.Debug("refused a server-to-client request", "method", m.Method, "code", reply.Error.Code, "reason", reply.Error.Message)
	}
	ctx, cancel := context.WithTimeout(s.life, 10*time.Second)
	defer cancel()
	if err := s.t.send(ctx, rpc.AppendMessage(nil, reply)); err != nil {
		s.log.Debug("answering an upstream request failed", "method", m.Method, "err", err)
	}
}

// initialize runs the MCP handshake, unless the server speaks 2026-07-28,
// which has none (see discover).
func (s *session) initialize(ctx context.Context) error {
	if s.discover(ctx) {
		if h, ok := s.t.(interface{ negotiated(string) }); ok {
			h.negotiated(StatelessVersion)
		}
		s.startListen(ctx)
		return nil
	}
	params := make([]byte, 0, 256)
	params = append(params, `{"protocolVersion":"`+ProtocolVersion+`","capabilities":{"roots":{"listChanged":true},"sampling":{},"elicitation":{"form":{},"url":{}}},"clientInfo":{"name":"metamcp","version":`...)
	params = rpc.AppendString(params, version.Version)
	params = append(params, `}}`...)
	m, err := s.call(ctx, "initialize", params)
	if err != nil {
		return fmt.Errorf("initialize: %w", unwrapUpstream(err))
	}
	if m.Error != nil {
		return fmt.Errorf("initialize: the server answered %w", m.Error)
	}
	var res struct {
		ProtocolVersion string          `json:"protocolVersion"`
		Capabilities    json.RawMessage `json:"capabilities"`
		ServerInfo      json.RawMessage `json:"serverInfo"`
		Instructions    string          `json:"instructions"`
	}
	if err := json.Unmarshal(m.Result, &res); err != nil {
		return fmt.Errorf("initialize: unreadable result: %w", err)
	}
	if !supportedVersions[res.ProtocolVersion] {
		return fmt.Errorf("initialize: the server speaks MCP protocol version %q, which metamcp does not support", res.ProtocolVersion)
	}
	s.info = &Info{ProtocolVersion: res.ProtocolVersion, Capabilities: res.Capabilities, ServerInfo: res.ServerInfo, Instructions: res.Instructions}
	s.setListCapabilities(res.Capabilities)
	if h, ok := s.t.(interface{ negotiated(string) }); ok {
		h.negotiated(res.ProtocolVersion)
	}
	if err := s.t.send(ctx, rpc.AppendMessage(nil, &rpc.Message{Method: "notifications/initialized"})); err != nil {
		return fmt.Errorf("initialized notification: %w", err)
	}
	if h, ok := s.t.(interface{ listen() }); ok {
		h.listen()
	}
	if bytes.Contains(res.Capabilities, []byte(`"logging"`)) {
		// Every log message, whatever its level: a shared session serves
		// clients that want different levels, so the gateway filters for
		// each client instead.
		m, err := s.call(ctx, "logging/setLevel", json.RawMessage(`{"level":"debug"}`))
		if err == nil && m.Error != nil {
			err = m.Error
		}
		if err != nil {
			s.log.Debug("the server did not take logging/setLevel debug", "err", err)
		}
	}
	return nil
}

func unwrapUpstream(err error) error {
	var uerr *Error
	if errors.As(err, &uerr) {
		return uerr.Err
	}
	return err
}

func appendRequest(dst []byte, id int64, method string, params json.RawMessage) []byte {
	dst = append(dst, `{"jsonrpc":"2.0","id":`...)
	dst = appendInt(dst, id)
	dst = append(dst, `,"method":`...)
	dst = rpc.AppendString(dst, method)
	if len(params) > 0 {
		dst = append(dst, `,"params":`...)
		dst = append(dst, params...)
	}
	return append(dst, '}')
}

func appendInt(dst []byte, v int64) []byte {
	if v < 0 {
		dst = append(dst, '-')
		v = -v
	}
	var tmp [20]byte
	i := len(tmp)
	for {
		i--
		tmp[i] = byte('0' + v%10)
		v /= 10
		if v == 0 {
			break
		}
	}
	return append(dst, tmp[i:]...)
}

// parseID reads our own numeric request ids; false for anything else.
func parseID(raw []byte) (int64, bool) {
	if len(raw) == 0 || len(raw) > 18 {
		return 0, false
	}
	var v int64
	for _, c := range raw {
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + int64(c-'0')
	}
	return v, true
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

func getBuf() *[]byte { return bufPool.Get().(*[]byte) }

func putBuf(b *[]byte) {
	if cap(*b) > 1<<20 {
		return // do not keep huge buffers alive
	}
	bufPool.Put(b)
}

// mux matches responses to pending requests for transports where responses
// arrive on a separate stream (stdio, SSE).
type mux struct {
	mu      sync.Mutex
	pending map[int64]chan *rpc.Message
}

var chanPool = sync.Pool{New: func() any { return make(chan *rpc.Message, 1) }}

func (m *mux) register(id int64) chan *rpc.Message {
	ch := chanPool.Get().(chan *rpc.Message)
	m.mu.Lock()
	if m.pending == nil {
		m.pending = make(map[int64]chan *rpc.Message)
	}
	m.pending[id] = ch
	m.mu.Unlock()
	return ch
}

// unregister forgets id; the channel is pooled again only when no response can
// be in it or on its way.
func (m *mux) unregister(id int64, ch chan *rpc.Message, delivered bool) {
	m.mu.Lock()
	_, still := m.pending[id]
	delete(m.pending, id)
	m.mu.Unlock()
	if delivered || still {
		chanPool.Put(ch)
	}
}

// deliver hands a response to its caller; false when nobody waits for it.
func (m *mux) deliver(msg *rpc.Message) bool {
	id, ok := parseID(msg.ID)
	if !ok {
		return false
	}
	m.mu.Lock()
	ch, ok := m.pending[id]
	delete(m.pending, id)
	m.mu.Unlock()
	if ok {
		ch <- msg
	}
	return ok
}

// wait sends body with send and waits for the response to id.
func (m *mux) wait(ctx context.Context, id int64, body []byte, send func(context.Context, []byte) error, done <-chan struct{}, errf func() error) (*rpc.Message, error) {
	ch := m.register(id)
	if err := send(ctx, body); err != nil {
		m.unregister(id, ch, false)
		return nil, err
	}
	select {
	case msg := <-ch:
		m.unregister(id, ch, true)
		return msg, nil
	case <-ctx.Done():
		m.unregister(id, ch, false)
		return nil, ctx.Err()
	case <-done:
		m.unregister(id, ch, false)
		return nil, errf()
	}
}
