// Package gcra keeps rate-limit buckets counted with the generic cell rate
// algorithm, as github.com/go-redis/redis_rate counts them: in Redis, shared
// by every replica (Redis), or in this process (Memory). Both planes use it:
// data planes count calls, the control plane reads and resets buckets for
// `mmctl ratelimit`.
//
// A bucket holds one number, its theoretical arrival time (TAT): the moment
// by which every call admitted so far would have been paid for at the
// limit's rate. A call is admitted when the new TAT is no further ahead of
// now than the burst allows. Unlike redis_rate's script, which counts one
// key per round trip, Allow takes every bucket of a call at once and counts
// the call in all of them only when all of them admit it (see Redis).
package gcra

import (
	"context"
	"math"
	"strings"
	"time"

	"github.com/go-redis/redis_rate/v10"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
)

// Limit is rate calls per period, bursts up to burst: redis_rate's Limit.
type Limit = redis_rate.Limit

// Bucket is one bucket to count a call in. Build it with NewBucket; Key
// may be set per call, the rest is fixed by the limit.
type Bucket struct {
	Key   string
	Limit Limit
	// Shadow buckets are counted when they admit (and the other buckets
	// admit), but their refusal refuses nothing.
	Shadow bool
	// args are the bucket's ARGV for the Redis script, boxed once.
	args [4]any
}

// NewBucket returns a bucket for limit, with Key and Shadow to be set.
func NewBucket(limit Limit, shadow bool) Bucket {
	b := Bucket{Limit: limit, Shadow: shadow}
	sh := 0
	if shadow {
		sh = 1
	}
	b.args = [4]any{limit.Burst, limit.Rate, limit.Period.Seconds(), sh}
	return b
}

// Result is one bucket's state after Allow or Peek.
type Result struct {
	// Allowed: the bucket admitted the call (for Peek: would admit one).
	Allowed bool
	// Remaining is how many calls the bucket would admit at once now.
	Remaining int
	// RetryAfter is how long until the bucket admits a call (0 when it does).
	RetryAfter time.Duration
	// ResetAfter is how long until the bucket is full again.
	ResetAfter time.Duration
}

// Store counts calls in buckets.
type Store interface {
	// Allow counts one call in each of buckets if every bucket that is not
	// a shadow admits it; a refused call is counted in none. res (as long as
	// buckets) gets each bucket's state. It reports whether the call is
	// admitted.
	Allow(ctx context.Context, buckets []Bucket, res []Result) (bool, error)
	// Peek returns a bucket's state without counting a call.
	Peek(ctx context.Context, key string, limit Limit) (Result, error)
	// Reset empties buckets: their next calls have the whole burst.
	Reset(ctx context.Context, keys ...string) error
}

// KeyPrefix starts every bucket key, as in redis_rate.
const KeyPrefix = "rate:"

// Key returns the bucket key of policy for one subject at endpoint, under
// prefix (each deployment sharing a Redis its own). The hash tag holds the
// prefix and the endpoint, so that the buckets of one call, which all belong
// to its endpoint, live in one Redis Cluster slot and take one round trip.
// subject says whose calls share the bucket (see Subject).
func Key(prefix, endpoint, policy, subject string) string {
	var b strings.Builder
	b.Grow(len(KeyPrefix) + len(prefix) + len(endpoint) + len(policy) + len(subject) + 4)
	b.WriteString(KeyPrefix)
	b.WriteByte('{')
	b.WriteString(prefix)
	b.WriteString(endpoint)
	b.WriteString("}:")
	b.WriteString(policy)
	b.WriteByte(':')
	b.WriteString(subject)
	return b.String()
}

// Subjects of a bucket key: kind, then the value.
const (
	SubjectPrincipal = "p="
	SubjectAPIKey    = "k="
	SubjectClientIP  = "ip="
	SubjectGlobal    = "all"
)

// epoch2017 is redis_rate's epoch: times are seconds since 2017-01-01, so
// that a float64 keeps microseconds.
const epoch2017 = 1483228800

// gcra is the algorithm of redis_rate's allowN for one bucket at now
// (seconds since epoch2017), with tat the stored TAT (0 when none), for a
// call of the given cost. It returns the bucket's state and the new
// TAT to store when the call is admitted and counted.
func gcra(tat, now float64, l Limit, cost float64) (Result, float64) {
	emission := l.Period.Seconds() / float64(l.Rate)
	burstOffset := emission * float64(l.Burst)
	tat = math.Max(tat, now)
	newTAT := tat + emission*cost
	diff := now - (newTAT - burstOffset)
	remaining := diff / emission
	if remaining < 0 {
		return Result{RetryAfter: seconds(-diff), ResetAfter: seconds(tat - now)}, 0
	}
	return Result{Allowed: true, Remaining: int(remaining), ResetAfter: seconds(newTAT - now)}, newTAT
}

func seconds(f float64) time.Duration {
	return time.Duration(f * float64(time.Second))
}

// peeked turns the result of counting one call into the state of the bucket
// before it: the calls it would admit at once, and when it is full.
func peeked(r Result, l Limit) Result {
	if !r.Allowed {
		return r
	}
	r.Remaining++
	r.ResetAfter = max(r.ResetAfter-seconds(l.Period.Seconds()/float64(l.Rate)), 0)
	return r
}

// DefaultPeriod is a policy's period when it sets none.
const DefaultPeriod = time.Minute

// PolicyLimit is a policy's GCRA limit: its rate per period (a minute when
// unset), bursts of its burst (its rate when unset).
func PolicyLimit(p *metamcpv1.RateLimitPolicy) Limit {
	period := DefaultPeriod
	if d := p.GetPeriod(); d != nil && d.AsDuration() > 0 {
		period = d.AsDuration()
	}
	burst := p.GetRate()
	if p.Burst != nil {
		burst = p.GetBurst()
	}
	return Limit{Rate: int(p.GetRate()), Burst: int(burst), Period: period}
}

// Subject returns whose bucket a call counts in for a policy's key: the
// principal, the API key (the principal for a caller without one), the
// client address, or everyone.
func Subject(key metamcpv1.RateLimitKey, principal, keyID, clientIP string) string {
	switch key {
	case metamcpv1.RateLimitKey_RATE_LIMIT_KEY_API_KEY:
		if keyID != "" {
			return SubjectAPIKey + keyID
		}
	case metamcpv1.RateLimitKey_RATE_LIMIT_KEY_CLIENT_IP:
		return SubjectClientIP + clientIP
	case metamcpv1.RateLimitKey_RATE_LIMIT_KEY_GLOBAL:
		return SubjectGlobal
	}
	return SubjectPrincipal + principal
}
