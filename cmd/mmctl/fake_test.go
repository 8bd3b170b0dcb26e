package main

import (
	"bytes"
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
)

// fakeAdmin is an in-process AdminService that records what mmctl sends and
// answers with what a test sets. It stands in for the control plane in unit
// tests of flag parsing, error mapping and output; test/e2e runs the real one.
type fakeAdmin struct {
	metamcpv1.UnimplementedAdminServiceServer

	mu       sync.Mutex
	requests []proto.Message
	auth     []string

	// err, when set, is returned by every call.
	err error
	// warning, when set, is sent as x-metamcp-warning response metadata.
	warning string

	servers    []*metamcpv1.Server
	dataPlanes *metamcpv1.ListDataPlanesResponse
}

func (f *fakeAdmin) record(ctx context.Context, req proto.Message) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests = append(f.requests, proto.Clone(req))
	md, _ := metadata.FromIncomingContext(ctx)
	f.auth = append(f.auth, strings.Join(md.Get("authorization"), ","))
	if f.warning != "" {
		_ = grpc.SetHeader(ctx, metadata.Pairs(warningHeader, f.warning))
	}
	return f.err
}

func (f *fakeAdmin) last() proto.Message {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.requests) == 0 {
		return nil
	}
	return f.requests[len(f.requests)-1]
}

func (f *fakeAdmin) CreateServer(ctx context.Context, r *metamcpv1.CreateServerRequest) (*metamcpv1.Server, error) {
	if err := f.record(ctx, r); err != nil {
		return nil, err
	}
	s := proto.Clone(r.GetServer()).(*metamcpv1.Server)
	s.Revision = 7
	return s, nil
}

func (f *fakeAdmin) ListServers(ctx context.Context, r *metamcpv1.ListServersRequest) (*metamcpv1.ListServersResponse, error) {
	if err := f.record(ctx, r); err != nil {
		return nil, err
	}
	return &metamcpv1.ListServersResponse{Servers: f.servers}, nil
}

func (f *fakeAdmin) GetServer(ctx context.Context, r *metamcpv1.GetServerRequest) (*metamcpv1.Server, error) {
	if err := f.record(ctx, r); err != nil {
		return nil, err
	}
	for _, s := range f.servers {
		if s.GetName() == r.GetName() {
			return s, nil
		}
	}
	return nil, status.Errorf(codes.NotFound, "server %q not found", r.GetName())
}

func (f *fakeAdmin) DeleteServer(ctx context.Context, r *metamcpv1.DeleteServerRequest) (*metamcpv1.DeleteServerResponse, error) {
	if err := f.record(ctx, r); err != nil {
		return nil, err
	}
	return &metamcpv1.DeleteServerResponse{Revision: 9}, nil
}

func (f *fakeAdmin) CreateNamespace(ctx context.Context, r *metamcpv1.CreateNamespaceRequest) (*metamcpv1.Namespace, error) {
	if err := f.record(ctx, r); err != nil {
		return nil, err
	}
	return r.GetNamespace(), nil
}

func (f *fakeAdmin) CreateEndpoint(ctx context.Context, r *metamcpv1.CreateEndpointRequest) (*metamcpv1.Endpoint, error) {
	if err := f.record(ctx, r); err != nil {
		return nil, err
	}
	return r.GetEndpoint(), nil
}

func (f *fakeAdmin) CreateRateLimitPolicy(ctx context.Context, r *metamcpv1.CreateRateLimitPolicyRequest) (*metamcpv1.RateLimitPolicy, error) {
	if err := f.record(ctx, r); err != nil {
		return nil, err
	}
	return r.GetRateLimitPolicy(), nil
}

func (f *fakeAdmin) CreateApiKey(ctx context.Context, r *metamcpv1.CreateApiKeyRequest) (*metamcpv1.CreateApiKeyResponse, error) {
	if err := f.record(ctx, r); err != nil {
		return nil, err
	}
	k := proto.Clone(r.GetApiKey()).(*metamcpv1.ApiKey)
	k.KeyPrefix = "mm_abc"
	k.KeyHash = []byte("must-not-print")
	return &metamcpv1.CreateApiKeyResponse{ApiKey: k, Key: "mm_abcdefghijklmnop"}, nil
}

func (f *fakeAdmin) CreateToken(ctx context.Context, r *metamcpv1.CreateTokenRequest) (*metamcpv1.CreateTokenResponse, error) {
	if err := f.record(ctx, r); err != nil {
		return nil, err
	}
	return &metamcpv1.CreateTokenResponse{Token: r.GetToken(), Secret: "mmt_secretsecret"}, nil
}

func (f *fakeAdmin) Apply(ctx context.Context, r *metamcpv1.ApplyRequest) (*metamcpv1.ApplyResponse, error) {
	if err := f.record(ctx, r); err != nil {
		return nil, err
	}
	return &metamcpv1.ApplyResponse{Revision: 12, DryRun: r.GetDryRun(), Warnings: []string{"tool names may exceed 64 characters"}, Changes: []*metamcpv1.Change{
		{Kind: "Server", Name: "github", Action: metamcpv1.ChangeAction_CHANGE_ACTION_CREATED},
		{Kind: "Namespace", Name: "dev", Action: metamcpv1.ChangeAction_CHANGE_ACTION_UPDATED, Fields: []string{"members"}},
		{Kind: "RateLimitPolicy", Name: "per-user", Action: metamcpv1.ChangeAction_CHANGE_ACTION_UNCHANGED},
	}}, nil
}

func (f *fakeAdmin) GetRevision(ctx context.Context, r *metamcpv1.GetRevisionRequest) (*metamcpv1.GetRevisionResponse, error) {
	if err := f.record(ctx, r); err != nil {
		return nil, err
	}
	return &metamcpv1.GetRevisionResponse{Revision: 42}, nil
}

func (f *fakeAdmin) ListDataPlanes(ctx context.Context, r *metamcpv1.ListDataPlanesRequest) (*metamcpv1.ListDataPlanesResponse, error) {
	if err := f.record(ctx, r); err != nil {
		return nil, err
	}
	return f.dataPlanes, nil
}

// count is the number of calls so far.
func (f *fakeAdmin) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.requests)
}

// lastAuth is the authorization metadata of the last call.
func (f *fakeAdmin) lastAuth() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.auth) == 0 {
		return ""
	}
	return f.auth[len(f.auth)-1]
}

// startFake serves f on a loopback port until the test ends and returns the
// address.
func startFake(t *testing.T, f *fakeAdmin) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	srv := grpc.NewServer()
	metamcpv1.RegisterAdminServiceServer(srv, f)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	return lis.Addr().String()
}

// result is the outcome of one in-process mmctl run.
type result struct {
	stdout, stderr string
	code           int
}

// runMmctl runs mmctl in-process with the given stdin, isolated from the
// user's config file.
func runMmctl(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	code := run(ctx, args, strings.NewReader(stdin), &stdout, &stderr)
	return result{stdout: stdout.String(), stderr: stderr.String(), code: code}
}
