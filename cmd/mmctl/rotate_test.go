package main

import (
	"context"
	"strings"
	"testing"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
)

func (f *fakeAdmin) RotateSessionKey(ctx context.Context, r *metamcpv1.RotateSessionKeyRequest) (*metamcpv1.RotateSessionKeyResponse, error) {
	if err := f.record(ctx, r); err != nil {
		return nil, err
	}
	return &metamcpv1.RotateSessionKeyResponse{Revision: 12}, nil
}

func TestRotateSessionKey(t *testing.T) {
	f := &fakeAdmin{}
	addr := startFake(t, f)
	r := runMmctl(t, "", "--addr", addr, "rotate", "session-key")
	if r.code != 0 || r.stdout != "session key rotated (revision 12)\n" {
		t.Fatalf("rotate session-key: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if _, ok := f.last().(*metamcpv1.RotateSessionKeyRequest); !ok {
		t.Fatalf("the control plane got %T, want a RotateSessionKeyRequest", f.last())
	}
	r = runMmctl(t, "", "--addr", addr, "rotate", "session-key", "-o", "json")
	if r.code != 0 || !strings.Contains(r.stdout, `"revision": "12"`) {
		t.Fatalf("rotate -o json: exit %d, stdout %q", r.code, r.stdout)
	}
	for _, args := range [][]string{{"rotate"}, {"rotate", "apikey"}, {"rotate", "session-key", "x"}} {
		r := runMmctl(t, "", append([]string{"--addr", addr}, args...)...)
		if r.code != exitUsage || !strings.Contains(r.stderr, "rotate session-key") {
			t.Errorf("%q: exit %d, stderr %q; want a usage error naming `rotate session-key`", args, r.code, r.stderr)
		}
	}
}

func (f *fakeAdmin) RestartServer(ctx context.Context, r *metamcpv1.RestartServerRequest) (*metamcpv1.RestartServerResponse, error) {
	if err := f.record(ctx, r); err != nil {
		return nil, err
	}
	return &metamcpv1.RestartServerResponse{Revision: 13}, nil
}

func TestRestartServer(t *testing.T) {
	f := &fakeAdmin{}
	addr := startFake(t, f)
	r := runMmctl(t, "", "--addr", addr, "restart", "server", "github")
	if r.code != 0 || r.stdout != "server/github restarted (revision 13)\n" {
		t.Fatalf("restart server: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if req, ok := f.last().(*metamcpv1.RestartServerRequest); !ok || req.GetName() != "github" {
		t.Fatalf("the control plane got %v, want a RestartServerRequest for github", f.last())
	}
	for _, args := range [][]string{{"restart"}, {"restart", "server"}, {"restart", "namespace", "x"}, {"restart", "server", "a", "b"}} {
		r := runMmctl(t, "", append([]string{"--addr", addr}, args...)...)
		if r.code != exitUsage {
			t.Errorf("%q: exit %d, stderr %q; want a usage error", args, r.code, r.stderr)
		}
	}
}
