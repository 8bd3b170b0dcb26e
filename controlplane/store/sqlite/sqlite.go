// Package sqlite is the embedded control-plane store behind `metamcp dev`: one
// file, pure Go (modernc.org/sqlite, no cgo), no database server to run. It
// passes the same conformance suite as the Postgres store.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"
	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/controlplane/store"
	"github.com/metamcp/metamcp/controlplane/store/internal/migration"
	"github.com/metamcp/metamcp/controlplane/store/internal/revwatch"
)

// DefaultRecheckInterval is how often a watch re-reads the revision, to see
// commits by another process using the same file.
const DefaultRecheckInterval = 2 * time.Second

// busyTimeout is how long a statement waits for another process's write
// lock before failing with SQLITE_BUSY.
const busyTimeout = 10 * time.Second

// maxConns bounds the connection pool: readers run concurrently (WAL), and
// at most one connection writes at a time.
const maxConns = 8

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Options tune a Store. The zero value is usable.
type Options struct {
	// Logger receives warnings and migration notes. Nil discards them.
	Logger *slog.Logger
	// RecheckInterval is how often watches re-read the revision to notice
	// commits by other processes. Zero means DefaultRecheckInterval.
	RecheckInterval time.Duration
}

// Store is a store.Store in an SQLite file. It is safe for concurrent use.
//
// Writers are serialised twice over, for two different rivals: a one-slot
// semaphore orders this process's writers in Go (so they queue fairly and
// honour their contexts, instead of spinning in SQLite's busy handler), and
// each write transaction starts with BEGIN IMMEDIATE, which takes SQLite's
// write lock up front, so a second process on the same file waits (up to
// the busy timeout) rather than failing halfway through a read-modify-write.
// Readers never wait for writers: the file is in WAL mode.
type Store struct {
	db      *sql.DB
	logger  *slog.Logger
	recheck time.Duration
	write   chan struct{} // one-slot semaphore held by the writer

	hub *revwatch.Hub

	closed  atomic.Bool
	mu      sync.Mutex // guards polling and the start of the poller
	polling bool
	ctx     context.Context // cancelled by Close
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

var _ store.Store = (*Store)(nil)

// Open opens (creating it and its directory if needed) the SQLite database
// file at path, applies pending migrations and returns a Store. Close it when
// done.
func Open(ctx context.Context, path string, opts Options) (*Store, error) {
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	recheck := opts.RecheckInterval
	if recheck <= 0 {
		recheck = DefaultRecheckInterval
	}
	if path == "" || path == ":memory:" || strings.HasPrefix(path, "file:") || strings.ContainsRune(path, '?') {
		return nil, fmt.Errorf("open sqlite store: %q is not a usable file path (need a plain path to a file, without '?')", path)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("open sqlite store: create data directory: %w", err)
	}
	dsn := path + "?" + strings.Join([]string{
		fmt.Sprintf("_pragma=busy_timeout(%d)", busyTimeout.Milliseconds()),
		"_pragma=journal_mode(WAL)",
		"_pragma=foreign_keys(1)",
		"_txlock=immediate", // read-write transactions only; read-only ones BEGIN DEFERRED
	}, "&")
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open sqlite store %s: %w", path, err)
	}
	db.SetMaxOpenConns(maxConns)
	db.SetMaxIdleConns(maxConns)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("open sqlite store %s: %w", path, err)
	}
	if _, err := migrate(ctx, db, logger); err != nil {
		db.Close()
		return nil, fmt.Errorf("migrate sqlite store %s: %w", path, err)
	}
	bg, cancel := context.WithCancel(context.Background())
	return &Store{
		db:      db,
		logger:  logger,
		recheck: recheck,
		write:   make(chan struct{}, 1),
		hub:     revwatch.New(),
		ctx:     bg,
		cancel:  cancel,
	}, nil
}

// migrate applies pending migrations in one BEGIN IMMEDIATE transaction: the
// write lock keeps two processes opening the file at once from both applying
// a migration.
func migrate(ctx context.Context, db *sql.DB, logger *slog.Logger) (applied int, err error) {
	migrations, err := migration.Load(migrationFiles, "migrations")
	if err != nil {
		return 0, err
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("begin: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    INTEGER PRIMARY KEY,
		name       TEXT    NOT NULL,
		applied_at INTEGER NOT NULL
	) STRICT`); err != nil {
		return 0, fmt.Errorf("create schema_migrations: %w", err)
	}
	rows, err := tx.QueryContext(ctx, "SELECT version FROM schema_migrations")
	if err != nil {
		return 0, fmt.Errorf("read schema_migrations: %w", err)
	}
	have := make(map[int]bool)
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			rows.Close()
			return 0, fmt.Errorf("read schema_migrations: %w", err)
		}
		have[v] = true
	}
	if err := rows.Close(); err != nil {
		return 0, fmt.Errorf("read schema_migrations: %w", err)
	}
	var names []string
	for _, m := range migrations {
		if have[m.Version] {
			delete(have, m.Version)
			continue
		}
		if _, err := tx.ExecContext(ctx, m.SQL); err != nil {
			return 0, fmt.Errorf("apply migration %s: %w", m.Name, err)
		}
		if _, err := tx.ExecContext(ctx, "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
			m.Version, m.Name, time.Now().UnixMicro()); err != nil {
			return 0, fmt.Errorf("record migration %s: %w", m.Name, err)
		}
		names = append(names, m.Name)
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("commit migrations: %w", err)
	}
	for _, n := range names {
		logger.InfoContext(ctx, "applied database migration", "name", n)
	}
	for v := range have {
		logger.WarnContext(ctx, "database has a migration this binary does not know; was it opened by a newer metamcp?", "version", v)
	}
	return len(names), nil
}

// Close stops the watch poller, closes every watch channel and the database.
// Calls after the first return nil.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	s.mu.Lock()
	s.cancel()
	s.mu.Unlock()
	s.wg.Wait()
	s.hub.Close()
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close sqlite store: %w", err)
	}
	return nil
}

// lockWrite takes the in-process write slot, giving up when ctx is done.
func (s *Store) lockWrite(ctx context.Context) error {
	select {
	case s.write <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("wait for the write lock: %w", ctx.Err())
	}
}

func (s *Store) unlockWrite() { <-s.write }

func now() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }

func fromMicros(us int64) time.Time { return time.UnixMicro(us).UTC() }

// Revision returns the latest committed revision.
func (s *Store) Revision(ctx context.Context) (int64, error) {
	if s.closed.Load() {
		return 0, store.ErrClosed
	}
	var rev int64
	if err := s.db.QueryRowContext(ctx, "SELECT value FROM revision").Scan(&rev); err != nil {
		return 0, fmt.Errorf("read revision: %w", err)
	}
	return rev, nil
}

// ID returns the store's identity, made by its schema migration.
func (s *Store) ID(ctx context.Context) (string, error) {
	if s.closed.Load() {
		return "", store.ErrClosed
	}
	var id string
	if err := s.db.QueryRowContext(ctx, "SELECT value FROM store_identity").Scan(&id); err != nil {
		return "", fmt.Errorf("read store id: %w", err)
	}
	return id, nil
}

// Update runs fn in a BEGIN IMMEDIATE transaction, holding the write slot.
func (s *Store) Update(ctx context.Context, fn func(ctx context.Context, tx store.Tx) error) (rev int64, changed bool, err error) {
	if s.closed.Load() {
		return 0, false, store.ErrClosed
	}
	if err := s.lockWrite(ctx); err != nil {
		return 0, false, fmt.Errorf("begin update: %w", err)
	}
	defer s.unlockWrite()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, false, fmt.Errorf("begin update: %w", err)
	}
	defer func() { _ = tx.Rollback() }() // a no-op after Commit

	var cur int64
	if err := tx.QueryRowContext(ctx, "SELECT value FROM revision").Scan(&cur); err != nil {
		return 0, false, fmt.Errorf("read revision: %w", err)
	}
	wtx := &writeTx{readTx: readTx{q: tx, rev: cur + 1}, now: now().UnixMicro()}
	if err := fn(ctx, wtx); err != nil {
		return 0, false, err
	}
	if !wtx.wrote {
		return cur, false, nil
	}
	var next int64
	if err := tx.QueryRowContext(ctx, "UPDATE revision SET value = value + 1 RETURNING value").Scan(&next); err != nil {
		return 0, false, fmt.Errorf("bump revision: %w", err)
	}
	if next != cur+1 {
		return 0, false, fmt.Errorf("bump revision: got %d, want %d", next, cur+1)
	}
	if err := tx.Commit(); err != nil {
		return 0, false, fmt.Errorf("commit revision %d: %w", next, err)
	}
	s.hub.Committed(next)
	return next, true, nil
}

// View runs fn in a read-only (BEGIN DEFERRED) transaction. Its first
// statement reads the revision and so fixes the WAL snapshot every later
// read in fn sees.
func (s *Store) View(ctx context.Context, fn func(ctx context.Context, tx store.ReadTx) error) error {
	if s.closed.Load() {
		return store.ErrClosed
	}
	tx, err := s.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("begin view: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	var rev int64
	if err := tx.QueryRowContext(ctx, "SELECT value FROM revision").Scan(&rev); err != nil {
		return fmt.Errorf("read revision: %w", err)
	}
	return fn(ctx, &readTx{q: tx, rev: rev})
}

// querier is what transactions need from database/sql.
type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

type readTx struct {
	q   querier
	rev int64
}

func (t *readTx) Revision() int64 { return t.rev }

const recordColumns = "kind, name, data, revision, create_time, update_time"

type scanner interface{ Scan(dest ...any) error }

func scanRecord(row scanner) (store.Record, error) {
	var r store.Record
	var kind string
	var created, updated int64
	if err := row.Scan(&kind, &r.Name, &r.Data, &r.Revision, &created, &updated); err != nil {
		return store.Record{}, err
	}
	r.Kind = store.Kind(kind)
	if r.Data == nil {
		r.Data = []byte{}
	}
	r.CreateTime = fromMicros(created)
	r.UpdateTime = fromMicros(updated)
	return r, nil
}

func (t *readTx) Get(ctx context.Context, kind store.Kind, name string) (store.Record, error) {
	r, err := scanRecord(t.q.QueryRowContext(ctx,
		"SELECT "+recordColumns+" FROM resources WHERE kind = ? AND name = ?", string(kind), name))
	if errors.Is(err, sql.ErrNoRows) {
		return store.Record{}, fmt.Errorf("get %s %q: %w", kind, name, store.ErrNotFound)
	}
	if err != nil {
		return store.Record{}, fmt.Errorf("get %s %q: %w", kind, name, err)
	}
	return r, nil
}

func (t *readTx) List(ctx context.Context, kind store.Kind) ([]store.Record, error) {
	rows, err := t.q.QueryContext(ctx, "SELECT "+recordColumns+" FROM resources WHERE kind = ? ORDER BY name", string(kind))
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", kind, err)
	}
	defer rows.Close()
	var out []store.Record
	for rows.Next() {
		r, err := scanRecord(rows)
		if err != nil {
			return nil, fmt.Errorf("list %s: %w", kind, err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list %s: %w", kind, err)
	}
	return out, nil
}

type writeTx struct {
	readTx
	now   int64 // microseconds since the epoch
	wrote bool
}

func checkKey(kind store.Kind, name string) error {
	if kind == "" || name == "" {
		return fmt.Errorf("record kind and name are required (got kind %q, name %q)", kind, name)
	}
	return nil
}

// nonNil stores nil Data as an empty blob: the column is NOT NULL.
func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

func (t *writeTx) Create(ctx context.Context, r store.Record) error {
	if err := checkKey(r.Kind, r.Name); err != nil {
		return fmt.Errorf("create: %w", err)
	}
	res, err := t.q.ExecContext(ctx, `INSERT INTO resources (kind, name, data, revision, create_time, update_time)
		VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (kind, name) DO NOTHING`,
		string(r.Kind), r.Name, nonNil(r.Data), t.rev, t.now, t.now)
	if err != nil {
		return fmt.Errorf("create %s %q: %w", r.Kind, r.Name, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("create %s %q: %w", r.Kind, r.Name, err)
	} else if n == 0 {
		return fmt.Errorf("create %s %q: %w", r.Kind, r.Name, store.ErrExists)
	}
	t.wrote = true
	return nil
}

func (t *writeTx) Put(ctx context.Context, r store.Record) error {
	if err := checkKey(r.Kind, r.Name); err != nil {
		return fmt.Errorf("put: %w", err)
	}
	if _, err := t.q.ExecContext(ctx, `INSERT INTO resources (kind, name, data, revision, create_time, update_time)
		VALUES (?, ?, ?, ?, ?, ?)
		ON CONFLICT (kind, name) DO UPDATE
		SET data = excluded.data, revision = excluded.revision, update_time = excluded.update_time`,
		string(r.Kind), r.Name, nonNil(r.Data), t.rev, t.now, t.now); err != nil {
		return fmt.Errorf("put %s %q: %w", r.Kind, r.Name, err)
	}
	t.wrote = true
	return nil
}

func (t *writeTx) Delete(ctx context.Context, kind store.Kind, name string) error {
	res, err := t.q.ExecContext(ctx, "DELETE FROM resources WHERE kind = ? AND name = ?", string(kind), name)
	if err != nil {
		return fmt.Errorf("delete %s %q: %w", kind, name, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("delete %s %q: %w", kind, name, err)
	} else if n == 0 {
		return fmt.Errorf("delete %s %q: %w", kind, name, store.ErrNotFound)
	}
	t.wrote = true
	return nil
}

// UpsertDataPlane stores dp under its node id. LastSeen defaults to now.
func (s *Store) UpsertDataPlane(ctx context.Context, dp *metamcpv1.DataPlane) error {
	if s.closed.Load() {
		return store.ErrClosed
	}
	if dp.GetNodeId() == "" {
		return errors.New("upsert data plane: node id is required")
	}
	lastSeen := now()
	if dp.GetLastSeen() != nil {
		lastSeen = dp.GetLastSeen().AsTime()
	}
	data, err := proto.Marshal(dp)
	if err != nil {
		return fmt.Errorf("upsert data plane %q: encode: %w", dp.GetNodeId(), err)
	}
	if err := s.lockWrite(ctx); err != nil {
		return fmt.Errorf("upsert data plane %q: %w", dp.GetNodeId(), err)
	}
	defer s.unlockWrite()
	if _, err := s.db.ExecContext(ctx, `INSERT INTO dataplanes (node_id, data, last_seen) VALUES (?, ?, ?)
		ON CONFLICT (node_id) DO UPDATE SET data = excluded.data, last_seen = excluded.last_seen`,
		dp.GetNodeId(), data, lastSeen.UnixMicro()); err != nil {
		return fmt.Errorf("upsert data plane %q: %w", dp.GetNodeId(), err)
	}
	return nil
}

// ListDataPlanes returns every data plane, sorted by node id.
func (s *Store) ListDataPlanes(ctx context.Context) ([]*metamcpv1.DataPlane, error) {
	if s.closed.Load() {
		return nil, store.ErrClosed
	}
	rows, err := s.db.QueryContext(ctx, "SELECT data FROM dataplanes ORDER BY node_id")
	if err != nil {
		return nil, fmt.Errorf("list data planes: %w", err)
	}
	defer rows.Close()
	var out []*metamcpv1.DataPlane
	for rows.Next() {
		var data []byte
		if err := rows.Scan(&data); err != nil {
			return nil, fmt.Errorf("list data planes: %w", err)
		}
		dp := new(metamcpv1.DataPlane)
		if err := proto.Unmarshal(data, dp); err != nil {
			return nil, fmt.Errorf("list data planes: decode: %w", err)
		}
		out = append(out, dp)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list data planes: %w", err)
	}
	return out, nil
}

// Watch returns a channel that first receives the current revision, then the
// latest revision after each commit: at once for this process's commits, and
// within RecheckInterval for another process's.
func (s *Store) Watch(ctx context.Context) <-chan int64 {
	ch := s.hub.Watch(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.polling && s.ctx.Err() == nil {
		s.polling = true
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.poll(s.ctx)
		}()
	}
	return ch
}

// poll re-reads the revision every recheck interval until ctx is done.
func (s *Store) poll(ctx context.Context) {
	t := time.NewTicker(s.recheck)
	defer t.Stop()
	failing := false
	for {
		var rev int64
		err := s.db.QueryRowContext(ctx, "SELECT value FROM revision").Scan(&rev)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			if !failing {
				s.logger.WarnContext(ctx, "revision watch cannot read the revision; retrying", "error", err)
			}
			failing = true
		default:
			failing = false
			s.hub.Observe(rev)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
