package main

import (
	"context"
	"net"
	"strings"
	"testing"

	"google.golang.org/grpc"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
)

// collisionAdmin serves one namespace and data planes that report name
// collisions in it.
type collisionAdmin struct{ fakeAdmin }

func (f *collisionAdmin) GetNamespace(ctx context.Context, r *metamcpv1.GetNamespaceRequest) (*metamcpv1.Namespace, error) {
	return &metamcpv1.Namespace{Name: r.GetName(), Members: []*metamcpv1.NamespaceMember{{Server: "alpha"}, {Server: "gamma"}}}, nil
}

func TestDescribeNamespaceCollisions(t *testing.T) {
	col := &metamcpv1.NameCollision{Endpoint: "main", Namespace: "dev", Kind: "tool", Name: "alpha__echo", KeptServer: "alpha", DroppedServer: "gamma"}
	f := &collisionAdmin{fakeAdmin{dataPlanes: &metamcpv1.ListDataPlanesResponse{DataPlanes: []*metamcpv1.DataPlane{
		{NodeId: "dp-1", NameCollisions: []*metamcpv1.NameCollision{col, {Namespace: "other", Name: "x"}}},
		{NodeId: "dp-2", NameCollisions: []*metamcpv1.NameCollision{col}},
	}}}}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	metamcpv1.RegisterAdminServiceServer(srv, f)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	r := runMmctl(t, "", "--addr", lis.Addr().String(), "describe", "namespace", "dev")
	want := "tool alpha__echo on endpoint main: alpha's is listed and called, gamma's left out (seen by dp-1, dp-2)"
	if r.code != 0 || !strings.Contains(r.stdout, want) || strings.Contains(r.stdout, "other") {
		t.Fatalf("describe namespace: exit %d, stdout %q, stderr %q; want %q", r.code, r.stdout, r.stderr, want)
	}
}
