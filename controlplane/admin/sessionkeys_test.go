package admin_test

import (
	"bytes"
	"context"
	"log/slog"
	"sync"
	"testing"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/controlplane/admin"
	"github.com/metamcp/metamcp/controlplane/store"
)

// sessionKeys returns the session keys of the snapshot BuildConfig makes.
func sessionKeys(t *testing.T, svc *admin.Service) *metamcpv1.SessionKeys {
	t.Helper()
	cfg, _, err := svc.BuildConfig(ctx(t))
	if err != nil {
		t.Fatalf("BuildConfig: %v", err)
	}
	return cfg.GetSessionKeys()
}

func TestSessionKeys(t *testing.T) {
	forEachStore(t, func(t *testing.T, e *env) {
		if k := sessionKeys(t, e.svc); k != nil {
			t.Fatalf("a fresh store has session keys %v, want none until the first write", k)
		}
		if rev, err := e.svc.EnsureSessionKeys(ctx(t)); err != nil || rev != 0 {
			t.Fatalf("EnsureSessionKeys on a fresh store = %d, %v; want 0 (nothing written)", rev, err)
		}
		if got := revision(t, e); got != 0 {
			t.Fatalf("revision after EnsureSessionKeys on a fresh store = %d, want 0", got)
		}

		// The first write creates the key in its own revision.
		mustCreateServer(t, e, stdioServer("github", nil))
		if got := revision(t, e); got != 1 {
			t.Fatalf("revision after the first write = %d, want 1", got)
		}
		first := sessionKeys(t, e.svc)
		if len(first.GetCurrent()) != 32 || len(first.GetPrevious()) != 0 {
			t.Fatalf("keys after the first write: current %d bytes, previous %d bytes; want 32 and 0", len(first.GetCurrent()), len(first.GetPrevious()))
		}
		// Sealed at rest: the record does not hold the clear key.
		if rec := record(t, e, store.KindSessionKeys, "default"); bytes.Contains(rec.Data, first.GetCurrent()) {
			t.Fatal("the stored record holds the session key in clear text")
		}
		// Later writes keep it.
		mustCreateServer(t, e, stdioServer("sentry", nil))
		if k := sessionKeys(t, e.svc); !bytes.Equal(k.GetCurrent(), first.GetCurrent()) {
			t.Fatal("a later write changed the session key")
		}

		// Rotation: new current, old current becomes previous; one revision.
		before := revision(t, e)
		res, err := e.client.RotateSessionKey(ctx(t), &metamcpv1.RotateSessionKeyRequest{})
		if err != nil {
			t.Fatalf("RotateSessionKey: %v", err)
		}
		if res.GetRevision() != before+1 || revision(t, e) != before+1 {
			t.Fatalf("rotation revision = %d (store %d), want %d", res.GetRevision(), revision(t, e), before+1)
		}
		second := sessionKeys(t, e.svc)
		if !bytes.Equal(second.GetPrevious(), first.GetCurrent()) || len(second.GetCurrent()) != 32 || bytes.Equal(second.GetCurrent(), first.GetCurrent()) {
			t.Fatal("after a rotation the previous key is not the old current one, or current did not change")
		}
		if _, err := e.client.RotateSessionKey(ctx(t), &metamcpv1.RotateSessionKeyRequest{}); err != nil {
			t.Fatalf("second RotateSessionKey: %v", err)
		}
		third := sessionKeys(t, e.svc)
		if !bytes.Equal(third.GetPrevious(), second.GetCurrent()) || bytes.Equal(third.GetPrevious(), first.GetCurrent()) || bytes.Equal(third.GetCurrent(), first.GetCurrent()) {
			t.Fatal("after two rotations the first key is still there")
		}
	})
}

// TestSessionKeysOneForAllReplicas: control-plane replicas on one store that
// start at once (on a config from before session keys) create one key.
func TestSessionKeysOneForAllReplicas(t *testing.T) {
	forEachStore(t, func(t *testing.T, e *env) {
		mustCreateServer(t, e, stdioServer("github", nil))
		// Make it look like a store written by an older version: no key.
		if _, _, err := e.st.Update(ctx(t), func(ctx context.Context, tx store.Tx) error {
			return tx.Delete(ctx, store.KindSessionKeys, "default")
		}); err != nil {
			t.Fatal(err)
		}
		const replicas = 4
		revs := make([]int64, replicas)
		errs := make([]error, replicas)
		var wg sync.WaitGroup
		for i := range replicas {
			wg.Go(func() {
				svc := e.svc
				if i > 0 {
					svc = admin.New(e.st, e.sealer, slog.New(slog.DiscardHandler))
				}
				revs[i], errs[i] = svc.EnsureSessionKeys(context.Background())
			})
		}
		wg.Wait()
		created := 0
		for i := range replicas {
			if errs[i] != nil {
				t.Fatalf("replica %d: EnsureSessionKeys: %v", i, errs[i])
			}
			if revs[i] != 0 {
				created++
			}
		}
		if created != 1 {
			t.Fatalf("%d replicas created a session key, want exactly 1", created)
		}
		k := sessionKeys(t, e.svc)
		for i := 1; i < replicas; i++ {
			other := admin.New(e.st, e.sealer, slog.New(slog.DiscardHandler))
			if got := sessionKeys(t, other); !bytes.Equal(got.GetCurrent(), k.GetCurrent()) {
				t.Fatal("two replicas build snapshots with different session keys")
			}
		}
	})
}
