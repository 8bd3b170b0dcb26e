package postgres

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/metamcp/metamcp/controlplane/store"
	"github.com/metamcp/metamcp/controlplane/store/internal/migration"
	"github.com/metamcp/metamcp/controlplane/store/postgres/pgtest"
	"github.com/metamcp/metamcp/controlplane/store/storetest"
)

func openTest(t *testing.T, dsn string) *Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := Open(ctx, dsn, Options{Logger: testLogger(t), RecheckInterval: 200 * time.Millisecond})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		return openTest(t, pgtest.NewDatabase(t))
	})
}

func TestMigrate(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dsn := pgtest.NewDatabase(t)
	n, err := Migrate(ctx, dsn, testLogger(t))
	if err != nil {
		t.Fatalf("first Migrate: %v", err)
	}
	if want := len(mustMigrations(t)); n != want {
		t.Errorf("first Migrate applied %d, want %d", n, want)
	}
	n, err = Migrate(ctx, dsn, testLogger(t))
	if err != nil || n != 0 {
		t.Errorf("second Migrate = %d, %v; want 0, nil", n, err)
	}
	// Open migrates too, and finds nothing to do.
	openTest(t, dsn)
	checkSchemaMigrations(t, dsn)
}

func TestMigrateConcurrently(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dsn := pgtest.NewDatabase(t)
	const n = 4
	var wg sync.WaitGroup
	applied := make([]int, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			applied[i], errs[i] = Migrate(ctx, dsn, testLogger(t))
		}()
	}
	wg.Wait()
	total := 0
	for i := range n {
		if errs[i] != nil {
			t.Errorf("Migrate %d: %v", i, errs[i])
		}
		total += applied[i]
	}
	if want := len(mustMigrations(t)); total != want {
		t.Errorf("concurrent Migrates applied %d in total (%v), want %d", total, applied, want)
	}
	checkSchemaMigrations(t, dsn)
}

func mustMigrations(t *testing.T) []migration.Migration {
	t.Helper()
	ms, err := migration.Load(migrationFiles, "migrations")
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) == 0 {
		t.Fatal("no migrations embedded")
	}
	return ms
}

func checkSchemaMigrations(t *testing.T, dsn string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, _ := conn.Query(ctx, "SELECT version FROM schema_migrations ORDER BY version")
	got, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		t.Fatal(err)
	}
	ms := mustMigrations(t)
	if len(got) != len(ms) {
		t.Fatalf("schema_migrations has %v, want %d rows", got, len(ms))
	}
	for i, m := range ms {
		if int(got[i]) != m.Version {
			t.Errorf("schema_migrations[%d] = %d, want %d", i, got[i], m.Version)
		}
	}
	var revRows int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM revision").Scan(&revRows); err != nil || revRows != 1 {
		t.Errorf("revision table has %d rows (%v), want 1", revRows, err)
	}
}

// openNoRecheck opens a store whose watches can learn of other processes'
// commits only through NOTIFY (the fallback re-check is too slow to matter).
func openNoRecheck(t *testing.T, dsn string) *Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := Open(ctx, dsn, Options{Logger: testLogger(t), RecheckInterval: time.Hour})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func putRecord(t *testing.T, s store.Store, name string) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rev, _, err := s.Update(ctx, func(ctx context.Context, tx store.Tx) error {
		return tx.Put(ctx, store.Record{Kind: store.KindServer, Name: name, Data: []byte("x")})
	})
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
	return rev
}

func TestWatchSeesOtherStore(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	watcher, writer := openNoRecheck(t, dsn), openNoRecheck(t, dsn)
	// Two processes on one database are one store: the same id.
	if a, b := mustID(t, watcher), mustID(t, writer); a != b {
		t.Errorf("two stores on one database have ids %q and %q", a, b)
	}
	ch := watcher.Watch(t.Context())
	storetest.WaitFor(t, ch, 0)
	for i := range 3 {
		rev := putRecord(t, writer, fmt.Sprint("s", i))
		storetest.WaitFor(t, ch, rev)
	}
}

// listenerPID waits for a watch connection other than not to exist in the
// test database and returns its pid.
func listenerPID(t *testing.T, conn *pgx.Conn, not int32) int32 {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		rows, _ := conn.Query(context.Background(), `SELECT pid FROM pg_stat_activity
			WHERE datname = current_database() AND application_name = $1 AND pid <> $2`, listenerAppName, not)
		pids, err := pgx.CollectRows(rows, pgx.RowTo[int32])
		if err != nil {
			t.Fatalf("find watch connection: %v", err)
		}
		if len(pids) > 1 {
			t.Fatalf("found %d watch connections, want 1", len(pids))
		}
		if len(pids) == 1 {
			return pids[0]
		}
		if time.Now().After(deadline) {
			t.Fatal("no watch connection in pg_stat_activity within 10s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestWatchSurvivesKilledConnection(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	watcher, writer := openNoRecheck(t, dsn), openNoRecheck(t, dsn)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	admin, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())

	ch := watcher.Watch(ctx)
	storetest.WaitFor(t, ch, 0)
	old := listenerPID(t, admin, 0)
	var ok bool
	if err := admin.QueryRow(ctx, "SELECT pg_terminate_backend($1)", old).Scan(&ok); err != nil || !ok {
		t.Fatalf("pg_terminate_backend(%d) = %v, %v", old, ok, err)
	}
	// A commit while the watch is reconnecting is found by the re-read
	// after the new LISTEN.
	rev := putRecord(t, writer, "during")
	storetest.WaitFor(t, ch, rev)

	// The new connection hears later commits.
	listenerPID(t, admin, old)
	rev = putRecord(t, writer, "after")
	storetest.WaitFor(t, ch, rev)
}

// TestConcurrentUpdatesAcrossStores runs writers on two Stores (as two
// control planes would): revisions stay gapless and unique.
func TestConcurrentUpdatesAcrossStores(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	stores := []*Store{openTest(t, dsn), openTest(t, dsn)}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const writers, perWriter = 8, 20
	var mu sync.Mutex
	var revs []int64
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := stores[w%2]
			for range perWriter {
				rev, _, err := s.Update(ctx, func(ctx context.Context, tx store.Tx) error {
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
				revs = append(revs, rev)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	slices.Sort(revs)
	for i, rev := range revs {
		if rev != int64(i+1) {
			t.Fatalf("revisions not 1..%d: %v", writers*perWriter, revs)
		}
	}
	var r store.Record
	if err := stores[0].View(ctx, func(ctx context.Context, tx store.ReadTx) error {
		var err error
		r, err = tx.Get(ctx, store.KindServer, "counter")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if string(r.Data) != strconv.Itoa(writers*perWriter) {
		t.Errorf("counter = %s, want %d", r.Data, writers*perWriter)
	}
}

func TestOpenUnreachable(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Port 1 on loopback: nothing listens there.
	_, err := Open(ctx, "postgres://postgres@127.0.0.1:1/test?sslmode=disable&connect_timeout=5", Options{})
	if err == nil {
		t.Fatal("Open succeeded against a closed port")
	}
	if want := "connect to postgres at 127.0.0.1:1"; !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not contain %q", err, want)
	}
	if _, err := Migrate(ctx, "postgres://postgres@127.0.0.1:1/test?sslmode=disable&connect_timeout=5", nil); err == nil ||
		!strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Errorf("Migrate error %v does not name the address", err)
	}
	if _, err := Open(ctx, "postgres://%zz", Options{}); err == nil {
		t.Error("Open accepted a malformed DSN")
	}
}

func TestChannelFor(t *testing.T) {
	tests := []struct{ schema, want string }{
		{"", "metamcp_revision"},
		{"public", "metamcp_revision"},
		{"tenant1", "metamcp_revision_tenant1"},
		{strings.Repeat("x", 80), ("metamcp_revision_" + strings.Repeat("x", 80))[:63]},
	}
	for _, tt := range tests {
		if got := channelFor(tt.schema); got != tt.want {
			t.Errorf("channelFor(%q) = %q, want %q", tt.schema, got, tt.want)
		}
	}
}

func mustID(t *testing.T, s *Store) string {
	t.Helper()
	id, err := s.ID(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return id
}
