// Package sessionbus carries messages addressed to one downstream MCP session
// between data-plane replicas. Behind a round-robin load balancer the replica
// that holds a session's open stream (its GET stream, or a POST waiting for
// the client's answer to a server-to-client request) is often not the one a
// later request of that session reaches: that request publishes on the bus,
// and the replica holding the stream, which subscribed, delivers it.
//
// Delivery is at most once and not buffered: a message published while nobody
// subscribes to its topic is dropped, and Publish says how many replicas
// received it, so a sender can tell "nobody listens" (0) from "delivered".
//
// Local serves one process (metamcp dev, a single data plane, tests); Redis
// serves replicas that share a Redis.
package sessionbus

import (
	"context"
	"errors"
	"sync"
)

// ErrClosed is returned by Publish and Subscribe on a closed Bus.
var ErrClosed = errors.New("session bus is closed")

// Bus publishes messages on topics and delivers them to subscribers.
// Implementations are safe for concurrent use.
type Bus interface {
	// Publish sends msg to every current subscriber of topic, on every
	// replica, and returns how many replicas received it: a replica counts
	// once however many of its subscribers listen there (Redis counts
	// subscribed connections, one per replica, not subscribers). 0 means
	// nobody subscribes to topic. A counted message may still be lost by a
	// subscriber that does not keep up. msg is not retained.
	Publish(ctx context.Context, topic string, msg []byte) (int, error)
	// Subscribe starts delivering topic's messages on the returned channel
	// until ctx ends; the channel is closed then. A subscriber that does not
	// keep up loses messages rather than block the bus. The subscription is
	// in place when Subscribe returns: a message published after that
	// reaches it. It fails when ctx has already ended, when the bus is
	// closed (ErrClosed) or when the subscription cannot be set up.
	Subscribe(ctx context.Context, topic string) (<-chan []byte, error)
	// Close releases the bus: every subscription's channel is closed, and
	// Publish and Subscribe return ErrClosed from then on.
	Close() error
}

// SubscriberBuffer is how many messages wait for a slow subscriber before
// newer ones are dropped.
const SubscriberBuffer = 256

// Local is a Bus within one process. The zero value is ready to use.
type Local struct {
	mu     sync.Mutex
	subs   map[string]map[*localSub]struct{}
	closed bool
}

type localSub struct {
	ch   chan []byte
	once sync.Once
}

func (s *localSub) close() { s.once.Do(func() { close(s.ch) }) }

// NewLocal returns an in-process Bus.
func NewLocal() *Local { return &Local{} }

// Publish implements Bus. Local is one replica: it returns 1 when topic has
// a subscriber, else 0.
func (l *Local) Publish(_ context.Context, topic string, msg []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return 0, ErrClosed
	}
	subs := l.subs[topic]
	for s := range subs {
		// Each subscriber gets its own copy: msg is the caller's.
		select {
		case s.ch <- append([]byte(nil), msg...):
		default:
		}
	}
	if len(subs) == 0 {
		return 0, nil
	}
	return 1, nil
}

// Subscribe implements Bus.
func (l *Local) Subscribe(ctx context.Context, topic string) (<-chan []byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s := &localSub{ch: make(chan []byte, SubscriberBuffer)}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil, ErrClosed
	}
	if l.subs == nil {
		l.subs = make(map[string]map[*localSub]struct{})
	}
	m := l.subs[topic]
	if m == nil {
		m = make(map[*localSub]struct{})
		l.subs[topic] = m
	}
	m[s] = struct{}{}
	l.mu.Unlock()
	context.AfterFunc(ctx, func() {
		l.mu.Lock()
		if m := l.subs[topic]; m != nil {
			delete(m, s)
			if len(m) == 0 {
				delete(l.subs, topic)
			}
		}
		l.mu.Unlock()
		s.close()
	})
	return s.ch, nil
}

// Close implements Bus.
func (l *Local) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	for _, m := range l.subs {
		for s := range m {
			s.close()
		}
	}
	l.subs = nil
	return nil
}
