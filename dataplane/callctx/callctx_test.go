package callctx

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// wait fails the test unless ch closes within a bound far above any
// scheduling delay; what is tested is that it closes at all.
func wait(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: not done", what)
	}
}

func TestCancel(t *testing.T) {
	c := WithCancel(context.Background())
	if c.Err() != nil {
		t.Fatalf("Err before Cancel: %v", c.Err())
	}
	if _, ok := c.Deadline(); ok {
		t.Fatal("a deadline without one set")
	}
	done := c.Done()
	c.Cancel()
	c.Cancel() // a second Cancel does nothing
	wait(t, done, "Done after Cancel")
	if !errors.Is(c.Err(), context.Canceled) {
		t.Fatalf("Err = %v, want Canceled", c.Err())
	}
	select {
	case <-c.Done(): // made after the cancel: closed too
	default:
		t.Fatal("a Done channel made after Cancel is open")
	}
}

// TestDeadlineWithoutTimer: with no one waiting on Done, no timer runs, yet
// Err reports the deadline once it has passed, and OnCancel funcs run then.
func TestDeadlineWithoutTimer(t *testing.T) {
	c := WithTimeout(context.Background(), 20*time.Millisecond)
	defer c.Cancel()
	ran := make(chan struct{})
	c.OnCancel(func() { close(ran) })
	if dl, ok := c.Deadline(); !ok || time.Until(dl) > 20*time.Millisecond {
		t.Fatalf("Deadline = %v, %v", dl, ok)
	}
	time.Sleep(40 * time.Millisecond)
	c.mu.Lock()
	timer := c.timer
	c.mu.Unlock()
	if timer != nil {
		t.Fatal("a timer started though no one waits on Done")
	}
	select {
	case <-ran:
		t.Fatal("OnCancel ran at the deadline without a timer")
	default:
	}
	if !errors.Is(c.Err(), context.DeadlineExceeded) {
		t.Fatalf("Err = %v, want DeadlineExceeded", c.Err())
	}
	wait(t, ran, "OnCancel after Err found the deadline passed")
	wait(t, c.Done(), "Done after the deadline")
}

// TestDeadlineTimer: Done, and AfterFunc, start the timer.
func TestDeadlineTimer(t *testing.T) {
	c := WithTimeout(context.Background(), 10*time.Millisecond)
	defer c.Cancel()
	wait(t, c.Done(), "Done at the deadline")
	if !errors.Is(c.Err(), context.DeadlineExceeded) {
		t.Fatalf("Err = %v", c.Err())
	}

	c2 := WithTimeout(context.Background(), 10*time.Millisecond)
	defer c2.Cancel()
	ran := make(chan struct{})
	c2.AfterFunc(func() { close(ran) })
	wait(t, ran, "AfterFunc at the deadline")

	// A deadline already past: done at once.
	c3 := WithDeadline(context.Background(), time.Now().Add(-time.Second))
	wait(t, c3.Done(), "Done of a past deadline")
}

func TestStop(t *testing.T) {
	c := WithCancel(context.Background())
	var stopped atomic.Bool
	stop := c.OnCancel(func() { stopped.Store(true) })
	left := make(chan struct{})
	stop2 := c.AfterFunc(func() { close(left) })
	if !stop() || stop() {
		t.Fatal("stop: want true once, then false")
	}
	c.Cancel()
	wait(t, left, "the func left registered")
	if stop2() {
		t.Fatal("stop after the func was started reported true")
	}
	if stopped.Load() {
		t.Fatal("a stopped func ran")
	}
	// Registering on a done context runs the func at once.
	late := make(chan struct{})
	if c.OnCancel(func() { close(late) })() {
		t.Fatal("stop of a func registered late reported true")
	}
	wait(t, late, "a func registered after Cancel")
}

// TestParents: a child ends with its parent, whatever the parent's kind,
// and takes the earlier deadline; ending the child leaves the parent as it
// was, with nothing registered on it.
func TestParents(t *testing.T) {
	t.Run("Ctx", func(t *testing.T) {
		p := WithTimeout(context.Background(), time.Hour)
		c := WithTimeout(p, 2*time.Hour)
		if dl, _ := c.Deadline(); !dl.Equal(p.deadline) {
			t.Fatalf("child deadline %v, parent's %v", dl, p.deadline)
		}
		p.Cancel()
		// A Ctx cancels its Ctx children in line, as the context package does.
		if !errors.Is(c.Err(), context.Canceled) {
			t.Fatalf("child Err = %v", c.Err())
		}
	})
	t.Run("Ctx child ends first", func(t *testing.T) {
		p := WithCancel(context.Background())
		for range 10 {
			c := WithTimeout(p, time.Minute)
			c.OnCancel(func() {})
			c.Cancel()
		}
		p.mu.Lock()
		n := len(p.regs)
		p.mu.Unlock()
		if n != 0 {
			t.Fatalf("%d registrations left on the parent", n)
		}
		if p.Err() != nil {
			t.Fatalf("the parent ended with its child: %v", p.Err())
		}
	})
	t.Run("std", func(t *testing.T) {
		p, cancel := context.WithCancel(context.Background())
		c := WithTimeout(p, time.Hour)
		cancel()
		wait(t, c.Done(), "child of a cancelled context.WithCancel")
		if !errors.Is(c.Err(), context.Canceled) {
			t.Fatalf("child Err = %v", c.Err())
		}
	})
	t.Run("std deadline", func(t *testing.T) {
		p, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
		defer cancel()
		c := WithTimeout(p, time.Hour)
		wait(t, c.Done(), "child at its parent's deadline")
		if !errors.Is(c.Err(), context.DeadlineExceeded) {
			t.Fatalf("child Err = %v", c.Err())
		}
	})
	t.Run("already done", func(t *testing.T) {
		p := WithCancel(context.Background())
		p.Cancel()
		if c := WithCancel(p); !errors.Is(c.Err(), context.Canceled) {
			t.Fatalf("child of a done Ctx: Err = %v", c.Err())
		}
		sp, cancel := context.WithCancel(context.Background())
		cancel()
		if c := WithCancel(sp); !errors.Is(c.Err(), context.Canceled) {
			t.Fatalf("child of a done context: Err = %v", c.Err())
		}
	})
	t.Run("Ctx under value contexts", func(t *testing.T) {
		type key struct{}
		p := WithCancel(context.Background())
		wrapped := struct{ context.Context }{context.WithValue(p, key{}, 1)}
		c := WithTimeout(wrapped, time.Hour)
		c.mu.Lock()
		up := c.up
		c.mu.Unlock()
		if up != p {
			t.Fatal("a Ctx under value contexts is not registered with directly")
		}
		p.Cancel()
		if !errors.Is(c.Err(), context.Canceled) {
			t.Fatalf("child Err = %v", c.Err())
		}
	})
	t.Run("Wrapper", func(t *testing.T) {
		p := WithCancel(context.Background())
		c := WithTimeout(wrapper{p}, time.Hour)
		p.mu.Lock()
		made := p.done != nil
		p.mu.Unlock()
		if made || c.up != p {
			t.Fatalf("under a Wrapper: parent's Done made %v, registered with it %v", made, c.up == p)
		}
		p.Cancel()
		if !errors.Is(c.Err(), context.Canceled) {
			t.Fatalf("child Err = %v", c.Err())
		}
	})
	t.Run("Ctx under a cancelable context", func(t *testing.T) {
		p := WithCancel(context.Background())
		defer p.Cancel()
		mid, cancel := context.WithCancel(p)
		c := WithTimeout(mid, time.Hour)
		cancel() // ends mid, not p: c must end too
		wait(t, c.Done(), "child of a cancelled context between")
		if p.Err() != nil {
			t.Fatalf("the Ctx above ended: %v", p.Err())
		}
	})
	t.Run("values", func(t *testing.T) {
		type key struct{}
		c := WithCancel(WithCancel(context.WithValue(context.Background(), key{}, "v")))
		if c.Value(key{}) != "v" {
			t.Fatal("a parent's value is lost")
		}
	})
}

// TestStdChildren: contexts the context package makes from a Ctx end with
// it, by Cancel and by its deadline.
func TestStdChildren(t *testing.T) {
	c := WithCancel(context.Background())
	child, cancel := context.WithCancel(c)
	defer cancel()
	c.Cancel()
	wait(t, child.Done(), "context.WithCancel child after Cancel")

	d := WithTimeout(context.Background(), 10*time.Millisecond)
	defer d.Cancel()
	child2, cancel2 := context.WithCancel(d)
	defer cancel2()
	wait(t, child2.Done(), "context.WithCancel child at the deadline")
	if !errors.Is(child2.Err(), context.DeadlineExceeded) {
		t.Fatalf("child Err = %v", child2.Err())
	}
}

// TestConcurrent races cancels of parents and children against new
// children and registrations (run with -race).
func TestConcurrent(t *testing.T) {
	for range 200 {
		p := WithTimeout(context.Background(), time.Millisecond)
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				c := WithCancel(p)
				stop := c.OnCancel(func() {})
				_ = c.Err()
				<-c.Done() // ends with p at its deadline
				stop()
				c.Cancel()
			})
		}
		wg.Go(func() { _ = p.Err() })
		wg.Wait()
		p.Cancel()
	}
}

// TestAllocs: the hot path's use (a request context, a call context with a
// deadline under it, one OnCancel, its stop, the cancels) stays within a
// handful of allocations, where the context package makes about thirteen.
func TestAllocs(t *testing.T) {
	f := func() {}
	n := testing.AllocsPerRun(200, func() {
		req := WithCancel(context.Background())
		call := WithTimeout(req, time.Minute)
		stop := call.OnCancel(f)
		_ = call.Err()
		stop()
		call.Cancel()
		req.Cancel()
	})
	if n > 4 {
		t.Fatalf("%.0f allocations, want at most 4", n)
	}
}

// TestAfterFuncHelper: AfterFunc registers with the Ctx that ends ctx, and
// falls back on context.AfterFunc for other contexts.
func TestAfterFuncHelper(t *testing.T) {
	p := WithCancel(context.Background())
	wrapped := struct{ context.Context }{p}
	ran := make(chan struct{})
	AfterFunc(wrapped, func() { close(ran) })
	p.mu.Lock()
	n := len(p.regs)
	p.mu.Unlock()
	if n != 1 {
		t.Fatalf("%d registrations on the Ctx, want 1", n)
	}
	p.Cancel()
	wait(t, ran, "AfterFunc on a wrapped Ctx")

	sp, cancel := context.WithCancel(context.Background())
	ran2 := make(chan struct{})
	AfterFunc(sp, func() { close(ran2) })
	cancel()
	wait(t, ran2, "AfterFunc on a context.WithCancel")
}

// wrapper is a callctx.Wrapper, as the gateway's caller context is.
type wrapper struct{ *Ctx }

func (w wrapper) CallCtx() *Ctx { return w.Ctx }
