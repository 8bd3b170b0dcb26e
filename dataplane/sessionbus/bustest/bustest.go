// Package bustest is the conformance suite every sessionbus.Bus passes: the
// semantics the gateway relies on (delivery to every subscriber, counts per
// replica, nothing after a subscription ends, slow subscribers drop instead of
// blocking, Close), checked the same way for each implementation.
package bustest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/metamcp/metamcp/dataplane/sessionbus"
)

// wait bounds every wait of the suite; it is generous, a passing run never
// approaches it.
const wait = 10 * time.Second

// Run runs the suite. newBus returns a fresh bus for one subtest (its
// cleanup belongs to newBus); topics are unique per subtest, so buses that
// share a backend may be handed out.
func Run(t *testing.T, newBus func(t *testing.T) sessionbus.Bus) {
	t.Run("DeliversToEverySubscriber", func(t *testing.T) { testDelivers(t, newBus(t)) })
	t.Run("NobodyListens", func(t *testing.T) { testNobody(t, newBus(t)) })
	t.Run("InPlaceWhenSubscribeReturns", func(t *testing.T) { testInPlace(t, newBus(t)) })
	t.Run("OnlyMessagesFromSubscribeOn", func(t *testing.T) { testFromSubscribeOn(t, newBus(t)) })
	t.Run("CancelEndsSubscription", func(t *testing.T) { testCancel(t, newBus(t)) })
	t.Run("MessageIsCopied", func(t *testing.T) { testCopied(t, newBus(t)) })
	t.Run("SlowSubscriberDrops", func(t *testing.T) { testSlow(t, newBus(t)) })
	t.Run("ConcurrentSubscribers", func(t *testing.T) { testConcurrent(t, newBus(t)) })
	t.Run("SubscribeWithEndedContext", func(t *testing.T) { testEndedContext(t, newBus(t)) })
	t.Run("Close", func(t *testing.T) { testClose(t, newBus(t)) })
}

var topicSeq atomic.Uint64

// Topic returns a topic no other test uses.
func Topic(t *testing.T) string {
	return fmt.Sprintf("bustest/%s/%d/%d", t.Name(), time.Now().UnixNano(), topicSeq.Add(1))
}

// Subscribe subscribes or fails the test; the subscription ends with the test.
func Subscribe(t *testing.T, b sessionbus.Bus, topic string) <-chan []byte {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ch, err := b.Subscribe(ctx, topic)
	if err != nil {
		t.Fatalf("Subscribe(%q): %v", topic, err)
	}
	return ch
}

// Publish publishes or fails the test and returns the count.
func Publish(t *testing.T, b sessionbus.Bus, topic string, msg []byte) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	n, err := b.Publish(ctx, topic, msg)
	if err != nil {
		t.Fatalf("Publish(%q): %v", topic, err)
	}
	return n
}

// Receive returns the next message on ch, failing the test if none arrives
// in time or ch is closed.
func Receive(t *testing.T, ch <-chan []byte) []byte {
	t.Helper()
	select {
	case m, ok := <-ch:
		if !ok {
			t.Fatal("subscription channel closed, want a message")
		}
		return m
	case <-time.After(wait):
		t.Fatalf("no message within %s", wait)
		return nil
	}
}

// WantClosed fails the test unless ch is closed in time (messages still
// buffered are skipped).
func WantClosed(t *testing.T, ch <-chan []byte) {
	t.Helper()
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-timer.C:
			t.Fatalf("subscription channel still open after %s", wait)
		}
	}
}

// PollCount publishes msg on topic until Publish returns want, failing the
// test if it does not within the suite's bound. Removing a subscription may
// take a round trip to the backend after its context ends.
func PollCount(t *testing.T, b sessionbus.Bus, topic string, msg []byte, want int) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		n := Publish(t, b, topic, msg)
		if n == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Publish(%q) = %d after %s, want %d", topic, n, wait, want)
		}
		time.Sleep(5 * time.Millisecond) // polling interval, not synchronisation
	}
}

func testDelivers(t *testing.T, b sessionbus.Bus) {
	topic, other := Topic(t), Topic(t)
	subs := []<-chan []byte{Subscribe(t, b, topic), Subscribe(t, b, topic), Subscribe(t, b, topic)}
	otherSub := Subscribe(t, b, other)
	msgs := [][]byte{[]byte(`{"jsonrpc":"2.0","method":"a"}`), {}, bytes.Repeat([]byte{0, 0xff, '\n'}, 10000)}
	for _, m := range msgs {
		if n := Publish(t, b, topic, m); n != 1 {
			t.Fatalf("Publish to 3 subscribers in one process = %d, want 1 (one replica)", n)
		}
	}
	for i, ch := range subs {
		for j, want := range msgs {
			if got := Receive(t, ch); !bytes.Equal(got, want) {
				t.Fatalf("subscriber %d message %d = %.40q, want %.40q", i, j, got, want)
			}
		}
	}
	// The other topic got none of them: its first message is the marker.
	Publish(t, b, other, []byte("marker"))
	if got := Receive(t, otherSub); string(got) != "marker" {
		t.Fatalf("other topic received %q, want only its own marker", got)
	}
}

func testNobody(t *testing.T, b sessionbus.Bus) {
	if n := Publish(t, b, Topic(t), []byte("x")); n != 0 {
		t.Fatalf("Publish with no subscriber = %d, want 0", n)
	}
}

func testInPlace(t *testing.T, b sessionbus.Bus) {
	// Many fresh topics: each message is published right after Subscribe
	// returns and must arrive.
	for i := range 50 {
		topic := Topic(t)
		ctx, cancel := context.WithCancel(context.Background())
		ch, err := b.Subscribe(ctx, topic)
		if err != nil {
			cancel()
			t.Fatalf("Subscribe #%d: %v", i, err)
		}
		msg := fmt.Appendf(nil, "m%d", i)
		if n := Publish(t, b, topic, msg); n != 1 {
			cancel()
			t.Fatalf("Publish right after Subscribe #%d returned = %d, want 1", i, n)
		}
		if got := Receive(t, ch); !bytes.Equal(got, msg) {
			cancel()
			t.Fatalf("received %q, want %q", got, msg)
		}
		cancel()
	}
}

func testFromSubscribeOn(t *testing.T, b sessionbus.Bus) {
	// A publisher sends numbered messages without pause while subscribers
	// join one after another, each on a topic whose earlier subscriber just
	// left. A subscriber must see no message published before its
	// Subscribe was called (one still in flight to an earlier subscriber
	// included) and every message published after it returned, in order.
	topic := Topic(t)
	var started, published atomic.Int64 // messages whose Publish began / returned
	stop := make(chan struct{})
	pubErr := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 4*wait)
		defer cancel()
		for i := int64(1); ; i++ {
			select {
			case <-stop:
				pubErr <- nil
				return
			default:
			}
			started.Store(i)
			if _, err := b.Publish(ctx, topic, fmt.Append(nil, i)); err != nil {
				pubErr <- err
				return
			}
			published.Store(i)
		}
	}()
	defer func() {
		close(stop)
		if err := <-pubErr; err != nil {
			t.Errorf("publisher: %v", err)
		}
	}()
	for round := range 20 {
		ctx, cancel := context.WithCancel(context.Background())
		before := published.Load()
		ch, err := b.Subscribe(ctx, topic)
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		after := started.Load()
		// Wait for a few messages sent wholly after Subscribe returned.
		var last int64
		for last < after+3 {
			var n int64
			m := Receive(t, ch)
			if _, err := fmt.Sscan(string(m), &n); err != nil {
				cancel()
				t.Fatalf("round %d: message %q: %v", round, m, err)
			}
			switch {
			case n <= before:
				cancel()
				t.Fatalf("round %d: received message %d, published before Subscribe was called (last then: %d)", round, n, before)
			case last > after && n != last+1:
				cancel()
				t.Fatalf("round %d: received %d after %d: messages published after Subscribe returned were lost or reordered", round, n, last)
			case last != 0 && n <= last:
				cancel()
				t.Fatalf("round %d: received %d after %d: out of order", round, n, last)
			}
			last = n
		}
		cancel()
		WantClosed(t, ch)
	}
}

func testCancel(t *testing.T, b sessionbus.Bus) {
	topic := Topic(t)
	stay := Subscribe(t, b, topic)
	ctx, cancel := context.WithCancel(context.Background())
	gone, err := b.Subscribe(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	Publish(t, b, topic, []byte("before"))
	if got := Receive(t, gone); string(got) != "before" {
		t.Fatalf("got %q, want before", got)
	}
	cancel()
	WantClosed(t, gone)
	// The remaining subscriber still receives, in order.
	Publish(t, b, topic, []byte("after"))
	for _, want := range []string{"before", "after"} {
		if got := Receive(t, stay); string(got) != want {
			t.Fatalf("remaining subscriber got %q, want %q", got, want)
		}
	}

	// The last subscriber leaving makes the topic silent.
	solo := Topic(t)
	ctx2, cancel2 := context.WithCancel(context.Background())
	ch, err := b.Subscribe(ctx2, solo)
	if err != nil {
		t.Fatal(err)
	}
	cancel2()
	WantClosed(t, ch)
	PollCount(t, b, solo, []byte("late"), 0)
}

func testCopied(t *testing.T, b sessionbus.Bus) {
	topic := Topic(t)
	a, c := Subscribe(t, b, topic), Subscribe(t, b, topic)
	msg := []byte("original")
	Publish(t, b, topic, msg)
	copy(msg, "XXXXXXXX")
	ga := Receive(t, a)
	if string(ga) != "original" {
		t.Fatalf("received %q after the publisher reused its buffer, want original", ga)
	}
	ga[0] = 'Y' // one subscriber's change is not another's
	if gc := Receive(t, c); string(gc) != "original" {
		t.Fatalf("second subscriber received %q, want original", gc)
	}
}

func testSlow(t *testing.T, b sessionbus.Bus) {
	topic := Topic(t)
	slow := Subscribe(t, b, topic) // never read until the end
	fast := Subscribe(t, b, topic)
	total := sessionbus.SubscriberBuffer + 50
	done := make(chan error, 1)
	go func() {
		// Each message is read before the next is published, so the fast
		// subscriber never falls behind and must see all of them, while the
		// slow one's buffer overflows. Publish must never block on it.
		ctx, cancel := context.WithTimeout(context.Background(), 4*wait)
		defer cancel()
		for i := range total {
			if _, err := b.Publish(ctx, topic, fmt.Appendf(nil, "%d", i)); err != nil {
				done <- fmt.Errorf("publish %d: %w", i, err)
				return
			}
			select {
			case got := <-fast:
				if want := fmt.Sprint(i); string(got) != want {
					done <- fmt.Errorf("fast subscriber got %q, want %q", got, want)
					return
				}
			case <-ctx.Done():
				done <- fmt.Errorf("fast subscriber: message %d did not arrive (is delivery blocked by the slow subscriber?)", i)
				return
			}
		}
		// The fast subscriber getting a message does not mean the slow
		// one was offered it yet (a bus may deliver to them in any
		// order). Messages are delivered in order, so once a fence
		// reaches the fast subscriber, every message before it has been
		// offered to the slow one too (the fence itself is dropped there).
		if _, err := b.Publish(ctx, topic, []byte("fence")); err != nil {
			done <- fmt.Errorf("publish the fence: %w", err)
			return
		}
		select {
		case <-fast:
		case <-ctx.Done():
			done <- errors.New("fast subscriber: the fence did not arrive")
			return
		}
		done <- nil
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// The slow subscriber kept the oldest SubscriberBuffer messages.
	for i := range sessionbus.SubscriberBuffer {
		select {
		case got := <-slow:
			if want := fmt.Sprint(i); string(got) != want {
				t.Fatalf("slow subscriber message %d = %q, want %q", i, got, want)
			}
		default:
			t.Fatalf("slow subscriber holds %d messages, want %d", i, sessionbus.SubscriberBuffer)
		}
	}
	select {
	case got := <-slow:
		t.Fatalf("slow subscriber holds more than %d messages (next %q): overflow not dropped", sessionbus.SubscriberBuffer, got)
	default:
	}
}

func testConcurrent(t *testing.T, b sessionbus.Bus) {
	// Subscribers come and go on a few shared topics while others publish;
	// afterwards every topic behaves as if it were fresh.
	topics := []string{Topic(t), Topic(t), Topic(t)}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := range 12 {
		wg.Go(func() {
			for i := range 20 {
				topic := topics[(g+i)%len(topics)]
				ctx, cancel := context.WithCancel(context.Background())
				ch, err := b.Subscribe(ctx, topic)
				if err != nil {
					cancel()
					errs <- err
					return
				}
				n, err := b.Publish(ctx, topic, []byte("c"))
				if err == nil && n != 1 {
					err = fmt.Errorf("publish while subscribed = %d, want 1", n)
				}
				if err != nil {
					cancel()
					errs <- err
					return
				}
				cancel()
				for range ch { // drains until the channel closes
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for _, topic := range topics {
		PollCount(t, b, topic, []byte("x"), 0)
		ch := Subscribe(t, b, topic)
		if n := Publish(t, b, topic, []byte("fresh")); n != 1 {
			t.Fatalf("Publish after churn = %d, want 1", n)
		}
		if got := Receive(t, ch); string(got) != "fresh" {
			t.Fatalf("after churn received %q, want fresh", got)
		}
	}
}

func testEndedContext(t *testing.T, b sessionbus.Bus) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := b.Subscribe(ctx, Topic(t)); !errors.Is(err, context.Canceled) {
		t.Fatalf("Subscribe with an ended context: err = %v, want context.Canceled", err)
	}
}

func testClose(t *testing.T, b sessionbus.Bus) {
	topic := Topic(t)
	ch := Subscribe(t, b, topic)
	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	WantClosed(t, ch)
	if _, err := b.Publish(context.Background(), topic, []byte("x")); !errors.Is(err, sessionbus.ErrClosed) {
		t.Fatalf("Publish after Close: err = %v, want ErrClosed", err)
	}
	if _, err := b.Subscribe(context.Background(), topic); !errors.Is(err, sessionbus.ErrClosed) {
		t.Fatalf("Subscribe after Close: err = %v, want ErrClosed", err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}
