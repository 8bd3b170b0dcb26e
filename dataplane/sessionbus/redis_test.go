package sessionbus_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/metamcp/metamcp/dataplane/redisconn"
	"github.com/metamcp/metamcp/dataplane/redisconn/redistest"
	"github.com/metamcp/metamcp/dataplane/sessionbus"
	"github.com/metamcp/metamcp/dataplane/sessionbus/bustest"
)

// newRedisBus returns a Redis bus on its own client (one "replica") named
// name, closed when the test ends.
func newRedisBus(t *testing.T, name, prefix string) (*sessionbus.Redis, *redis.Client) {
	t.Helper()
	c := redistest.Client(t, name)
	b := sessionbus.NewRedis(c, prefix, nil)
	t.Cleanup(func() { _ = b.Close() })
	return b, c
}

// clientName is unique per test, so the test finds its own connections in
// CLIENT LIST on a Redis other test runs share.
func clientName(t *testing.T) string {
	return "sessionbus-test-" + strings.TrimPrefix(strings.TrimSuffix(redistest.Prefix(t), ":"), "metamcp-test:")
}

func TestRedis(t *testing.T) {
	bustest.Run(t, func(t *testing.T) sessionbus.Bus {
		b, _ := newRedisBus(t, clientName(t), redistest.Prefix(t))
		return b
	})
}

func TestRedisCountsReplicas(t *testing.T) {
	prefix := redistest.Prefix(t)
	a, _ := newRedisBus(t, clientName(t), prefix)
	b, _ := newRedisBus(t, clientName(t), prefix)
	foreign, _ := newRedisBus(t, clientName(t), redistest.Prefix(t))
	topic := bustest.Topic(t)

	a1, a2 := bustest.Subscribe(t, a, topic), bustest.Subscribe(t, a, topic)
	b1 := bustest.Subscribe(t, b, topic)
	other := bustest.Subscribe(t, foreign, topic) // same topic, other prefix

	// Published on one replica, received on both; each replica counts once.
	if n := bustest.Publish(t, b, topic, []byte("hello")); n != 2 {
		t.Fatalf("Publish with subscribers on two replicas = %d, want 2", n)
	}
	for i, ch := range []<-chan []byte{a1, a2, b1} {
		if got := bustest.Receive(t, ch); string(got) != "hello" {
			t.Fatalf("subscriber %d got %q, want hello", i, got)
		}
	}
	// The other prefix is another deployment: it saw nothing.
	if n := bustest.Publish(t, foreign, topic, []byte("own")); n != 1 {
		t.Fatalf("Publish under another prefix = %d, want 1 (its own subscriber)", n)
	}
	if got := bustest.Receive(t, other); string(got) != "own" {
		t.Fatalf("other prefix received %q, want only its own message", got)
	}
}

func TestRedisUnsubscribesWhenLastSubscriberLeaves(t *testing.T) {
	prefix := redistest.Prefix(t)
	b, c := newRedisBus(t, clientName(t), prefix)
	topic := bustest.Topic(t)
	numsub := func() int64 {
		t.Helper()
		m, err := c.PubSubNumSub(context.Background(), prefix+topic).Result()
		if err != nil {
			t.Fatal(err)
		}
		return m[prefix+topic]
	}
	ctx1, cancel1 := context.WithCancel(context.Background())
	ctx2, cancel2 := context.WithCancel(context.Background())
	ch1, err := b.Subscribe(ctx1, topic)
	if err != nil {
		t.Fatal(err)
	}
	ch2, err := b.Subscribe(ctx2, topic)
	if err != nil {
		t.Fatal(err)
	}
	if n := numsub(); n != 1 {
		t.Fatalf("PUBSUB NUMSUB with two local subscribers = %d, want 1 (one connection per process)", n)
	}
	cancel1()
	bustest.WantClosed(t, ch1)
	if n := numsub(); n != 1 {
		t.Fatalf("PUBSUB NUMSUB with one local subscriber left = %d, want 1", n)
	}
	cancel2()
	bustest.WantClosed(t, ch2)
	deadline := time.Now().Add(10 * time.Second)
	for numsub() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the channel is still subscribed in Redis after its last subscriber left")
		}
		time.Sleep(5 * time.Millisecond) // polling interval
	}
}

// pubsubConns lists the ids of name's connections that are in subscribed
// mode, from CLIENT LIST.
func pubsubConns(t *testing.T, c *redis.Client, name string) []int64 {
	t.Helper()
	list, err := c.ClientList(context.Background()).Result()
	if err != nil {
		t.Fatal(err)
	}
	var ids []int64
	for line := range strings.SplitSeq(strings.TrimSpace(list), "\n") {
		f := map[string]string{}
		for kv := range strings.FieldsSeq(line) {
			k, v, _ := strings.Cut(kv, "=")
			f[k] = v
		}
		if f["name"] != name || (f["sub"] == "0" && f["psub"] == "0") {
			continue
		}
		id, err := strconv.ParseInt(f["id"], 10, 64)
		if err != nil {
			t.Fatalf("CLIENT LIST id %q: %v", f["id"], err)
		}
		ids = append(ids, id)
	}
	return ids
}

func TestRedisResubscribesAfterConnectionKilled(t *testing.T) {
	name := clientName(t)
	prefix := redistest.Prefix(t)
	b, c := newRedisBus(t, name, prefix)
	pub, _ := newRedisBus(t, clientName(t), prefix) // another replica publishes
	topic := bustest.Topic(t)
	ch := bustest.Subscribe(t, b, topic)

	for round := range 3 {
		ids := pubsubConns(t, c, name)
		if len(ids) != 1 {
			t.Fatalf("round %d: %d subscribed connections named %s, want 1", round, len(ids), name)
		}
		if err := c.Do(context.Background(), "CLIENT", "KILL", "ID", ids[0]).Err(); err != nil {
			t.Fatalf("CLIENT KILL ID %d: %v", ids[0], err)
		}
		// Messages sent while the connection is down are lost (at most
		// once); publish until one arrives on the new connection.
		want := fmt.Sprintf("after kill %d", round)
		deadline := time.Now().Add(10 * time.Second)
	poll:
		for {
			if n := bustest.Publish(t, pub, topic, []byte(want)); n == 1 {
				break poll
			}
			if time.Now().After(deadline) {
				t.Fatalf("round %d: the topic is not subscribed again 10s after the connection was killed", round)
			}
			time.Sleep(10 * time.Millisecond) // polling interval
		}
		if got := bustest.Receive(t, ch); string(got) != want {
			t.Fatalf("round %d: received %q, want %q", round, got, want)
		}
		// A new subscription on the reconnected bus is in place at once.
		fresh := bustest.Topic(t)
		fch := bustest.Subscribe(t, b, fresh)
		if n := bustest.Publish(t, pub, fresh, []byte("f")); n != 1 {
			t.Fatalf("round %d: Publish to a topic subscribed after the reconnect = %d, want 1", round, n)
		}
		bustest.Receive(t, fch)
	}
	// No leaked connections: still exactly one subscribed connection.
	if ids := pubsubConns(t, c, name); len(ids) != 1 {
		t.Fatalf("after 3 reconnects: %d subscribed connections named %s, want 1", len(ids), name)
	}
	deadline := time.Now().Add(10 * time.Second)
	for b.Err() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("Err() = %v after reconnecting, want nil", b.Err())
		}
		time.Sleep(10 * time.Millisecond) // polling interval
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	// Redis notices the closed connection a moment later.
	deadline = time.Now().Add(10 * time.Second)
	for {
		ids := pubsubConns(t, c, name)
		if len(ids) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("10s after Close: %d subscribed connections named %s, want 0", len(ids), name)
		}
		time.Sleep(10 * time.Millisecond) // polling interval
	}
}

func TestRedisUnreachable(t *testing.T) {
	// A loopback port nobody listens on.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	c, err := redisconn.New("redis://"+addr+"/0", "")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	b := sessionbus.NewRedis(c, redistest.Prefix(t), nil)

	// Both fail by themselves, well before this context's bound.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := b.Publish(ctx, "t", []byte("x")); err == nil || errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "Redis") {
		t.Fatalf("Publish with Redis down: err = %v, want an error naming Redis", err)
	}
	if _, err := b.Subscribe(ctx, "t"); err == nil || errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "Redis") {
		t.Fatalf("Subscribe with Redis down: err = %v, want an error naming Redis", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for b.Err() == nil || strings.Contains(b.Err().Error(), "not connected to Redis yet") {
		if time.Now().After(deadline) {
			t.Fatalf("Err() = %v with Redis down, want the connection error", b.Err())
		}
		time.Sleep(10 * time.Millisecond) // polling interval
	}
	if err := b.Close(); err != nil {
		t.Fatalf("Close with Redis down: %v", err)
	}
}

// BenchmarkRedisPublishReceive measures one message's trip from Publish on
// one replica to a subscriber on another, through the test Redis.
func BenchmarkRedisPublishReceive(b *testing.B) {
	for _, size := range []int{256, 4096} {
		b.Run(fmt.Sprintf("bytes=%d", size), func(b *testing.B) {
			prefix := redistest.Prefix(b)
			sub := sessionbus.NewRedis(redistest.Client(b, ""), prefix, nil)
			defer sub.Close()
			pub := sessionbus.NewRedis(redistest.Client(b, ""), prefix, nil)
			defer pub.Close()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			ch, err := sub.Subscribe(ctx, "bench")
			if err != nil {
				b.Fatal(err)
			}
			msg := make([]byte, size)
			var lat []time.Duration
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				start := time.Now()
				if _, err := pub.Publish(ctx, "bench", msg); err != nil {
					b.Fatal(err)
				}
				<-ch
				lat = append(lat, time.Since(start))
			}
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
		})
	}
}

// BenchmarkLocalPublishReceive is the in-process baseline.
func BenchmarkLocalPublishReceive(b *testing.B) {
	bus := sessionbus.NewLocal()
	defer bus.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := bus.Subscribe(ctx, "bench")
	if err != nil {
		b.Fatal(err)
	}
	msg := make([]byte, 256)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := bus.Publish(ctx, "bench", msg); err != nil {
			b.Fatal(err)
		}
		<-ch
	}
}

// proxy forwards a loopback port to the test Redis; stopping it looks like
// a Redis outage to the bus (connections reset, dials refused) without
// touching the Redis other tests share.
type proxy struct {
	t      *testing.T
	addr   string
	target string

	mu    sync.Mutex
	lis   net.Listener
	conns []net.Conn
	wg    sync.WaitGroup
}

func newProxy(t *testing.T) *proxy {
	t.Helper()
	o, err := redisconn.Options(redistest.URL(), "")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{t: t, target: o.Addr}
	p.start("127.0.0.1:0")
	t.Cleanup(p.stop)
	return p
}

func (p *proxy) start(addr string) {
	p.t.Helper()
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		p.t.Fatalf("proxy listen on %s: %v", addr, err)
	}
	p.mu.Lock()
	p.lis, p.addr = lis, lis.Addr().String()
	p.mu.Unlock()
	p.wg.Go(func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", p.target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, u)
			p.mu.Unlock()
			p.wg.Go(func() { _, _ = io.Copy(u, c); u.Close() })
			p.wg.Go(func() { _, _ = io.Copy(c, u); c.Close() })
		}
	})
}

// stop closes the listener and every forwarded connection, and waits for
// the forwarding goroutines.
func (p *proxy) stop() {
	p.mu.Lock()
	if p.lis != nil {
		p.lis.Close()
		p.lis = nil
	}
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
	p.mu.Unlock()
	p.wg.Wait()
}

func TestRedisOutageAndReturn(t *testing.T) {
	before := runtime.NumGoroutine()
	p := newProxy(t)
	c, err := redisconn.New("redis://"+p.addr+"/0", "")
	if err != nil {
		t.Fatal(err)
	}
	prefix := redistest.Prefix(t)
	b := sessionbus.NewRedis(c, prefix, nil)
	pub, _ := newRedisBus(t, clientName(t), prefix) // a replica whose Redis stays up
	topic := bustest.Topic(t)
	ch := bustest.Subscribe(t, b, topic)
	if n := bustest.Publish(t, pub, topic, []byte("up")); n != 1 {
		t.Fatalf("Publish before the outage = %d, want 1", n)
	}
	bustest.Receive(t, ch)

	p.stop() // Redis "goes away" for b
	deadline := time.Now().Add(10 * time.Second)
	for b.Err() == nil {
		if time.Now().After(deadline) {
			t.Fatal("Err() = nil 10s into the outage")
		}
		time.Sleep(10 * time.Millisecond) // polling interval
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := b.Publish(ctx, topic, []byte("x")); err == nil {
		t.Fatal("Publish during the outage succeeded")
	}
	if _, err := b.Subscribe(ctx, bustest.Topic(t)); err == nil {
		t.Fatal("Subscribe during the outage succeeded")
	}
	select {
	case m, ok := <-ch:
		t.Fatalf("during the outage the subscription got %q (open %v), want it kept open and quiet", m, ok)
	default:
	}

	p.start(p.addr) // Redis is back on the same address
	deadline = time.Now().Add(15 * time.Second)
	for bustest.Publish(t, pub, topic, []byte("back")) != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("the topic is not subscribed again 15s after Redis returned (Err: %v)", b.Err())
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
	if got := bustest.Receive(t, ch); string(got) != "back" {
		t.Fatalf("after the outage received %q, want back", got)
	}
	fresh := bustest.Topic(t)
	fch := bustest.Subscribe(t, b, fresh)
	bustest.Publish(t, pub, fresh, []byte("f"))
	bustest.Receive(t, fch)

	// Nothing left running once the bus, its client and the proxy are gone.
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := pub.Close(); err != nil {
		t.Fatal(err)
	}
	c.Close()
	p.stop()
	deadline = time.Now().Add(10 * time.Second)
	for {
		n := runtime.NumGoroutine()
		if n <= before {
			break
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines after Close, %d before:\n%s", n, before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
}

// BenchmarkRedisSubscribe measures a Subscribe (SUBSCRIBE and its PING
// barrier) and its cancel, the cost a replica pays per waiting
// server-to-client request.
func BenchmarkRedisSubscribe(b *testing.B) {
	bus := sessionbus.NewRedis(redistest.Client(b, ""), redistest.Prefix(b), nil)
	defer bus.Close()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		ctx, cancel := context.WithCancel(context.Background())
		ch, err := bus.Subscribe(ctx, "bench/"+strconv.Itoa(i))
		if err != nil {
			b.Fatal(err)
		}
		cancel()
		for range ch { // until the subscription has ended
		}
	}
}
