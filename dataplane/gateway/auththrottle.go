package gateway

import (
	"sync"
	"time"
)

// DefaultAuthFailuresPerMinute is how many failed authentications a client
// address may make per minute (and at once) before it is refused outright.
const DefaultAuthFailuresPerMinute = 30

// authThrottle counts failed authentications per client address in token
// buckets, so that a flood of wrong keys or forged tokens from one address is
// refused before any credential is checked. Only failures take tokens: a
// correct credential from another address is never held back, and one from
// a throttled address is refused only while that address keeps failing.
type authThrottle struct {
	perMinute float64 // 0: off
	mu        sync.Mutex
	buckets   map[string]*authBucket
}

type authBucket struct {
	tokens float64
	last   time.Time
}

// maxAuthBuckets bounds the addresses tracked at once.
const maxAuthBuckets = 1 << 16

func newAuthThrottle(perMinute int) *authThrottle {
	return &authThrottle{perMinute: float64(perMinute), buckets: make(map[string]*authBucket)}
}

// refill brings b up to now and returns its tokens.
func (t *authThrottle) refill(b *authBucket, now time.Time) float64 {
	b.tokens += now.Sub(b.last).Minutes() * t.perMinute
	if b.tokens > t.perMinute {
		b.tokens = t.perMinute
	}
	b.last = now
	return b.tokens
}

// blocked returns how long ip must wait before its next attempt, or 0.
func (t *authThrottle) blocked(ip string, now time.Time) time.Duration {
	if t == nil || t.perMinute <= 0 {
		return 0
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	b := t.buckets[ip]
	if b == nil {
		return 0
	}
	if tok := t.refill(b, now); tok < 1 {
		return time.Duration((1 - tok) / t.perMinute * float64(time.Minute))
	}
	return 0
}

// fail takes a token from ip's bucket.
func (t *authThrottle) fail(ip string, now time.Time) {
	if t == nil || t.perMinute <= 0 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	b := t.buckets[ip]
	if b == nil {
		if len(t.buckets) >= maxAuthBuckets {
			t.sweep(now)
		}
		b = &authBucket{tokens: t.perMinute, last: now}
		t.buckets[ip] = b
	}
	t.refill(b, now)
	b.tokens--
}

// sweep forgets the addresses whose buckets are full again; when none is,
// it forgets all (an attacker with that many addresses is beyond a
// per-address throttle anyway).
func (t *authThrottle) sweep(now time.Time) {
	for ip, b := range t.buckets {
		if t.refill(b, now) >= t.perMinute {
			delete(t.buckets, ip)
		}
	}
	if len(t.buckets) >= maxAuthBuckets {
		clear(t.buckets)
	}
}
