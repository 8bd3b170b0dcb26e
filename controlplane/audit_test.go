package controlplane_test

import (
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/controlplane"
)

func auditRecord(id, principal, target string, outcome metamcpv1.CallOutcome, at time.Time, d time.Duration) *metamcpv1.CallRecord {
	return &metamcpv1.CallRecord{Id: id, Time: timestamppb.New(at), Endpoint: "team", Principal: principal, Method: "tools/call",
		Target: target, Server: "gh", Outcome: outcome, Duration: durationpb.New(d), Arguments: `{"a":1}`}
}

// TestRecordsStreamListFollowSummary: records sent on the Records stream
// are acknowledged once stored, a resent batch is stored once, and the admin
// RPCs list, follow and summarize them.
func TestRecordsStreamListFollowSummary(t *testing.T) {
	// A retention of 30s sweeps every 3s.
	ts := startServer(t, controlplane.Options{AuditRetention: 30 * time.Second})
	conn := dial(t, ts.addr, nil)
	admin := metamcpv1.NewAdminServiceClient(conn)
	adminCtx := withToken(t, bootstrapToken)
	tok, err := admin.CreateToken(adminCtx, &metamcpv1.CreateTokenRequest{Token: &metamcpv1.Token{Name: "dp", Scope: metamcpv1.TokenScope_TOKEN_SCOPE_SYNC}})
	if err != nil {
		t.Fatal(err)
	}
	syncClient := metamcpv1.NewSyncServiceClient(conn)

	// An admin token may not send records; a sync token may not read them.
	if st, err := syncClient.Records(adminCtx); err == nil {
		_ = st.Send(&metamcpv1.RecordsRequest{Sequence: 1})
		if _, err := st.Recv(); status.Code(err) != codes.PermissionDenied {
			t.Errorf("Records with an admin token: %v, want PermissionDenied", err)
		}
	}
	syncCtx := withToken(t, tok.GetSecret())
	if _, err := admin.ListCallRecords(syncCtx, &metamcpv1.ListCallRecordsRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("ListCallRecords with a sync token: %v, want PermissionDenied", err)
	}

	follow, err := admin.FollowCallRecords(adminCtx, &metamcpv1.FollowCallRecordsRequest{Filter: &metamcpv1.CallRecordFilter{Principal: "alice"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := follow.Header(); err != nil {
		t.Fatal(err)
	}

	now := time.Now()
	ok, toolErr, forbidden := metamcpv1.CallOutcome_CALL_OUTCOME_OK, metamcpv1.CallOutcome_CALL_OUTCOME_TOOL_ERROR, metamcpv1.CallOutcome_CALL_OUTCOME_FORBIDDEN
	batch := []*metamcpv1.CallRecord{
		auditRecord("r1", "alice", "gh__a", ok, now.Add(-3*time.Second), 10*time.Millisecond),
		auditRecord("r2", "alice", "gh__a", toolErr, now.Add(-2*time.Second), 30*time.Millisecond),
		auditRecord("r3", "bob", "gh__b", forbidden, now.Add(-time.Second), 0),
		// Older than the retention: the sweep removes it.
		auditRecord("old", "alice", "gh__a", ok, now.Add(-48*time.Hour), time.Millisecond),
	}
	st, err := syncClient.Records(syncCtx)
	if err != nil {
		t.Fatal(err)
	}
	for seq := uint64(1); seq <= 2; seq++ { // the same batch twice
		if err := st.Send(&metamcpv1.RecordsRequest{Sequence: seq, NodeId: "dp1", Records: batch}); err != nil {
			t.Fatal(err)
		}
		ack, err := st.Recv()
		if err != nil || ack.GetSequence() != seq {
			t.Fatalf("ack %d = %v, %v", seq, ack, err)
		}
	}

	// Follow sees alice's records, each once, without payloads.
	seen := map[string]int{}
	for len(seen) < 3 {
		resp, err := follow.Recv()
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range resp.GetRecords() {
			seen[r.GetId()]++
			if r.GetPrincipal() != "alice" || r.GetArguments() != "" || r.GetNodeId() != "dp1" {
				t.Errorf("followed record = %v", r)
			}
		}
	}
	if seen["r1"] != 1 || seen["r2"] != 1 || seen["old"] != 1 {
		t.Errorf("followed %v, want alice's r1, r2 and old once each", seen)
	}

	// The retention sweep (at start, then every RetentionInterval) removes "old".
	deadline := time.Now().Add(30 * time.Second)
	var list *metamcpv1.ListCallRecordsResponse
	for {
		list, err = admin.ListCallRecords(adminCtx, &metamcpv1.ListCallRecordsRequest{PageSize: 2, IncludePayloads: true})
		if err != nil {
			t.Fatal(err)
		}
		all := len(list.GetRecords())
		for tok := list.GetNextPageToken(); tok != ""; {
			more, err := admin.ListCallRecords(adminCtx, &metamcpv1.ListCallRecordsRequest{PageSize: 2, PageToken: tok})
			if err != nil {
				t.Fatal(err)
			}
			all += len(more.GetRecords())
			tok = more.GetNextPageToken()
		}
		if all == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d records stored, want 3 (each once, the old one removed)", all)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := list.GetRecords(); got[0].GetId() != "r3" || got[1].GetId() != "r2" || got[0].GetArguments() == "" {
		t.Errorf("first page = %v, want r3, r2 with payloads", got)
	}

	sum, err := admin.SummarizeCallRecords(adminCtx, &metamcpv1.SummarizeCallRecordsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	got := ""
	for _, r := range sum.GetRows() {
		got += fmt.Sprintf("%s %s calls=%d errors=%d refusals=%d p50=%v p95=%v; ", r.GetPrincipal(), r.GetTarget(), r.GetCalls(), r.GetErrors(), r.GetRefusals(), r.GetP50().AsDuration(), r.GetP95().AsDuration())
	}
	if want := "alice gh__a calls=2 errors=1 refusals=0 p50=10ms p95=30ms; bob gh__b calls=1 errors=0 refusals=1 p50=0s p95=0s; "; got != want {
		t.Errorf("summary = %s\nwant      %s", got, want)
	}
	if _, err := admin.ListCallRecords(adminCtx, &metamcpv1.ListCallRecordsRequest{PageToken: "nope"}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("a bad page token: %v, want InvalidArgument", err)
	}
}

func TestRetentionInterval(t *testing.T) {
	for _, tt := range []struct{ retention, want time.Duration }{
		{90 * 24 * time.Hour, time.Hour},
		{time.Hour, 6 * time.Minute},
		{time.Second, time.Second},
	} {
		if got := controlplane.RetentionInterval(tt.retention); got != tt.want {
			t.Errorf("RetentionInterval(%v) = %v, want %v", tt.retention, got, tt.want)
		}
	}
}
