package gcra

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// allowAll is redis_rate's allowN script (the GCRA of rwz/redis-gcra) for
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
// Returns: admitted (0 or 1), then for each bucket allowed (0 or 1),
// remaining, retry_after and reset_after (seconds, as strings).
var allowAll = redis.NewScript(`
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
    out[4 * i] = tostring(diff * -1)
    out[4 * i + 1] = tostring(tat - now)
  else
    new_tats[i] = new_tat
    out[4 * i - 2] = 1
    out[4 * i - 1] = remaining
    out[4 * i] = "0"
    out[4 * i + 1] = tostring(new_tat - now)
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
`)

// Redis keeps buckets in Redis: standalone, Sentinel or Cluster (the keys
// of one Allow must share a hash slot: see Key).
type Redis struct {
	rdb redis.Scripter
	del func(ctx context.Context, keys ...string) error
}

// NewRedis returns a store on rdb. Commands are not retried by the store;
// give rdb short timeouts and no retries (a retried script may count twice).
func NewRedis(rdb redis.UniversalClient) *Redis {
	return &Redis{rdb: rdb, del: func(ctx context.Context, keys ...string) error {
		// One DEL per key: in a Cluster, keys of different endpoints
		// live in different slots.
		for _, k := range keys {
			if err := rdb.Del(ctx, k).Err(); err != nil {
				return err
			}
		}
		return nil
	}}
}

// Allow implements Store in one round trip (EVALSHA; EVAL once after a
// Redis restart forgot the script).
func (r *Redis) Allow(ctx context.Context, buckets []Bucket, res []Result) (bool, error) {
	return r.run(ctx, buckets, res, 1)
}

func (r *Redis) run(ctx context.Context, buckets []Bucket, res []Result, count int) (bool, error) {
	var keysBuf [4]string
	var argsBuf [4*4 + 1]any
	keys, args := keysBuf[:0], argsBuf[:0]
	for i := range buckets {
		keys = append(keys, buckets[i].Key)
		args = append(args, buckets[i].args[:]...)
	}
	args = append(args, count)
	v, err := allowAll.Run(ctx, r.rdb, keys, args...).Slice()
	if err != nil {
		return false, fmt.Errorf("rate-limit script: %w", err)
	}
	if len(v) != 1+4*len(buckets) {
		return false, fmt.Errorf("rate-limit script: %d values for %d buckets", len(v), len(buckets))
	}
	for i := range buckets {
		o := v[1+4*i:]
		allowed, _ := o[0].(int64)
		remaining, _ := o[1].(int64)
		retry, err1 := parseSeconds(o[2])
		reset, err2 := parseSeconds(o[3])
		if err := errors.Join(err1, err2); err != nil {
			return false, fmt.Errorf("rate-limit script: %w", err)
		}
		res[i] = Result{Allowed: allowed == 1, Remaining: int(remaining), RetryAfter: retry, ResetAfter: reset}
	}
	admitted, _ := v[0].(int64)
	return admitted == 1, nil
}

func parseSeconds(v any) (time.Duration, error) {
	s, ok := v.(string)
	if !ok {
		return 0, fmt.Errorf("want a number as a string, got %T", v)
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, err
	}
	return max(seconds(f), 0), nil
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
	if err := r.del(ctx, keys...); err != nil {
		return fmt.Errorf("reset rate-limit buckets: %w", err)
	}
	return nil
}
