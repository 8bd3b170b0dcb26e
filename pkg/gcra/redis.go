package gcra

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// allowAllSrc is redis_rate's allowN script (the GCRA of rwz/redis-gcra) for
// several buckets at once. redis_rate counts one key per script run, so the
// buckets of one call would take a round trip each, and a call refused by
// its second bucket would already have been counted in its first: a
// refusal by one policy would eat another's budget. This script computes
// every bucket first, with redis_rate's arithmetic on the same key layout
// (a float TAT under the key, expiring when the bucket is full again), and
// stores the new TATs only when every bucket that is not a shadow admits the
// call: one round trip, and a refused call is counted nowhere. Shadow
// buckets are counted when they admit and the call is admitted.
//
// KEYS: the buckets. ARGV: for each bucket burst, rate, period (seconds),
// shadow (0 or 1); then 1 to count the call, 0 to look only (the results are
// those of counting it, but nothing is stored).
// Returns integers only (so the reply parses into one []int64): admitted
// (0 or 1), then for each bucket allowed (0 or 1), remaining, retry_after and
// reset_after (microseconds, rounded up).
const allowAllSrc = `
-- this script has side-effects, so it requires replicate commands mode
redis.replicate_commands()

local n = #KEYS
local count = ARGV[4 * n + 1] == "1"
local cost = 1

-- redis_rate's time: seconds since 2017-01-01 with microseconds.
local jan_1_2017 = 1483228800
local now = redis.call("TIME")
now = (now[1] - jan_1_2017) + (now[2] / 1000000)

local out = {1}
local new_tats = {}
for i = 1, n do
  local burst = tonumber(ARGV[4 * i - 3])
  local rate = tonumber(ARGV[4 * i - 2])
  local period = tonumber(ARGV[4 * i - 1])
  local shadow = ARGV[4 * i] == "1"

  local emission_interval = period / rate
  local increment = emission_interval * cost
  local burst_offset = emission_interval * burst

  local tat = redis.call("GET", KEYS[i])
  if not tat then
    tat = now
  else
    tat = tonumber(tat)
  end
  tat = math.max(tat, now)

  local new_tat = tat + increment
  local allow_at = new_tat - burst_offset
  local diff = now - allow_at
  local remaining = diff / emission_interval

  if remaining < 0 then
    if not shadow then
      out[1] = 0
    end
    out[4 * i - 2] = 0
    out[4 * i - 1] = 0
    out[4 * i] = math.ceil(diff * -1000000)
    out[4 * i + 1] = math.ceil((tat - now) * 1000000)
  else
    new_tats[i] = new_tat
    out[4 * i - 2] = 1
    out[4 * i - 1] = math.floor(remaining)
    out[4 * i] = 0
    out[4 * i + 1] = math.ceil((new_tat - now) * 1000000)
  end
end

if out[1] == 1 and count then
  for i = 1, n do
    local new_tat = new_tats[i]
    if new_tat then
      local reset_after = new_tat - now
      if reset_after > 0 then
        redis.call("SET", KEYS[i], new_tat, "EX", math.ceil(reset_after))
      end
    end
  end
end
return out
`

// allowAll gives allowAllSrc's SHA1 for EVALSHA.
var allowAll = redis.NewScript(allowAllSrc)

// Redis keeps buckets in Redis: standalone, Sentinel or Cluster (the keys
// of one Allow must share a hash slot: see Key).
//
// A check is one EVALSHA. When it is the only one in flight it goes to Redis
// at once on a pooled connection. Checks that arrive while others are in
// flight ride go-redis's autopipeliner instead, which sends all the commands
// queued while the previous batch was out as one pipeline: under
// concurrency one write and one read carry many checks, and the data plane
// spends a fraction of the system calls and wake-ups per check. Each check
// still waits no longer than its own context (the limiter's timeout), and
// neither path retries a command (see NewRedisClient): a call is counted at
// most once.
type Redis struct {
	rdb redis.UniversalClient
	// ap is made when checks first overlap, so a store that never sees two
	// at once (the control plane's status and reset) runs no pipeliner
	// goroutine; nil when the client has none (then every check goes at once).
	apOnce sync.Once
	ap     *redis.AutoPipeliner

	inflight  atomic.Int32
	coalesced atomic.Int64 // checks that rode the autopipeliner (tests read it)
}

// maxQueuedChecks bounds the checks queued for the autopipeliner (memory,
// while Redis is slow): past it a check fails as if Redis had, and the
// limiter's failure modes decide.
const maxQueuedChecks = 10000

// NewRedis returns a store on rdb. Commands are not retried by the store;
// give rdb short timeouts and no retries (a retried script may count twice).
func NewRedis(rdb redis.UniversalClient) *Redis {
	return &Redis{rdb: rdb}
}

// pipeliner returns the autopipeliner, made on first use, or nil.
func (r *Redis) pipeliner() *redis.AutoPipeliner {
	r.apOnce.Do(func() {
		// The deferred face with its ordered default: one batch in flight,
		// flushed as soon as the previous one is back, no coalescing delay.
		opts := redis.DefaultAutoPipelineOptions()
		opts.MaxQueuedCommands = maxQueuedChecks
		if ap, err := r.rdb.AsyncAutoPipelineWithOptions(opts); err == nil {
			r.ap = ap
		}
	})
	return r.ap
}

// Allow implements Store in one command (EVALSHA; EVAL once after a Redis
// restart forgot the script).
func (r *Redis) Allow(ctx context.Context, buckets []Bucket, res []Result) (bool, error) {
	return r.run(ctx, buckets, res, 1)
}

func (r *Redis) run(ctx context.Context, buckets []Bucket, res []Result, count int) (bool, error) {
	n := len(buckets)
	args := make([]any, 0, 3+5*n+1)
	args = append(args, "evalsha", allowAll.Hash(), n)
	for i := range buckets {
		args = append(args, buckets[i].Key)
	}
	for i := range buckets {
		args = append(args, buckets[i].args[:]...)
	}
	args = append(args, count)

	var v []int64
	var err error
	var ap *redis.AutoPipeliner
	if r.inflight.Add(1) > 1 && count == 1 {
		ap = r.pipeliner()
	}
	if ap != nil {
		v, err = r.coalesce(ctx, ap, args)
	} else {
		v, err = r.now(ctx, args)
	}
	r.inflight.Add(-1)
	if err != nil {
		return false, fmt.Errorf("rate-limit script: %w", err)
	}
	if len(v) != 1+4*n {
		return false, fmt.Errorf("rate-limit script: %d values for %d buckets", len(v), n)
	}
	for i := range buckets {
		o := v[1+4*i:]
		res[i] = Result{Allowed: o[0] == 1, Remaining: int(o[1]), RetryAfter: micros(o[2]), ResetAfter: micros(o[3])}
	}
	return v[0] == 1, nil
}

func micros(us int64) time.Duration { return max(time.Duration(us)*time.Microsecond, 0) }

// now runs the script on a pooled connection, loading it when Redis does not
// know it (NOSCRIPT: nothing ran, so nothing was counted).
func (r *Redis) now(ctx context.Context, args []any) ([]int64, error) {
	cmd := redis.NewIntSliceCmd(ctx, args...)
	_ = r.rdb.Process(ctx, cmd)
	if err := cmd.Err(); redis.HasErrorPrefix(err, "NOSCRIPT") {
		args[0], args[1] = "eval", allowAllSrc
		cmd = redis.NewIntSliceCmd(ctx, args...)
		_ = r.rdb.Process(ctx, cmd)
	}
	return cmd.Result()
}

// coalesce queues the script on the autopipeliner and waits for its batch,
// or for ctx: a check whose context ends first returns ctx's error (its
// command may still run, and count the call, as one that timed out on the
// wire may).
func (r *Redis) coalesce(ctx context.Context, ap *redis.AutoPipeliner, args []any) ([]int64, error) {
	r.coalesced.Add(1)
	cmd := redis.NewIntSliceCmd(ctx, args...)
	err := ap.Submit(ctx, cmd).WaitContext(ctx)
	if err != nil && ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		return nil, err
	}
	if redis.HasErrorPrefix(err, "NOSCRIPT") {
		return r.now(ctx, slices.Clone(args))
	}
	return cmd.Result()
}

// Peek implements Store: the script in look mode, which stores nothing.
func (r *Redis) Peek(ctx context.Context, key string, limit Limit) (Result, error) {
	b := NewBucket(limit, false)
	b.Key = key
	var res [1]Result
	if _, err := r.run(ctx, []Bucket{b}, res[:], 0); err != nil {
		return Result{}, err
	}
	return peeked(res[0], limit), nil
}

// Reset implements Store.
func (r *Redis) Reset(ctx context.Context, keys ...string) error {
	// One DEL per key: in a Cluster, keys of different endpoints live in
	// different slots.
	for _, k := range keys {
		if err := r.rdb.Del(ctx, k).Err(); err != nil {
			return fmt.Errorf("reset rate-limit buckets: %w", err)
		}
	}
	return nil
}
