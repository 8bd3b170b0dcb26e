package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/controlplane/store"
	"github.com/metamcp/metamcp/controlplane/store/internal/callsql"
)

// AppendCallRecords stores records in one transaction and returns how many
// were new: a record id already stored is skipped. A record without a time
// is stamped with the current time.
func (s *Store) AppendCallRecords(ctx context.Context, records []*metamcpv1.CallRecord) (int, error) {
	if s.closed.Load() {
		return 0, store.ErrClosed
	}
	if len(records) == 0 {
		return 0, nil
	}
	if err := s.lockWrite(ctx); err != nil {
		return 0, fmt.Errorf("append call records: %w", err)
	}
	defer s.unlockWrite()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("append call records: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	stmt, err := tx.PrepareContext(ctx, `INSERT OR IGNORE INTO call_records
		(record_id, time, endpoint, principal, method, target, server, outcome, destructive, duration_us, data)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`)
	if err != nil {
		return 0, fmt.Errorf("append call records: %w", err)
	}
	defer stmt.Close()
	stamp := now()
	stored := 0
	for i, r := range records {
		if r.GetTime() == nil {
			r = proto.CloneOf(r)
			r.Time = timestamppb.New(stamp)
		}
		data, err := proto.Marshal(r)
		if err != nil {
			return 0, fmt.Errorf("append call records: encode record %d: %w", i, err)
		}
		var id any
		if r.GetId() != "" {
			id = r.GetId()
		}
		destructive := 0
		if r.GetDestructive() {
			destructive = 1
		}
		res, err := stmt.ExecContext(ctx, id, r.GetTime().AsTime().UnixMicro(), r.GetEndpoint(), r.GetPrincipal(),
			r.GetMethod(), r.GetTarget(), r.GetServer(), int32(r.GetOutcome()), destructive,
			r.GetDuration().AsDuration().Microseconds(), data)
		if err != nil {
			return 0, fmt.Errorf("append call records: %w", err)
		}
		if n, err := res.RowsAffected(); err == nil {
			stored += int(n)
		}
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("append %d call records: %w", len(records), err)
	}
	return stored, nil
}

// ListCallRecords returns the records q selects, newest call time first.
func (s *Store) ListCallRecords(ctx context.Context, q store.CallQuery) ([]store.StoredCall, error) {
	if s.closed.Load() {
		return nil, store.ErrClosed
	}
	if q.Limit <= 0 {
		return nil, fmt.Errorf("list call records: limit must be positive, got %d", q.Limit)
	}
	b := callsql.New(callsql.SQLite)
	b.Filter(q.Filter)
	if c := q.Before; c != nil {
		b.Add("(time, id) < (" + b.Arg(c.Time.UnixMicro()) + ", " + b.Arg(c.Seq) + ")")
	}
	query := "SELECT id, data FROM call_records" + b.Where() + " ORDER BY time DESC, id DESC LIMIT " + b.Arg(q.Limit)
	return s.queryCalls(ctx, "list call records", query, b.Args)
}

// CallRecordsAfter returns records stored after sequence after, in order.
func (s *Store) CallRecordsAfter(ctx context.Context, f *metamcpv1.CallRecordFilter, after int64, limit int) ([]store.StoredCall, error) {
	if s.closed.Load() {
		return nil, store.ErrClosed
	}
	if limit <= 0 {
		return nil, fmt.Errorf("read call records: limit must be positive, got %d", limit)
	}
	b := callsql.New(callsql.SQLite)
	b.Add("id > " + b.Arg(after))
	b.Filter(f)
	query := "SELECT id, data FROM call_records" + b.Where() + " ORDER BY id LIMIT " + b.Arg(limit)
	return s.queryCalls(ctx, "read call records", query, b.Args)
}

func (s *Store) queryCalls(ctx context.Context, what, query string, args []any) ([]store.StoredCall, error) {
	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer rows.Close()
	var out []store.StoredCall
	for rows.Next() {
		var (
			seq  int64
			data []byte
		)
		if err := rows.Scan(&seq, &data); err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		r := new(metamcpv1.CallRecord)
		if err := proto.Unmarshal(data, r); err != nil {
			return nil, fmt.Errorf("%s: decode record %d: %w", what, seq, err)
		}
		out = append(out, store.StoredCall{Seq: seq, Record: r})
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return out, nil
}

// LatestCallSeq is the highest sequence stored.
func (s *Store) LatestCallSeq(ctx context.Context) (int64, error) {
	if s.closed.Load() {
		return 0, store.ErrClosed
	}
	var seq sql.NullInt64
	if err := s.db.QueryRowContext(ctx, "SELECT max(id) FROM call_records").Scan(&seq); err != nil {
		return 0, fmt.Errorf("read the call log's sequence: %w", err)
	}
	return seq.Int64, nil
}

// ScanCallStats reads the columns a summary needs of every selected record.
func (s *Store) ScanCallStats(ctx context.Context, f *metamcpv1.CallRecordFilter, fn func(store.CallStat) error) error {
	if s.closed.Load() {
		return store.ErrClosed
	}
	b := callsql.New(callsql.SQLite)
	b.Filter(f)
	rows, err := s.db.QueryContext(ctx, "SELECT principal, target, outcome, duration_us FROM call_records"+b.Where(), b.Args...)
	if err != nil {
		return fmt.Errorf("summarize call records: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			st      store.CallStat
			outcome int32
			us      int64
		)
		if err := rows.Scan(&st.Principal, &st.Target, &outcome, &us); err != nil {
			return fmt.Errorf("summarize call records: %w", err)
		}
		st.Outcome, st.Duration = metamcpv1.CallOutcome(outcome), time.Duration(us)*time.Microsecond
		if err := fn(st); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("summarize call records: %w", err)
	}
	return nil
}

// DeleteCallRecordsBefore removes the records whose call time is before t.
func (s *Store) DeleteCallRecordsBefore(ctx context.Context, t time.Time) (int64, error) {
	if s.closed.Load() {
		return 0, store.ErrClosed
	}
	if err := s.lockWrite(ctx); err != nil {
		return 0, fmt.Errorf("delete call records: %w", err)
	}
	defer s.unlockWrite()
	res, err := s.db.ExecContext(ctx, "DELETE FROM call_records WHERE time < ?", t.UnixMicro())
	if err != nil {
		return 0, fmt.Errorf("delete call records before %s: %w", t.UTC().Format(time.RFC3339), err)
	}
	n, _ := res.RowsAffected()
	return n, nil
}
