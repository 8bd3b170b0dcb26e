package admin_test

import (
	"context"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/controlplane/admin"
	"github.com/metamcp/metamcp/controlplane/secret"
	"github.com/metamcp/metamcp/controlplane/store"
	"github.com/metamcp/metamcp/controlplane/store/postgres"
	"github.com/metamcp/metamcp/controlplane/store/postgres/pgtest"
	"github.com/metamcp/metamcp/controlplane/store/sqlite"
)

// backend opens a fresh, empty store for one test.
type backend struct {
	name string
	open func(t *testing.T) store.Store
}

var backends = []backend{
	{"sqlite", openSQLite},
	{"postgres", openPostgres},
}

func openSQLite(t *testing.T) store.Store {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "metamcp.db"), sqlite.Options{})
	if err != nil {
		t.Fatalf("open sqlite store: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func openPostgres(t *testing.T) store.Store {
	t.Helper()
	st, err := postgres.Open(context.Background(), pgtest.NewDatabase(t), postgres.Options{})
	if err != nil {
		t.Fatalf("open postgres store: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// forEachStore runs fn against a fresh SQLite store and a fresh Postgres store.
func forEachStore(t *testing.T, fn func(t *testing.T, e *env)) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			fn(t, newEnv(t, b.open(t)))
		})
	}
}

// env is an AdminService served over a real gRPC connection on loopback.
type env struct {
	st     store.Store
	svc    *admin.Service
	client metamcpv1.AdminServiceClient
	// sealer is the one svc seals secrets with (other replicas need it).
	sealer *secret.Sealer
}

func testSealer(t *testing.T) *secret.Sealer {
	t.Helper()
	key, err := secret.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	s, err := secret.New(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func newEnv(t *testing.T, st store.Store) *env {
	t.Helper()
	sealer := testSealer(t)
	svc := admin.New(st, sealer, slog.New(slog.DiscardHandler))
	srv := grpc.NewServer()
	metamcpv1.RegisterAdminServiceServer(srv, svc)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &env{st: st, svc: svc, client: metamcpv1.NewAdminServiceClient(conn), sealer: sealer}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

// wantCode fails unless err is a status with code.
func wantCode(t *testing.T, err error, code codes.Code) *status.Status {
	t.Helper()
	st, ok := status.FromError(err)
	if !ok || st.Code() != code {
		t.Fatalf("error = %v, want code %v", err, code)
	}
	return st
}

// wantInvalid fails unless err is InvalidArgument with a BadRequest detail
// naming a field that contains field.
func wantInvalid(t *testing.T, err error, field string) {
	t.Helper()
	st := wantCode(t, err, codes.InvalidArgument)
	var fields []string
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.GetFieldViolations() {
				fields = append(fields, v.GetField())
				if strings.Contains(v.GetField(), field) && v.GetDescription() != "" {
					return
				}
			}
		}
	}
	t.Fatalf("InvalidArgument %q: no BadRequest field violation containing %q (got %q)", st.Message(), field, fields)
}

func revision(t *testing.T, e *env) int64 {
	t.Helper()
	r, err := e.client.GetRevision(ctx(t), &metamcpv1.GetRevisionRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return r.GetRevision()
}

// record returns the stored record of a resource.
func record(t *testing.T, e *env, kind store.Kind, name string) store.Record {
	t.Helper()
	var rec store.Record
	err := e.st.View(ctx(t), func(ctx context.Context, tx store.ReadTx) error {
		var err error
		rec, err = tx.Get(ctx, kind, name)
		return err
	})
	if err != nil {
		t.Fatalf("get %s %q record: %v", kind, name, err)
	}
	return rec
}

// Fixtures: small valid resources.

func secretValue(v string) *metamcpv1.Value { return &metamcpv1.Value{Value: v, Secret: true} }
func plainValue(v string) *metamcpv1.Value  { return &metamcpv1.Value{Value: v} }

func stdioServer(name string, env map[string]*metamcpv1.Value) *metamcpv1.Server {
	return &metamcpv1.Server{
		Name:        name,
		Description: "test server " + name,
		Transport: &metamcpv1.Server_Stdio{Stdio: &metamcpv1.StdioTransport{
			Command: "npx",
			Args:    []string{"-y", "@modelcontextprotocol/server-" + name},
			Env:     env,
		}},
	}
}

func httpServer(name string, bearer string, headers map[string]*metamcpv1.Value) *metamcpv1.Server {
	h := &metamcpv1.HTTPTransport{Url: "https://mcp.example.com/" + name, Headers: headers}
	if bearer != "" {
		h.BearerToken = &metamcpv1.Value{Value: bearer}
	}
	return &metamcpv1.Server{Name: name, Transport: &metamcpv1.Server_StreamableHttp{StreamableHttp: h}}
}

func namespace(name string, servers ...string) *metamcpv1.Namespace {
	ns := &metamcpv1.Namespace{Name: name}
	for _, s := range servers {
		ns.Members = append(ns.Members, &metamcpv1.NamespaceMember{Server: s})
	}
	return ns
}

func endpoint(name, ns string, policies ...string) *metamcpv1.Endpoint {
	return &metamcpv1.Endpoint{Name: name, Namespace: ns, RateLimits: policies}
}

func policy(name string, rate int64) *metamcpv1.RateLimitPolicy {
	return &metamcpv1.RateLimitPolicy{Name: name, Rate: rate}
}

func mustCreateServer(t *testing.T, e *env, s *metamcpv1.Server) *metamcpv1.Server {
	t.Helper()
	out, err := e.client.CreateServer(ctx(t), &metamcpv1.CreateServerRequest{Server: s})
	if err != nil {
		t.Fatalf("create server %q: %v", s.GetName(), err)
	}
	return out
}

func mustCreateNamespace(t *testing.T, e *env, ns *metamcpv1.Namespace) *metamcpv1.Namespace {
	t.Helper()
	out, err := e.client.CreateNamespace(ctx(t), &metamcpv1.CreateNamespaceRequest{Namespace: ns})
	if err != nil {
		t.Fatalf("create namespace %q: %v", ns.GetName(), err)
	}
	return out
}

func mustCreateEndpoint(t *testing.T, e *env, ep *metamcpv1.Endpoint) *metamcpv1.Endpoint {
	t.Helper()
	out, err := e.client.CreateEndpoint(ctx(t), &metamcpv1.CreateEndpointRequest{Endpoint: ep})
	if err != nil {
		t.Fatalf("create endpoint %q: %v", ep.GetName(), err)
	}
	return out
}

func mustCreatePolicy(t *testing.T, e *env, p *metamcpv1.RateLimitPolicy) *metamcpv1.RateLimitPolicy {
	t.Helper()
	out, err := e.client.CreateRateLimitPolicy(ctx(t), &metamcpv1.CreateRateLimitPolicyRequest{RateLimitPolicy: p})
	if err != nil {
		t.Fatalf("create policy %q: %v", p.GetName(), err)
	}
	return out
}

func protoName(s string) protoreflect.Name         { return protoreflect.Name(s) }
func protoString(s string) protoreflect.Value      { return protoreflect.ValueOfString(s) }
func timestamp(t time.Time) *timestamppb.Timestamp { return timestamppb.New(t) }
