package gcra_test

import (
	"context"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"

	"github.com/metamcp/metamcp/pkg/gcra"
)

func redisRateAllow(ctx context.Context, rdb *redis.Client, key string, l gcra.Limit) (*redis_rate.Result, error) {
	return redis_rate.NewLimiter(rdb).Allow(ctx, key, l)
}
