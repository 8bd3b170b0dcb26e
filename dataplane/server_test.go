package dataplane

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/dataplane/redisconn/redistest"
	"github.com/metamcp/metamcp/dataplane/syncclient"
	"github.com/metamcp/metamcp/internal/testharness"
	"github.com/metamcp/metamcp/pkg/snapshot"
)

// startServer runs a data plane with opts (the control plane unreachable)
// serving an empty config, and returns its base URL and a stop that waits
// for Serve to return.
func startServer(t *testing.T, opts Options) (*Server, string, func()) {
	t.Helper()
	opts.Sync = syncclient.Options{Addr: "127.0.0.1:1", Token: "mmt_test", NodeID: opts.Sync.NodeID}
	opts.CacheFile = ""
	srv, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	cfg := &metamcpv1.Config{}
	hash, err := snapshot.ConfigHash(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Cache().Apply(&metamcpv1.Snapshot{Revision: 1, Hash: hash, Nonce: "n", Config: cfg}); err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, lis) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}
	t.Cleanup(stop)
	return srv, "http://" + lis.Addr().String(), stop
}

// pollReadyz polls /readyz (testharness.Eventually, 15 s) until its body
// contains want.
func pollReadyz(t *testing.T, base, want string) string {
	t.Helper()
	var body string
	testharness.Eventually(t, 15*time.Second, func() error {
		resp, err := http.Get(base + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		body = string(b)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("/readyz = %d %q, want 200 (Redis must not decide readiness)", resp.StatusCode, body)
		}
		if !strings.Contains(body, want) {
			return fmt.Errorf("/readyz = %q, want it to contain %q", body, want)
		}
		return nil
	})
	return body
}

func TestRedisWiring(t *testing.T) {
	node := "dp-test-" + strings.TrimSuffix(strings.TrimPrefix(redistest.Prefix(t), "metamcp-test:"), ":")
	srv, base, stop := startServer(t, Options{
		Sync:  syncclient.Options{NodeID: node},
		Redis: RedisOptions{URL: redistest.URL(), Prefix: redistest.Prefix(t)},
	})
	if srv.redisBus == nil || srv.bus != srv.redisBus {
		t.Fatal("with a Redis URL, the gateway's session bus is not the Redis one")
	}
	pollReadyz(t, base, "redis: ok")

	// The bus works through the data plane's client and prefix.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := srv.bus.Subscribe(ctx, "mm/s/x")
	if err != nil {
		t.Fatal(err)
	}
	check := redistest.Client(t, "")
	n, err := check.Publish(ctx, srv.opts.Redis.Prefix+"mm/s/x", "hi").Result()
	if err != nil || n != 1 {
		t.Fatalf("PUBLISH on the prefixed channel = %d, %v; want 1", n, err)
	}
	select {
	case m := <-ch:
		if string(m) != "hi" {
			t.Fatalf("got %q", m)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no message through the data plane's bus")
	}

	// Serve's end closes the bus and the client: no connection of this
	// node is left in Redis.
	stop()
	name := "metamcp-dataplane:" + node
	deadline := time.Now().Add(10 * time.Second)
	for {
		list, err := check.ClientList(context.Background()).Result()
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(list, "name="+name+" ") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("connections named %s still open 10s after Serve returned", name)
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
}

func TestRedisDownIsDegradedNotUnready(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	_, base, _ := startServer(t, Options{
		Sync:  syncclient.Options{NodeID: "dp-down"},
		Redis: RedisOptions{URL: "redis://" + addr + "/0"},
	})
	body := pollReadyz(t, base, "redis: degraded")
	if !strings.Contains(body, "ready: revision 1") {
		t.Fatalf("/readyz = %q, want ready at revision 1", body)
	}
}

func TestWithoutRedis(t *testing.T) {
	srv, base, _ := startServer(t, Options{Sync: syncclient.Options{NodeID: "dp-local"}})
	if srv.redisBus != nil || srv.redis != nil {
		t.Fatal("without a Redis URL the data plane made a Redis client")
	}
	if body := pollReadyz(t, base, "ready: revision 1"); strings.Contains(body, "redis") {
		t.Fatalf("/readyz = %q mentions Redis, which is not configured", body)
	}
}

func TestBadRedisURL(t *testing.T) {
	_, err := New(Options{
		Sync:  syncclient.Options{Addr: "127.0.0.1:1", Token: "t", NodeID: "n"},
		Redis: RedisOptions{URL: "redis://u:secret@h:1/notadb"},
	})
	if err == nil || !strings.Contains(err.Error(), "--redis-url") || strings.Contains(err.Error(), "secret") {
		t.Fatalf("New with a bad Redis URL: err = %v, want one naming --redis-url without the password", err)
	}
}

// TestRedisSentinelAndClusterURLs: a Sentinel or Cluster URL starts a data
// plane (its session bus and its rate limiter), without reaching Redis yet.
func TestRedisSentinelAndClusterURLs(t *testing.T) {
	for _, u := range []string{"redis://127.0.0.1:1?master_name=mymaster", "redis://127.0.0.1:1?cluster=true&addr=127.0.0.1:2"} {
		s, err := New(Options{
			Sync:  syncclient.Options{Addr: "127.0.0.1:1", Token: "t", NodeID: "n"},
			Redis: RedisOptions{URL: u},
		})
		if err != nil {
			t.Fatalf("%s: %v", u, err)
		}
		if s.limiterRedis == nil || s.redis == nil {
			t.Fatalf("%s: no Redis client", u)
		}
		s.gw.Close()
		_ = s.pool.Close()
		_ = s.bus.Close()
		_ = s.redis.Close()
		_ = s.limiterRedis.Close()
	}
}
