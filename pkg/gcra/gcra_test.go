package gcra_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/metamcp/metamcp/pkg/gcra"
	"github.com/metamcp/metamcp/pkg/gcra/gcratest"
)

const testRedis = "127.0.0.1:6379"

func TestMemory(t *testing.T) {
	gcratest.Run(t, func(t *testing.T) gcra.Store { return gcra.NewMemory() })
}

func TestRedis(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: testRedis, MaxRetries: -1})
	t.Cleanup(func() { _ = rdb.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatalf("Redis at %s: %v (run scripts/ensure-services.sh)", testRedis, err)
	}
	store := gcra.NewRedis(rdb)
	gcratest.Run(t, func(t *testing.T) gcra.Store { return store })
}

// TestRedisSameAsRedisRate: a bucket counted by this package's script and by
// redis_rate's own AllowN is one bucket: same key, same stored TAT.
func TestRedisSameAsRedisRate(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: testRedis, MaxRetries: -1})
	t.Cleanup(func() { _ = rdb.Close() })
	ctx := context.Background()
	key := gcra.Key("gcratest-compat/", "ep", "p", gcra.SubjectGlobal)
	t.Cleanup(func() { rdb.Del(ctx, key) })
	limit := gcra.Limit{Rate: 1, Burst: 4, Period: time.Hour}
	b := gcra.NewBucket(limit, false)
	b.Key = key
	var res [1]gcra.Result
	if _, err := gcra.NewRedis(rdb).Allow(ctx, []gcra.Bucket{b}, res[:]); err != nil {
		t.Fatal(err)
	}
	// redis_rate prefixes "rate:" itself.
	r, err := redisRateAllow(ctx, rdb, key[len(gcra.KeyPrefix):], limit)
	if err != nil {
		t.Fatal(err)
	}
	if r.Remaining != 2 {
		t.Fatalf("redis_rate sees %d remaining after one call of ours and its own, want 2", r.Remaining)
	}
}
