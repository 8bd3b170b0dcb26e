package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/controlplane/store"
	"github.com/metamcp/metamcp/controlplane/store/internal/callsql"
)

// insertCalls stores a batch in one statement: the columns travel as arrays
// (one round trip, one parse), and a record id already stored is skipped.
const insertCalls = `INSERT INTO call_records
	(record_id, time, endpoint, principal, method, target, server, outcome, destructive, duration_us, data)
SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::text[],
	$7::text[], $8::integer[], $9::boolean[], $10::bigint[], $11::bytea[])
ON CONFLICT (record_id) DO NOTHING`

// AppendCallRecords stores records with one INSERT and returns how many were
// new. A record without a time is stamped with the current time.
func (s *Store) AppendCallRecords(ctx context.Context, records []*metamcpv1.CallRecord) (int, error) {
	if s.closed.Load() {
		return 0, store.ErrClosed
	}
	if len(records) == 0 {
		return 0, nil
	}
	n := len(records)
	var (
		ids        = make([]*string, n)
		times      = make([]time.Time, n)
		endpoints  = make([]string, n)
		principals = make([]string, n)
		methods    = make([]string, n)
		targets    = make([]string, n)
		servers    = make([]string, n)
		outcomes   = make([]int32, n)
		destr      = make([]bool, n)
		durations  = make([]int64, n)
		data       = make([][]byte, n)
	)
	now := time.Now().UTC()
	for i, r := range records {
		if r.GetTime() == nil {
			r = proto.CloneOf(r)
			r.Time = timestamppb.New(now)
		}
		b, err := proto.Marshal(r)
		if err != nil {
			return 0, fmt.Errorf("append call records: encode record %d: %w", i, err)
		}
		if id := r.GetId(); id != "" {
			ids[i] = &id
		}
		times[i] = r.GetTime().AsTime()
		endpoints[i], principals[i], methods[i] = r.GetEndpoint(), r.GetPrincipal(), r.GetMethod()
		targets[i], servers[i], outcomes[i] = r.GetTarget(), r.GetServer(), int32(r.GetOutcome())
		destr[i], durations[i], data[i] = r.GetDestructive(), r.GetDuration().AsDuration().Microseconds(), b
	}
	tag, err := s.pool.Exec(ctx, insertCalls, ids, times, endpoints, principals, methods, targets, servers, outcomes, destr, durations, data)
	if err != nil {
		return 0, fmt.Errorf("append %d call records: %w", n, err)
	}
	return int(tag.RowsAffected()), nil
}

// ListCallRecords returns the records q selects, newest call time first.
func (s *Store) ListCallRecords(ctx context.Context, q store.CallQuery) ([]store.StoredCall, error) {
	if s.closed.Load() {
		return nil, store.ErrClosed
	}
	if q.Limit <= 0 {
		return nil, fmt.Errorf("list call records: limit must be positive, got %d", q.Limit)
	}
	b := callsql.New(callsql.Postgres)
	b.Filter(q.Filter)
	if c := q.Before; c != nil {
		b.Add("(time, id) < (" + b.Arg(c.Time.UTC()) + ", " + b.Arg(c.Seq) + ")")
	}
	sql := "SELECT id, data FROM call_records" + b.Where() + " ORDER BY time DESC, id DESC LIMIT " + b.Arg(q.Limit)
	return s.queryCalls(ctx, "list call records", sql, b.Args)
}

// CallRecordsAfter returns records stored after sequence after, in order.
func (s *Store) CallRecordsAfter(ctx context.Context, f *metamcpv1.CallRecordFilter, after int64, limit int) ([]store.StoredCall, error) {
	if s.closed.Load() {
		return nil, store.ErrClosed
	}
	if limit <= 0 {
		return nil, fmt.Errorf("read call records: limit must be positive, got %d", limit)
	}
	b := callsql.New(callsql.Postgres)
	b.Add("id > " + b.Arg(after))
	b.Filter(f)
	sql := "SELECT id, data FROM call_records" + b.Where() + " ORDER BY id LIMIT " + b.Arg(limit)
	return s.queryCalls(ctx, "read call records", sql, b.Args)
}

func (s *Store) queryCalls(ctx context.Context, what, sql string, args []any) ([]store.StoredCall, error) {
	rows, err := s.pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.StoredCall, error) {
		var (
			seq  int64
			data []byte
		)
		if err := row.Scan(&seq, &data); err != nil {
			return store.StoredCall{}, err
		}
		r := new(metamcpv1.CallRecord)
		if err := proto.Unmarshal(data, r); err != nil {
			return store.StoredCall{}, fmt.Errorf("decode record %d: %w", seq, err)
		}
		return store.StoredCall{Seq: seq, Record: r}, nil
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return out, nil
}

// LatestCallSeq is the highest sequence stored.
func (s *Store) LatestCallSeq(ctx context.Context) (int64, error) {
	if s.closed.Load() {
		return 0, store.ErrClosed
	}
	var seq int64
	if err := s.pool.QueryRow(ctx, "SELECT COALESCE(max(id), 0) FROM call_records").Scan(&seq); err != nil {
		return 0, fmt.Errorf("read the call log's sequence: %w", err)
	}
	return seq, nil
}

// ScanCallStats reads the columns a summary needs of every selected record.
func (s *Store) ScanCallStats(ctx context.Context, f *metamcpv1.CallRecordFilter, fn func(store.CallStat) error) error {
	if s.closed.Load() {
		return store.ErrClosed
	}
	b := callsql.New(callsql.Postgres)
	b.Filter(f)
	rows, err := s.pool.Query(ctx, "SELECT principal, target, outcome, duration_us FROM call_records"+b.Where(), b.Args...)
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

// deleteChunk bounds one DELETE of the retention sweep, so that it never
// holds many row locks or a long transaction.
const deleteChunk = 10000

// DeleteCallRecordsBefore removes the records whose call time is before t,
// a chunk at a time.
func (s *Store) DeleteCallRecordsBefore(ctx context.Context, t time.Time) (int64, error) {
	if s.closed.Load() {
		return 0, store.ErrClosed
	}
	var total int64
	for {
		tag, err := s.pool.Exec(ctx, `DELETE FROM call_records WHERE id IN
			(SELECT id FROM call_records WHERE time < $1 ORDER BY time LIMIT $2)`, t.UTC(), deleteChunk)
		if err != nil {
			return total, fmt.Errorf("delete call records before %s: %w", t.UTC().Format(time.RFC3339), err)
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < deleteChunk {
			return total, nil
		}
	}
}
