package gcra

import (
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func TestNewRedisClient(t *testing.T) {
	for _, tc := range []struct {
		url  string
		kind string
	}{
		{"redis://:pw@127.0.0.1:6379/2", "*redis.Client"},
		{"rediss://127.0.0.1:6380/0", "*redis.Client"},
		{"redis://127.0.0.1:26379?master_name=mymaster&addr=127.0.0.1:26380", "*redis.Client"},
		{"redis://127.0.0.1:7000?cluster=true&addr=127.0.0.1:7001", "*redis.ClusterClient"},
	} {
		c, err := NewRedisClient(tc.url, "test")
		if err != nil {
			t.Fatalf("%s: %v", tc.url, err)
		}
		if got := typeName(c); got != tc.kind {
			t.Errorf("%s: %s, want %s", tc.url, got, tc.kind)
		}
		_ = c.Close()
	}
	c, _ := NewRedisClient("redis://:pw@127.0.0.1:6379/2", "dp")
	o := c.(*redis.Client).Options()
	if o.ReadTimeout != DefaultRedisTimeout || o.MaxRetries > 0 || o.Password != "pw" || o.DB != 2 || o.ClientName != "dp" || !o.ContextTimeoutEnabled {
		t.Errorf("options %+v", o)
	}
	c, _ = NewRedisClient("rediss://127.0.0.1:6379/0?read_timeout=3s", "dp")
	if o := c.(*redis.Client).Options(); o.ReadTimeout != 3*time.Second || o.TLSConfig == nil {
		t.Errorf("URL's read_timeout or TLS lost: %+v", o)
	}
	if MultiNode("redis://127.0.0.1:6379/0") || !MultiNode("redis://h:1?master_name=m") || !MultiNode("redis://h:1?cluster=true") {
		t.Error("MultiNode wrong")
	}
	if _, err := NewRedisClient("redis://u:hunter2@127.0.0.1:1/notadb", ""); err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("bad DB: %v (must fail without the password)", err)
	}
}

func typeName(c redis.UniversalClient) string {
	switch c.(type) {
	case *redis.Client:
		return "*redis.Client"
	case *redis.ClusterClient:
		return "*redis.ClusterClient"
	}
	return "other"
}
