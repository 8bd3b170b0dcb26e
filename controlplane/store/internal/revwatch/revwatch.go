// Package revwatch fans the store's latest config revision out to watchers.
// Both store implementations feed it: their background reader (a Postgres
// LISTEN loop, an SQLite poller) with revisions read from the database, and
// their Update with revisions they committed themselves.
//
// Each watcher has a channel with a buffer of one that holds only the newest
// revision, so a slow reader skips intermediate revisions and never blocks
// the store.
package revwatch

import (
	"context"
	"sync"
)

// Hub delivers revisions to watchers. The zero value is not usable; call New.
type Hub struct {
	mu sync.Mutex
	// rev is the newest revision seen; known says whether the background
	// reader has read it from the database at least once. Until then a new
	// watcher waits for the reader instead of being sent a guess.
	rev      int64
	known    bool
	closed   bool
	watchers map[*watcher]struct{}
}

type watcher struct {
	ch   chan int64
	last int64 // last revision sent; -1 before the first
	stop func() bool
}

// New returns a Hub with no watchers.
func New() *Hub {
	return &Hub{watchers: make(map[*watcher]struct{})}
}

// Observe records a revision read from the database (the source of truth)
// and sends it to every watcher that has not seen it.
func (h *Hub) Observe(rev int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.known = true
	h.advance(rev)
}

// Committed records a revision this process just committed. It is sent at
// once, without waiting for the database's notification. Before the first
// Observe it only raises the newest revision seen.
func (h *Hub) Committed(rev int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.known {
		if rev > h.rev {
			h.rev = rev
		}
		return
	}
	h.advance(rev)
}

// advance must be called with h.mu held.
func (h *Hub) advance(rev int64) {
	if rev > h.rev {
		h.rev = rev
	}
	for w := range h.watchers {
		w.offer(h.rev)
	}
}

// offer must be called with the hub's mu held: the hub is the only sender, so
// after the drain the send cannot block.
func (w *watcher) offer(rev int64) {
	if rev <= w.last {
		return
	}
	select {
	case <-w.ch:
	default:
	}
	w.ch <- rev
	w.last = rev
}

// Watch returns a channel that first receives the current revision (as soon
// as one is known) and then each newer one, coalesced. It is closed when ctx
// is done or the hub is closed.
func (h *Hub) Watch(ctx context.Context) <-chan int64 {
	w := &watcher{ch: make(chan int64, 1), last: -1}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed || ctx.Err() != nil {
		close(w.ch)
		return w.ch
	}
	h.watchers[w] = struct{}{}
	if h.known {
		w.offer(h.rev)
	}
	w.stop = context.AfterFunc(ctx, func() { h.remove(w) })
	return w.ch
}

func (h *Hub) remove(w *watcher) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.watchers[w]; !ok {
		return
	}
	delete(h.watchers, w)
	close(w.ch)
}

// Watchers returns how many watchers are registered.
func (h *Hub) Watchers() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.watchers)
}

// Close closes every watcher's channel; later Watch calls return closed
// channels.
func (h *Hub) Close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for w := range h.watchers {
		w.stop()
		delete(h.watchers, w)
		close(w.ch)
	}
}
