// Package postgres is the production control-plane store, on Postgres via
// pgx. Several control planes may share one database: writers serialise on a
// single-row revision counter, and every commit is announced with NOTIFY so
// each control plane's watchers learn of it within moments.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/protobuf/proto"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/controlplane/store"
	"github.com/metamcp/metamcp/controlplane/store/internal/revwatch"
)

// DefaultRecheckInterval is how often a watch re-reads the revision when no
// notification arrives, in case one was lost.
const DefaultRecheckInterval = 2 * time.Second

// notifyChannel is the LISTEN/NOTIFY channel for revision changes in the
// public schema. NOTIFY is scoped to one database; stores in other schemas of
// the same database get a channel named after their schema (see channelFor).
const notifyChannel = "metamcp_revision"

// listenerAppName labels the watch connection in pg_stat_activity.
const listenerAppName = "metamcp-watch"

// Options tune a Store. The zero value is usable.
type Options struct {
	// Logger receives warnings (lost watch connection) and migration notes.
	// Nil discards them.
	Logger *slog.Logger
	// RecheckInterval is how often watches re-read the revision as a fallback
	// to notifications. Zero means DefaultRecheckInterval.
	RecheckInterval time.Duration
	// MaxConns caps the connection pool, not counting the one watch
	// connection. Zero means pgxpool's default (the larger of 4 and the
	// number of CPUs).
	MaxConns int32
}

// Store is a store.Store on Postgres. It is safe for concurrent use.
type Store struct {
	pool    *pgxpool.Pool
	connCfg *pgx.ConnConfig // template for the watch connection
	logger  *slog.Logger
	recheck time.Duration
	channel string

	hub *revwatch.Hub

	closed    atomic.Bool
	mu        sync.Mutex // guards listening and the start of the listener
	listening bool
	ctx       context.Context // cancelled by Close; parent of background work
	cancel    context.CancelFunc
	wg        sync.WaitGroup
}

var _ store.Store = (*Store)(nil)

// Open connects to the database at dsn, applies pending migrations and returns
// a Store. Close it when done.
func Open(ctx context.Context, dsn string, opts Options) (*Store, error) {
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	recheck := opts.RecheckInterval
	if recheck <= 0 {
		recheck = DefaultRecheckInterval
	}
	poolCfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("parse postgres connection string: %w", err)
	}
	if opts.MaxConns > 0 {
		poolCfg.MaxConns = opts.MaxConns
	}

	conn, err := connect(ctx, poolCfg.ConnConfig.Copy())
	if err != nil {
		return nil, err
	}
	defer closeConn(conn)
	if _, err := migrate(ctx, conn, logger); err != nil {
		return nil, fmt.Errorf("migrate postgres database: %w", err)
	}
	var schema string
	if err := conn.QueryRow(ctx, "SELECT current_schema()").Scan(&schema); err != nil {
		return nil, fmt.Errorf("read current schema: %w", err)
	}

	pool, err := pgxpool.NewWithConfig(ctx, poolCfg)
	if err != nil {
		return nil, fmt.Errorf("create postgres pool for %s: %w", hostPort(poolCfg.ConnConfig), err)
	}
	listenCfg := poolCfg.ConnConfig.Copy()
	listenCfg.RuntimeParams["application_name"] = listenerAppName
	bg, cancel := context.WithCancel(context.Background())
	return &Store{
		pool:    pool,
		connCfg: listenCfg,
		logger:  logger,
		recheck: recheck,
		channel: channelFor(schema),
		hub:     revwatch.New(),
		ctx:     bg,
		cancel:  cancel,
	}, nil
}

// channelFor returns the notification channel for a schema. Channel names are
// limited to 63 bytes; a longer one is cut, which at worst makes two very
// long-named schemas wake each other's watchers for a needless re-read.
func channelFor(schema string) string {
	if schema == "" || schema == "public" {
		return notifyChannel
	}
	c := notifyChannel + "_" + schema
	if len(c) > 63 {
		c = c[:63]
	}
	return c
}

// connect opens a single connection, saying where it tried when it fails.
func connect(ctx context.Context, cfg *pgx.ConnConfig) (*pgx.Conn, error) {
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to postgres at %s: %w", hostPort(cfg), err)
	}
	return conn, nil
}

func closeConn(conn *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = conn.Close(ctx)
}

func hostPort(cfg *pgx.ConnConfig) string {
	if len(cfg.Host) > 0 && cfg.Host[0] == '/' {
		return cfg.Host // a Unix socket directory
	}
	return net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port)))
}

// Close stops the watch listener, closes every watch channel and the pool.
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
	s.pool.Close()
	return nil
}

// Revision returns the latest committed revision.
func (s *Store) Revision(ctx context.Context) (int64, error) {
	if s.closed.Load() {
		return 0, store.ErrClosed
	}
	var rev int64
	if err := s.pool.QueryRow(ctx, "SELECT value FROM revision").Scan(&rev); err != nil {
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
	if err := s.pool.QueryRow(ctx, "SELECT value FROM store_identity").Scan(&id); err != nil {
		return "", fmt.Errorf("read store id: %w", err)
	}
	return id, nil
}

// Update runs fn in a READ COMMITTED transaction that first locks the
// revision row. The lock serialises writers, and because it is held until
// commit, every statement fn runs sees the data as of the previous revision
// plus its own writes.
func (s *Store) Update(ctx context.Context, fn func(ctx context.Context, tx store.Tx) error) (rev int64, changed bool, err error) {
	if s.closed.Load() {
		return 0, false, store.ErrClosed
	}
	tx, err := s.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.ReadCommitted})
	if err != nil {
		return 0, false, fmt.Errorf("begin update: %w", err)
	}
	defer rollback(ctx, tx)

	var cur int64
	var now time.Time
	// clock_timestamp, not now(): now() is the transaction's start, which
	// may be before a previous writer committed; this way update times
	// follow revision order (on the database's clock).
	if err := tx.QueryRow(ctx, "SELECT value, clock_timestamp() FROM revision FOR UPDATE").Scan(&cur, &now); err != nil {
		return 0, false, fmt.Errorf("lock revision: %w", err)
	}
	wtx := &writeTx{readTx: readTx{q: tx, rev: cur + 1}, now: now.UTC()}
	if err := fn(ctx, wtx); err != nil {
		return 0, false, err
	}
	if !wtx.wrote {
		return cur, false, nil
	}
	var next int64
	if err := tx.QueryRow(ctx, "UPDATE revision SET value = value + 1 RETURNING value").Scan(&next); err != nil {
		return 0, false, fmt.Errorf("bump revision: %w", err)
	}
	if next != cur+1 {
		// Impossible while the row lock holds; refuse rather than commit a
		// revision that records were not stamped with.
		return 0, false, fmt.Errorf("bump revision: got %d, want %d", next, cur+1)
	}
	// NOTIFY inside the transaction: Postgres delivers it only if and after
	// the transaction commits, so a listener never hears of a revision it
	// cannot read yet, and no notification is lost if this process dies
	// between commit and a separate NOTIFY.
	if _, err := tx.Exec(ctx, "SELECT pg_notify($1, $2)", s.channel, strconv.FormatInt(next, 10)); err != nil {
		return 0, false, fmt.Errorf("notify revision %d: %w", next, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, false, fmt.Errorf("commit revision %d: %w", next, err)
	}
	s.hub.Committed(next)
	return next, true, nil
}

func rollback(ctx context.Context, tx pgx.Tx) {
	// After a commit this is a no-op. The context may be done (that may be why
	// we are rolling back); roll back anyway.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_ = tx.Rollback(rctx)
}

// View runs fn in a REPEATABLE READ, READ ONLY transaction: every read sees
// the snapshot taken by the first one, which reads the revision.
func (s *Store) View(ctx context.Context, fn func(ctx context.Context, tx store.ReadTx) error) error {
	if s.closed.Load() {
		return store.ErrClosed
	}
	tx, err := s.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return fmt.Errorf("begin view: %w", err)
	}
	defer rollback(ctx, tx)
	var rev int64
	if err := tx.QueryRow(ctx, "SELECT value FROM revision").Scan(&rev); err != nil {
		return fmt.Errorf("read revision: %w", err)
	}
	if err := fn(ctx, &readTx{q: tx, rev: rev}); err != nil {
		return err
	}
	return nil
}

// querier is what transactions need from pgx.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

type readTx struct {
	q   querier
	rev int64
}

func (t *readTx) Revision() int64 { return t.rev }

const recordColumns = "kind, name, data, revision, create_time, update_time"

func scanRecord(row pgx.CollectableRow) (store.Record, error) {
	var r store.Record
	var kind string
	if err := row.Scan(&kind, &r.Name, &r.Data, &r.Revision, &r.CreateTime, &r.UpdateTime); err != nil {
		return store.Record{}, err
	}
	r.Kind = store.Kind(kind)
	r.CreateTime = r.CreateTime.UTC()
	r.UpdateTime = r.UpdateTime.UTC()
	return r, nil
}

func (t *readTx) Get(ctx context.Context, kind store.Kind, name string) (store.Record, error) {
	rows, err := t.q.Query(ctx, "SELECT "+recordColumns+" FROM resources WHERE kind = $1 AND name = $2", string(kind), name)
	if err != nil {
		return store.Record{}, fmt.Errorf("get %s %q: %w", kind, name, err)
	}
	r, err := pgx.CollectExactlyOneRow(rows, scanRecord)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.Record{}, fmt.Errorf("get %s %q: %w", kind, name, store.ErrNotFound)
	}
	if err != nil {
		return store.Record{}, fmt.Errorf("get %s %q: %w", kind, name, err)
	}
	return r, nil
}

func (t *readTx) List(ctx context.Context, kind store.Kind) ([]store.Record, error) {
	rows, err := t.q.Query(ctx, "SELECT "+recordColumns+" FROM resources WHERE kind = $1 ORDER BY name", string(kind))
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", kind, err)
	}
	out, err := pgx.CollectRows(rows, scanRecord)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", kind, err)
	}
	return out, nil
}

type writeTx struct {
	readTx
	now   time.Time
	wrote bool
}

func checkKey(kind store.Kind, name string) error {
	if kind == "" || name == "" {
		return fmt.Errorf("record kind and name are required (got kind %q, name %q)", kind, name)
	}
	return nil
}

// Create and Delete use statements that cannot fail on a missing or
// duplicate row: in Postgres a failed statement aborts the whole
// transaction, and fn may want to carry on after ErrExists or ErrNotFound.
func (t *writeTx) Create(ctx context.Context, r store.Record) error {
	if err := checkKey(r.Kind, r.Name); err != nil {
		return fmt.Errorf("create: %w", err)
	}
	tag, err := t.q.Exec(ctx, `INSERT INTO resources (kind, name, data, revision, create_time, update_time)
		VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (kind, name) DO NOTHING`,
		string(r.Kind), r.Name, nonNil(r.Data), t.rev, t.now)
	if err != nil {
		return fmt.Errorf("create %s %q: %w", r.Kind, r.Name, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("create %s %q: %w", r.Kind, r.Name, store.ErrExists)
	}
	t.wrote = true
	return nil
}

func (t *writeTx) Put(ctx context.Context, r store.Record) error {
	if err := checkKey(r.Kind, r.Name); err != nil {
		return fmt.Errorf("put: %w", err)
	}
	if _, err := t.q.Exec(ctx, `INSERT INTO resources (kind, name, data, revision, create_time, update_time)
		VALUES ($1, $2, $3, $4, $5, $5)
		ON CONFLICT (kind, name) DO UPDATE
		SET data = EXCLUDED.data, revision = EXCLUDED.revision, update_time = EXCLUDED.update_time`,
		string(r.Kind), r.Name, nonNil(r.Data), t.rev, t.now); err != nil {
		return fmt.Errorf("put %s %q: %w", r.Kind, r.Name, err)
	}
	t.wrote = true
	return nil
}

func (t *writeTx) Delete(ctx context.Context, kind store.Kind, name string) error {
	tag, err := t.q.Exec(ctx, "DELETE FROM resources WHERE kind = $1 AND name = $2", string(kind), name)
	if err != nil {
		return fmt.Errorf("delete %s %q: %w", kind, name, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("delete %s %q: %w", kind, name, store.ErrNotFound)
	}
	t.wrote = true
	return nil
}

// nonNil keeps a nil Data from violating the NOT NULL constraint: an empty
// proto encodes as zero bytes.
func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// UpsertDataPlane stores dp under its node id. LastSeen defaults to now.
func (s *Store) UpsertDataPlane(ctx context.Context, dp *metamcpv1.DataPlane) error {
	if s.closed.Load() {
		return store.ErrClosed
	}
	if dp.GetNodeId() == "" {
		return errors.New("upsert data plane: node id is required")
	}
	lastSeen := time.Now().UTC()
	if dp.GetLastSeen() != nil {
		lastSeen = dp.GetLastSeen().AsTime()
	}
	data, err := proto.Marshal(dp)
	if err != nil {
		return fmt.Errorf("upsert data plane %q: encode: %w", dp.GetNodeId(), err)
	}
	if _, err := s.pool.Exec(ctx, `INSERT INTO dataplanes (node_id, data, last_seen) VALUES ($1, $2, $3)
		ON CONFLICT (node_id) DO UPDATE SET data = EXCLUDED.data, last_seen = EXCLUDED.last_seen`,
		dp.GetNodeId(), data, lastSeen); err != nil {
		return fmt.Errorf("upsert data plane %q: %w", dp.GetNodeId(), err)
	}
	return nil
}

// ListDataPlanes returns every data plane, sorted by node id.
func (s *Store) ListDataPlanes(ctx context.Context) ([]*metamcpv1.DataPlane, error) {
	if s.closed.Load() {
		return nil, store.ErrClosed
	}
	rows, err := s.pool.Query(ctx, "SELECT data FROM dataplanes ORDER BY node_id")
	if err != nil {
		return nil, fmt.Errorf("list data planes: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (*metamcpv1.DataPlane, error) {
		var data []byte
		if err := row.Scan(&data); err != nil {
			return nil, err
		}
		dp := new(metamcpv1.DataPlane)
		if err := proto.Unmarshal(data, dp); err != nil {
			return nil, fmt.Errorf("decode: %w", err)
		}
		return dp, nil
	})
	if err != nil {
		return nil, fmt.Errorf("list data planes: %w", err)
	}
	return out, nil
}
