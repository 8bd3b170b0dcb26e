package revwatch

import (
	"context"
	"testing"
	"time"
)

func recv(t *testing.T, ch <-chan int64) (int64, bool) {
	t.Helper()
	select {
	case v, ok := <-ch:
		return v, ok
	case <-time.After(10 * time.Second):
		t.Fatal("nothing received within 10s")
		return 0, false
	}
}

func empty(t *testing.T, ch <-chan int64) {
	t.Helper()
	select {
	case v, ok := <-ch:
		t.Fatalf("unexpected receive %d (open %v)", v, ok)
	default:
	}
}

func TestHub(t *testing.T) {
	h := New()
	ctx := t.Context()
	ch := h.Watch(ctx)
	// Nothing is known yet: a local commit alone is not sent.
	h.Committed(3)
	empty(t, ch)
	h.Observe(2) // older than the commit seen: the newest wins
	if v, _ := recv(t, ch); v != 3 {
		t.Fatalf("first value %d, want 3", v)
	}
	// Coalescing: only the newest is kept.
	h.Committed(4)
	h.Observe(5)
	h.Committed(6)
	if v, _ := recv(t, ch); v != 6 {
		t.Fatalf("got %d, want 6", v)
	}
	empty(t, ch)
	// Old or repeated revisions are not sent.
	h.Observe(6)
	h.Observe(5)
	empty(t, ch)

	// A new watcher gets the current revision at once.
	late := h.Watch(ctx)
	if v, _ := recv(t, late); v != 6 {
		t.Fatalf("late watcher got %d, want 6", v)
	}

	cctx, cancel := context.WithCancel(ctx)
	c := h.Watch(cctx)
	cancel()
	for {
		if _, ok := recv(t, c); !ok {
			break
		}
	}
	if n := h.Watchers(); n != 2 {
		t.Errorf("Watchers = %d after a cancel, want 2", n)
	}

	h.Close()
	for _, w := range []<-chan int64{ch, late, h.Watch(ctx)} {
		for {
			if _, ok := recv(t, w); !ok {
				break
			}
		}
	}
	h.Observe(7) // no watchers, no panic
}
