package session

import (
	"encoding/base64"
	"encoding/json"
	"sync"
	"sync/atomic"
	"time"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
)

// Info is what the gateway keeps about one downstream (client)
// session: enough to serve any request of it. The session id a client gets
// is this, sealed (see seal.go), so that any replica can open it.
type Info struct {
	// ID names the session on every replica (16 random bytes, base64url): the
	// key of its per_client upstream sessions in the pool. Create sets it
	// when empty.
	ID        string
	Endpoint  string
	Principal string
	// ProtocolVersion is the negotiated revision ("" until initialize on SSE).
	ProtocolVersion    string
	ClientCapabilities json.RawMessage
	ClientInfo         json.RawMessage
	// Upstreams are the per_client Streamable HTTP upstream sessions opened
	// at initialize, which another replica adopts instead of starting anew.
	Upstreams []Upstream
	// Created is when the session was initialized (second precision).
	Created time.Time

	// Local is true on the replica that created the session (its per_client
	// upstream sessions of every transport live here), false where it was
	// rehydrated from its id. Not sealed.
	Local bool
}

// Upstream is one per_client upstream session a sealed id carries.
type Upstream struct {
	Server          string
	SessionID       string // Mcp-Session-Id
	ProtocolVersion string // negotiated with the upstream
}

// Store creates and opens downstream session ids. Implementations are
// safe for concurrent use. The default one (NewSealed) seals the
// session into its id; Expired, End and Len are about this replica's state
// of sessions.
type Store interface {
	// Create starts a session and returns its id.
	Create(info *Info) (string, error)
	// Open returns the session with that id and marks it used now; ok is
	// false for an unknown or ended session.
	Open(id string) (info *Info, ok bool)
	// Acquire is Open for a request being served: the session is not
	// expired until the matching Release, however long the request takes.
	Acquire(id string) (info *Info, ok bool)
	// Release ends a request begun with Acquire and marks the session used
	// now; it reports whether the session is still live (it may have been
	// ended meanwhile).
	Release(id string) bool
	// Update replaces the info of a live session (for example once an SSE
	// session has negotiated its version).
	Update(id string, info *Info) bool
	// End ends a session; it reports whether it was live.
	End(id string) bool
	// Expired ends the sessions unused since before cutoff and serving no
	// request (see Acquire), and returns their ids.
	Expired(cutoff time.Time) []string
	// Len is the number of live sessions.
	Len() int
}

// Sealed is the Store of sealed ids. Each replica keeps a
// small local state per session it served (last use, requests in flight),
// created when it first sees the id: that is all the idle sweep needs.
//
// Ending a session (DELETE, idle sweep) drops the local state and remembers
// the ID as ended for one idle TTL, so that this replica refuses the id.
// Other replicas learn of a DELETE on the session bus (gateway/ended.go); one that
// misses it still opens the id, whose per_client upstream sessions were
// ended, so it starts fresh ones. See README "Running several data planes".
type Sealed struct {
	seal *sealer

	mu sync.RWMutex
	// byToken maps the ids handed out or seen here to their local state;
	// byID the same states by Info.ID (the pool's key for them).
	byToken map[string]*localSession
	byID    map[endedKey]*localSession
	// peak is byToken's high-water mark since it was last rebuilt: Go maps
	// never shrink, so after a churn the map is rebuilt once mostly empty.
	peak int
	// ended holds the IDs ended here (unix nanoseconds of the end), until a
	// sweep finds them older than its cutoff.
	ended     map[endedKey]int64
	endedPeak int
}

// endedKey is a session ID in its 16 bytes: the ended set is kept compact.
type endedKey [sessionIDLen]byte

func keyOf(id string) endedKey {
	var k endedKey
	_, _ = base64.RawURLEncoding.Decode(k[:], []byte(id))
	return k
}

// localSession is one replica's state of a session.
type localSession struct {
	token    string
	key      *sealKey
	info     atomic.Pointer[Info]
	lastUsed atomic.Int64 // unix nanoseconds
	busy     atomic.Int32 // requests between Acquire and Release
}

// NewSealed returns a Store whose ids are sealed with the
// session keys keys returns (the snapshot's; read on every call, so keep it
// cheap). Without keys it seals with a random key of its own: ids then open
// only in this process.
func NewSealed(keys func() *metamcpv1.SessionKeys) (Store, error) {
	s, err := newSealer(keys)
	if err != nil {
		return nil, err
	}
	return &Sealed{seal: s, byToken: make(map[string]*localSession), byID: make(map[endedKey]*localSession), ended: make(map[endedKey]int64)}, nil
}

// NewMemory returns a Store sealed with a random key of this
// process: ids open here only (tests, a single data plane).
func NewMemory() Store {
	s, err := NewSealed(nil)
	if err != nil {
		panic(err) // only when the system has no randomness
	}
	return s
}

// Create implements Store.Create: the id is the sealed info.
func (m *Sealed) Create(info *Info) (string, error) {
	n := *info
	if n.ID == "" {
		id, err := NewID()
		if err != nil {
			return "", err
		}
		n.ID = id
	}
	if n.Created.IsZero() {
		n.Created = time.Now()
	}
	token, key, err := m.seal.seal(&n)
	if err != nil {
		return "", err
	}
	l := &localSession{token: token, key: key}
	n.Local = true
	l.info.Store(&n)
	l.lastUsed.Store(time.Now().UnixNano())
	m.mu.Lock()
	m.byToken[token] = l
	m.byID[keyOf(n.ID)] = l
	m.peak = max(m.peak, len(m.byToken))
	m.mu.Unlock()
	return token, nil
}

// lookup returns the local state of token, rehydrating it from the id when
// this replica has none; nil for an id that does not open or was ended here.
// With busy it counts a request in flight, atomically with the lookup.
func (m *Sealed) lookup(token string, busy bool) *localSession {
	ks := m.seal.current()
	m.mu.RLock()
	l := m.byToken[token]
	if l != nil {
		if !ks.accepts(l.key) {
			// Sealed with a key rotated out since: refused; the sweep
			// ends its state once idle.
			m.mu.RUnlock()
			return nil
		}
		if busy {
			// Under the read lock: Expired, holding the write lock, sees
			// either the session busy or not yet acquired.
			l.busy.Add(1)
		}
		l.lastUsed.Store(time.Now().UnixNano())
		m.mu.RUnlock()
		return l
	}
	m.mu.RUnlock()
	info, key, err := m.seal.open(token)
	if err != nil {
		return nil
	}
	l = &localSession{token: token, key: key}
	l.info.Store(info)
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ended := m.ended[keyOf(info.ID)]; ended {
		return nil
	}
	if other := m.byToken[token]; other != nil {
		l = other // rehydrated meanwhile
	} else {
		m.byToken[token] = l
		m.byID[keyOf(info.ID)] = l
		m.peak = max(m.peak, len(m.byToken))
	}
	if busy {
		l.busy.Add(1)
	}
	l.lastUsed.Store(time.Now().UnixNano())
	return l
}

// Open implements Store.Open.
func (m *Sealed) Open(id string) (*Info, bool) {
	l := m.lookup(id, false)
	if l == nil {
		return nil, false
	}
	return l.info.Load(), true
}

// Acquire implements Store.Acquire.
func (m *Sealed) Acquire(id string) (*Info, bool) {
	l := m.lookup(id, true)
	if l == nil {
		return nil, false
	}
	return l.info.Load(), true
}

// Release implements Store.Release.
func (m *Sealed) Release(id string) bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	l := m.byToken[id]
	if l == nil {
		return false
	}
	l.lastUsed.Store(time.Now().UnixNano())
	l.busy.Add(-1)
	return true
}

// Update replaces the local info of a session (the sealed id is already
// out: another replica opens the session as it was created).
func (m *Sealed) Update(id string, info *Info) bool {
	m.mu.RLock()
	l := m.byToken[id]
	m.mu.RUnlock()
	if l == nil {
		return false
	}
	n := *info
	old := l.info.Load()
	n.ID, n.Local = old.ID, old.Local
	l.info.Store(&n)
	return true
}

// End implements Store.End: the ID is remembered as ended here.
func (m *Sealed) End(id string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	l := m.byToken[id]
	if l == nil {
		// Never seen here (a DELETE on a replica that did not serve the
		// session): remember it ended all the same.
		if info, _, err := m.seal.open(id); err == nil {
			m.markEndedLocked(keyOf(info.ID), time.Now().UnixNano())
		}
		return false
	}
	delete(m.byToken, id)
	k := keyOf(l.info.Load().ID)
	if m.byID[k] == l {
		delete(m.byID, k)
	}
	m.markEndedLocked(k, time.Now().UnixNano())
	m.shrinkLocked()
	return true
}

// Expired implements Store.Expired.
func (m *Sealed) Expired(cutoff time.Time) []string {
	c := cutoff.UnixNano()
	now := time.Now().UnixNano()
	var ids []string
	m.mu.Lock()
	defer m.mu.Unlock()
	for id, l := range m.byToken {
		if l.lastUsed.Load() < c && l.busy.Load() <= 0 {
			ids = append(ids, id)
			delete(m.byToken, id)
			k := keyOf(l.info.Load().ID)
			if m.byID[k] == l {
				delete(m.byID, k)
			}
			m.markEndedLocked(k, now)
		}
	}
	// An ended ID is refused for as long as an idle session lives: after
	// that, the id opens as a new local state (as on any other replica).
	retain := max(now-c, 0)
	for id, at := range m.ended {
		if now-at > retain {
			delete(m.ended, id)
		}
	}
	m.shrinkLocked()
	return ids
}

// maxEnded bounds the ended set (about 40 bytes an entry): a burst of ended
// sessions beyond it forgets some early, which then open again here as they
// would on a replica that never saw them end.
const maxEnded = 1 << 18

func (m *Sealed) markEndedLocked(k endedKey, at int64) {
	if len(m.ended) >= maxEnded {
		n := 0
		for old := range m.ended { // map order: an arbitrary tenth goes
			delete(m.ended, old)
			if n++; n >= maxEnded/10 {
				break
			}
		}
	}
	m.ended[k] = at
}

// shrinkLocked rebuilds the maps once they hold a small part of what they
// once did, so that the memory of a burst of sessions is given back (Go maps
// never shrink).
func (m *Sealed) shrinkLocked() {
	if m.peak >= 1024 && len(m.byToken) < m.peak/4 {
		n := make(map[string]*localSession, len(m.byToken))
		for k, v := range m.byToken {
			n[k] = v
		}
		ids := make(map[endedKey]*localSession, len(m.byID))
		for k, v := range m.byID {
			ids[k] = v
		}
		m.byToken, m.byID, m.peak = n, ids, len(n)
	}
	m.endedPeak = max(m.endedPeak, len(m.ended))
	if m.endedPeak >= 1024 && len(m.ended) < m.endedPeak/4 {
		n := make(map[endedKey]int64, len(m.ended))
		for k, v := range m.ended {
			n[k] = v
		}
		m.ended, m.endedPeak = n, len(n)
	}
}

// Len implements Store.Len: the sessions this replica holds state of.
func (m *Sealed) Len() int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return len(m.byToken)
}

// ClientKey returns the pool key (Info.ID) of a session id handed
// out by this store, and its info; ok is false for anything else.
func (m *Sealed) ClientKey(token string) (*Info, bool) {
	m.mu.RLock()
	l := m.byToken[token]
	m.mu.RUnlock()
	if l != nil {
		return l.info.Load(), true
	}
	if len(token) < 40 {
		return nil, false // far shorter than any sealed id
	}
	info, _, err := m.seal.open(token)
	if err != nil {
		return nil, false
	}
	return info, true
}

// EndedHere reports whether the session whose ID is id ended on this
// replica lately (DELETE, idle sweep, or a DELETE announced by another).
func (m *Sealed) EndedHere(id string) bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	_, ended := m.ended[keyOf(id)]
	return ended
}

// SIDOf returns the session id (as handed out or seen here) of the session
// whose ID is id, or id itself when there is none here.
func (m *Sealed) SIDOf(id string) string {
	if len(id) != 22 {
		return id // not an ID (a stateless stand-in, a sid)
	}
	m.mu.RLock()
	l := m.byID[keyOf(id)]
	m.mu.RUnlock()
	if l == nil {
		return id
	}
	return l.token
}
