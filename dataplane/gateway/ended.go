package gateway

import (
	"context"
	"time"
)

// A client's DELETE ends its session on the replica that receives it; the
// others hear of it on the session bus (endedTopic, which every replica
// subscribes to for its life) and refuse the id from then on, for as long
// as an ended session is remembered (one idle TTL). Delivery is at most
// once: a replica that misses it (Redis away) still opens the id, whose
// per_client upstream sessions were ended, so it starts fresh ones. Idle
// sweeps are not announced: a session idle on one replica may be busy on
// another.

// endedTopic carries the sids of sessions their clients ended (DELETE).
const endedTopic = "mm/ended"

// announceEnded tells the other replicas that the client ended session sid.
func (g *Gateway) announceEnded(sid string) {
	ctx, cancel := context.WithTimeout(g.ctx, 2*time.Second)
	defer cancel()
	if _, err := g.bus.Publish(ctx, endedTopic, []byte(sid)); err != nil {
		g.log.Debug("could not tell other replicas that a session was deleted", "err", err)
	}
}

// watchEnded ends here the sessions other replicas announce ended, until
// Close. It (re)subscribes with backoff while the bus refuses.
func (g *Gateway) watchEnded() {
	defer g.wg.Done()
	backoff := 500 * time.Millisecond
	for g.ctx.Err() == nil {
		ch, err := g.bus.Subscribe(g.ctx, endedTopic)
		if err != nil {
			g.log.Debug("could not subscribe to deleted sessions; retrying", "err", err, "retry_in", backoff)
			t := time.NewTimer(backoff)
			select {
			case <-g.ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			backoff = min(backoff*2, 30*time.Second)
			continue
		}
		backoff = 500 * time.Millisecond
		g.endedSubscribed.Do(func() { close(g.endedReady) })
		for msg := range ch {
			g.endedElsewhere(string(msg))
		}
	}
}

// endedElsewhere ends session sid here: another replica ended it on its
// client's DELETE (and told its streams and upstreams).
func (g *Gateway) endedElsewhere(sid string) {
	// End remembers the id as ended even when it never came here.
	if !g.sessions.End(sid) {
		return
	}
	g.endLocalStream(sid)
	g.forgetSessionState(sid)
	g.dropIdleClient(sid) // only what is here: the ending replica told the others
	if u, ok := g.pool.(*sessionUpstreams); ok {
		u.closeLocal(sid)
	} else if g.pool != nil {
		g.pool.CloseClient(sid)
	}
}
