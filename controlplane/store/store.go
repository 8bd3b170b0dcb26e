// Package store keeps the control plane's config: every resource, the single
// monotonic config revision, the data-plane registry and the call log. It has
// two implementations that pass one conformance suite (storetest): Postgres for
// production and embedded SQLite for `metamcp dev`.
//
// Resources are kept as opaque records (kind, name, encoded proto); the admin
// service owns their meaning, validation and secret sealing. The store owns
// transactions and the revision: every committed write transaction bumps the
// revision by exactly one, so revision order is commit order and no revision is
// skipped or reused.
package store

import (
	"context"
	"errors"
	"time"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
)

// Kind names a resource type. The values are the names users see (YAML `kind`).
type Kind string

// The kinds of records kept in the store.
const (
	KindServer          Kind = "Server"
	KindNamespace       Kind = "Namespace"
	KindEndpoint        Kind = "Endpoint"
	KindRateLimitPolicy Kind = "RateLimitPolicy"
	KindApiKey          Kind = "ApiKey"
	KindToken           Kind = "Token"
	// KindSessionKeys holds the data planes' session-sealing keys (one record,
	// named "default"), so every control-plane replica builds the same snapshot.
	KindSessionKeys Kind = "SessionKeys"
	// KindServerRestarts holds the restart generation of each server (one
	// record, named "default"; see `mmctl restart server`).
	KindServerRestarts Kind = "ServerRestarts"
)

// Errors returned by stores; test with errors.Is.
var (
	ErrNotFound = errors.New("not found")
	ErrExists   = errors.New("already exists")
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("store closed")
)

// Record is one stored resource.
type Record struct {
	Kind Kind
	Name string
	// Data is the resource's encoding, opaque to the store (the admin service
	// stores proto wire bytes with secrets already sealed).
	Data []byte
	// Revision is the revision of the write that last changed the record. Set
	// by the store.
	Revision int64
	// CreateTime and UpdateTime are set by the store (UTC, microsecond precision).
	CreateTime time.Time
	UpdateTime time.Time
}

// CallQuery selects a page of the call log.
type CallQuery struct {
	// Filter selects records; nil selects all.
	Filter *metamcpv1.CallRecordFilter
	// Limit is the most records returned; it must be positive.
	Limit int
	// Before, when set, starts the page after this position: records older
	// than it (by time, then sequence).
	Before *CallCursor
}

// CallCursor is a position in the call log, newest first.
type CallCursor struct {
	Time time.Time
	Seq  int64
}

// StoredCall is a call record and its place in the log.
type StoredCall struct {
	// Seq orders records by when they were stored (see CallRecordsAfter).
	Seq    int64
	Record *metamcpv1.CallRecord
}

// Cursor is the position of c, for CallQuery.Before.
func (c StoredCall) Cursor() CallCursor {
	return CallCursor{Time: c.Record.GetTime().AsTime(), Seq: c.Seq}
}

// CallStat is what a summary needs of one call record.
type CallStat struct {
	Principal string
	Target    string
	Outcome   metamcpv1.CallOutcome
	Duration  time.Duration
}

// ReadTx reads one consistent view of the store.
type ReadTx interface {
	// Revision is the revision this transaction sees. Inside Update it is the
	// revision the transaction will commit as (current + 1).
	Revision() int64
	// Get returns ErrNotFound when there is no such record.
	Get(ctx context.Context, kind Kind, name string) (Record, error)
	// List returns every record of a kind, sorted by name.
	List(ctx context.Context, kind Kind) ([]Record, error)
}

// Tx reads and writes inside Update.
type Tx interface {
	ReadTx
	// Create adds a record; ErrExists when one has that kind and name.
	Create(ctx context.Context, r Record) error
	// Put creates or replaces a record, keeping CreateTime on replace.
	Put(ctx context.Context, r Record) error
	// Delete removes a record; ErrNotFound when there is none.
	Delete(ctx context.Context, kind Kind, name string) error
}

// Store is the control plane's persistent state.
type Store interface {
	// Update runs fn in a read-write transaction. Writers are serialised. When
	// fn returns an error nothing is committed and the error is returned as is.
	// When fn wrote nothing, nothing is committed and changed is false. Otherwise
	// the revision is bumped by one in the same transaction, the transaction is
	// committed, watchers are notified (Postgres: NOTIFY after commit), and the
	// new revision is returned.
	Update(ctx context.Context, fn func(ctx context.Context, tx Tx) error) (rev int64, changed bool, err error)
	// View runs fn in a read-only transaction that sees one revision (Postgres:
	// REPEATABLE READ, READ ONLY).
	View(ctx context.Context, fn func(ctx context.Context, tx ReadTx) error) error
	// Revision returns the latest committed revision (0 for an empty store).
	Revision(ctx context.Context) (int64, error)
	// ID returns the store's identity: a random id made with its schema and
	// kept for its life, the same for every process sharing the store.
	// Revisions of two stores do not compare; a store restored from a backup
	// keeps its id but its revision goes back.
	ID(ctx context.Context) (string, error)
	// Watch returns a channel that receives the latest revision soon after each
	// commit by any process sharing the store, coalesced (a slow reader sees only
	// the newest). It first sends the current revision. It survives lost
	// connections (re-listen, then re-read) and re-checks periodically as a
	// fallback. The channel is closed when ctx is done.
	Watch(ctx context.Context) <-chan int64

	// UpsertDataPlane records a data plane's state, keyed by NodeId. Not part of
	// the config revision.
	UpsertDataPlane(ctx context.Context, dp *metamcpv1.DataPlane) error
	// ListDataPlanes returns every recorded data plane, sorted by node id.
	ListDataPlanes(ctx context.Context) ([]*metamcpv1.DataPlane, error)
	// AppendCallRecords adds records to the call log (audit trail) and
	// returns how many it stored: a record whose id is already stored (a
	// batch sent twice) is skipped. Records without an id are always stored.
	// A record without a time is stamped with the current time.
	AppendCallRecords(ctx context.Context, records []*metamcpv1.CallRecord) (stored int, err error)
	// ListCallRecords returns the call records q selects, newest call time
	// first (among equal times, the last stored first).
	ListCallRecords(ctx context.Context, q CallQuery) ([]StoredCall, error)
	// CallRecordsAfter returns at most limit records that f selects and that
	// were stored after the one with sequence after, in the order they were
	// stored (by sequence). Sequences increase with each store but a
	// transaction may commit after one with higher sequences: followers read
	// again a little behind what they saw (see LatestCallSeq).
	CallRecordsAfter(ctx context.Context, f *metamcpv1.CallRecordFilter, after int64, limit int) ([]StoredCall, error)
	// LatestCallSeq is the highest sequence stored (0 when none).
	LatestCallSeq(ctx context.Context) (int64, error)
	// ScanCallStats calls fn with what a summary needs of every record f
	// selects, in no particular order, without decoding the records.
	ScanCallStats(ctx context.Context, f *metamcpv1.CallRecordFilter, fn func(CallStat) error) error
	// DeleteCallRecordsBefore removes the records whose call time is before t
	// and returns how many it removed.
	DeleteCallRecordsBefore(ctx context.Context, t time.Time) (int64, error)

	// Close releases connections; watch channels are closed.
	Close() error
}
