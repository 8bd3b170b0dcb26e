package gateway

import (
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// TestEndedSessionOpensNoUpstream: once a session has ended, work that
// outlived it cannot open or adopt a per_client upstream session for it.
func TestEndedSessionOpensNoUpstream(t *testing.T) {
	lh := newLiveHarness(t)
	gamma := lh.addPerClientGamma(t)
	ctx := testCtx(t)
	cs := lh.connect(t, "pc", keyBob, "2025-11-25")
	sid := cs.ID()
	if _, err := lh.gw.pool.Session(ctx, "gamma", sid); err != nil {
		t.Fatalf("per_client session of a live session: %v", err)
	}
	if err := cs.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the upstream session ended with the downstream one", func() bool { return countSessions(gamma.s) == 0 })
	_, err := lh.gw.pool.Session(ctx, "gamma", sid)
	if err == nil || !strings.Contains(err.Error(), "initialize a new session") {
		t.Fatalf("per_client session of an ended session: %v, want a refusal", err)
	}
	if n := countSessions(gamma.s); n != 0 {
		t.Errorf("the upstream has %d sessions after the downstream session ended", n)
	}
}

func countSessions(s *mcp.Server) int {
	n := 0
	for range s.Sessions() {
		n++
	}
	return n
}
