package gateway

import (
	"context"
	"net/http"
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
}

// addLocalStream records that session sid has its standalone stream open
// here; the returned func removes it again.
func (g *Gateway) addLocalStream(sid, endpoint string) func() {
	ls := &localStream{endpoint: endpoint}
	g.mu.Lock()
	g.streams[sid] = ls
	g.mu.Unlock()
	return func() {
		g.mu.Lock()
		if g.streams[sid] == ls {
			delete(g.streams, sid)
		}
		g.mu.Unlock()
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
