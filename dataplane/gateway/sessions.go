package gateway

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// SessionInfo is what the gateway keeps about one downstream (client)
// session: enough to serve any request of it. Issue 5 seals this into the
// session id itself so that any replica can open it.
type SessionInfo struct {
	Endpoint  string
	Principal string
	// ProtocolVersion is the negotiated revision ("" until initialize on SSE).
	ProtocolVersion    string
	ClientCapabilities json.RawMessage
	ClientInfo         json.RawMessage
}

// SessionStore creates and opens downstream session ids. Implementations are
// safe for concurrent use.
type SessionStore interface {
	// Create starts a session and returns its id.
	Create(info *SessionInfo) (string, error)
	// Open returns the session with that id and marks it used now; ok is
	// false for an unknown or ended session.
	Open(id string) (info *SessionInfo, ok bool)
	// Acquire is Open for a request being served: the session is not
	// expired until the matching Release, however long the request takes.
	Acquire(id string) (info *SessionInfo, ok bool)
	// Release ends a request begun with Acquire and marks the session used
	// now; it reports whether the session is still live (it may have been
	// ended meanwhile).
	Release(id string) bool
	// Update replaces the info of a live session (for example once an SSE
	// session has negotiated its version).
	Update(id string, info *SessionInfo) bool
	// End ends a session; it reports whether it was live.
	End(id string) bool
	// Expired ends the sessions unused since before cutoff and serving no
	// request (see Acquire), and returns their ids.
	Expired(cutoff time.Time) []string
	// Len is the number of live sessions.
	Len() int
}

// memorySessions is a SessionStore of random 128-bit ids kept in memory.
type memorySessions struct {
	mu       sync.RWMutex
	sessions map[string]*memorySession
}

type memorySession struct {
	info     atomic.Pointer[SessionInfo]
	lastUsed atomic.Int64 // unix nanoseconds
	busy     atomic.Int32 // requests between Acquire and Release
}

// NewMemorySessions returns a SessionStore that keeps sessions in this
// process, under random 128-bit base64url ids.
func NewMemorySessions() SessionStore {
	return &memorySessions{sessions: make(map[string]*memorySession)}
}

func (m *memorySessions) Create(info *SessionInfo) (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("create session id: %w", err)
	}
	id := base64.RawURLEncoding.EncodeToString(b[:])
	s := &memorySession{}
	s.info.Store(info)
	s.lastUsed.Store(time.Now().UnixNano())
	m.mu.Lock()
	m.sessions[id] = s
	m.mu.Unlock()
	return id, nil
}

func (m *memorySessions) Open(id string) (*SessionInfo, bool) {
	m.mu.RLock()
	s := m.sessions[id]
	m.mu.RUnlock()
	if s == nil {
		return nil, false
	}
	s.lastUsed.Store(time.Now().UnixNano())
	return s.info.Load(), true
}

func (m *memorySessions) Acquire(id string) (*SessionInfo, bool) {
	// Under the read lock: Expired, holding the write lock, sees either the
	// session busy or not yet acquired.
	m.mu.RLock()
	defer m.mu.RUnlock()
	s := m.sessions[id]
	if s == nil {
		return nil, false
	}
	s.busy.Add(1)
	s.lastUsed.Store(time.Now().UnixNano())
	return s.info.Load(), true
}

func (m *memorySessions) Release(id string) bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	s := m.sessions[id]
	if s == nil {
		return false
	}
	s.lastUsed.Store(time.Now().UnixNano())
	s.busy.Add(-1)
	return true
}

func (m *memorySessions) Update(id string, info *SessionInfo) bool {
	m.mu.RLock()
	s := m.sessions[id]
	m.mu.RUnlock()
	if s == nil {
		return false
	}
	s.info.Store(info)
	return true
}

func (m *memorySessions) End(id string) bool {
	m.mu.Lock()
	_, ok := m.sessions[id]
	delete(m.sessions, id)
	m.mu.Unlock()
	return ok
}

func (m *memorySessions) Expired(cutoff time.Time) []string {
	c := cutoff.UnixNano()
	var ids []string
	m.mu.Lock()
	for id, s := range m.sessions {
		if s.lastUsed.Load() < c && s.busy.Load() <= 0 {
			ids = append(ids, id)
			delete(m.sessions, id)
		}
	}
	m.mu.Unlock()
	return ids
}

func (m *memorySessions) Len() int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return len(m.sessions)
}
