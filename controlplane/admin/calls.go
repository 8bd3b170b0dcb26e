package admin

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"sort"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/controlplane/store"
)

// Page sizes of ListCallRecords.
const (
	defaultCallPage = 100
	maxCallPage     = 1000
)

// FollowPollInterval is how often a follower looks for records stored by
// another control-plane replica; this replica's own stores wake it at once.
var FollowPollInterval = 500 * time.Millisecond

// followLag is how long a follower keeps reading below the highest
// sequence it saw: a transaction may commit after one that took a higher
// sequence, and its records must not be skipped.
const followLag = 5 * time.Second

// callNotifier wakes followers when records are stored.
type callNotifier struct {
	mu sync.Mutex
	ch chan struct{}
}

func (n *callNotifier) wait() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ch == nil {
		n.ch = make(chan struct{})
	}
	return n.ch
}

func (n *callNotifier) notify() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ch != nil {
		close(n.ch)
		n.ch = nil
	}
}

// CallRecordsStored tells followers that records were stored (the sync
// service calls it after each batch).
func (s *Service) CallRecordsStored() { s.calls.notify() }

func checkCallFilter(f *metamcpv1.CallRecordFilter) error {
	if f.GetSince() != nil && f.GetUntil() != nil && !f.GetSince().AsTime().Before(f.GetUntil().AsTime()) {
		return status.Error(codes.InvalidArgument, "filter: since must be before until")
	}
	for _, o := range f.GetOutcomes() {
		if _, ok := metamcpv1.CallOutcome_name[int32(o)]; !ok || o == metamcpv1.CallOutcome_CALL_OUTCOME_UNSPECIFIED {
			return status.Errorf(codes.InvalidArgument, "filter: unknown outcome %d", o)
		}
	}
	return nil
}

// ListCallRecords pages through the audit trail, newest first.
func (s *Service) ListCallRecords(ctx context.Context, req *metamcpv1.ListCallRecordsRequest) (*metamcpv1.ListCallRecordsResponse, error) {
	if err := checkCallFilter(req.GetFilter()); err != nil {
		return nil, err
	}
	size := int(req.GetPageSize())
	switch {
	case size < 0:
		return nil, status.Error(codes.InvalidArgument, "page_size must not be negative")
	case size == 0:
		size = defaultCallPage
	case size > maxCallPage:
		size = maxCallPage
	}
	q := store.CallQuery{Filter: req.GetFilter(), Limit: size + 1}
	if tok := req.GetPageToken(); tok != "" {
		c, ok := decodeCallCursor(tok)
		if !ok {
			return nil, status.Error(codes.InvalidArgument, "invalid page_token: pass the next_page_token of the previous page")
		}
		q.Before = &c
	}
	calls, err := s.st.ListCallRecords(ctx, q)
	if err != nil {
		return nil, s.rpcError(ctx, "list call records", err)
	}
	resp := &metamcpv1.ListCallRecordsResponse{}
	if len(calls) > size {
		calls = calls[:size]
		resp.NextPageToken = encodeCallCursor(calls[size-1].Cursor())
	}
	for _, c := range calls {
		resp.Records = append(resp.Records, shown(c.Record, req.GetIncludePayloads()))
	}
	return resp, nil
}

// shown leaves the payloads out unless they were asked for.
func shown(r *metamcpv1.CallRecord, payloads bool) *metamcpv1.CallRecord {
	if !payloads {
		r.Arguments, r.Result, r.PayloadTruncated = "", "", false
	}
	return r
}

func encodeCallCursor(c store.CallCursor) string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(c.Time.UnixMicro()))
	binary.BigEndian.PutUint64(b[8:], uint64(c.Seq))
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func decodeCallCursor(s string) (store.CallCursor, bool) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) != 16 {
		return store.CallCursor{}, false
	}
	return store.CallCursor{
		Time: time.UnixMicro(int64(binary.BigEndian.Uint64(b[:8]))).UTC(),
		Seq:  int64(binary.BigEndian.Uint64(b[8:])),
	}, true
}

// followBatch is the most records one follow read takes.
const followBatch = 1000

// FollowCallRecords streams the records stored from now on.
func (s *Service) FollowCallRecords(req *metamcpv1.FollowCallRecordsRequest, ss grpc.ServerStreamingServer[metamcpv1.FollowCallRecordsResponse]) error {
	ctx := ss.Context()
	if err := checkCallFilter(req.GetFilter()); err != nil {
		return err
	}
	start, err := s.st.LatestCallSeq(ctx)
	if err != nil {
		return s.rpcError(ctx, "follow call records", err)
	}
	// Sequences below floor are done; seen holds those read above it. The
	// floor rises to the highest sequence seen followLag ago.
	type mark struct {
		at  time.Time
		seq int64
	}
	floor, high := start, start
	seen := map[int64]bool{}
	var marks []mark
	// Headers go out at once, so a client knows the stream is up.
	if err := ss.SendHeader(nil); err != nil {
		return nil //nolint:nilerr // the caller went away
	}
	tick := time.NewTicker(FollowPollInterval)
	defer tick.Stop()
	for {
		wake := s.calls.wait()
		for from := floor; ; {
			calls, err := s.st.CallRecordsAfter(ctx, req.GetFilter(), from, followBatch)
			if err != nil {
				return s.rpcError(ctx, "follow call records", err)
			}
			resp := &metamcpv1.FollowCallRecordsResponse{}
			for _, c := range calls {
				if seen[c.Seq] {
					continue
				}
				seen[c.Seq] = true
				high = max(high, c.Seq)
				resp.Records = append(resp.Records, shown(c.Record, req.GetIncludePayloads()))
			}
			if len(resp.Records) > 0 {
				if err := ss.Send(resp); err != nil {
					return nil //nolint:nilerr // the caller went away
				}
			}
			if len(calls) < followBatch {
				break
			}
			// A full read: go on above what it returned.
			from = calls[len(calls)-1].Seq
		}
		now := time.Now()
		marks = append(marks, mark{now, high})
		for len(marks) > 0 && now.Sub(marks[0].at) > followLag {
			floor = max(floor, marks[0].seq)
			marks = marks[1:]
		}
		for seq := range seen {
			if seq <= floor {
				delete(seen, seq)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-wake:
			// Let a burst of batches land before reading.
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(20 * time.Millisecond):
			}
		case <-tick.C:
		}
	}
}

// SummarizeCallRecords counts calls, errors and refusals and gives latency
// percentiles per principal and target.
func (s *Service) SummarizeCallRecords(ctx context.Context, req *metamcpv1.SummarizeCallRecordsRequest) (*metamcpv1.SummarizeCallRecordsResponse, error) {
	if err := checkCallFilter(req.GetFilter()); err != nil {
		return nil, err
	}
	type key struct{ principal, target string }
	type agg struct {
		row  *metamcpv1.CallSummary
		durs []time.Duration
	}
	groups := map[key]*agg{}
	var total int64
	err := s.st.ScanCallStats(ctx, req.GetFilter(), func(st store.CallStat) error {
		total++
		k := key{st.Principal, st.Target}
		a := groups[k]
		if a == nil {
			a = &agg{row: &metamcpv1.CallSummary{Principal: st.Principal, Target: st.Target}}
			groups[k] = a
		}
		a.row.Calls++
		switch OutcomeClass(st.Outcome) {
		case "error":
			a.row.Errors++
		case "refusal":
			a.row.Refusals++
		}
		a.durs = append(a.durs, st.Duration)
		return nil
	})
	if err != nil {
		return nil, s.rpcError(ctx, "summarize call records", err)
	}
	resp := &metamcpv1.SummarizeCallRecordsResponse{Records: total}
	for _, a := range groups {
		sort.Slice(a.durs, func(i, j int) bool { return a.durs[i] < a.durs[j] })
		a.row.P50 = durationpb.New(percentile(a.durs, 50))
		a.row.P95 = durationpb.New(percentile(a.durs, 95))
		resp.Rows = append(resp.Rows, a.row)
	}
	sort.Slice(resp.Rows, func(i, j int) bool {
		if resp.Rows[i].GetPrincipal() != resp.Rows[j].GetPrincipal() {
			return resp.Rows[i].GetPrincipal() < resp.Rows[j].GetPrincipal()
		}
		return resp.Rows[i].GetTarget() < resp.Rows[j].GetTarget()
	})
	return resp, nil
}

// percentile is the nearest-rank p-th percentile of sorted durations.
func percentile(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := (p*len(sorted) + 99) / 100 // ceil(p/100 * n)
	return sorted[max(rank, 1)-1]
}

// OutcomeClass sorts outcomes into "ok", "error" (answered with an error)
// and "refusal" (refused before it reached an upstream).
func OutcomeClass(o metamcpv1.CallOutcome) string {
	switch o {
	case metamcpv1.CallOutcome_CALL_OUTCOME_TOOL_ERROR, metamcpv1.CallOutcome_CALL_OUTCOME_ERROR,
		metamcpv1.CallOutcome_CALL_OUTCOME_TIMEOUT, metamcpv1.CallOutcome_CALL_OUTCOME_CANCELLED:
		return "error"
	case metamcpv1.CallOutcome_CALL_OUTCOME_UNAUTHORIZED, metamcpv1.CallOutcome_CALL_OUTCOME_FORBIDDEN,
		metamcpv1.CallOutcome_CALL_OUTCOME_RATE_LIMITED:
		return "refusal"
	}
	return "ok"
}
