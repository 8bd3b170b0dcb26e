package sqlite

import (
	"context"
	"log/slog"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/metamcp/metamcp/controlplane/store"
	"github.com/metamcp/metamcp/controlplane/store/storetest"
)

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, nil))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func openTest(t *testing.T, path string, recheck time.Duration) *Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := Open(ctx, path, Options{Logger: testLogger(t), RecheckInterval: recheck})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		return openTest(t, filepath.Join(t.TempDir(), "data", "metamcp.db"), 0)
	})
}

func putRecord(t *testing.T, s store.Store, name, data string) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rev, _, err := s.Update(ctx, func(ctx context.Context, tx store.Tx) error {
		return tx.Put(ctx, store.Record{Kind: store.KindServer, Name: name, Data: []byte(data)})
	})
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
	return rev
}

func getRecord(t *testing.T, s store.Store, name string) store.Record {
	t.Helper()
	var r store.Record
	if err := s.View(context.Background(), func(ctx context.Context, tx store.ReadTx) error {
		var err error
		r, err = tx.Get(ctx, store.KindServer, name)
		return err
	}); err != nil {
		t.Fatalf("Get %q: %v", name, err)
	}
	return r
}

func TestReopenKeepsData(t *testing.T) {
	path := filepath.Join(t.TempDir(), "metamcp.db")
	s := openTest(t, path, 0)
	rev := putRecord(t, s, "github", "payload")
	before := getRecord(t, s, "github")
	id, err := s.ID(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, path, 0)
	if again, err := s.ID(context.Background()); err != nil || again != id {
		t.Errorf("ID after reopen = %q, %v; want %q", again, err, id)
	}
	after := getRecord(t, s, "github")
	if string(after.Data) != "payload" || after.Revision != rev {
		t.Errorf("after reopen: %q rev %d, want payload rev %d", after.Data, after.Revision, rev)
	}
	// Times round-trip exactly (microseconds, UTC).
	if !after.CreateTime.Equal(before.CreateTime) || after.CreateTime != before.CreateTime {
		t.Errorf("CreateTime %v after reopen, want %v", after.CreateTime, before.CreateTime)
	}
	if got, err := s.Revision(context.Background()); err != nil || got != rev {
		t.Errorf("Revision after reopen = %d, %v; want %d", got, err, rev)
	}
}

// TestTwoStoresOneFile opens the file twice, as two processes would: writes
// stay serialised across them, and a watch notices the other's commits.
func TestTwoStoresOneFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "metamcp.db")
	a := openTest(t, path, 50*time.Millisecond)
	b := openTest(t, path, 50*time.Millisecond)

	ch := a.Watch(t.Context())
	storetest.WaitFor(t, ch, 0)
	rev := putRecord(t, b, "from-b", "x")
	storetest.WaitFor(t, ch, rev)

	const writers, perWriter = 8, 15
	var mu sync.Mutex
	var revs []int64
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := []*Store{a, b}[w%2]
			for range perWriter {
				r, _, err := s.Update(t.Context(), func(ctx context.Context, tx store.Tx) error {
					n := 0
					if r, err := tx.Get(ctx, store.KindServer, "counter"); err == nil {
						n, _ = strconv.Atoi(string(r.Data))
					}
					return tx.Put(ctx, store.Record{Kind: store.KindServer, Name: "counter", Data: []byte(strconv.Itoa(n + 1))})
				})
				if err != nil {
					t.Errorf("Update: %v", err)
					return
				}
				mu.Lock()
				revs = append(revs, r)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	slices.Sort(revs)
	for i, r := range revs {
		if r != rev+int64(i+1) {
			t.Fatalf("revisions not %d..%d: %v", rev+1, rev+writers*perWriter, revs)
		}
	}
	if c := getRecord(t, a, "counter"); string(c.Data) != strconv.Itoa(writers*perWriter) {
		t.Errorf("counter = %s, want %d", c.Data, writers*perWriter)
	}
	storetest.WaitFor(t, ch, rev+writers*perWriter)
}

func TestOpenBadPath(t *testing.T) {
	dir := t.TempDir()
	for _, path := range []string{"", ":memory:", "file:x.db", filepath.Join(dir, "a?b.db")} {
		if s, err := Open(context.Background(), path, Options{}); err == nil {
			s.Close()
			t.Errorf("Open(%q) succeeded, want an error", path)
		}
	}
}

func TestPragmas(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "metamcp.db"), 0)
	tests := []struct{ pragma, want string }{
		{"journal_mode", "wal"},
		{"foreign_keys", "1"},
		{"busy_timeout", strconv.FormatInt(busyTimeout.Milliseconds(), 10)},
	}
	for _, tt := range tests {
		var got string
		if err := s.db.QueryRow("PRAGMA " + tt.pragma).Scan(&got); err != nil {
			t.Fatalf("PRAGMA %s: %v", tt.pragma, err)
		}
		if got != tt.want {
			t.Errorf("PRAGMA %s = %s, want %s", tt.pragma, got, tt.want)
		}
	}
}
