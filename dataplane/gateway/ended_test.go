package gateway

import (
	"bytes"
	"context"
	"net/http"
	"testing"
	"time"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/dataplane/redisconn/redistest"
	"github.com/metamcp/metamcp/dataplane/sessionbus"
)

// slowEndedBus is a replica's bus that hands it the announcements of ended
// sessions late, as a replica busy elsewhere or a slow link would.
type slowEndedBus struct {
	sessionbus.Bus
	delay time.Duration
}

func (b slowEndedBus) Subscribe(ctx context.Context, topic string) (<-chan []byte, error) {
	ch, err := b.Bus.Subscribe(ctx, topic)
	if err != nil || topic != endedTopic {
		return ch, err
	}
	out := make(chan []byte, sessionbus.SubscriberBuffer)
	go func() {
		defer close(out)
		for msg := range ch {
			t := time.NewTimer(b.delay)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return
			}
			out <- msg
		}
	}()
	return out, nil
}

// TestDeleteAnsweredOnceEndedEverywhere: replicas sharing a Redis session
// bus, one of which hears of ended sessions late. A DELETE on one replica
// is answered only once every replica ended the session: a request right
// after it finds the session gone on the replica that had served it and
// on one that never saw it.
func TestDeleteAnsweredOnceEndedEverywhere(t *testing.T) {
	cfg := testConfig()
	cfg.SessionKeys = &metamcpv1.SessionKeys{Current: bytes.Repeat([]byte{7}, 32)}
	prefix := redistest.Prefix(t)
	replica := func(name string, delay time.Duration) *harness {
		var bus sessionbus.Bus = sessionbus.NewRedis(redistest.Client(t, "gateway-test-"+name), prefix, nil)
		t.Cleanup(func() { _ = bus.Close() })
		if delay > 0 {
			bus = slowEndedBus{bus, delay}
		}
		h := newHarness(t, cfg, nil, func(o *Options) { o.Bus = bus })
		<-h.gw.endedReady
		return h
	}
	r1 := replica("one", 0)
	r2 := replica("two", 300*time.Millisecond)
	r3 := replica("three", 300*time.Millisecond)
	list, withSID := openListDelete(t, r1, r2)
	for i, h := range []*harness{r2, r3, r1} {
		if status, _, body := post(t, h.url("main", "mcp"), list, withSID); status != http.StatusNotFound {
			t.Errorf("replica %d right after the DELETE: %d %s, want 404", []int{2, 3, 1}[i], status, body)
		}
	}
}

// openListDelete opens a session on r1, lists tools with it on r2 (which so
// comes to hold it) and ends it with a DELETE on r1. It returns the list
// request and the headers that carry the ended session.
func openListDelete(t *testing.T, r1, r2 *harness) (list string, withSID map[string]string) {
	t.Helper()
	auth := map[string]string{"Authorization": "Bearer " + keyAlice}
	status, hdr, body := post(t, r1.url("main", "mcp"), initBody, auth)
	sid := hdr.Get(headerSessionID)
	if status != 200 || sid == "" {
		t.Fatalf("initialize: %d %s", status, body)
	}
	list = `{"jsonrpc":"2.0","id":2,"method":"tools/list"}`
	withSID = map[string]string{"Authorization": "Bearer " + keyAlice, headerSessionID: sid}
	if status, _, body := post(t, r2.url("main", "mcp"), list, withSID); status != 200 {
		t.Fatalf("tools/list on the second replica: %d %s", status, body)
	}
	if status := deleteMCP(t, r1.url("main", "mcp"), withSID); status != http.StatusNoContent {
		t.Fatalf("DELETE: %d", status)
	}
	return list, withSID
}
