package sessionbus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Timings of the Redis bus's subscription connection.
const (
	// redisKeepalive is how long the subscription connection may stay
	// silent before the bus pings Redis on it.
	redisKeepalive = 5 * time.Second
	// redisStaleAfter is how long without any inbound traffic (the
	// keepalive's answers included) makes the connection count as dead: it
	// is closed and a new one subscribes again, which also ends a half-open
	// TCP connection that would otherwise keep the bus deaf.
	redisStaleAfter = 3 * redisKeepalive
	// redisConfirmTimeout bounds how long Subscribe waits for Redis to
	// confirm a subscription.
	redisConfirmTimeout = 3 * time.Second
	// redisUnsubscribeTimeout bounds an UNSUBSCRIBE when a topic's last
	// local subscriber leaves.
	redisUnsubscribeTimeout = 2 * time.Second
	// redisRetryMax caps the pause between attempts to reach Redis again.
	redisRetryMax = 2 * time.Second
)

// Redis is a Bus shared by every replica connected to the same Redis, over
// Redis Pub/Sub. Each topic is the Redis channel prefix+topic.
//
// A Redis holds one subscription connection for the whole process: a topic is
// SUBSCRIBEd when its first local subscriber arrives and UNSUBSCRIBEd when its
// last one leaves. Publishing uses the client's ordinary connections. When
// the subscription connection breaks (Redis restarted, connection killed,
// nothing heard for a while) it is reopened and every topic subscribed again;
// messages published in between are lost, as at-most-once delivery allows.
type Redis struct {
	client redis.UniversalClient
	prefix string
	log    *slog.Logger
	ps     *redis.PubSub

	// cmd (one slot) orders topic refcount changes together with the
	// SUBSCRIBE or UNSUBSCRIBE they cause, so Redis sees them in the order
	// the refcounts changed.
	cmd chan struct{}

	mu     sync.Mutex
	topics map[string]*redisTopic   // by Redis channel name
	pongs  map[string]*redisPending // barrier token -> the subscriber it activates
	lost   chan struct{}            // closed (and replaced) when the connection breaks
	err    error                    // why the connection is down; nil while it is up
	closed bool

	lastIn  atomic.Int64 // unix nanoseconds of the last inbound reply
	barrier atomic.Uint64

	stop context.CancelFunc
	wg   sync.WaitGroup
}

// redisTopic is a subscribed channel. A subscriber is active (true) once
// the receiving loop has read its barrier's PONG: messages read before that
// were published before its Subscribe returned, possibly before it was
// called (a previous subscription's last messages still in flight), so it
// does not get them, just as a Local subscriber never sees a message
// published before it subscribed.
type redisTopic struct {
	subs map[*localSub]bool
}

// redisPending is a Subscribe waiting for its barrier's PONG.
type redisPending struct {
	done    chan struct{}
	channel string
	sub     *localSub
}

// NewRedis returns a Bus over client's Pub/Sub; topics are prefixed with
// prefix (e.g. "metamcp:"), so deployments and test runs sharing one Redis
// stay apart. It starts the receiving connection at once and keeps trying
// while Redis is down (Err reports why). Close stops it; client stays open
// and belongs to the caller, who may share it (rate limiting does).
func NewRedis(client redis.UniversalClient, prefix string, logger *slog.Logger) *Redis {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	ctx, stop := context.WithCancel(context.Background())
	r := &Redis{
		client: client,
		prefix: prefix,
		log:    logger,
		ps:     client.Subscribe(ctx),
		cmd:    make(chan struct{}, 1),
		topics: make(map[string]*redisTopic),
		pongs:  make(map[string]*redisPending),
		lost:   make(chan struct{}),
		err:    errors.New("not connected to Redis yet"),
		stop:   stop,
	}
	r.lastIn.Store(time.Now().UnixNano())
	r.wg.Add(2)
	go func() {
		defer r.wg.Done()
		r.receive(ctx)
	}()
	go func() {
		defer r.wg.Done()
		r.keepalive(ctx)
	}()
	return r
}

// Err returns nil while the subscription connection to Redis is up, else
// what broke it; the bus keeps reconnecting meanwhile.
func (r *Redis) Err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return ErrClosed
	}
	return r.err
}

// Publish implements Bus: it returns how many replicas subscribe to topic
// (Redis's PUBLISH count). It fails quickly when Redis is unreachable.
func (r *Redis) Publish(ctx context.Context, topic string, msg []byte) (int, error) {
	r.mu.Lock()
	closed := r.closed
	r.mu.Unlock()
	if closed {
		return 0, ErrClosed
	}
	n, err := r.client.Publish(ctx, r.prefix+topic, msg).Result()
	if err != nil {
		return 0, fmt.Errorf("publish on session bus topic %q through Redis: %w (is Redis reachable at --redis-url?)", topic, err)
	}
	return int(n), nil
}

// Subscribe implements Bus. It returns once Redis has confirmed the
// subscription, or an error when Redis is unreachable or does not confirm
// within a few seconds.
func (r *Redis) Subscribe(ctx context.Context, topic string) (<-chan []byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	channel := r.prefix + topic
	select {
	case r.cmd <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		<-r.cmd
		return nil, ErrClosed
	}
	t := r.topics[channel]
	first := t == nil
	if first {
		t = &redisTopic{subs: make(map[*localSub]bool)}
		r.topics[channel] = t
	}
	s := &localSub{ch: make(chan []byte, SubscriberBuffer)}
	t.subs[s] = false
	r.mu.Unlock()
	if first {
		if err := r.ps.Subscribe(r.commandContext(ctx), channel); err != nil {
			r.leaveLocked(channel, s)
			<-r.cmd
			return nil, fmt.Errorf("subscribe to session bus topic %q through Redis: %w (is Redis reachable at --redis-url?)", topic, err)
		}
	}
	<-r.cmd
	if err := r.confirm(ctx, channel, s); err != nil {
		r.leave(channel, s)
		return nil, fmt.Errorf("subscribe to session bus topic %q through Redis: %w", topic, err)
	}
	context.AfterFunc(ctx, func() { r.leave(channel, s) })
	return s.ch, nil
}

// confirm waits until Redis has processed every command this process sent
// on the subscription connection so far, the SUBSCRIBE of channel included:
// it sends a PING with a unique payload and waits for its answer, which
// Redis sends after handling the earlier commands; reading that answer
// activates subscriber s. If the connection breaks meanwhile, the new
// connection has subscribed again before anything else, so one more PING
// suffices.
func (r *Redis) confirm(ctx context.Context, channel string, s *localSub) error {
	token := "sessionbus-confirm-" + strconv.FormatUint(r.barrier.Add(1), 10)
	p := &redisPending{done: make(chan struct{}), channel: channel, sub: s}
	defer func() {
		r.mu.Lock()
		delete(r.pongs, token)
		r.mu.Unlock()
	}()
	timer := time.NewTimer(redisConfirmTimeout)
	defer timer.Stop()
	for {
		r.mu.Lock()
		r.pongs[token] = p
		lost := r.lost
		r.mu.Unlock()
		if err := r.ps.Ping(r.commandContext(ctx), token); err != nil {
			return fmt.Errorf("confirm the subscription: %w", err)
		}
		select {
		case <-p.done:
			return nil
		case <-lost:
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C:
			return fmt.Errorf("Redis did not confirm the subscription within %s", redisConfirmTimeout)
		}
	}
}

// commandContext is the context for a command on the shared subscription
// connection on behalf of a caller: the caller's values without its
// cancellation or deadline, which, hitting a write halfway, would make
// go-redis replace the connection under every other subscriber. The
// command's own bound is the client's write timeout.
func (r *Redis) commandContext(ctx context.Context) context.Context {
	return context.WithoutCancel(ctx)
}

// leave removes subscriber s of channel and closes its channel; the last
// subscriber of a channel UNSUBSCRIBEs it.
func (r *Redis) leave(channel string, s *localSub) {
	r.cmd <- struct{}{}
	r.leaveLocked(channel, s)
	<-r.cmd
}

// leaveLocked is leave for a caller holding r.cmd.
func (r *Redis) leaveLocked(channel string, s *localSub) {
	r.mu.Lock()
	last := false
	if t := r.topics[channel]; t != nil {
		if _, ok := t.subs[s]; ok {
			delete(t.subs, s)
			if len(t.subs) == 0 {
				delete(r.topics, channel)
				last = true
			}
		}
	}
	closed := r.closed
	r.mu.Unlock()
	s.close()
	if !last || closed {
		return
	}
	// go-redis forgets the channel even when the command fails, so a later
	// reconnect does not subscribe it again.
	ctx, cancel := context.WithTimeout(context.Background(), redisUnsubscribeTimeout)
	defer cancel()
	if err := r.ps.Unsubscribe(ctx, channel); err != nil {
		r.log.Debug("unsubscribe from Redis failed; the reconnect that follows drops the channel", "channel", channel, "err", err)
	}
}

// receive reads the subscription connection until Close: messages go to the
// local subscribers, PONGs to confirm. go-redis reconnects and subscribes
// again after an error; receive reports the outage and paces the retries.
func (r *Redis) receive(ctx context.Context) {
	failures := 0
	for {
		// A deadline on ctx (not ReceiveTimeout's timeout) makes go-redis
		// treat silence as a broken connection and replace it.
		rctx, cancel := context.WithTimeout(ctx, redisStaleAfter)
		msg, err := r.ps.ReceiveTimeout(rctx, 0)
		cancel()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, redis.ErrClosed) {
				return
			}
			failures++
			r.connectionLost(err)
			if failures > 1 {
				// The first retry is immediate (go-redis has reconnected
				// already); then 100ms, 200ms, ... up to redisRetryMax.
				pause := min(50*time.Millisecond<<min(failures-1, 8), redisRetryMax)
				select {
				case <-ctx.Done():
					return
				case <-time.After(pause):
				}
			}
			continue
		}
		failures = 0
		r.lastIn.Store(time.Now().UnixNano())
		r.connectionUp()
		switch m := msg.(type) {
		case *redis.Message:
			r.deliver(m.Channel, m.Payload)
		case *redis.Pong:
			r.mu.Lock()
			if p, ok := r.pongs[m.Payload]; ok {
				if t := r.topics[p.channel]; t != nil {
					if _, ok := t.subs[p.sub]; ok {
						t.subs[p.sub] = true
					}
				}
				close(p.done)
				delete(r.pongs, m.Payload)
			}
			r.mu.Unlock()
		case *redis.Subscription:
			// Confirmations are covered by the PING barrier.
		default:
			r.log.Debug("ignoring an unexpected reply on the Redis subscription connection", "type", fmt.Sprintf("%T", msg))
		}
	}
}

func (r *Redis) deliver(channel, payload string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	t := r.topics[channel]
	if t == nil {
		return // unsubscribed meanwhile
	}
	for s, active := range t.subs {
		if !active {
			continue
		}
		select {
		case s.ch <- []byte(payload):
		default:
		}
	}
}

func (r *Redis) connectionLost(err error) {
	r.mu.Lock()
	wasUp := r.err == nil
	r.err = err
	close(r.lost)
	r.lost = make(chan struct{})
	r.mu.Unlock()
	if wasUp {
		r.log.Warn("lost the Redis subscription connection; reconnecting (session messages between replicas are lost until then)", "err", err)
	}
}

func (r *Redis) connectionUp() {
	r.mu.Lock()
	wasDown := r.err
	r.err = nil
	r.mu.Unlock()
	if wasDown != nil {
		r.log.Info("Redis subscription connection up")
	}
}

// keepalive pings on the subscription connection when it has been quiet, so
// that receive hears something at least every redisKeepalive from a live
// Redis.
func (r *Redis) keepalive(ctx context.Context) {
	ping := func() {
		pctx, cancel := context.WithTimeout(ctx, redisKeepalive)
		defer cancel()
		// An error here is seen by receive too; go-redis reconnects.
		_ = r.ps.Ping(pctx)
	}
	// At once, so that Err tells soon whether Redis is there.
	ping()
	tick := time.NewTicker(redisKeepalive / 2)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if time.Since(time.Unix(0, r.lastIn.Load())) >= redisKeepalive {
			ping()
		}
	}
}

// Close implements Bus. It ends every subscription and closes the
// subscription connection; the client stays open.
func (r *Redis) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	var subs []*localSub
	for _, t := range r.topics {
		for s := range t.subs {
			subs = append(subs, s)
		}
	}
	r.topics = make(map[string]*redisTopic)
	r.mu.Unlock()
	r.stop()
	err := r.ps.Close()
	// A Subscribe waiting for its PONG pings again, finds the connection
	// closed and returns.
	r.mu.Lock()
	close(r.lost)
	r.lost = make(chan struct{})
	r.mu.Unlock()
	r.wg.Wait()
	for _, s := range subs {
		s.close()
	}
	if err != nil && !errors.Is(err, redis.ErrClosed) {
		return fmt.Errorf("close the Redis subscription connection: %w", err)
	}
	return nil
}
