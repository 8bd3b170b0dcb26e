package upstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sort"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/dataplane/rpc"
)

// Pool defaults, used when neither the server's limits nor PoolOptions set one.
const (
	DefaultIdleTTL      = 10 * time.Minute
	DefaultMaxProcesses = 16
	DefaultMaxSessions  = 256
	DefaultMinBackoff   = 500 * time.Millisecond
	DefaultMaxBackoff   = 30 * time.Second
)

// PoolOptions configure a Pool. Zero values mean the package defaults.
type PoolOptions struct {
	Logger *slog.Logger
	// ObserveConnect, when set, learns how long each upstream session took
	// to connect (phase "connect": a stdio process started, an SSE stream
	// opened; a Streamable HTTP server connects within its first POST) and
	// to initialize (phase "initialize"), and whether the phase failed.
	ObserveConnect func(server, phase string, d time.Duration, err error)
	// Events receives upstream notifications and server-to-client requests
	// that belong to no call with a Caller; nil logs notifications and
	// refuses requests. The gateway passes its own when it makes the pool
	// (gateway.Options.Pool).
	Events             Events
	DefaultInitTimeout time.Duration
	DefaultCallTimeout time.Duration
	DefaultListTimeout time.Duration
	DefaultIdleTTL     time.Duration
	// DefaultListMaxAge is how long a list the session cannot hear changes
	// of is kept, for servers that set no listMaxAge (DefaultListMaxAge
	// when zero; see lists.go).
	DefaultListMaxAge time.Duration
	// DefaultMaxProcesses bounds live stdio processes per server.
	DefaultMaxProcesses int
	// DefaultMaxSessions bounds live sessions per server.
	DefaultMaxSessions int
	// Environ is the base environment of stdio servers (their configured env
	// is added to it); nil means MinimalEnviron().
	Environ []string
	// MinBackoff and MaxBackoff bound the wait before reconnecting to a server
	// that failed (doubling, with jitter).
	MinBackoff, MaxBackoff time.Duration
	// EvictIdleAfter is how long a per_client session must have been idle
	// for a new client to take its slot when the server is at its limit
	// (DefaultEvictIdleAfter when zero).
	EvictIdleAfter time.Duration
	// HTTP tunes the connections to Streamable HTTP and SSE servers.
	HTTP HTTPOptions
	// MaxResponseBytes bounds one message from an upstream: an HTTP
	// response body, an SSE event, a line of a stdio server
	// (DefaultMaxResponseBytes when 0). A larger one fails its call with a
	// ResponseTooLargeError (a stdio server's session ends: its stream
	// cannot be resynchronised).
	MaxResponseBytes int64
}

// maxResponse is the bound on one message from an upstream.
func (p *Pool) maxResponse() int64 {
	if p.opts.MaxResponseBytes > 0 {
		return p.opts.MaxResponseBytes
	}
	return DefaultMaxResponseBytes
}

// DefaultEvictIdleAfter is PoolOptions.EvictIdleAfter's default: longer
// than a client usually thinks between two calls, far shorter than the idle
// TTL, which a client that left without ending its session would otherwise
// hold its slot for.
const DefaultEvictIdleAfter = time.Minute

// Pool holds the upstream sessions of one data plane. Safe for concurrent use.
type Pool struct {
	opts PoolOptions
	log  *slog.Logger

	ctx    context.Context // ends at Close; bounds connects
	cancel context.CancelFunc
	wg     sync.WaitGroup // connects, closes, the reaper

	mu       sync.Mutex
	servers  map[string]*serverState
	sessions map[*session]struct{} // every open session, mapped or draining
	closed   bool
	wake     chan struct{} // nudges the reaper after Update
}

// poolEvents is the Events of the pool's sessions: it forwards to
// PoolOptions.Events, or logs and refuses without them.
type poolEvents struct{ p *Pool }

func (pe poolEvents) current() Events { return pe.p.opts.Events }

func (pe poolEvents) Notification(server, clientID string, msg *rpc.Message) {
	if e := pe.current(); e != nil {
		e.Notification(server, clientID, msg)
		return
	}
	pe.p.log.Debug("upstream notification", "server", server, "method", msg.Method)
}

func (pe poolEvents) Request(ctx context.Context, server, clientID string, msg *rpc.Message) (json.RawMessage, error) {
	if e := pe.current(); e != nil {
		return e.Request(ctx, server, clientID, msg)
	}
	return nil, rpc.NewError(rpc.CodeMethodNotFound, "metamcp cannot route "+msg.Method+" to a client: the request belongs to no client call")
}

// Live returns the open session of server for clientID (per_client) or
// the shared one, without connecting; false when there is none.
func (p *Pool) Live(server, clientID string) (Session, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := p.servers[server]
	if st == nil {
		return nil, false
	}
	e := st.shared
	if perClient(st.cfg) {
		e = st.perClient[clientID]
	}
	if e == nil {
		return nil, false
	}
	select {
	case <-e.ready:
		if e.err == nil && e.sess != nil && !e.sess.dead() {
			return e.sess, true
		}
	default:
	}
	return nil, false
}

// serverState is the pool's view of one server.
type serverState struct {
	name   string
	cfg    *metamcpv1.Server
	client *http.Client // shared by the server's HTTP sessions
	log    *slog.Logger

	shared    *entry
	perClient map[string]*entry

	live  int           // sessions connecting, open or closing (they still hold a slot)
	procs int           // live stdio processes
	freed chan struct{} // closed and replaced whenever a slot frees

	// restartGen is the server's restart generation (Restarts); gen is
	// false until the first Restarts after the server appeared.
	restartGen int64
	gen        bool

	// sessionOnlyUntil: the server answered server/discover without
	// 2026-07-28 (or not at all) before this, so sessions opened until then
	// skip the probe and initialize at once (stateless.go).
	sessionOnlyUntil time.Time

	// known is the Info of the last session of this server initialized
	// here (nil before any): what an adopted session, which is not
	// initialized here, borrows when no other session of the server is
	// live.
	known *Info

	state   metamcpv1.UpstreamState
	lastErr error
	// limitLogged is when a refusal at the limit was last logged.
	limitLogged time.Time
	failures    int
	retryAt     time.Time
}

// entry is one session slot: connecting (ready open) or connected.
type entry struct {
	clientID string
	ready    chan struct{}
	sess     *session
	err      error
}

// live returns the entry's session when it is connected and not dead, else nil.
func (e *entry) live() *session {
	select {
	case <-e.ready:
	default:
		return nil
	}
	if e.sess == nil || e.sess.dead() {
		return nil
	}
	return e.sess
}

// NewPool returns an empty pool; call Update with the servers to serve.
func NewPool(opts PoolOptions) *Pool {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.DefaultInitTimeout <= 0 {
		opts.DefaultInitTimeout = DefaultInitTimeout
	}
	if opts.DefaultCallTimeout <= 0 {
		opts.DefaultCallTimeout = DefaultCallTimeout
	}
	if opts.DefaultListTimeout <= 0 {
		opts.DefaultListTimeout = DefaultListTimeout
	}
	if opts.DefaultIdleTTL <= 0 {
		opts.DefaultIdleTTL = DefaultIdleTTL
	}
	if opts.DefaultListMaxAge <= 0 {
		opts.DefaultListMaxAge = DefaultListMaxAge
	}
	if opts.DefaultMaxProcesses <= 0 {
		opts.DefaultMaxProcesses = DefaultMaxProcesses
	}
	if opts.DefaultMaxSessions <= 0 {
		opts.DefaultMaxSessions = DefaultMaxSessions
	}
	if opts.EvictIdleAfter <= 0 {
		opts.EvictIdleAfter = DefaultEvictIdleAfter
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = DefaultMinBackoff
	}
	if opts.MaxBackoff < opts.MinBackoff {
		opts.MaxBackoff = max(DefaultMaxBackoff, opts.MinBackoff)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Pool{
		opts: opts, log: opts.Logger, ctx: ctx, cancel: cancel,
		servers: make(map[string]*serverState), sessions: make(map[*session]struct{}), wake: make(chan struct{}, 1),
	}
	p.wg.Add(1)
	go p.reaper()
	return p
}

func perClient(cfg *metamcpv1.Server) bool {
	return cfg.GetSessionMode() == metamcpv1.SessionMode_SESSION_MODE_PER_CLIENT
}

func isStdio(cfg *metamcpv1.Server) bool { return cfg.GetStdio() != nil }

// sameDefinition compares two server definitions, ignoring output-only fields.
func sameDefinition(a, b *metamcpv1.Server) bool {
	strip := func(s *metamcpv1.Server) *metamcpv1.Server {
		c := proto.Clone(s).(*metamcpv1.Server)
		c.Revision, c.CreateTime, c.UpdateTime = 0, nil, nil
		return c
	}
	return proto.Equal(strip(a), strip(b))
}

func (p *Pool) newServerState(name string, cfg *metamcpv1.Server) *serverState {
	st := &serverState{
		name: name, cfg: cfg, log: p.log.With("server", name),
		perClient: make(map[string]*entry), freed: make(chan struct{}),
		state: metamcpv1.UpstreamState_UPSTREAM_STATE_IDLE,
	}
	if !isStdio(cfg) {
		st.client = newHTTPClient(p.opts.HTTP)
		rememberURLs(name, cfg)
	}
	return st
}

// Update applies the servers of a new snapshot: sessions of servers removed or
// whose definition changed are closed once idle (in-flight calls finish);
// unchanged servers keep their sessions.
func (p *Pool) Update(servers map[string]*metamcpv1.Server) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	for name, st := range p.servers {
		cfg, ok := servers[name]
		if ok && sameDefinition(st.cfg, cfg) {
			continue
		}
		p.retireAllLocked(st)
		if st.client != nil {
			// Sessions still draining keep working; idle connections go.
			st.client.CloseIdleConnections()
		}
		if !ok {
			delete(p.servers, name)
			st.log.Info("upstream server removed")
			continue
		}
		// Changed: a fresh start. Slots held by draining sessions stay counted
		// so the new definition's limits hold from the first moment.
		st.cfg = cfg
		if isStdio(cfg) {
			st.client = nil
		} else {
			st.client = newHTTPClient(p.opts.HTTP)
			rememberURLs(name, cfg)
		}
		st.state, st.lastErr, st.failures, st.retryAt = metamcpv1.UpstreamState_UPSTREAM_STATE_IDLE, nil, 0, time.Time{}
		st.log.Info("upstream server changed; new sessions use the new definition")
	}
	for name, cfg := range servers {
		if _, ok := p.servers[name]; !ok {
			p.servers[name] = p.newServerState(name, cfg)
		}
	}
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// Restarts applies the restart generations of a snapshot (servers never
// restarted are absent): the sessions of a server whose generation changed
// are closed once idle, and new ones are opened on next use, at once even
// if the server was backing off. Call it after Update with the same
// snapshot. A server's first generation restarts nothing: the data plane
// has just started, or the server just appeared.
func (p *Pool) Restarts(generations map[string]int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	for name, st := range p.servers {
		gen := generations[name]
		if !st.gen {
			st.restartGen, st.gen = gen, true
			continue
		}
		if gen == st.restartGen {
			continue
		}
		st.restartGen = gen
		p.retireAllLocked(st)
		if st.client != nil {
			st.client.CloseIdleConnections()
		}
		st.state, st.lastErr, st.failures, st.retryAt = metamcpv1.UpstreamState_UPSTREAM_STATE_IDLE, nil, 0, time.Time{}
		st.log.Info("restarting the upstream sessions (mmctl restart server); new sessions open on next use", "generation", gen)
	}
}

// retireAllLocked detaches every session of st; each closes once idle.
func (p *Pool) retireAllLocked(st *serverState) {
	if st.shared != nil {
		p.retireEntryLocked(st, st.shared)
		st.shared = nil
	}
	for id, e := range st.perClient {
		p.retireEntryLocked(st, e)
		delete(st.perClient, id)
	}
}

// retireEntryLocked closes the entry's session once idle. A connecting entry
// is closed by its connect when it finishes (the entry is no longer mapped).
func (p *Pool) retireEntryLocked(st *serverState, e *entry) {
	select {
	case <-e.ready:
	default:
		return
	}
	if e.sess == nil {
		return
	}
	s := e.sess
	if s.retire(func() { p.closeAsync(s) }) {
		p.closeAsync(s)
	}
}

// evictIdlestLocked retires the per_client session of st that has been
// idle longest, if that is at least EvictIdleAfter: a client that left
// without ending its session should not keep a new one waiting until the
// idle TTL. Its slot frees once the session is closed; its client, if it
// comes back, gets a new upstream session. It reports whether it retired
// one, and else when the first idle session becomes old enough (zero when
// none is idle).
func (p *Pool) evictIdlestLocked(st *serverState, now time.Time) (bool, time.Time) {
	var victim *entry
	var since, next time.Time
	for _, e := range st.perClient {
		s := e.live()
		if s == nil {
			continue
		}
		t, idle := s.idleSince()
		if !idle {
			continue
		}
		if eligible := t.Add(p.opts.EvictIdleAfter); eligible.After(now) {
			if next.IsZero() || eligible.Before(next) {
				next = eligible
			}
			continue
		}
		if victim == nil || t.Before(since) {
			victim, since = e, t
		}
	}
	if victim == nil {
		return false, next
	}
	st.log.Info("closing the longest-idle session to make room for a new client: the server is at its limit",
		"client", victim.clientID, "idle", now.Sub(since).Round(time.Millisecond))
	delete(st.perClient, victim.clientID)
	p.retireEntryLocked(st, victim)
	return true, time.Time{}
}

// closeAsync closes s in a goroutine the pool owns. The slot frees when the
// session's transport is done (see watch).
func (p *Pool) closeAsync(s *session) {
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		s.close()
	}()
}

func (p *Pool) maxSlots(st *serverState) int {
	ms := int(st.cfg.GetLimits().GetMaxSessions())
	if ms <= 0 {
		ms = p.opts.DefaultMaxSessions
	}
	if isStdio(st.cfg) {
		mp := int(st.cfg.GetLimits().GetMaxProcesses())
		if mp <= 0 {
			mp = p.opts.DefaultMaxProcesses
		}
		ms = min(ms, mp)
	}
	return ms
}

// Session returns a live session for server. clientID identifies the
// downstream session: for per_client servers each clientID gets its own
// upstream session; shared servers ignore it. It connects lazily; after a
// failure it reconnects with backoff, and while backing off it returns the
// last error at once. At the server's limit, a new per_client client takes
// the slot of the session idle longest (evictIdlestLocked), or waits for a
// free one. Waiting is bounded by the server's initialize timeout.
func (p *Pool) Session(ctx context.Context, server, clientID string) (Session, error) {
	var deadline time.Time
	evicted := false // at most one eviction per caller
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, &Error{Server: server, Err: errors.New("the data plane is shutting down")}
		}
		st, ok := p.servers[server]
		if !ok {
			p.mu.Unlock()
			return nil, &Error{Server: server, Err: errors.New("no such server in the current configuration")}
		}
		if deadline.IsZero() {
			deadline = time.Now().Add(InitTimeout(st.cfg, p.opts.DefaultInitTimeout))
		}
		pc := perClient(st.cfg)
		if pc && clientID == "" {
			p.mu.Unlock()
			return nil, &Error{Server: server, Err: errors.New("per_client server needs a client session id")}
		}
		e := st.shared
		if pc {
			e = st.perClient[clientID]
		}
		if e != nil {
			select {
			case <-e.ready:
				if e.err == nil && !e.sess.dead() {
					// The reaper holds p.mu too: a session handed out now is
					// not idle for another TTL.
					e.sess.touch()
					p.mu.Unlock()
					return e.sess, nil
				}
				if e.err == nil {
					err := e.sess.t.err()
					if !errors.Is(err, errSessionExpired) {
						// Dead, and watch has not cleaned up yet: report it.
						p.mu.Unlock()
						return nil, &Error{Server: server, Err: fmt.Errorf("unavailable: %w", err)}
					}
					// The upstream refused the session: it is up, so
					// connect anew now, as watch would let the next caller
					// do once it has unmapped the entry.
					if pc {
						delete(st.perClient, clientID)
					} else {
						st.shared = nil
					}
				}
				// A failed connect: its error was recorded; fall through to backoff.
			default:
				ready := e.ready
				p.mu.Unlock()
				if err := waitFor(ctx, ready, deadline); err != nil {
					return nil, &Error{Server: server, Err: fmt.Errorf("connecting: %w", err)}
				}
				continue
			}
		}
		if now := time.Now(); now.Before(st.retryAt) {
			err := &Error{Server: server, Err: fmt.Errorf("unavailable: %w; retrying in %s",
				st.lastErr, st.retryAt.Sub(now).Round(100*time.Millisecond))}
			p.mu.Unlock()
			return nil, err
		}
		if st.live >= p.maxSlots(st) {
			wake := deadline
			if pc && !evicted {
				// A session may become idle long enough while this caller
				// waits: look again then (or in EvictIdleAfter, when every
				// session is in use).
				var next time.Time
				evicted, next = p.evictIdlestLocked(st, time.Now())
				if next.IsZero() {
					next = time.Now().Add(p.opts.EvictIdleAfter)
				}
				if !evicted && next.Before(wake) {
					wake = next
				}
			}
			freed := st.freed
			limit := p.maxSlots(st)
			p.mu.Unlock()
			if err := waitFor(ctx, freed, wake); err != nil {
				if ctx.Err() == nil && time.Now().Before(deadline) {
					continue // woke to look for an idle session again
				}
				if errors.Is(err, context.Canceled) {
					return nil, &Error{Server: server, Err: fmt.Errorf("waiting for a free session: %w", err)}
				}
				le := &LimitError{Limit: limit, What: "sessions", Field: "maxSessions"}
				if isStdio(st.cfg) {
					le.What, le.Field = "processes", "maxProcesses"
				}
				p.logLimit(st, le)
				return nil, &Error{Server: server, Err: le}
			}
			continue
		}
		// Connect in a goroutine the pool owns, so that a caller that gives up
		// does not abort a connect others wait for.
		// A shared session belongs to no client: its events say so.
		owner := clientID
		if !pc {
			owner = ""
		}
		e = &entry{clientID: owner, ready: make(chan struct{})}
		if pc {
			st.perClient[clientID] = e
		} else {
			st.shared = e
		}
		st.live++
		if isStdio(st.cfg) {
			st.procs++
		}
		cfg, client := st.cfg, st.client
		p.wg.Add(1)
		go p.connect(st, e, cfg, client)
		p.mu.Unlock()
	}
}

// LimitError says that a server's limits allow no more sessions or
// processes, and that none was freed in time: each was in use, or (for a
// per_client server) idle for less than EvictIdleAfter.
type LimitError struct {
	Limit int
	// What is "processes" (stdio) or "sessions"; Field the limit's name.
	What, Field string
}

func (e *LimitError) Error() string {
	return fmt.Sprintf("all %d %s its limits allow (limits.%s) are in use, and none was freed in time; try again later, or raise the limit",
		e.Limit, e.What, e.Field)
}

// limitLogEvery is how often at most a server's refusals at its limit are logged.
const limitLogEvery = 10 * time.Second

// logLimit warns that a caller was refused at st's limit, at most once per
// limitLogEvery per server.
func (p *Pool) logLimit(st *serverState, le *LimitError) {
	p.mu.Lock()
	now := time.Now()
	log := now.Sub(st.limitLogged) >= limitLogEvery
	if log {
		st.limitLogged = now
	}
	p.mu.Unlock()
	if log {
		st.log.Warn("refused a call: the server is at its limit", "limit", le.Limit, "of", le.What,
			"hint", "each session was in use or (per_client) idle for less than "+p.opts.EvictIdleAfter.String()+"; raise limits."+le.Field)
	}
}

// waitFor waits until ch is closed, ctx ends or deadline passes.
func waitFor(ctx context.Context, ch <-chan struct{}, deadline time.Time) error {
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return context.DeadlineExceeded
	}
}

// connect opens and initializes a session for e.
func (p *Pool) connect(st *serverState, e *entry, cfg *metamcpv1.Server, client *http.Client) {
	defer p.wg.Done()
	ctx, cancel := context.WithTimeout(p.ctx, InitTimeout(cfg, p.opts.DefaultInitTimeout))
	defer cancel()
	log := st.log
	if e.clientID != "" {
		log = log.With("client", e.clientID)
	}
	s := newSession(st.name, e.clientID, cfg, &p.opts, log)
	s.events = poolEvents{p}
	s.renew = func(ctx context.Context) (*session, error) { return p.renew(ctx, st, e) }
	var t transport
	var err error
	start := time.Now()
	switch {
	case cfg.GetStdio() != nil:
		t, err = startStdio(cfg, p.opts.Environ, p.maxResponse(), log, s.onMessage)
		err = wrapf(err, "start process")
	case cfg.GetStreamableHttp() != nil:
		ht := newHTTPTransport(cfg, client, p.maxResponse(), log, s.onMessage)
		ht.gap = s.dropAllLists
		t = ht
	case cfg.GetSse() != nil:
		t, err = startSSE(ctx, cfg, client, p.maxResponse(), log, s.onMessage)
		err = wrapf(err, "connect")
	default:
		err = errors.New("the server has no transport")
	}
	if obs := p.opts.ObserveConnect; obs != nil && cfg.GetStreamableHttp() == nil {
		obs(st.name, "connect", time.Since(start), err)
	}
	if err != nil {
		p.mu.Lock()
		p.releaseLocked(st, isStdio(cfg))
		p.connectFailedLocked(st, e, err)
		p.mu.Unlock()
		return
	}
	s.t = t
	p.wg.Add(1)
	go p.watch(st, e, s)
	p.mu.Lock()
	s.skipDiscover = time.Now().Before(st.sessionOnlyUntil)
	p.mu.Unlock()
	start = time.Now()
	err = s.initialize(ctx)
	if obs := p.opts.ObserveConnect; obs != nil {
		obs(st.name, "initialize", time.Since(start), err)
	}
	if s.probedSession {
		p.mu.Lock()
		st.sessionOnlyUntil = time.Now().Add(sessionOnlyMemory)
		p.mu.Unlock()
	}
	if err != nil {
		s.close() // watch frees the slot
		p.mu.Lock()
		p.connectFailedLocked(st, e, err)
		p.mu.Unlock()
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	st.known = s.info
	e.sess = s
	close(e.ready)
	p.sessions[s] = struct{}{}
	mapped := st.shared == e || (e.clientID != "" && st.perClient[e.clientID] == e)
	if !mapped || p.closed || p.servers[st.name] != st {
		// Retired while connecting (Update, CloseClient or Close).
		p.closeAsync(s)
		return
	}
	st.state, st.lastErr, st.failures, st.retryAt = metamcpv1.UpstreamState_UPSTREAM_STATE_HEALTHY, nil, 0, time.Time{}
	log.Debug("upstream session ready", "protocol", s.info.ProtocolVersion)
}

func wrapf(err error, what string) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w", what, err)
}

// connectFailedLocked records a failed connect and starts the backoff.
func (p *Pool) connectFailedLocked(st *serverState, e *entry, err error) {
	e.err = err
	close(e.ready)
	if st.shared == e {
		st.shared = nil
	}
	if st.perClient[e.clientID] == e {
		delete(st.perClient, e.clientID)
	}
	if p.closed {
		return
	}
	p.failedLocked(st, err)
}

func (p *Pool) failedLocked(st *serverState, err error) {
	err = redactErr(st.name, err)
	st.failures++
	d := p.opts.MinBackoff << min(st.failures-1, 20)
	if d > p.opts.MaxBackoff || d <= 0 {
		d = p.opts.MaxBackoff
	}
	d = time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
	st.retryAt = time.Now().Add(d)
	st.lastErr = err
	st.state = metamcpv1.UpstreamState_UPSTREAM_STATE_DOWN
	st.log.Warn("upstream server unavailable", "err", err, "retry_in", d.Round(time.Millisecond))
}

// releaseLocked frees one slot and wakes those waiting for one.
func (p *Pool) releaseLocked(st *serverState, stdio bool) {
	st.live--
	if stdio {
		st.procs--
	}
	close(st.freed)
	st.freed = make(chan struct{})
}

// watch frees the session's slot once its transport is done, and records an
// unexpected end (crash, expired session) as a failure.
func (p *Pool) watch(st *serverState, e *entry, s *session) {
	defer p.wg.Done()
	<-s.t.done()
	s.end()
	s.t.close() // releases what a transport that failed by itself still holds
	s.wg.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.releaseLocked(st, s.t.processes() > 0)
	delete(p.sessions, s)
	if e.sess != s {
		return // initialize failed; connect reports it
	}
	mapped := false
	if st.shared == e {
		st.shared, mapped = nil, true
	}
	if e.clientID != "" && st.perClient[e.clientID] == e {
		delete(st.perClient, e.clientID)
		mapped = true
	}
	// A 404 on a session (the upstream forgot it: restarted, expired, or it
	// was ended by another data plane) says the server is up: the next
	// Session reconnects at once instead of backing off.
	if err := s.t.err(); mapped && !errors.Is(err, errClosed) && !errors.Is(err, errSessionExpired) && !p.closed && p.servers[st.name] == st {
		p.failedLocked(st, err)
	}
}

// renew replaces the session of e, which the upstream refused (it forgot
// the session: restarted, or expired it), with a fresh one. Callers that
// find e refused at once share the one reconnect: the first unmaps e, the
// others find the new entry.
func (p *Pool) renew(ctx context.Context, st *serverState, e *entry) (*session, error) {
	p.mu.Lock()
	unmapped := false
	if st.shared == e {
		st.shared, unmapped = nil, true
	}
	if e.clientID != "" && st.perClient[e.clientID] == e {
		delete(st.perClient, e.clientID)
		unmapped = true
	}
	p.mu.Unlock()
	if unmapped {
		st.log.Info("the upstream refused its session (restarted, or expired it); initializing a new one and sending the request again",
			"client", e.clientID)
	}
	s, err := p.Session(ctx, st.name, e.clientID)
	if err != nil {
		return nil, err
	}
	return s.(*session), nil
}

// CloseClient ends the per_client sessions of a downstream session (its
// DELETE, or the idle sweep). In-flight calls finish first.
func (p *Pool) CloseClient(clientID string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, st := range p.servers {
		if e, ok := st.perClient[clientID]; ok {
			delete(st.perClient, clientID)
			p.retireEntryLocked(st, e)
		}
	}
}

// reaper closes sessions idle for longer than their server's idle TTL.
func (p *Pool) reaper() {
	defer p.wg.Done()
	timer := time.NewTimer(time.Second)
	defer timer.Stop()
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-timer.C:
		case <-p.wake:
		}
		timer.Reset(p.reap(time.Now()))
	}
}

// reap closes idle sessions and returns when to look again.
func (p *Pool) reap(now time.Time) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	next := 15 * time.Second
	for _, st := range p.servers {
		ttl := st.cfg.GetLimits().GetIdleTtl().AsDuration()
		if ttl <= 0 {
			ttl = p.opts.DefaultIdleTTL
		}
		next = min(next, max(ttl/4, 50*time.Millisecond))
		check := func(e *entry) bool {
			select {
			case <-e.ready:
			default:
				return false
			}
			if e.sess == nil {
				return false
			}
			since, idle := e.sess.idleSince()
			if !idle || now.Sub(since) < ttl {
				return false
			}
			st.log.Debug("closing an idle upstream session", "client", e.clientID, "idle", now.Sub(since).Round(time.Second))
			p.retireEntryLocked(st, e)
			return true
		}
		if st.shared != nil && check(st.shared) {
			st.shared = nil
		}
		for id, e := range st.perClient {
			if check(e) {
				delete(st.perClient, id)
			}
		}
	}
	return next
}

// Status reports the health of every server, sorted by name.
func (p *Pool) Status() []*metamcpv1.UpstreamStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]*metamcpv1.UpstreamStatus, 0, len(p.servers))
	for _, st := range p.servers {
		us := &metamcpv1.UpstreamStatus{Server: st.name, State: st.state, Sessions: int32(st.live), Processes: int32(st.procs)}
		if st.state == metamcpv1.UpstreamState_UPSTREAM_STATE_DOWN && st.lastErr != nil {
			us.Error = st.lastErr.Error()
		}
		out = append(out, us)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Server < out[j].Server })
	return out
}

// Close closes every session and waits until every stdio process group is
// killed and reaped. In-flight calls fail.
func (p *Pool) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		p.wg.Wait()
		return nil
	}
	p.closed = true
	// Connects in progress see p.closed, or fail as their context ends now.
	all := make([]*session, 0, len(p.sessions))
	for s := range p.sessions {
		all = append(all, s)
	}
	for _, st := range p.servers {
		st.shared, st.perClient = nil, map[string]*entry{}
	}
	p.mu.Unlock()
	p.cancel()
	for _, s := range all {
		p.closeAsync(s)
	}
	p.wg.Wait()
	p.mu.Lock()
	for _, st := range p.servers {
		if st.client != nil {
			st.client.CloseIdleConnections()
		}
	}
	p.mu.Unlock()
	return nil
}
