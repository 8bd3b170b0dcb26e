// Package storetest is the conformance suite every store.Store implementation
// must pass. An implementation's test calls Run with a function that opens a
// fresh, empty store.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/controlplane/store"
)

// waitTimeout bounds every wait for a watch channel.
const waitTimeout = 10 * time.Second

// Run runs the conformance suite. open must return a new, empty store each
// time it is called; Run closes it when the subtest ends (open may register
// its own cleanup too: Close must tolerate a second call).
//
// Beyond the store.Store documentation, the suite holds implementations to
// these choices, which callers may rely on:
//   - List sorts names by byte order ("B" < "a").
//   - A Create that fails with ErrExists or a Delete that fails with
//     ErrNotFound writes nothing and leaves the transaction usable.
//   - Update signals the process's own watchers before it returns.
//   - Methods called after Close return ErrClosed; Watch returns a closed
//     channel.
//   - Times are UTC with microsecond precision.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	t.Helper()
	newStore := func(t *testing.T) store.Store {
		t.Helper()
		s := open(t)
		t.Cleanup(func() {
			if err := s.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
		return s
	}
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"EmptyStore", testEmptyStore},
		{"CreateAndGet", testCreateAndGet},
		{"CreateTwice", testCreateTwice},
		{"GetMissing", testGetMissing},
		{"PutKeepsCreateTime", testPutKeepsCreateTime},
		{"Delete", testDelete},
		{"ListSortedByNameFilteredByKind", testList},
		{"RevisionPerUpdate", testRevisionPerUpdate},
		{"UpdateWithoutWrites", testUpdateWithoutWrites},
		{"UpdateError", testUpdateError},
		{"InvalidKey", testInvalidKey},
		{"ViewConsistency", testViewConsistency},
		{"Watch", testWatch},
		{"WatchCoalesces", testWatchCoalesces},
		{"WatchClosedOnCancel", testWatchClosedOnCancel},
		{"Close", testClose},
		{"ConcurrentUpdates", testConcurrentUpdates},
		{"DataPlanes", testDataPlanes},
		{"CallRecords", testCallRecords},
		{"ID", func(t *testing.T, s store.Store) { testID(t, s, newStore(t)) }},
		{"CallRecordsOnce", testCallRecordsOnce},
		{"CallRecordFilters", testCallRecordFilters},
		{"CallRecordPages", testCallRecordPages},
		{"CallRecordsAfter", testCallRecordsAfter},
		{"CallStats", testCallStats},
		{"CallRetention", testCallRetention},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.fn(t, newStore(t))
		})
	}
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// put writes records in one Update and returns its revision.
func put(t *testing.T, s store.Store, recs ...store.Record) int64 {
	t.Helper()
	rev, changed, err := s.Update(testContext(t), func(ctx context.Context, tx store.Tx) error {
		for _, r := range recs {
			if err := tx.Put(ctx, r); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Update(put %d records): %v", len(recs), err)
	}
	if !changed {
		t.Fatalf("Update(put %d records): changed = false", len(recs))
	}
	return rev
}

func get(t *testing.T, s store.Store, kind store.Kind, name string) (store.Record, error) {
	t.Helper()
	var r store.Record
	err := s.View(testContext(t), func(ctx context.Context, tx store.ReadTx) error {
		var err error
		r, err = tx.Get(ctx, kind, name)
		return err
	})
	return r, err
}

func mustGet(t *testing.T, s store.Store, kind store.Kind, name string) store.Record {
	t.Helper()
	r, err := get(t, s, kind, name)
	if err != nil {
		t.Fatalf("Get(%s, %q): %v", kind, name, err)
	}
	return r
}

func list(t *testing.T, s store.Store, kind store.Kind) []store.Record {
	t.Helper()
	var out []store.Record
	if err := s.View(testContext(t), func(ctx context.Context, tx store.ReadTx) error {
		var err error
		out, err = tx.List(ctx, kind)
		return err
	}); err != nil {
		t.Fatalf("List(%s): %v", kind, err)
	}
	return out
}

func revision(t *testing.T, s store.Store) int64 {
	t.Helper()
	rev, err := s.Revision(testContext(t))
	if err != nil {
		t.Fatalf("Revision: %v", err)
	}
	return rev
}

func rec(kind store.Kind, name, data string) store.Record {
	return store.Record{Kind: kind, Name: name, Data: []byte(data)}
}

func checkTime(t *testing.T, what string, tm time.Time) {
	t.Helper()
	if tm.IsZero() {
		t.Errorf("%s is zero", what)
	}
	if tm.Location() != time.UTC {
		t.Errorf("%s location %v, want UTC", what, tm.Location())
	}
	if tm.Nanosecond()%1000 != 0 {
		t.Errorf("%s %v has sub-microsecond digits", what, tm)
	}
}

func testEmptyStore(t *testing.T, s store.Store) {
	ctx := testContext(t)
	if rev := revision(t, s); rev != 0 {
		t.Errorf("Revision of an empty store = %d, want 0", rev)
	}
	if err := s.View(ctx, func(ctx context.Context, tx store.ReadTx) error {
		if tx.Revision() != 0 {
			t.Errorf("View Revision = %d, want 0", tx.Revision())
		}
		recs, err := tx.List(ctx, store.KindServer)
		if err != nil {
			return err
		}
		if len(recs) != 0 {
			t.Errorf("List(Server) = %d records, want 0", len(recs))
		}
		return nil
	}); err != nil {
		t.Fatalf("View: %v", err)
	}
	dps, err := s.ListDataPlanes(ctx)
	if err != nil || len(dps) != 0 {
		t.Errorf("ListDataPlanes = %d, %v; want none", len(dps), err)
	}
	calls, err := s.ListCallRecords(ctx, store.CallQuery{Limit: 10})
	if err != nil || len(calls) != 0 {
		t.Errorf("ListCallRecords = %d, %v; want none", len(calls), err)
	}
}

func testCreateAndGet(t *testing.T, s store.Store) {
	ctx := testContext(t)
	rev, changed, err := s.Update(ctx, func(ctx context.Context, tx store.Tx) error {
		if tx.Revision() != 1 {
			t.Errorf("Tx.Revision in the first Update = %d, want 1", tx.Revision())
		}
		if err := tx.Create(ctx, rec(store.KindServer, "github", "payload")); err != nil {
			return err
		}
		// A transaction reads its own writes.
		r, err := tx.Get(ctx, store.KindServer, "github")
		if err != nil {
			return fmt.Errorf("get own write: %w", err)
		}
		if string(r.Data) != "payload" {
			t.Errorf("own write Data = %q, want payload", r.Data)
		}
		// Empty data is allowed.
		return tx.Create(ctx, store.Record{Kind: store.KindServer, Name: "empty"})
	})
	if err != nil || !changed || rev != 1 {
		t.Fatalf("Update = %d, %v, %v; want 1, true, nil", rev, changed, err)
	}
	r := mustGet(t, s, store.KindServer, "github")
	if r.Kind != store.KindServer || r.Name != "github" || string(r.Data) != "payload" {
		t.Errorf("Get = %s %q %q, want Server github payload", r.Kind, r.Name, r.Data)
	}
	if r.Revision != 1 {
		t.Errorf("Record.Revision = %d, want 1", r.Revision)
	}
	checkTime(t, "CreateTime", r.CreateTime)
	checkTime(t, "UpdateTime", r.UpdateTime)
	if !r.CreateTime.Equal(r.UpdateTime) {
		t.Errorf("new record: CreateTime %v != UpdateTime %v", r.CreateTime, r.UpdateTime)
	}
	if d := time.Since(r.CreateTime); d < -time.Hour || d > time.Hour {
		t.Errorf("CreateTime %v is far from now", r.CreateTime)
	}
	if e := mustGet(t, s, store.KindServer, "empty"); len(e.Data) != 0 {
		t.Errorf("empty record Data = %q, want empty", e.Data)
	}
}

func testCreateTwice(t *testing.T, s store.Store) {
	ctx := testContext(t)
	put(t, s, rec(store.KindServer, "a", "first"))

	_, changed, err := s.Update(ctx, func(ctx context.Context, tx store.Tx) error {
		return tx.Create(ctx, rec(store.KindServer, "a", "second"))
	})
	if !errors.Is(err, store.ErrExists) || changed {
		t.Fatalf("second Create: changed %v, err %v; want false, ErrExists", changed, err)
	}

	// fn may handle ErrExists and go on in the same transaction.
	rev, changed, err := s.Update(ctx, func(ctx context.Context, tx store.Tx) error {
		if err := tx.Create(ctx, rec(store.KindServer, "a", "third")); err == nil {
			return errors.New("create of an existing record succeeded, want ErrExists")
		} else if !errors.Is(err, store.ErrExists) {
			return fmt.Errorf("create of an existing record: %w, want ErrExists", err)
		}
		return tx.Create(ctx, rec(store.KindServer, "b", "other"))
	})
	if err != nil || !changed || rev != 2 {
		t.Fatalf("Update after handled ErrExists = %d, %v, %v; want 2, true, nil", rev, changed, err)
	}
	if r := mustGet(t, s, store.KindServer, "a"); string(r.Data) != "first" || r.Revision != 1 {
		t.Errorf("after failed Creates: Data %q rev %d, want first rev 1", r.Data, r.Revision)
	}
	// The same name in another kind is a different record.
	put(t, s, rec(store.KindNamespace, "a", "ns"))
}

func testGetMissing(t *testing.T, s store.Store) {
	put(t, s, rec(store.KindServer, "present", "x"))
	for _, tc := range []struct {
		kind store.Kind
		name string
	}{
		{store.KindServer, "absent"},
		{store.KindNamespace, "present"},
		{store.KindServer, "Present"},
	} {
		if _, err := get(t, s, tc.kind, tc.name); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Get(%s, %q) err = %v, want ErrNotFound", tc.kind, tc.name, err)
		}
	}
	_, _, err := s.Update(testContext(t), func(ctx context.Context, tx store.Tx) error {
		_, err := tx.Get(ctx, store.KindServer, "absent")
		return err
	})
	if !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get in Update err = %v, want ErrNotFound", err)
	}
}

func testPutKeepsCreateTime(t *testing.T, s store.Store) {
	put(t, s, rec(store.KindEndpoint, "e", "v1"), rec(store.KindEndpoint, "other", "x"))
	first := mustGet(t, s, store.KindEndpoint, "e")
	rev := put(t, s, rec(store.KindEndpoint, "e", "v2"))
	if rev != 2 {
		t.Fatalf("second Update revision = %d, want 2", rev)
	}
	second := mustGet(t, s, store.KindEndpoint, "e")
	if string(second.Data) != "v2" {
		t.Errorf("Data after Put = %q, want v2", second.Data)
	}
	if second.Revision != 2 {
		t.Errorf("Revision after Put = %d, want 2", second.Revision)
	}
	if !second.CreateTime.Equal(first.CreateTime) {
		t.Errorf("CreateTime changed on Put: %v -> %v", first.CreateTime, second.CreateTime)
	}
	if second.UpdateTime.Before(first.UpdateTime) {
		t.Errorf("UpdateTime went back on Put: %v -> %v", first.UpdateTime, second.UpdateTime)
	}
	checkTime(t, "UpdateTime", second.UpdateTime)
	if other := mustGet(t, s, store.KindEndpoint, "other"); other.Revision != 1 {
		t.Errorf("untouched record Revision = %d, want 1", other.Revision)
	}
}

func testDelete(t *testing.T, s store.Store) {
	ctx := testContext(t)
	put(t, s, rec(store.KindApiKey, "k", "x"))
	_, changed, err := s.Update(ctx, func(ctx context.Context, tx store.Tx) error {
		return tx.Delete(ctx, store.KindApiKey, "missing")
	})
	if !errors.Is(err, store.ErrNotFound) || changed {
		t.Fatalf("Delete missing: changed %v, err %v; want false, ErrNotFound", changed, err)
	}
	// A handled ErrNotFound writes nothing.
	rev, changed, err := s.Update(ctx, func(ctx context.Context, tx store.Tx) error {
		if err := tx.Delete(ctx, store.KindApiKey, "missing"); err == nil {
			return errors.New("delete of a missing record succeeded, want ErrNotFound")
		} else if !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("delete of a missing record: %w, want ErrNotFound", err)
		}
		return nil
	})
	if err != nil || changed || rev != 1 {
		t.Fatalf("Update with handled ErrNotFound = %d, %v, %v; want 1, false, nil", rev, changed, err)
	}
	rev, changed, err = s.Update(ctx, func(ctx context.Context, tx store.Tx) error {
		return tx.Delete(ctx, store.KindApiKey, "k")
	})
	if err != nil || !changed || rev != 2 {
		t.Fatalf("Delete = %d, %v, %v; want 2, true, nil", rev, changed, err)
	}
	if _, err := get(t, s, store.KindApiKey, "k"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get after Delete err = %v, want ErrNotFound", err)
	}
	// Deleted, then created again: a new record with a new CreateTime.
	rev = put(t, s, rec(store.KindApiKey, "k", "again"))
	if r := mustGet(t, s, store.KindApiKey, "k"); r.Revision != rev || string(r.Data) != "again" {
		t.Errorf("re-created record = rev %d %q, want rev %d again", r.Revision, r.Data, rev)
	}
}

func testList(t *testing.T, s store.Store) {
	put(t, s,
		rec(store.KindServer, "b", "2"),
		rec(store.KindServer, "a", "1"),
		rec(store.KindServer, "c", "3"),
		rec(store.KindServer, "B", "0"),
		rec(store.KindNamespace, "a", "ns"),
	)
	put(t, s, rec(store.KindServer, "aa", "11"))
	got := list(t, s, store.KindServer)
	var names []string
	for _, r := range got {
		if r.Kind != store.KindServer {
			t.Errorf("List(Server) returned kind %s", r.Kind)
		}
		names = append(names, r.Name)
	}
	if want := []string{"B", "a", "aa", "b", "c"}; !slices.Equal(names, want) {
		t.Errorf("List(Server) names = %q, want %q", names, want)
	}
	if len(got) == 5 {
		if string(got[2].Data) != "11" || got[2].Revision != 2 || got[1].Revision != 1 {
			t.Errorf("List records carry wrong data or revision: %+v", got)
		}
		checkTime(t, "List CreateTime", got[0].CreateTime)
	}
	if ns := list(t, s, store.KindNamespace); len(ns) != 1 || ns[0].Name != "a" || string(ns[0].Data) != "ns" {
		t.Errorf("List(Namespace) = %+v, want one record a", ns)
	}
	if eps := list(t, s, store.KindEndpoint); len(eps) != 0 {
		t.Errorf("List(Endpoint) = %d records, want 0", len(eps))
	}
}

func testRevisionPerUpdate(t *testing.T, s store.Store) {
	ctx := testContext(t)
	for i := int64(1); i <= 3; i++ {
		rev, changed, err := s.Update(ctx, func(ctx context.Context, tx store.Tx) error {
			if tx.Revision() != i {
				t.Errorf("Tx.Revision = %d, want %d", tx.Revision(), i)
			}
			// Several writes in one Update bump the revision once.
			for j := range 3 {
				if err := tx.Put(ctx, rec(store.KindServer, fmt.Sprintf("s%d-%d", i, j), "x")); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil || !changed || rev != i {
			t.Fatalf("Update %d = %d, %v, %v; want %d, true, nil", i, rev, changed, err, i)
		}
		if got := revision(t, s); got != i {
			t.Errorf("Revision after Update %d = %d", i, got)
		}
	}
	for _, r := range list(t, s, store.KindServer) {
		want, _ := strconv.ParseInt(r.Name[1:2], 10, 64)
		if r.Revision != want {
			t.Errorf("%s: Revision %d, want %d", r.Name, r.Revision, want)
		}
	}
	if err := s.View(ctx, func(ctx context.Context, tx store.ReadTx) error {
		if tx.Revision() != 3 {
			t.Errorf("View Revision = %d, want 3", tx.Revision())
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

func testUpdateWithoutWrites(t *testing.T, s store.Store) {
	ctx := testContext(t)
	put(t, s, rec(store.KindServer, "a", "x"))
	rev, changed, err := s.Update(ctx, func(ctx context.Context, tx store.Tx) error {
		_, err := tx.Get(ctx, store.KindServer, "a")
		return err
	})
	if err != nil || changed || rev != 1 {
		t.Fatalf("read-only Update = %d, %v, %v; want 1, false, nil", rev, changed, err)
	}
	if got := revision(t, s); got != 1 {
		t.Errorf("Revision after read-only Update = %d, want 1", got)
	}
	// The next write still gets the next revision: nothing was skipped.
	if rev := put(t, s, rec(store.KindServer, "b", "y")); rev != 2 {
		t.Errorf("next write revision = %d, want 2", rev)
	}
}

type sentinelError struct{}

func (*sentinelError) Error() string { return "sentinel" }

func testUpdateError(t *testing.T, s store.Store) {
	ctx := testContext(t)
	put(t, s, rec(store.KindServer, "a", "x"))
	want := &sentinelError{}
	_, changed, err := s.Update(ctx, func(ctx context.Context, tx store.Tx) error {
		if err := tx.Put(ctx, rec(store.KindServer, "a", "changed")); err != nil {
			return err
		}
		if err := tx.Create(ctx, rec(store.KindServer, "b", "new")); err != nil {
			return err
		}
		if err := tx.Delete(ctx, store.KindServer, "a"); err != nil {
			return err
		}
		return want
	})
	if err != want { //nolint:errorlint // the contract: fn's error comes back unwrapped
		t.Errorf("Update err = %v, want fn's error as is", err)
	}
	if changed {
		t.Error("failed Update reported changed")
	}
	if got := revision(t, s); got != 1 {
		t.Errorf("Revision after failed Update = %d, want 1", got)
	}
	if r := mustGet(t, s, store.KindServer, "a"); string(r.Data) != "x" || r.Revision != 1 {
		t.Errorf("record after failed Update = %q rev %d, want x rev 1", r.Data, r.Revision)
	}
	if _, err := get(t, s, store.KindServer, "b"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("record created by failed Update: err %v, want ErrNotFound", err)
	}
	if rev := put(t, s, rec(store.KindServer, "c", "z")); rev != 2 {
		t.Errorf("next write revision = %d, want 2", rev)
	}
}

func testInvalidKey(t *testing.T, s store.Store) {
	ctx := testContext(t)
	for _, r := range []store.Record{
		{Kind: "", Name: "a"},
		{Kind: store.KindServer, Name: ""},
	} {
		_, changed, err := s.Update(ctx, func(ctx context.Context, tx store.Tx) error {
			return tx.Put(ctx, r)
		})
		if err == nil || changed {
			t.Errorf("Put(kind %q, name %q) = changed %v, err %v; want an error", r.Kind, r.Name, changed, err)
		}
	}
	if got := revision(t, s); got != 0 {
		t.Errorf("Revision = %d, want 0", got)
	}
}

func testViewConsistency(t *testing.T, s store.Store) {
	ctx := testContext(t)
	put(t, s, rec(store.KindServer, "a", "old"), rec(store.KindServer, "b", "old"))
	err := s.View(ctx, func(ctx context.Context, tx store.ReadTx) error {
		if tx.Revision() != 1 {
			t.Errorf("View Revision = %d, want 1", tx.Revision())
		}
		if _, err := tx.Get(ctx, store.KindServer, "a"); err != nil {
			return err
		}
		// A write commits while the view is open.
		rev, _, err := s.Update(ctx, func(ctx context.Context, w store.Tx) error {
			if err := w.Put(ctx, rec(store.KindServer, "a", "new")); err != nil {
				return err
			}
			if err := w.Delete(ctx, store.KindServer, "b"); err != nil {
				return err
			}
			return w.Create(ctx, rec(store.KindServer, "c", "new"))
		})
		if err != nil {
			return fmt.Errorf("update during view: %w", err)
		}
		if rev != 2 {
			return fmt.Errorf("update during view committed revision %d, want 2", rev)
		}
		// The view still sees revision 1.
		if tx.Revision() != 1 {
			t.Errorf("View Revision changed to %d", tx.Revision())
		}
		r, err := tx.Get(ctx, store.KindServer, "a")
		if err != nil {
			return err
		}
		if string(r.Data) != "old" || r.Revision != 1 {
			t.Errorf("View Get a = %q rev %d, want old rev 1", r.Data, r.Revision)
		}
		recs, err := tx.List(ctx, store.KindServer)
		if err != nil {
			return err
		}
		var names []string
		for _, r := range recs {
			names = append(names, r.Name)
		}
		if !slices.Equal(names, []string{"a", "b"}) {
			t.Errorf("View List = %q, want [a b]", names)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("View: %v", err)
	}
	// A new view sees the write.
	if r := mustGet(t, s, store.KindServer, "a"); string(r.Data) != "new" {
		t.Errorf("Get after View = %q, want new", r.Data)
	}
	// View returns fn's error.
	want := &sentinelError{}
	if err := s.View(ctx, func(context.Context, store.ReadTx) error { return want }); err != want { //nolint:errorlint // fn's error comes back unwrapped
		t.Errorf("View err = %v, want fn's error as is", err)
	}
}

// receive waits for the next value on ch, failing the test after waitTimeout.
func receive(t *testing.T, ch <-chan int64) int64 {
	t.Helper()
	select {
	case rev, ok := <-ch:
		if !ok {
			t.Fatal("watch channel closed unexpectedly")
		}
		return rev
	case <-time.After(waitTimeout):
		t.Fatalf("no revision on the watch channel within %v", waitTimeout)
		return 0
	}
}

// WaitFor reads ch until it delivers want, failing the test if a value is
// out of order, the channel closes, or waitTimeout passes. Implementation
// tests use it too.
func WaitFor(t *testing.T, ch <-chan int64, want int64) {
	t.Helper()
	deadline := time.After(waitTimeout)
	last := int64(-1)
	for {
		select {
		case rev, ok := <-ch:
			if !ok {
				t.Fatalf("watch channel closed while waiting for revision %d", want)
			}
			if rev <= last {
				t.Fatalf("watch sent revision %d after %d", rev, last)
			}
			last = rev
			if rev == want {
				return
			}
			if rev > want {
				t.Fatalf("watch sent revision %d, waiting for %d", rev, want)
			}
		case <-deadline:
			t.Fatalf("revision %d not seen on the watch channel within %v (last %d)", want, waitTimeout, last)
		}
	}
}

// WaitClosed drains ch until it is closed, failing the test after waitTimeout.
func WaitClosed(t *testing.T, ch <-chan int64) {
	t.Helper()
	deadline := time.After(waitTimeout)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatalf("watch channel not closed within %v", waitTimeout)
		}
	}
}

func testWatch(t *testing.T, s store.Store) {
	ctx := testContext(t)
	// An empty store's watch first sends 0.
	ch0 := s.Watch(ctx)
	if rev := receive(t, ch0); rev != 0 {
		t.Fatalf("first revision on an empty store's watch = %d, want 0", rev)
	}

	put(t, s, rec(store.KindServer, "a", "1"))
	WaitFor(t, ch0, 1)

	// A watch started later first sends the current revision.
	ch := s.Watch(ctx)
	if rev := receive(t, ch); rev != 1 {
		t.Fatalf("first revision on watch = %d, want 1", rev)
	}
	rev := put(t, s, rec(store.KindServer, "b", "2"))
	WaitFor(t, ch, rev)
	WaitFor(t, ch0, rev)

	// An Update that writes nothing sends nothing.
	if _, _, err := s.Update(ctx, func(context.Context, store.Tx) error { return nil }); err != nil {
		t.Fatal(err)
	}
	rev = put(t, s, rec(store.KindServer, "c", "3"))
	if got := receive(t, ch); got != rev {
		t.Errorf("after a no-op Update and a write: got revision %d, want %d", got, rev)
	}
}

func testWatchCoalesces(t *testing.T, s store.Store) {
	ctx := testContext(t)
	put(t, s, rec(store.KindServer, "a", "0"))
	ch := s.Watch(ctx)
	WaitFor(t, ch, 1)
	var last int64
	for i := range 5 {
		last = put(t, s, rec(store.KindServer, "a", strconv.Itoa(i)))
	}
	// The reader was idle during five commits: it is handed only the newest.
	if got := receive(t, ch); got != last {
		t.Fatalf("after 5 commits the watch sent %d, want only the newest, %d", got, last)
	}
	select {
	case rev, ok := <-ch:
		if ok {
			t.Errorf("watch sent %d after the newest revision %d", rev, last)
		}
	default:
	}
}

func testWatchClosedOnCancel(t *testing.T, s store.Store) {
	ctx, cancel := context.WithCancel(testContext(t))
	ch := s.Watch(ctx)
	other := s.Watch(testContext(t))
	receive(t, ch)
	receive(t, other)
	cancel()
	WaitClosed(t, ch)
	// Other watches live on.
	rev := put(t, s, rec(store.KindServer, "a", "x"))
	WaitFor(t, other, rev)

	// A watch on a context that is already done is closed at once.
	WaitClosed(t, s.Watch(ctx))
}

func testClose(t *testing.T, s store.Store) {
	ctx := testContext(t)
	ch := s.Watch(ctx)
	receive(t, ch)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	WaitClosed(t, ch)
	WaitClosed(t, s.Watch(ctx))
	if _, err := s.Revision(ctx); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Revision after Close: err %v, want ErrClosed", err)
	}
	if _, _, err := s.Update(ctx, func(context.Context, store.Tx) error { return nil }); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Update after Close: err %v, want ErrClosed", err)
	}
	if err := s.View(ctx, func(context.Context, store.ReadTx) error { return nil }); !errors.Is(err, store.ErrClosed) {
		t.Errorf("View after Close: err %v, want ErrClosed", err)
	}
	if err := s.UpsertDataPlane(ctx, &metamcpv1.DataPlane{NodeId: "n"}); !errors.Is(err, store.ErrClosed) {
		t.Errorf("UpsertDataPlane after Close: err %v, want ErrClosed", err)
	}
	if _, err := s.ListDataPlanes(ctx); !errors.Is(err, store.ErrClosed) {
		t.Errorf("ListDataPlanes after Close: err %v, want ErrClosed", err)
	}
	if _, err := s.AppendCallRecords(ctx, []*metamcpv1.CallRecord{{}}); !errors.Is(err, store.ErrClosed) {
		t.Errorf("AppendCallRecords after Close: err %v, want ErrClosed", err)
	}
	if _, err := s.ListCallRecords(ctx, store.CallQuery{Limit: 1}); !errors.Is(err, store.ErrClosed) {
		t.Errorf("ListCallRecords after Close: err %v, want ErrClosed", err)
	}
	if _, err := s.CallRecordsAfter(ctx, nil, 0, 1); !errors.Is(err, store.ErrClosed) {
		t.Errorf("CallRecordsAfter after Close: err %v, want ErrClosed", err)
	}
	if _, err := s.DeleteCallRecordsBefore(ctx, time.Now()); !errors.Is(err, store.ErrClosed) {
		t.Errorf("DeleteCallRecordsBefore after Close: err %v, want ErrClosed", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// testConcurrentUpdates has 16 writers each do 25 read-modify-write
// increments of one counter: no increment may be lost, and the revisions
// handed out must be exactly 1..400.
func testConcurrentUpdates(t *testing.T, s store.Store) {
	const writers, perWriter = 16, 25
	ctx := testContext(t)
	var (
		mu   sync.Mutex
		revs []int64
		wg   sync.WaitGroup
		errs = make(chan error, writers)
	)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWriter {
				rev, changed, err := s.Update(ctx, func(ctx context.Context, tx store.Tx) error {
					n := 0
					r, err := tx.Get(ctx, store.KindServer, "counter")
					switch {
					case errors.Is(err, store.ErrNotFound):
					case err != nil:
						return err
					default:
						if n, err = strconv.Atoi(string(r.Data)); err != nil {
							return fmt.Errorf("counter %q: %w", r.Data, err)
						}
					}
					return tx.Put(ctx, rec(store.KindServer, "counter", strconv.Itoa(n+1)))
				})
				if err != nil || !changed {
					errs <- fmt.Errorf("writer %d update %d: changed %v, err %w", w, i, changed, err)
					return
				}
				mu.Lock()
				revs = append(revs, rev)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	r := mustGet(t, s, store.KindServer, "counter")
	if string(r.Data) != strconv.Itoa(writers*perWriter) {
		t.Errorf("counter = %s, want %d (lost updates)", r.Data, writers*perWriter)
	}
	if r.Revision != writers*perWriter {
		t.Errorf("counter Revision = %d, want %d", r.Revision, writers*perWriter)
	}
	slices.Sort(revs)
	for i, rev := range revs {
		if rev != int64(i+1) {
			t.Fatalf("sorted revisions[%d] = %d, want %d (gap or duplicate): %v", i, rev, i+1, revs)
		}
	}
	if got := revision(t, s); got != writers*perWriter {
		t.Errorf("Revision = %d, want %d", got, writers*perWriter)
	}
}

func testDataPlanes(t *testing.T, s store.Store) {
	ctx := testContext(t)
	seen := time.Date(2020, 3, 4, 5, 6, 7, 891011000, time.UTC)
	b := &metamcpv1.DataPlane{
		NodeId: "node-b", Hostname: "host-b", Version: "1.0.0", Address: "10.0.0.2:12008",
		Connected: true, AppliedRevision: 7, AppliedHash: "abc",
		LastSeen: timestamppb.New(seen), ConnectTime: timestamppb.New(seen.Add(-time.Hour)),
		Upstreams: []*metamcpv1.UpstreamStatus{{Server: "github", State: metamcpv1.UpstreamState_UPSTREAM_STATE_HEALTHY, Sessions: 2}},
	}
	a := &metamcpv1.DataPlane{NodeId: "node-a", Hostname: "host-a"}
	for _, dp := range []*metamcpv1.DataPlane{b, a} {
		if err := s.UpsertDataPlane(ctx, dp); err != nil {
			t.Fatalf("UpsertDataPlane(%s): %v", dp.GetNodeId(), err)
		}
	}
	got, err := s.ListDataPlanes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || !proto.Equal(got[0], a) || !proto.Equal(got[1], b) {
		t.Fatalf("ListDataPlanes = %v, want [%v %v]", got, a, b)
	}

	// Upsert replaces.
	b2 := proto.CloneOf(b)
	b2.Connected = false
	b2.LastError = "bad snapshot"
	b2.LastErrorRevision = 8
	b2.Upstreams = nil
	if err := s.UpsertDataPlane(ctx, b2); err != nil {
		t.Fatal(err)
	}
	got, err = s.ListDataPlanes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || !proto.Equal(got[1], b2) {
		t.Fatalf("after second upsert ListDataPlanes = %v, want node-b = %v", got, b2)
	}

	if err := s.UpsertDataPlane(ctx, &metamcpv1.DataPlane{}); err == nil {
		t.Error("UpsertDataPlane without a node id succeeded")
	}
	// The registry is not config: the revision does not move.
	if rev := revision(t, s); rev != 0 {
		t.Errorf("Revision after data-plane upserts = %d, want 0", rev)
	}
}

// testID: a store has an id from the start, the same after writes, and
// another store has another one.
func testID(t *testing.T, s, other store.Store) {
	ctx := testContext(t)
	id, err := s.ID(ctx)
	if err != nil {
		t.Fatalf("ID: %v", err)
	}
	if len(id) < 16 {
		t.Fatalf("ID = %q, want a random id of at least 16 characters", id)
	}
	put(t, s, rec(store.KindServer, "a", "1"))
	if again, err := s.ID(ctx); err != nil || again != id {
		t.Errorf("ID after a write = %q, %v; want %q", again, err, id)
	}
	if oid, err := other.ID(ctx); err != nil || oid == id {
		t.Errorf("another store's ID = %q, %v; want one other than %q", oid, err, id)
	}
	if err := other.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := other.ID(ctx); !errors.Is(err, store.ErrClosed) {
		t.Errorf("ID after Close: %v, want ErrClosed", err)
	}
}
