package admin_test

import (
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/controlplane/admin"
	"github.com/metamcp/metamcp/pkg/gcra"
)

// TestRateLimitStatusReset: status reads a caller's bucket at each endpoint
// that lists the policy, as the data planes count it; reset empties it.
func TestRateLimitStatusReset(t *testing.T) {
	e := newEnv(t, openSQLite(t))
	_, err := e.client.GetRateLimitStatus(ctx(t), &metamcpv1.GetRateLimitStatusRequest{Policy: "pages", Key: "bot"})
	wantCode(t, err, codes.FailedPrecondition)

	store := gcra.NewMemory()
	e.svc.SetRateLimits(admin.RateLimits{Store: store, Prefix: "pre:", Backend: "in-process"})
	mustCreateServer(t, e, stdioServer("notion", nil))
	mustCreateNamespace(t, e, namespace("ns", "notion"))
	p := &metamcpv1.RateLimitPolicy{Name: "pages", Rate: 1, Burst: proto.Int64(3), Period: durationpb.New(time.Hour)}
	mustCreatePolicy(t, e, p)
	mustCreateEndpoint(t, e, endpoint("team", "ns", "pages"))
	mustCreateEndpoint(t, e, endpoint("other", "ns"))

	// A data plane counted two calls of bot at endpoint team.
	b := gcra.NewBucket(gcra.PolicyLimit(p), false)
	b.Key = gcra.Key("pre:", "team", "pages", gcra.SubjectPrincipal+"bot")
	for range 2 {
		if ok, err := store.Allow(ctx(t), []gcra.Bucket{b}, make([]gcra.Result, 1)); !ok || err != nil {
			t.Fatal(ok, err)
		}
	}
	st, err := e.client.GetRateLimitStatus(ctx(t), &metamcpv1.GetRateLimitStatusRequest{Policy: "pages", Key: "bot"})
	if err != nil {
		t.Fatal(err)
	}
	if len(st.GetBuckets()) != 1 || st.GetBuckets()[0].GetEndpoint() != "team" || st.GetBuckets()[0].GetRemaining() != 1 || st.GetBuckets()[0].GetBurst() != 3 || st.GetBackend() != "in-process" {
		t.Fatalf("status %v", st)
	}
	if full := st.GetBuckets()[0].GetResetAfter().AsDuration(); full < 119*time.Minute || full > 2*time.Hour {
		t.Fatalf("full in %s, want about 2h", full)
	}
	if _, err := e.client.ResetRateLimit(ctx(t), &metamcpv1.ResetRateLimitRequest{Policy: "pages", Key: "bot"}); err != nil {
		t.Fatal(err)
	}
	st, _ = e.client.GetRateLimitStatus(ctx(t), &metamcpv1.GetRateLimitStatusRequest{Policy: "pages", Key: "bot"})
	if st.GetBuckets()[0].GetRemaining() != 3 {
		t.Fatalf("after reset: %v", st)
	}

	_, err = e.client.GetRateLimitStatus(ctx(t), &metamcpv1.GetRateLimitStatusRequest{Policy: "pages"})
	wantCode(t, err, codes.InvalidArgument) // a per-principal policy needs the principal
	_, err = e.client.GetRateLimitStatus(ctx(t), &metamcpv1.GetRateLimitStatusRequest{Policy: "pages", Key: "bot", Endpoint: "other"})
	wantCode(t, err, codes.NotFound)
	_, err = e.client.ResetRateLimit(ctx(t), &metamcpv1.ResetRateLimitRequest{Policy: "nope", Key: "bot"})
	wantCode(t, err, codes.NotFound)
}
