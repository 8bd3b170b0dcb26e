// Package redistest connects tests to the real Redis the integration tests
// use, and gives each test its own key prefix so tests (and test runs sharing
// one Redis) never see each other's keys or channels.
//
// The URL comes from METAMCP_TEST_REDIS_URL and defaults to DefaultURL.
package redistest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/metamcp/metamcp/dataplane/redisconn"
)

// DefaultURL is used when METAMCP_TEST_REDIS_URL is unset.
const DefaultURL = "redis://127.0.0.1:6379/0"

// EnvURL names the environment variable that overrides DefaultURL.
const EnvURL = "METAMCP_TEST_REDIS_URL"

// URL returns the test Redis URL.
func URL() string {
	if v := os.Getenv(EnvURL); v != "" {
		return v
	}
	return DefaultURL
}

// Client returns a client for the test Redis, built by redisconn.New (so
// with the data plane's timeouts) and named clientName, closed when the test
// ends. It fails the test, saying how to start Redis, when Redis does not
// answer; it never skips.
func Client(t testing.TB, clientName string) *redis.Client {
	t.Helper()
	c, err := redisconn.New(URL(), clientName)
	if err != nil {
		t.Fatalf("redistest: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if err := redisconn.Ping(context.Background(), c, 5*time.Second); err != nil {
		t.Fatalf("redistest: Redis at %s: %v (start it with `make services`, or point %s at one)", redisconn.Redacted(URL()), err, EnvURL)
	}
	return c
}

// Prefix returns a key prefix no other test uses: "metamcp-test:<hex>:".
func Prefix(t testing.TB) string {
	t.Helper()
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatalf("redistest: random prefix: %v", err)
	}
	return "metamcp-test:" + hex.EncodeToString(b[:]) + ":"
}
