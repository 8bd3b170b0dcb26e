package gateway

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Session bus topics. Behind a round-robin load balancer, the replica that
// receives a message for a session is often not the one holding the
// session's open stream or waiting for its answer; it publishes on the
// session's topic and the holder, which subscribed, delivers it.

// streamTopic carries whole JSON-RPC messages for the session's standalone
// stream (the GET /mcp stream, or the 2024-11-05 SSE stream).
func streamTopic(sid string) string { return "mm/s/" + sid }

// responseTopic carries the client's responses to server-to-client requests
// of the session; the replica waiting for one subscribes while it waits.
func responseTopic(sid string) string { return "mm/r/" + sid }

// cancelTopic carries the client's notifications/cancelled of the session to
// the replicas serving its calls.
func cancelTopic(sid string) string { return "mm/c/" + sid }

// sendToSession delivers a whole JSON-RPC message to the standalone stream
// of session sid, on whichever replica holds it. It reports whether some
// stream took it (false: no stream is open for the session anywhere, or the
// bus failed, which is logged).
func (g *Gateway) sendToSession(ctx context.Context, sid string, msg []byte) bool {
	n, err := g.bus.Publish(ctx, streamTopic(sid), msg)
	if err != nil {
		g.log.Warn("could not publish to a session's stream", "err", err)
		return false
	}
	return n > 0
}

// localStream is a standalone stream open on this replica.
type localStream struct {
	endpoint string
	cancel   context.CancelFunc
}

// addLocalStream records that session sid has its standalone stream open
// here; cancel ends that stream. A stream the session had open here before
// is ended (the newer one replaces it). The returned func removes the record.
func (g *Gateway) addLocalStream(sid, endpoint string, cancel context.CancelFunc) func() {
	ls := &localStream{endpoint: endpoint, cancel: cancel}
	g.mu.Lock()
	old := g.streams[sid]
	g.streams[sid] = ls
	g.mu.Unlock()
	if old != nil && old.cancel != nil {
		old.cancel()
	}
	g.listenerAttached(endpoint) // list_changed baselines (listchanged.go)
	return func() {
		g.mu.Lock()
		if g.streams[sid] == ls {
			delete(g.streams, sid)
		}
		g.mu.Unlock()
	}
}

// endLocalStream ends the standalone stream of sid on this replica, if any.
func (g *Gateway) endLocalStream(sid string) {
	g.mu.Lock()
	ls := g.streams[sid]
	g.mu.Unlock()
	if ls != nil && ls.cancel != nil {
		ls.cancel()
	}
}

// localStreams returns the ids of the sessions of endpoint whose standalone
// stream (GET /mcp stream, or 2024-11-05 SSE stream) is open on this replica.
func (g *Gateway) localStreams(endpoint string) []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	var ids []string
	for sid, ls := range g.streams {
		if ls.endpoint == endpoint {
			ids = append(ids, sid)
		}
	}
	return ids
}

// Control messages on a stream topic. They start with a NUL byte, which no
// JSON-RPC message does, so a stream tells them from messages to deliver.
const (
	// ctlEnd ends the session's stream wherever it is open (the session
	// ended, by DELETE on some replica).
	ctlEnd = "\x00end"
	// ctlTakeover + a stream's token: a newer stream of the session opened
	// (maybe on another replica); every other stream of the session ends.
	ctlTakeover = "\x00takeover "
)

// endStreams ends the standalone streams of session sid, on every replica.
func (g *Gateway) endStreams(sid string) {
	g.endLocalStream(sid)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := g.bus.Publish(ctx, streamTopic(sid), []byte(ctlEnd)); err != nil {
		g.log.Debug("could not tell other replicas that a session ended", "err", err)
	}
}

// streamWriter writes JSON-RPC messages as SSE events on a long-lived
// response, with an "id:" per event when ids is set (a client that
// reconnects then knows the stream made progress; events are not replayed).
type streamWriter struct {
	w      http.ResponseWriter
	ids    bool
	nextID int64
}

func (sw *streamWriter) event(msg []byte) error {
	ev := make([]byte, 0, len(msg)+48)
	if sw.ids {
		sw.nextID++
		ev = append(ev, "id: "...)
		ev = strconv.AppendInt(ev, sw.nextID, 10)
		ev = append(ev, '\n')
	}
	ev = append(ev, "event: message\ndata: "...)
	ev = append(ev, msg...)
	ev = append(ev, "\n\n"...)
	if _, err := sw.w.Write(ev); err != nil {
		return err
	}
	return http.NewResponseController(sw.w).Flush()
}

func (sw *streamWriter) keepAlive() error {
	if _, err := sw.w.Write(keepAliveComment); err != nil {
		return err
	}
	return http.NewResponseController(sw.w).Flush()
}

// pumpStream writes what arrives for a standalone stream until ctx ends, a
// write fails, the session ends or a newer stream takes over: messages from
// the session's stream topic (bus) and, for the 2024-11-05 transport,
// responses from local (nil otherwise). token identifies this stream in
// takeover messages.
func (g *Gateway) pumpStream(ctx context.Context, sw *streamWriter, bus <-chan []byte, local <-chan []byte, token string) {
	keep := time.NewTicker(SSEKeepAlive)
	defer keep.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case b, ok := <-bus:
			if !ok {
				return // the bus closed
			}
			if len(b) > 0 && b[0] == 0 {
				s := string(b)
				if s == ctlEnd || (strings.HasPrefix(s, ctlTakeover) && s[len(ctlTakeover):] != token) {
					return
				}
				continue
			}
			if sw.event(b) != nil {
				return
			}
		case b := <-local:
			if sw.event(b) != nil {
				return
			}
		case <-keep.C:
			if sw.keepAlive() != nil {
				return
			}
		}
	}
}

// sseResponseQueue is how many messages wait for a slow client on one
// response stream before newer ones are dropped (senders never block).
const sseResponseQueue = 64

// sseResponse turns the response to a POST into a text/event-stream of
// JSON-RPC messages, but only once there is something to send: a POST that
// gets nothing but its answer stays application/json, and costs neither a
// goroutine nor an allocation for this.
//
// Send queues a message and never blocks (a goroutine of the sseResponse
// writes and flushes each as "event: message"); Finish stops that goroutine
// and, when the stream started, writes the final message itself. The owner
// of the response (its handler) must call Finish before returning. Also
// usable for a long-lived response stream (subscriptions/listen): Start
// sends the headers at once, and the stream sends keep-alive comments every
// SSEKeepAlive until Finish or the client goes away (Done).
type sseResponse struct {
	w   http.ResponseWriter
	ctx context.Context // the request's
	// header, when set, is called on the response headers just before they
	// are written (the stream's first message).
	header func(http.Header)

	mu      sync.Mutex
	started bool
	closed  bool
	queue   chan []byte
	done    chan struct{} // closed when the writer goroutine ended
	failed  chan struct{} // closed when a write failed or the client left
	dropped int
}

// newSSEResponse returns an sseResponse for the response w of the request
// whose context is ctx. Nothing is written yet.
func newSSEResponse(ctx context.Context, w http.ResponseWriter) *sseResponse {
	return &sseResponse{w: w, ctx: ctx}
}

// Start writes the stream's headers now, if not done yet; false when the
// response was finished already.
func (s *sseResponse) Start() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.startLocked()
	return true
}

// startLocked starts the writer goroutine. Called with mu held.
func (s *sseResponse) startLocked() {
	if s.started {
		return
	}
	s.started = true
	s.queue = make(chan []byte, sseResponseQueue)
	s.done = make(chan struct{})
	s.failed = make(chan struct{})
	go s.run()
}

// Started reports whether the response became an event stream.
func (s *sseResponse) Started() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.started
}

// Done is closed when the client went away or a write failed (nil channel,
// never closed, before the stream started).
func (s *sseResponse) Done() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.failed
}

// Send queues a whole JSON-RPC message (it is copied) and starts the stream
// if needed. It never blocks: false when the response was finished, the
// client went away, or the queue is full (the message is dropped).
func (s *sseResponse) Send(msg []byte) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.startLocked()
	select {
	case <-s.failed:
		return false
	default:
	}
	select {
	case s.queue <- append([]byte(nil), msg...):
		return true
	default:
		s.dropped++
		return false
	}
}

// Finish ends the stream: queued messages are written, then final (when not
// nil). It reports whether the response was an event stream; when false,
// nothing was written and the caller answers as usual (application/json).
// After Finish, Send returns false.
func (s *sseResponse) Finish(final []byte) bool {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return s.started
	}
	s.closed = true
	started := s.started
	if started {
		close(s.queue)
	}
	s.mu.Unlock()
	if !started {
		return false
	}
	<-s.done
	if final != nil {
		select {
		case <-s.failed:
		default:
			_ = writeSSEEvent(s.w, final)
		}
	}
	return true
}

// run writes queued messages until the queue closes or the client leaves.
func (s *sseResponse) run() {
	defer close(s.done)
	h := s.w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache, no-transform")
	if s.header != nil {
		s.header(h)
	}
	s.w.WriteHeader(http.StatusOK)
	fail := func() {
		close(s.failed)
		// Drain what Send still queues until Finish closes the queue.
		for range s.queue {
		}
	}
	if err := http.NewResponseController(s.w).Flush(); err != nil {
		fail()
		return
	}
	keep := time.NewTicker(SSEKeepAlive)
	defer keep.Stop()
	for {
		select {
		case b, ok := <-s.queue:
			if !ok {
				return
			}
			if writeSSEEvent(s.w, b) != nil {
				fail()
				return
			}
		case <-keep.C:
			if _, err := s.w.Write(keepAliveComment); err != nil {
				fail()
				return
			}
			if http.NewResponseController(s.w).Flush() != nil {
				fail()
				return
			}
		case <-s.ctx.Done():
			fail()
			return
		}
	}
}

var keepAliveComment = []byte(": keep-alive\n\n")

// writeSSEEvent writes one JSON-RPC message as an SSE "message" event and
// flushes it.
func writeSSEEvent(w http.ResponseWriter, msg []byte) error {
	ev := make([]byte, 0, len(msg)+24)
	ev = append(ev, "event: message\ndata: "...)
	ev = append(ev, msg...)
	ev = append(ev, "\n\n"...)
	if _, err := w.Write(ev); err != nil {
		return err
	}
	return http.NewResponseController(w).Flush()
}

// newToken returns a random identifier (128 bits, base64url).
func newToken() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return base64.RawURLEncoding.EncodeToString(b[:])
}
