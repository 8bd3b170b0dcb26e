package controlplane_test

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/controlplane"
	"github.com/metamcp/metamcp/controlplane/auth"
	"github.com/metamcp/metamcp/controlplane/secret"
	"github.com/metamcp/metamcp/controlplane/store/postgres"
	"github.com/metamcp/metamcp/controlplane/store/postgres/pgtest"
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

// BenchmarkRecordsIngest measures how fast the control plane stores call
// records into Postgres: three data planes' Records streams at once, batches
// of 500 realistic records, each acknowledged once stored. records/s is the
// figure; an op is one batch.
func BenchmarkRecordsIngest(b *testing.B) {
	dsn := pgtest.NewDatabase(b)
	st, err := postgres.Open(context.Background(), dsn, postgres.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	key, _ := secret.GenerateKey()
	sealer, _ := secret.New(key)
	srv, err := controlplane.New(st, sealer, controlplane.Options{AdminTokenHash: auth.HashToken(bootstrapToken)})
	if err != nil {
		b.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, lis) }()
	b.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			b.Error(err)
		}
	})
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	actx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+bootstrapToken)
	tok, err := metamcpv1.NewAdminServiceClient(conn).CreateToken(actx, &metamcpv1.CreateTokenRequest{Token: &metamcpv1.Token{Name: "bench", Scope: metamcpv1.TokenScope_TOKEN_SCOPE_SYNC}})
	if err != nil {
		b.Fatal(err)
	}
	sctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+tok.GetSecret())

	const streams, batch = 3, 500
	var next atomic.Int64
	makeBatch := func(node string) []*metamcpv1.CallRecord {
		recs := make([]*metamcpv1.CallRecord, batch)
		now := time.Now()
		for i := range recs {
			n := next.Add(1)
			recs[i] = &metamcpv1.CallRecord{
				Id: fmt.Sprintf("%s-%d", node, n), Time: timestamppb.New(now), NodeId: node, Endpoint: "team",
				Principal: "marketing-bot", PrincipalKind: "apikey", KeyId: "marketing-bot", Method: "tools/call",
				Target: "github__create_issue", Server: "github", Duration: durationpb.New(3 * time.Millisecond),
				Outcome: metamcpv1.CallOutcome_CALL_OUTCOME_OK, RequestBytes: 180, ResponseBytes: 420, ClientIp: "10.1.2.3",
				ClientName: "claude-code", ClientVersion: "2.1.0", ProtocolVersion: "2025-11-25", SessionId: "sess-0123456789abcdef",
				TraceId: "4bf92f3577b34da6a3ce929d0e0e4736",
			}
		}
		return recs
	}
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	var sent atomic.Int64
	for s := range streams {
		node := fmt.Sprint("dp", s)
		wg.Go(func() {
			st, err := metamcpv1.NewSyncServiceClient(conn).Records(sctx)
			if err != nil {
				b.Error(err)
				return
			}
			// Up to 8 batches in flight, as a data plane sends them.
			acks := make(chan error, 1)
			var total int
			for i := s; i < b.N; i += streams {
				total++
			}
			go func() {
				for range total {
					if _, err := st.Recv(); err != nil {
						acks <- err
						return
					}
					sent.Add(batch)
				}
				acks <- nil
			}()
			for seq := 1; seq <= total; seq++ {
				if err := st.Send(&metamcpv1.RecordsRequest{Sequence: uint64(seq), NodeId: node, Records: makeBatch(node)}); err != nil {
					b.Error(err)
					return
				}
			}
			if err := <-acks; err != nil {
				b.Error(err)
			}
			_ = st.CloseSend()
		})
	}
	wg.Wait()
	b.ReportMetric(float64(sent.Load())/time.Since(start).Seconds(), "records/s")
}
