//go:build unix

package dataplane

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/metamcp/metamcp/dataplane/redisconn/redistest"
	"github.com/metamcp/metamcp/dataplane/syncclient"
)

// TestFrozenRedisIsDegraded freezes a private Redis (SIGSTOP): its sockets
// stay open, so the bus's subscription looks up, but /readyz's bounded ping
// notices, and notices again when it thaws.
func TestFrozenRedisIsDegraded(t *testing.T) {
	rds := redistest.StartPrivate(t)
	_, base, _ := startServer(t, Options{
		Sync:  syncclient.Options{NodeID: "dp-frozen"},
		Redis: RedisOptions{URL: rds.URL()},
	})
	pollReadyz(t, base, "redis: ok")

	if err := rds.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	body := pollReadyz(t, base, "redis: degraded (no answer to a ping within 1s)")
	if !strings.Contains(body, "ready: revision 1") {
		t.Fatalf("/readyz = %q, want ready at revision 1", body)
	}
	t.Logf("a frozen Redis read degraded after %v", time.Since(start).Round(time.Millisecond))

	if err := rds.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	pollReadyz(t, base, "redis: ok")
}
