package storetest

import (
	"fmt"
	"slices"
	"sort"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/controlplane/store"
)

var callBase = time.Date(2020, 5, 6, 7, 8, 9, 123456000, time.UTC)

// callAt is a record sec seconds after callBase with target and id.
func callAt(sec int, target, id string) *metamcpv1.CallRecord {
	return &metamcpv1.CallRecord{
		Id:   id,
		Time: timestamppb.New(callBase.Add(time.Duration(sec) * time.Second)), NodeId: "dp1",
		Endpoint: "team", Principal: "alice", Method: "tools/call", Target: target,
		Server: "github", Duration: durationpb.New(1500 * time.Microsecond),
		Outcome: metamcpv1.CallOutcome_CALL_OUTCOME_OK, RequestBytes: 10, ResponseBytes: 20, ClientIp: "127.0.0.1",
	}
}

func appendCalls(t *testing.T, s store.Store, recs ...*metamcpv1.CallRecord) int {
	t.Helper()
	n, err := s.AppendCallRecords(testContext(t), recs)
	if err != nil {
		t.Fatalf("AppendCallRecords(%d): %v", len(recs), err)
	}
	return n
}

func listTargets(t *testing.T, s store.Store, q store.CallQuery) []string {
	t.Helper()
	got, err := s.ListCallRecords(testContext(t), q)
	if err != nil {
		t.Fatalf("ListCallRecords(%v): %v", q, err)
	}
	return targetsOf(got)
}

func targetsOf(calls []store.StoredCall) []string {
	out := []string{}
	for _, c := range calls {
		out = append(out, c.Record.GetTarget())
	}
	return out
}

func testCallRecords(t *testing.T, s store.Store) {
	ctx := testContext(t)
	// Batches arrive out of call-time order.
	first := []*metamcpv1.CallRecord{callAt(1, "t1", ""), callAt(3, "t3", ""), callAt(0, "t0", "")}
	second := []*metamcpv1.CallRecord{callAt(4, "t4", ""), callAt(2, "t2", "")}
	for _, batch := range [][]*metamcpv1.CallRecord{first, second, nil} {
		if n := appendCalls(t, s, batch...); n != len(batch) {
			t.Errorf("AppendCallRecords(%d) stored %d", len(batch), n)
		}
	}
	for _, tt := range []struct {
		limit int
		want  []string
	}{
		{10, []string{"t4", "t3", "t2", "t1", "t0"}},
		{5, []string{"t4", "t3", "t2", "t1", "t0"}},
		{2, []string{"t4", "t3"}},
		{1, []string{"t4"}},
	} {
		if got := listTargets(t, s, store.CallQuery{Limit: tt.limit}); !slices.Equal(got, tt.want) {
			t.Errorf("ListCallRecords(%d) targets = %q, want %q", tt.limit, got, tt.want)
		}
	}
	got, err := s.ListCallRecords(ctx, store.CallQuery{Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) == 5 && !proto.Equal(got[0].Record, second[0]) {
		t.Errorf("round trip: got %v, want %v", got[0].Record, second[0])
	}
	if _, err := s.ListCallRecords(ctx, store.CallQuery{}); err == nil {
		t.Error("ListCallRecords without a limit succeeded")
	}

	// A record without a time is stamped on append, and sorts as newest
	// (its time is now, later than base).
	appendCalls(t, s, &metamcpv1.CallRecord{Target: "untimed"})
	got, err = s.ListCallRecords(ctx, store.CallQuery{Limit: 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Record.GetTarget() != "untimed" || got[0].Record.GetTime() == nil {
		t.Errorf("untimed record: got %v, want it newest, with a time", got)
	}
	if rev := revision(t, s); rev != 0 {
		t.Errorf("Revision after call records = %d, want 0", rev)
	}
}

// testCallRecordsOnce: a record id is stored once, however often it comes,
// in one batch or in several.
func testCallRecordsOnce(t *testing.T, s store.Store) {
	batch := []*metamcpv1.CallRecord{callAt(0, "a", "id-a"), callAt(1, "b", "id-b"), callAt(2, "c", "id-c")}
	if n := appendCalls(t, s, batch...); n != 3 {
		t.Errorf("first append stored %d, want 3", n)
	}
	if n := appendCalls(t, s, batch...); n != 0 {
		t.Errorf("the same batch again stored %d, want 0", n)
	}
	// Overlapping, with a duplicate inside the batch too.
	if n := appendCalls(t, s, callAt(2, "c", "id-c"), callAt(3, "d", "id-d"), callAt(3, "d", "id-d")); n != 1 {
		t.Errorf("overlapping batch stored %d, want 1", n)
	}
	// Records without an id are never taken for each other.
	if n := appendCalls(t, s, callAt(4, "e", ""), callAt(4, "e", "")); n != 2 {
		t.Errorf("records without ids stored %d, want 2", n)
	}
	if got, want := listTargets(t, s, store.CallQuery{Limit: 100}), []string{"e", "e", "d", "c", "b", "a"}; !slices.Equal(got, want) {
		t.Errorf("stored targets = %q, want %q", got, want)
	}
}

func testCallRecordFilters(t *testing.T, s store.Store) {
	type rec struct {
		endpoint, principal, server, method, target string
		outcome                                     metamcpv1.CallOutcome
		destructive                                 bool
	}
	ok, toolErr, unauth := metamcpv1.CallOutcome_CALL_OUTCOME_OK, metamcpv1.CallOutcome_CALL_OUTCOME_TOOL_ERROR, metamcpv1.CallOutcome_CALL_OUTCOME_UNAUTHORIZED
	recs := []rec{
		{"team", "alice", "github", "tools/call", "github__create_issue", ok, true},                                          // 0
		{"team", "alice", "github", "tools/call", "github__list_issues", ok, false},                                          // 1
		{"team", "bob", "github", "tools/call", "github__delete_repo", toolErr, true},                                        // 2
		{"ops", "bob", "files", "resources/read", "file:///etc/x_y%z", ok, false},                                            // 3
		{"ops", "marketing-bot", "files", "prompts/get", "files__Summary", ok, false},                                        // 4
		{"ops", "", "", "tools/call", "", unauth, false},                                                                     // 5
		{"team", "alice", "github", "tools/call", "GITHUB__CREATE_ISSUE", ok, false},                                         // 6
		{"team", "alice", "github", "tools/call", "github_Xcreate_issue", metamcpv1.CallOutcome_CALL_OUTCOME_TIMEOUT, false}, // 7
	}
	var batch []*metamcpv1.CallRecord
	for i, r := range recs {
		c := callAt(i, fmt.Sprint(i), fmt.Sprint("id-", i))
		c.Endpoint, c.Principal, c.Server, c.Method, c.Target, c.Outcome, c.Destructive = r.endpoint, r.principal, r.server, r.method, r.target, r.outcome, r.destructive
		batch = append(batch, c)
	}
	appendCalls(t, s, batch...)
	yes, no := true, false
	at := func(sec int) *timestamppb.Timestamp {
		return timestamppb.New(callBase.Add(time.Duration(sec) * time.Second))
	}
	tests := []struct {
		name string
		f    *metamcpv1.CallRecordFilter
		want []int // indexes, newest first
	}{
		{"none", nil, []int{7, 6, 5, 4, 3, 2, 1, 0}},
		{"empty", &metamcpv1.CallRecordFilter{}, []int{7, 6, 5, 4, 3, 2, 1, 0}},
		{"endpoint", &metamcpv1.CallRecordFilter{Endpoint: "ops"}, []int{5, 4, 3}},
		{"principal", &metamcpv1.CallRecordFilter{Principal: "bob"}, []int{3, 2}},
		{"server", &metamcpv1.CallRecordFilter{Server: "files"}, []int{4, 3}},
		{"method", &metamcpv1.CallRecordFilter{Method: "prompts/get"}, []int{4}},
		{"target exact", &metamcpv1.CallRecordFilter{Target: "github__create_issue"}, []int{0}},
		{"target glob", &metamcpv1.CallRecordFilter{Target: "github__*"}, []int{2, 1, 0}},
		{"glob is case-sensitive", &metamcpv1.CallRecordFilter{Target: "GITHUB__*"}, []int{6}},
		{"glob ?", &metamcpv1.CallRecordFilter{Target: "github_?create_issue"}, []int{7, 0}},
		{"glob keeps % and _ literal", &metamcpv1.CallRecordFilter{Target: "file:///etc/x_y%*"}, []int{3}},
		{"% is no wildcard", &metamcpv1.CallRecordFilter{Target: "file:///%*"}, []int{}},
		{"[ is no class", &metamcpv1.CallRecordFilter{Target: "[f]*"}, []int{}},
		{"outcomes", &metamcpv1.CallRecordFilter{Outcomes: []metamcpv1.CallOutcome{toolErr, unauth}}, []int{5, 2}},
		{"destructive", &metamcpv1.CallRecordFilter{Destructive: &yes}, []int{2, 0}},
		{"not destructive", &metamcpv1.CallRecordFilter{Destructive: &no, Endpoint: "ops"}, []int{5, 4, 3}},
		{"since", &metamcpv1.CallRecordFilter{Since: at(6)}, []int{7, 6}},
		{"until", &metamcpv1.CallRecordFilter{Until: at(2)}, []int{1, 0}},
		{"since and until", &metamcpv1.CallRecordFilter{Since: at(2), Until: at(4)}, []int{3, 2}},
		{"all of them", &metamcpv1.CallRecordFilter{Endpoint: "team", Principal: "alice", Target: "github__*", Destructive: &yes}, []int{0}},
	}
	for _, tt := range tests {
		want := []string{}
		for _, i := range tt.want {
			want = append(want, recs[i].target)
		}
		if got := listTargets(t, s, store.CallQuery{Filter: tt.f, Limit: 100}); !slices.Equal(got, want) {
			t.Errorf("%s: targets = %q, want %q", tt.name, got, want)
		}
		after, err := s.CallRecordsAfter(testContext(t), tt.f, 0, 100)
		if err != nil {
			t.Fatalf("%s: CallRecordsAfter: %v", tt.name, err)
		}
		slices.Reverse(want)
		if got := targetsOf(after); !slices.Equal(got, want) {
			t.Errorf("%s: CallRecordsAfter targets = %q, want %q", tt.name, got, want)
		}
	}
}

// testCallRecordPages: paging with Before visits every record once, records
// with equal times included.
func testCallRecordPages(t *testing.T, s store.Store) {
	var batch []*metamcpv1.CallRecord
	for i := range 25 {
		batch = append(batch, callAt(i/3, fmt.Sprint(i), fmt.Sprint("p", i))) // three per second
	}
	appendCalls(t, s, batch...)
	var seen []string
	var before *store.CallCursor
	pages := 0
	for {
		got, err := s.ListCallRecords(testContext(t), store.CallQuery{Limit: 4, Before: before})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) == 0 {
			break
		}
		pages++
		seen = append(seen, targetsOf(got)...)
		c := got[len(got)-1].Cursor()
		before = &c
	}
	var want []string
	for i := 24; i >= 0; i-- {
		want = append(want, fmt.Sprint(i))
	}
	if !slices.Equal(seen, want) || pages != 7 {
		t.Errorf("pages = %d, targets = %q; want 7 pages of %q", pages, seen, want)
	}
}

func testCallRecordsAfter(t *testing.T, s store.Store) {
	ctx := testContext(t)
	if seq, err := s.LatestCallSeq(ctx); err != nil || seq != 0 {
		t.Errorf("LatestCallSeq of an empty log = %d, %v; want 0", seq, err)
	}
	appendCalls(t, s, callAt(5, "a", "a"), callAt(1, "b", "b"))
	appendCalls(t, s, callAt(3, "c", "c"))
	all, err := s.CallRecordsAfter(ctx, nil, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if got := targetsOf(all); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Fatalf("CallRecordsAfter(0) = %q, want in stored order a, b, c", got)
	}
	latest, err := s.LatestCallSeq(ctx)
	if err != nil || latest != all[2].Seq {
		t.Errorf("LatestCallSeq = %d, %v; want %d", latest, err, all[2].Seq)
	}
	rest, err := s.CallRecordsAfter(ctx, nil, all[0].Seq, 1)
	if err != nil {
		t.Fatal(err)
	}
	if got := targetsOf(rest); !slices.Equal(got, []string{"b"}) {
		t.Errorf("CallRecordsAfter(first, limit 1) = %q, want b", got)
	}
	none, err := s.CallRecordsAfter(ctx, nil, latest, 10)
	if err != nil || len(none) != 0 {
		t.Errorf("CallRecordsAfter(latest) = %v, %v; want none", targetsOf(none), err)
	}
}

func testCallStats(t *testing.T, s store.Store) {
	c1 := callAt(0, "x", "1")
	c1.Duration = durationpb.New(2 * time.Millisecond)
	c2 := callAt(1, "y", "2")
	c2.Principal, c2.Outcome, c2.Duration = "bob", metamcpv1.CallOutcome_CALL_OUTCOME_FORBIDDEN, durationpb.New(1234*time.Microsecond)
	appendCalls(t, s, c1, c2)
	var got []store.CallStat
	err := s.ScanCallStats(testContext(t), &metamcpv1.CallRecordFilter{Endpoint: "team"}, func(st store.CallStat) error {
		got = append(got, st)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Slice(got, func(i, j int) bool { return got[i].Principal < got[j].Principal })
	want := []store.CallStat{
		{Principal: "alice", Target: "x", Outcome: metamcpv1.CallOutcome_CALL_OUTCOME_OK, Duration: 2 * time.Millisecond},
		{Principal: "bob", Target: "y", Outcome: metamcpv1.CallOutcome_CALL_OUTCOME_FORBIDDEN, Duration: 1234 * time.Microsecond},
	}
	if !slices.Equal(got, want) {
		t.Errorf("ScanCallStats = %+v, want %+v", got, want)
	}
}

func testCallRetention(t *testing.T, s store.Store) {
	ctx := testContext(t)
	appendCalls(t, s, callAt(0, "old0", "o0"), callAt(1, "old1", "o1"), callAt(10, "new", "n"))
	n, err := s.DeleteCallRecordsBefore(ctx, callBase.Add(5*time.Second))
	if err != nil || n != 2 {
		t.Errorf("DeleteCallRecordsBefore = %d, %v; want 2", n, err)
	}
	if got := listTargets(t, s, store.CallQuery{Limit: 10}); !slices.Equal(got, []string{"new"}) {
		t.Errorf("after retention: %q, want only new", got)
	}
	if n, err := s.DeleteCallRecordsBefore(ctx, callBase.Add(5*time.Second)); err != nil || n != 0 {
		t.Errorf("second DeleteCallRecordsBefore = %d, %v; want 0", n, err)
	}
}
