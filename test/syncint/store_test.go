package syncint

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/controlplane/store"
	"github.com/metamcp/metamcp/controlplane/syncserver"
	"github.com/metamcp/metamcp/dataplane/configcache"
	"github.com/metamcp/metamcp/internal/testharness"
	"github.com/metamcp/metamcp/pkg/snapshot"
)

// bumpTo writes to st until its revision is at least rev, rewriting one
// record as it is (every committed write is a revision).
func bumpTo(t *testing.T, st store.Store, kind store.Kind, name string, rev int64) {
	t.Helper()
	ctx := context.Background()
	for {
		cur, err := st.Revision(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if cur >= rev {
			return
		}
		if _, _, err := st.Update(ctx, func(ctx context.Context, tx store.Tx) error {
			r, err := tx.Get(ctx, kind, name)
			if err != nil {
				return err
			}
			return tx.Put(ctx, r)
		}); err != nil {
			t.Fatal(err)
		}
	}
}

func storeID(t *testing.T, st store.Store) string {
	t.Helper()
	id, err := st.ID(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// waitServed waits until d serves revision rev of store id.
func waitServed(t *testing.T, d *dp, rev int64, id string) {
	t.Helper()
	waitCache(t, d, 10*time.Second, func() error {
		if got, _ := d.cache.Revision(); got != rev || d.cache.StoreID() != id {
			return fmt.Errorf("data plane serves revision %d of store %q, want %d of %q", got, d.cache.StoreID(), rev, id)
		}
		return nil
	})
}

// TestDataPlaneOfAnotherStore: a data plane whose cache holds revision 58 of
// store A connects to a control plane on a fresh store B at revision 3: it
// takes B's config, and the registry says what it had.
func TestDataPlaneOfAnotherStore(t *testing.T) {
	stA := openSQLite(t)
	a := startCP(t, stA, newSealer(t), "127.0.0.1:0")
	createServer(t, a, "old", "npx")
	bumpTo(t, stA, store.KindServer, "old", 58)
	cacheFile := filepath.Join(t.TempDir(), "snapshot.pb")
	d := startDP(t, a.addr, syncToken(t, a, "dp"), "dp", cacheFile)
	waitServed(t, d, 59, storeID(t, stA)) // 58 and the token's revision
	d.stop()
	a.stop()

	stB := openSQLite(t)
	b := startCP(t, stB, newSealer(t), "127.0.0.1:0")
	tok := syncToken(t, b, "dp")
	createServer(t, b, "new", "npx")
	if rev := revisionOf(t, b); rev >= 59 {
		t.Fatalf("store B is at revision %d; the test needs it behind A", rev)
	}
	d = startDP(t, b.addr, tok, "dp", cacheFile)
	waitServed(t, d, revisionOf(t, b), storeID(t, stB))
	if cur := d.cache.Current(); cur.Servers["new"] == nil || cur.Servers["old"] != nil {
		t.Errorf("data plane serves %v, want store B's servers", cur.Servers)
	}
	entry := registryEntry(t, b, "dp", func(dp *metamcpv1.DataPlane) bool { return dp.GetStoreId() == storeID(t, stB) })
	if entry.GetPreviousStoreId() != storeID(t, stA) || entry.GetPreviousStoreRevision() != 59 {
		t.Errorf("registry: previous store %q revision %d, want %q 59", entry.GetPreviousStoreId(), entry.GetPreviousStoreRevision(), storeID(t, stA))
	}
}

// lagging is a ConfigSource that builds an older revision than its store's:
// a control-plane replica that has not caught up yet.
type lagging struct {
	cfg *metamcpv1.Config
	rev int64
}

func (l lagging) BuildConfig(context.Context) (*metamcpv1.Config, int64, error) {
	return l.cfg, l.rev, nil
}

// cachedAt writes a cache file holding revision rev of store id.
func cachedAt(t *testing.T, rev int64, id string) string {
	t.Helper()
	cfg := &metamcpv1.Config{Servers: []*metamcpv1.Server{{Name: fmt.Sprintf("at-%d", rev), Transport: &metamcpv1.Server_Stdio{Stdio: &metamcpv1.StdioTransport{Command: "npx"}}}}}
	hash, err := snapshot.ConfigHash(cfg)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "snapshot.pb")
	if err := configcache.New(path, nil).Apply(&metamcpv1.Snapshot{Revision: rev, Hash: hash, Config: cfg, StoreId: id}); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestDataPlaneAheadOfTheBuild: a control plane whose snapshot lags its store
// (revision 5 built, the store at 10) leaves a data plane of the same store
// at revision 8 alone, as before; but one at revision 12, which the store
// never reached (it was restored from a backup), and one of another store at
// revision 30 get its config, as does one of another store at revision 2.
func TestDataPlaneAheadOfTheBuild(t *testing.T) {
	st := openSQLite(t)
	if _, _, err := st.Update(context.Background(), func(ctx context.Context, tx store.Tx) error {
		return tx.Put(ctx, store.Record{Kind: store.KindServer, Name: "x", Data: []byte("x")})
	}); err != nil {
		t.Fatal(err)
	}
	bumpTo(t, st, store.KindServer, "x", 10)
	id := storeID(t, st)

	srv := syncserver.New(lagging{cfg: &metamcpv1.Config{}, rev: 5}, st, syncserver.Options{Logger: testLogger(t)})
	g := grpc.NewServer()
	metamcpv1.RegisterSyncServiceServer(g, srv)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan struct{})
	go func() { defer close(runDone); _ = srv.Run(ctx) }()
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(func() { cancel(); <-runDone; g.Stop() })
	testharness.Eventually(t, 10*time.Second, func() error {
		if srv.Current() == nil {
			return errors.New("no snapshot built")
		}
		return nil
	})

	ahead := startDP(t, lis.Addr().String(), "any", "ahead", cachedAt(t, 8, id))
	restored := startDP(t, lis.Addr().String(), "any", "restored", cachedAt(t, 12, id))
	other := startDP(t, lis.Addr().String(), "any", "other", cachedAt(t, 30, "another-store"))
	behind := startDP(t, lis.Addr().String(), "any", "behind", cachedAt(t, 2, "another-store"))
	waitServed(t, restored, 5, id)
	waitServed(t, other, 5, id)
	waitServed(t, behind, 5, id)
	// The registry keeps what each had.
	want := map[string]string{"restored": id + "@12", "other": "another-store@30", "behind": "another-store@2"}
	testharness.Eventually(t, 10*time.Second, func() error {
		dps, err := st.ListDataPlanes(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for _, d := range dps {
			if d.GetPreviousStoreRevision() > 0 {
				got[d.GetNodeId()] = fmt.Sprintf("%s@%d", d.GetPreviousStoreId(), d.GetPreviousStoreRevision())
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			return fmt.Errorf("registry: previous stores %v, want %v", got, want)
		}
		return nil
	})
	// Both of those were answered; the stream of "ahead" opened with theirs,
	// and it keeps revision 8.
	testharness.Eventually(t, 10*time.Second, func() error {
		if !ahead.client.Connected() {
			return errors.New("ahead never connected")
		}
		return nil
	})
	if got, _ := ahead.cache.Revision(); got != 8 {
		t.Errorf("a data plane ahead of a lagging build of its own store now serves %d, want 8", got)
	}
}
