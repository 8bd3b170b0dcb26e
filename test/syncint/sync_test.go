// Package syncint tests config sync end to end inside one process: a real
// control plane (gRPC on loopback, SQLite or Postgres store) and several data
// planes' sync clients, and benchmarks how fast a change reaches them.
package syncint

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/controlplane"
	"github.com/metamcp/metamcp/controlplane/auth"
	"github.com/metamcp/metamcp/controlplane/secret"
	"github.com/metamcp/metamcp/controlplane/store"
	"github.com/metamcp/metamcp/controlplane/store/postgres"
	"github.com/metamcp/metamcp/controlplane/store/postgres/pgtest"
	"github.com/metamcp/metamcp/controlplane/store/sqlite"
	"github.com/metamcp/metamcp/dataplane/configcache"
	"github.com/metamcp/metamcp/dataplane/syncclient"
	"github.com/metamcp/metamcp/internal/syncbuf"
	"github.com/metamcp/metamcp/internal/testca"
	"github.com/metamcp/metamcp/internal/testharness"
	"github.com/metamcp/metamcp/pkg/snapshot"
)

const adminToken = "sync-test-admin-token-0123456789abcdef"

type cp struct {
	addr   string
	admin  metamcpv1.AdminServiceClient
	stop   func()
	store  store.Store
	sealer *secret.Sealer
}

func testLogger(tb testing.TB) *slog.Logger {
	if os.Getenv("METAMCP_TEST_VERBOSE") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func newSealer(tb testing.TB) *secret.Sealer {
	key, err := secret.GenerateKey()
	if err != nil {
		tb.Fatal(err)
	}
	s, err := secret.New(key)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// startCP serves a control plane on st at addr ("127.0.0.1:0" for any port).
func startCP(tb testing.TB, st store.Store, sealer *secret.Sealer, addr string) *cp {
	tb.Helper()
	srv, err := controlplane.New(st, sealer, controlplane.Options{AdminTokenHash: auth.HashToken(adminToken), Logger: testLogger(tb), ShutdownTimeout: time.Second})
	if err != nil {
		tb.Fatal(err)
	}
	var lis net.Listener
	// A restart on the same address may find the previous control plane's
	// port not yet released.
	testharness.Eventually(tb, 10*time.Second, func() (err error) {
		lis, err = net.Listen("tcp", addr)
		return err
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, lis) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatal(err)
	}
	c := &cp{addr: lis.Addr().String(), admin: metamcpv1.NewAdminServiceClient(conn), store: st, sealer: sealer}
	var stopped bool
	c.stop = func() {
		if stopped {
			return
		}
		stopped = true
		conn.Close()
		cancel()
		select {
		case err := <-done:
			if err != nil {
				tb.Errorf("control plane Serve: %v", err)
			}
		case <-time.After(30 * time.Second):
			tb.Error("control plane did not stop")
		}
	}
	tb.Cleanup(c.stop)
	return c
}

func adminCtx(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	tb.Cleanup(cancel)
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+adminToken)
}

func openSQLite(tb testing.TB) store.Store {
	st, err := sqlite.Open(context.Background(), filepath.Join(tb.TempDir(), "cp.db"), sqlite.Options{RecheckInterval: 200 * time.Millisecond})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	return st
}

func openPostgres(tb testing.TB) (store.Store, string) {
	dsn := pgtest.NewDatabase(tb)
	st, err := postgres.Open(context.Background(), dsn, postgres.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	return st, dsn
}

func syncToken(tb testing.TB, c *cp, name string) string {
	resp, err := c.admin.CreateToken(adminCtx(tb), &metamcpv1.CreateTokenRequest{Token: &metamcpv1.Token{Name: name, Scope: metamcpv1.TokenScope_TOKEN_SCOPE_SYNC}})
	if err != nil {
		tb.Fatal(err)
	}
	return resp.GetSecret()
}

type dp struct {
	cache  *configcache.Cache
	client *syncclient.Client
	stop   func()
}

func startDP(tb testing.TB, addr, token, node, cacheFile string, checks ...configcache.Check) *dp {
	return startDPWith(tb, addr, token, node, cacheFile, 200*time.Millisecond, checks...)
}

func startDPWith(tb testing.TB, addr, token, node, cacheFile string, statusInterval time.Duration, checks ...configcache.Check) *dp {
	tb.Helper()
	cache := configcache.New(cacheFile, testLogger(tb), checks...)
	if _, err := cache.LoadFile(); err != nil {
		tb.Fatal(err)
	}
	client, err := syncclient.New(cache, syncclient.Options{
		Addr: addr, Token: token, NodeID: node, Hostname: "test", Version: "test",
		StatusInterval: statusInterval, MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
		Logger: testLogger(tb),
	})
	if err != nil {
		tb.Fatal(err)
	}
	return &dp{cache: cache, client: client, stop: runClient(tb, client)}
}

// runClient runs client until the test ends or the returned stop is called
// (idempotent), which returns once Run has.
func runClient(tb testing.TB, client *syncclient.Client) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = client.Run(ctx)
	}()
	stop = func() {
		cancel()
		<-done
	}
	tb.Cleanup(stop)
	return stop
}

// waitRevision waits until every data plane serves at least rev.
func waitRevision(tb testing.TB, rev int64, dps ...*dp) {
	tb.Helper()
	for _, d := range dps {
		waitCache(tb, d, 15*time.Second, func() error {
			if got, _ := d.cache.Revision(); got < rev {
				return fmt.Errorf("data plane serves revision %d, want %d", got, rev)
			}
			return nil
		})
	}
}

// waitCache waits until cond holds for d's cache, checking it at each
// config swap (the cache's own signal) rather than on a timer, and fails
// with cond's error when timeout passes first.
func waitCache(tb testing.TB, d *dp, timeout time.Duration, cond func() error) {
	tb.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		changed := d.cache.Changed() // before cond: a swap in between wakes us
		err := cond()
		if err == nil {
			return
		}
		select {
		case <-changed:
		case <-timer.C:
			tb.Fatalf("not within %v: %v", timeout, err)
		}
	}
}

// registryShows waits until the registry's data planes satisfy cond.
func registryShows(tb testing.TB, c *cp, timeout time.Duration, cond func([]*metamcpv1.DataPlane) error) {
	tb.Helper()
	testharness.Eventually(tb, timeout, func() error {
		resp, err := c.admin.ListDataPlanes(adminCtx(tb), &metamcpv1.ListDataPlanesRequest{})
		if err != nil {
			tb.Fatal(err)
		}
		return cond(resp.GetDataPlanes())
	})
}

func createServer(tb testing.TB, c *cp, name, command string) int64 {
	tb.Helper()
	s, err := c.admin.CreateServer(adminCtx(tb), &metamcpv1.CreateServerRequest{Server: &metamcpv1.Server{
		Name: name, Transport: &metamcpv1.Server_Stdio{Stdio: &metamcpv1.StdioTransport{
			Command: command,
			Env:     map[string]*metamcpv1.Value{"TOKEN": {Value: "secret-" + name, Secret: true}},
		}},
	}})
	if err != nil {
		tb.Fatal(err)
	}
	return s.GetRevision()
}

func revisionOf(tb testing.TB, c *cp) int64 {
	r, err := c.admin.GetRevision(adminCtx(tb), &metamcpv1.GetRevisionRequest{})
	if err != nil {
		tb.Fatal(err)
	}
	return r.GetRevision()
}

func TestChangeReachesEveryDataPlane(t *testing.T) {
	c := startCP(t, openSQLite(t), newSealer(t), "127.0.0.1:0")
	tok := syncToken(t, c, "dps")
	var dps []*dp
	for i := range 3 {
		dps = append(dps, startDP(t, c.addr, tok, fmt.Sprintf("dp-%d", i), ""))
	}
	waitRevision(t, revisionOf(t, c), dps...)
	rev := createServer(t, c, "fs", "npx")
	waitRevision(t, rev, dps...)
	for _, d := range dps {
		srv := d.cache.Current().Servers["fs"]
		if got := srv.GetStdio().GetEnv()["TOKEN"].GetValue(); got != "secret-fs" {
			t.Errorf("data plane got secret %q, want it decrypted", got)
		}
	}
	// The registry shows all three, connected, at the revision.
	registryShows(t, c, 10*time.Second, func(dps []*metamcpv1.DataPlane) error {
		ok := len(dps) == 3
		for _, d := range dps {
			ok = ok && d.GetConnected() && d.GetAppliedRevision() == rev && d.GetLastSeen() != nil
		}
		if !ok {
			return fmt.Errorf("registry does not show 3 data planes at revision %d: %v", rev, dps)
		}
		return nil
	})
}

// registryEntry waits until cond holds for node's entry in the registry.
func registryEntry(t *testing.T, c *cp, node string, cond func(*metamcpv1.DataPlane) bool) *metamcpv1.DataPlane {
	t.Helper()
	var found *metamcpv1.DataPlane
	registryShows(t, c, 10*time.Second, func(dps []*metamcpv1.DataPlane) error {
		found = nil
		for _, d := range dps {
			if d.GetNodeId() == node {
				found = d
			}
		}
		if found == nil || !cond(found) {
			return fmt.Errorf("registry entry of %s does not match: %v", node, found)
		}
		return nil
	})
	return found
}

// TestRefusedServerIsLeftOut: a data plane that may not run one server of a
// snapshot applies the rest, ACKs it as partial with the reason, and the
// registry shows it; a later revision without that server is applied whole.
func TestRefusedServerIsLeftOut(t *testing.T) {
	c := startCP(t, openSQLite(t), newSealer(t), "127.0.0.1:0")
	tok := syncToken(t, c, "dps")
	good := createServer(t, c, "fs", "npx")
	strict := startDP(t, c.addr, tok, "strict", "", configcache.StdioAllowList([]string{"npx", "node"}))
	other := startDP(t, c.addr, tok, "other", "")
	waitRevision(t, good, strict, other)

	bad := createServer(t, c, "shell", "/bin/sh")
	waitRevision(t, bad, strict, other)
	if cur := strict.cache.Current(); cur.Servers["shell"] != nil || cur.Servers["fs"] == nil || cur.Refused["shell"] == "" {
		t.Fatalf("strict data plane serves %v, refused %v; want fs without shell", cur.Servers, cur.Refused)
	}
	found := registryEntry(t, c, "strict", func(d *metamcpv1.DataPlane) bool { return d.GetAppliedRevision() == bad })
	if found.GetApplyOutcome() != metamcpv1.ApplyOutcome_APPLY_OUTCOME_PARTIAL || len(found.GetRefusedServers()) != 1 ||
		found.GetRefusedServers()[0].GetServer() != "shell" || !strings.Contains(found.GetRefusedServers()[0].GetReason(), `"/bin/sh" is not allowed`) ||
		found.GetLastError() != "" {
		t.Errorf("registry entry of the strict data plane: %v", found)
	}
	if _, err := c.admin.DeleteServer(adminCtx(t), &metamcpv1.DeleteServerRequest{Name: "shell"}); err != nil {
		t.Fatal(err)
	}
	rev := revisionOf(t, c)
	waitRevision(t, rev, strict, other)
	registryEntry(t, c, "strict", func(d *metamcpv1.DataPlane) bool {
		return d.GetAppliedRevision() == rev && d.GetApplyOutcome() == metamcpv1.ApplyOutcome_APPLY_OUTCOME_APPLIED && len(d.GetRefusedServers()) == 0
	})
}

// refuseServer refuses every snapshot that has a server named name, whole:
// a stand-in for a snapshot a data plane cannot serve at all (say, one from
// a newer control plane).
func refuseServer(name string) configcache.Check {
	return func(s *snapshot.Compiled) (map[string]string, error) {
		if s.Servers[name] != nil {
			return nil, fmt.Errorf("this data plane cannot serve server %q", name)
		}
		return nil, nil
	}
}

// TestRevocationReachesEveryReplica: three data planes, one leaving a server
// out and one refusing every snapshot since; a revoked API key is refused by
// all three, and a new key accepted by all, each within a second here.
func TestRevocationReachesEveryReplica(t *testing.T) {
	c := startCP(t, openSQLite(t), newSealer(t), "127.0.0.1:0")
	tok := syncToken(t, c, "dps")
	createServer(t, c, "fs", "npx")
	if _, err := c.admin.CreateNamespace(adminCtx(t), &metamcpv1.CreateNamespaceRequest{Namespace: &metamcpv1.Namespace{Name: "dev",
		Members: []*metamcpv1.NamespaceMember{{Server: "fs"}}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.admin.CreateEndpoint(adminCtx(t), &metamcpv1.CreateEndpointRequest{Endpoint: &metamcpv1.Endpoint{Name: "dev", Namespace: "dev"}}); err != nil {
		t.Fatal(err)
	}
	created, err := c.admin.CreateApiKey(adminCtx(t), &metamcpv1.CreateApiKeyRequest{ApiKey: &metamcpv1.ApiKey{Name: "alice", Endpoints: []string{"dev"}}})
	if err != nil {
		t.Fatal(err)
	}
	alice := sha256.Sum256([]byte(created.GetKey()))
	base := revisionOf(t, c)
	plain := startDP(t, c.addr, tok, "plain", "")
	strict := startDP(t, c.addr, tok, "strict", "", configcache.StdioAllowList([]string{"npx"}))
	cacheFile := filepath.Join(t.TempDir(), "snapshot.pb")
	refusing := startDP(t, c.addr, tok, "refusing", cacheFile, refuseServer("newer"))
	all := []*dp{plain, strict, refusing}
	waitRevision(t, base, all...)

	base = createServer(t, c, "shell", "/bin/sh") // strict leaves it out
	createServer(t, c, "newer", "npx")            // refusing refuses it whole
	rev := revisionOf(t, c)
	waitRevision(t, rev, plain, strict)
	registryEntry(t, c, "refusing", func(d *metamcpv1.DataPlane) bool { return d.GetKeysRevision() == rev })
	if got, _ := refusing.cache.Revision(); got != base {
		t.Fatalf("the refusing data plane serves %d, want %d", got, base)
	}

	waitKey := func(what string, key [32]byte, want bool) {
		t.Helper()
		start := time.Now()
		for _, d := range all {
			waitCache(t, d, 10*time.Second-time.Since(start), func() error {
				if (d.cache.Current().APIKeys[key] != nil) != want {
					return fmt.Errorf("%s: not on every data plane", what)
				}
				return nil
			})
		}
		t.Logf("%s: on all three data planes %v after the admin call returned", what, time.Since(start).Round(time.Millisecond))
	}
	if _, err := c.admin.RevokeApiKey(adminCtx(t), &metamcpv1.RevokeApiKeyRequest{Name: "alice"}); err != nil {
		t.Fatal(err)
	}
	waitKey("revoked key refused", alice, false)
	bob, err := c.admin.CreateApiKey(adminCtx(t), &metamcpv1.CreateApiKeyRequest{ApiKey: &metamcpv1.ApiKey{Name: "bob", Endpoints: []string{"dev"}}})
	if err != nil {
		t.Fatal(err)
	}
	waitKey("new key accepted", sha256.Sum256([]byte(bob.GetKey())), true)
	if got, _ := refusing.cache.Revision(); got != base {
		t.Errorf("the refusing data plane serves config %d, want still %d", got, base)
	}

	// Restarted without the control plane, the refusing data plane keeps
	// the newer keys.
	refusing.stop()
	cache := configcache.New(cacheFile, testLogger(t), refuseServer("newer"))
	if ok, err := cache.LoadFile(); !ok || err != nil {
		t.Fatal(ok, err)
	}
	if cache.Current().APIKeys[alice] != nil || cache.Current().Revision != base {
		t.Errorf("restarted from its cache: revision %d, revoked key present: %v", cache.Current().Revision, cache.Current().APIKeys[alice] != nil)
	}
}

func TestControlPlaneAwayAndBack(t *testing.T) {
	st, _ := openPostgres(t)
	sealer := newSealer(t)
	c := startCP(t, st, sealer, "127.0.0.1:0")
	addr := c.addr
	tok := syncToken(t, c, "dps")
	rev := createServer(t, c, "fs", "npx")
	cacheFile := filepath.Join(t.TempDir(), "dp", "snapshot.pb")
	d1 := startDP(t, addr, tok, "dp-1", cacheFile)
	d2 := startDP(t, addr, tok, "dp-2", "")
	waitRevision(t, rev, d1, d2)

	c.stop()
	// Still serving without the control plane.
	if got, _ := d2.cache.Revision(); got != rev {
		t.Fatalf("dp-2 serves %d after the control plane stopped, want %d", got, rev)
	}
	// A data plane restarted while the control plane is down serves its cache.
	d1.stop()
	d1 = startDP(t, addr, tok, "dp-1", cacheFile)
	if got, _ := d1.cache.Revision(); got != rev || d1.cache.Current().Servers["fs"] == nil {
		t.Fatalf("restarted dp-1 serves %d from cache, want %d", got, rev)
	}

	// The control plane comes back on the same address: the data planes
	// reconnect by themselves and converge on the latest revision.
	c2 := startCP(t, st, sealer, addr)
	rev2 := createServer(t, c2, "gh", "npx")
	waitRevision(t, rev2, d1, d2)
	if d1.cache.Current().Servers["gh"] == nil || d2.cache.Current().Servers["gh"] == nil {
		t.Fatal("data planes lack the server added after the restart")
	}
}

func TestRevokedTokenClosesStream(t *testing.T) {
	c := startCP(t, openSQLite(t), newSealer(t), "127.0.0.1:0")
	tok := syncToken(t, c, "dps")
	d := startDP(t, c.addr, tok, "dp", "")
	// A witness with a token of its own shows when a revision has been
	// sent to the data planes.
	witness := startDP(t, c.addr, syncToken(t, c, "witness"), "witness", "")
	waitRevision(t, revisionOf(t, c), d, witness)
	testharness.Eventually(t, 10*time.Second, func() error {
		if !d.client.Connected() {
			return errors.New("never connected")
		}
		return nil
	})
	if _, err := c.admin.RevokeToken(adminCtx(t), &metamcpv1.RevokeTokenRequest{Name: "dps"}); err != nil {
		t.Fatal(err)
	}
	testharness.Eventually(t, 10*time.Second, func() error {
		if d.client.Connected() {
			return errors.New("stream stayed open after its token was revoked")
		}
		return nil
	})
	// And it gets no further snapshots: the witness has one it does not.
	rev := createServer(t, c, "late", "npx")
	waitRevision(t, rev, witness)
	if got, _ := d.cache.Revision(); got >= rev {
		t.Fatalf("a revoked data plane received revision %d", got)
	}
}

// TestReplicasBuildTheSameSnapshot: two control planes on one Postgres build
// byte-identical snapshots (same hash) for the same revision, so a data plane
// may reconnect to either without a needless re-send.
func TestReplicasBuildTheSameSnapshot(t *testing.T) {
	st1, dsn := openPostgres(t)
	st2, err := postgres.Open(context.Background(), dsn, postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st2.Close() })
	sealer := newSealer(t)
	a := startCP(t, st1, sealer, "127.0.0.1:0")
	b := startCP(t, st2, sealer, "127.0.0.1:0")
	tok := syncToken(t, a, "dps")
	createServer(t, a, "fs", "npx")
	rev := createServer(t, b, "gh", "npx")
	if _, err := a.admin.CreateApiKey(adminCtx(t), &metamcpv1.CreateApiKeyRequest{ApiKey: &metamcpv1.ApiKey{Name: "k", Endpoints: []string{"*"}}}); err != nil {
		t.Fatal(err)
	}
	rev++
	da := startDP(t, a.addr, tok, "via-a", "")
	db := startDP(t, b.addr, tok, "via-b", "")
	waitRevision(t, rev, da, db)
	ra, ha := da.cache.Revision()
	rb, hb := db.cache.Revision()
	if ra != rb || ha != hb {
		t.Fatalf("replica a sent %d/%s, replica b sent %d/%s", ra, ha, rb, hb)
	}
}

// TestSyncOverTLS: a data plane that pins the control plane's CA syncs; one
// that trusts only the system pool does not.
func TestSyncOverTLS(t *testing.T) {
	ca := testca.New(t)
	caFile, certFile, keyFile := ca.WriteFiles(t, t.TempDir(), "127.0.0.1")
	srv, err := controlplane.New(openSQLite(t), newSealer(t), controlplane.Options{
		AdminTokenHash: auth.HashToken(adminToken), TLSCertFile: certFile, TLSKeyFile: keyFile,
		Logger: testLogger(t), ShutdownTimeout: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, lis) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("control plane Serve: %v", err)
		}
	})
	tok, err := srv.Admin().CreateToken(context.Background(), &metamcpv1.CreateTokenRequest{Token: &metamcpv1.Token{Name: "dp", Scope: metamcpv1.TokenScope_TOKEN_SCOPE_SYNC}})
	if err != nil {
		t.Fatal(err)
	}
	start := func(node string, ca string, logger *slog.Logger) *dp {
		cache := configcache.New("", testLogger(t))
		client, err := syncclient.New(cache, syncclient.Options{
			Addr: lis.Addr().String(), Token: tok.GetSecret(), NodeID: node, TLS: true, CAFile: ca,
			MinBackoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond, Logger: logger,
		})
		if err != nil {
			t.Fatal(err)
		}
		return &dp{cache: cache, client: client, stop: runClient(t, client)}
	}
	pinned := start("pinned", caFile, testLogger(t))
	// The unpinned client's log says when its handshake has failed.
	logs := &syncbuf.Buffer{}
	unpinned := start("unpinned", "", slog.New(slog.NewTextHandler(logs, nil)))
	waitRevision(t, 1, pinned)
	testharness.Eventually(t, 10*time.Second, func() error {
		if n := strings.Count(logs.String(), "sync stream ended"); n < 2 || !strings.Contains(logs.String(), "certificate") {
			return fmt.Errorf("the unpinned data plane has not failed twice on the certificate; its log:\n%s", logs)
		}
		return nil
	})
	if unpinned.cache.Ready() {
		t.Fatal("a data plane that does not trust the CA received a snapshot")
	}
}

// TestStatusReachesRegistry: a data plane's periodic status (upstream health,
// live client sessions) shows in the registry.
func TestStatusReachesRegistry(t *testing.T) {
	c := startCP(t, openSQLite(t), newSealer(t), "127.0.0.1:0")
	tok := syncToken(t, c, "dps")
	cache := configcache.New("", testLogger(t))
	client, err := syncclient.New(cache, syncclient.Options{
		Addr: c.addr, Token: tok, NodeID: "reporter", StatusInterval: 50 * time.Millisecond,
		Status: func() ([]*metamcpv1.UpstreamStatus, int64) {
			return []*metamcpv1.UpstreamStatus{{Server: "fs", State: metamcpv1.UpstreamState_UPSTREAM_STATE_HEALTHY, Processes: 2}}, 7
		},
		Logger: testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	runClient(t, client)
	registryShows(t, c, 10*time.Second, func(dps []*metamcpv1.DataPlane) error {
		if len(dps) == 1 && dps[0].GetActiveSessions() == 7 &&
			len(dps[0].GetUpstreams()) == 1 && dps[0].GetUpstreams()[0].GetProcesses() == 2 {
			return nil
		}
		return fmt.Errorf("registry does not show the status: %v", dps)
	})
}
