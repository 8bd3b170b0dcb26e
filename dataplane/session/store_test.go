package session

import (
	"slices"
	"testing"
	"time"
)

// TestSessionsBusy: a session serving a request (Acquire) is not
// expired however old its last use; Release marks it used and says whether
// it is still live.
func TestSessionsBusy(t *testing.T) {
	m := NewMemory()
	busy, err := m.Create(&Info{Endpoint: "e"})
	if err != nil {
		t.Fatal(err)
	}
	idle, err := m.Create(&Info{Endpoint: "e"})
	if err != nil {
		t.Fatal(err)
	}
	if n := m.Len(); n != 2 {
		t.Fatalf("Len = %d, want 2", n)
	}
	if info, ok := m.Acquire(busy); !ok || info.Endpoint != "e" {
		t.Fatalf("Acquire = %v %v", info, ok)
	}
	// Both are older than a cutoff in the future; only the idle one goes.
	if got := m.Expired(time.Now().Add(time.Hour)); !slices.Equal(got, []string{idle}) {
		t.Errorf("Expired = %v, want only %q", got, idle)
	}
	if !m.Release(busy) {
		t.Error("Release of a live session reported it ended")
	}
	if got := m.Expired(time.Now().Add(-time.Hour)); len(got) != 0 {
		t.Errorf("Expired just after Release = %v, want none (Release marks it used)", got)
	}
	if got := m.Expired(time.Now().Add(time.Hour)); !slices.Equal(got, []string{busy}) {
		t.Errorf("Expired after Release = %v, want %q", got, busy)
	}
	if m.Release(busy) {
		t.Error("Release of an ended session reported it live")
	}
	if _, ok := m.Acquire(busy); ok {
		t.Error("Acquire of an ended session succeeded")
	}
	if n := m.Len(); n != 0 {
		t.Errorf("Len = %d, want 0", n)
	}
}
