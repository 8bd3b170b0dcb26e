package gateway

import (
	"context"
	"time"
)

// A client's DELETE ends its session on the replica that receives it; the
// others hear of it on the session bus (endedTopic, which every replica
// subscribes to for its life) and refuse the id from then on, for as long
// as an ended session is remembered (one idle TTL). Each replica confirms
// on endedAckTopic once it has ended the session, and the DELETE is
// answered only when every replica the announcement reached confirmed (or
// after endedAckTimeout): behind a round-robin balancer the client's next
// request, on whichever replica, finds the session ended. Delivery is at
// most once: a replica that misses it (Redis away) still opens the id,
// whose per_client upstream sessions were ended, so it starts fresh ones.
// Idle sweeps are not announced: a session idle on one replica may be busy
// on another.

// endedTopic carries the sids of sessions their clients ended (DELETE).
const endedTopic = "mm/ended"

// endedAckTopic is where replicas confirm that they ended session sid.
func endedAckTopic(sid string) string { return "mm/ended-ack/" + sid }

// endedAckTimeout bounds how long a DELETE waits for the replicas'
// confirmations (a replica that lost the announcement, or one of a version
// that does not confirm, costs that much once).
const endedAckTimeout = time.Second

// announceEnded tells every replica that the client ended session sid, and
// returns once each replica that got the announcement has ended it there.
func (g *Gateway) announceEnded(sid string) {
	ctx, cancel := context.WithTimeout(g.ctx, endedAckTimeout)
	defer cancel()
	// Subscribed before the announcement goes out: no confirmation is
	// missed. Without it the announcement still goes, unconfirmed.
	acks, err := g.bus.Subscribe(ctx, endedAckTopic(sid))
	if err != nil {
		g.log.Debug("could not wait for other replicas to end a deleted session", "err", err)
	}
	n, err := g.bus.Publish(ctx, endedTopic, []byte(sid))
	if err != nil {
		g.log.Debug("could not tell other replicas that a session was deleted", "err", err)
		return
	}
	if acks == nil {
		return
	}
	// n counts this replica too (it subscribes to endedTopic like the
	// others, and confirms like them).
	for ; n > 0; n-- {
		select {
		case _, ok := <-acks:
			if ok {
				continue
			}
		case <-ctx.Done():
		}
		g.log.Debug("not every replica confirmed the end of a deleted session in time", "unconfirmed", n)
		return
	}
}

// ackEnded confirms to the replica that announced it that session sid
// ended here.
func (g *Gateway) ackEnded(sid string) {
	ctx, cancel := context.WithTimeout(g.ctx, endedAckTimeout)
	defer cancel()
	if _, err := g.bus.Publish(ctx, endedAckTopic(sid), nil); err != nil {
		g.log.Debug("could not confirm the end of a deleted session", "err", err)
	}
}

// watchEnded ends here the sessions other replicas announce ended, until
// Close.
func (g *Gateway) watchEnded() {
	defer g.wg.Done()
	g.watchTopic(endedTopic, func() { g.endedSubscribed.Do(func() { close(g.endedReady) }) }, func(msg []byte) {
		sid := string(msg)
		g.endedElsewhere(sid)
		g.ackEnded(sid)
	})
}

// watchTopic hands topic's messages to handle, one at a time, until Close;
// subscribed is called each time the subscription is (again) in place. It
// (re)subscribes with backoff while the bus refuses.
func (g *Gateway) watchTopic(topic string, subscribed func(), handle func([]byte)) {
	backoff := 500 * time.Millisecond
	for g.ctx.Err() == nil {
		ch, err := g.bus.Subscribe(g.ctx, topic)
		if err != nil {
			g.log.Debug("could not subscribe to a session bus topic; retrying", "topic", topic, "err", err, "retry_in", backoff)
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
		subscribed()
		for msg := range ch {
			handle(msg)
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
