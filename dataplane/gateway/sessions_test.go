package gateway

import (
	"net/http"
	"slices"
	"testing"
	"time"
)

// TestMemorySessionsBusy: a session serving a request (Acquire) is not
// expired however old its last use; Release marks it used and says whether
// it is still live.
func TestMemorySessionsBusy(t *testing.T) {
	m := NewMemorySessions()
	busy, err := m.Create(&SessionInfo{Endpoint: "e"})
	if err != nil {
		t.Fatal(err)
	}
	idle, err := m.Create(&SessionInfo{Endpoint: "e"})
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

// TestGatewaySessionsCount: Sessions counts live downstream sessions.
func TestGatewaySessionsCount(t *testing.T) {
	h := newHarness(t, testConfig(), nil, nil)
	if n := h.gw.Sessions(); n != 0 {
		t.Fatalf("Sessions before any = %d", n)
	}
	var sids []string
	for range 3 {
		_, hdr, body := post(t, h.url("main", "mcp"), initBody, map[string]string{"Authorization": "Bearer " + keyAlice})
		sid := hdr.Get(headerSessionID)
		if sid == "" {
			t.Fatalf("initialize: no session: %s", body)
		}
		sids = append(sids, sid)
	}
	if n := h.gw.Sessions(); n != 3 {
		t.Errorf("Sessions after 3 initialize = %d", n)
	}
	req, err := http.NewRequest(http.MethodDelete, h.url("main", "mcp"), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+keyAlice)
	req.Header.Set(headerSessionID, sids[0])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if n := h.gw.Sessions(); resp.StatusCode != http.StatusNoContent || n != 2 {
		t.Errorf("after DELETE (HTTP %d): Sessions = %d, want 2", resp.StatusCode, n)
	}
}
