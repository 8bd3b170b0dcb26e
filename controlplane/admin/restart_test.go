package admin_test

import (
	"testing"

	"google.golang.org/grpc/codes"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
)

// TestRestartServer: a restart is a revision whose snapshot carries the
// server's new restart generation; the server's definition is unchanged, and
// a deleted server's generation leaves the snapshot.
func TestRestartServer(t *testing.T) {
	forEachStore(t, func(t *testing.T, e *env) {
		c := ctx(t)
		if _, err := e.client.CreateServer(c, &metamcpv1.CreateServerRequest{Server: stdioServer("github", nil)}); err != nil {
			t.Fatal(err)
		}
		before, err := e.client.GetServer(c, &metamcpv1.GetServerRequest{Name: "github"})
		if err != nil {
			t.Fatal(err)
		}
		cfg, _, err := e.svc.BuildConfig(c)
		if err != nil {
			t.Fatal(err)
		}
		if len(cfg.GetServerRestarts()) != 0 {
			t.Fatalf("server_restarts before any restart: %v", cfg.GetServerRestarts())
		}
		resp, err := e.client.RestartServer(c, &metamcpv1.RestartServerRequest{Name: "github"})
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetRevision() != revision(t, e) || resp.GetRevision() <= before.GetRevision() {
			t.Fatalf("restart revision %d; server at %d, store at %d", resp.GetRevision(), before.GetRevision(), revision(t, e))
		}
		cfg, _, err = e.svc.BuildConfig(c)
		if err != nil {
			t.Fatal(err)
		}
		if got := cfg.GetServerRestarts()["github"]; got != resp.GetRevision() {
			t.Fatalf("generation of github = %d, want %d", got, resp.GetRevision())
		}
		after, err := e.client.GetServer(c, &metamcpv1.GetServerRequest{Name: "github"})
		if err != nil {
			t.Fatal(err)
		}
		if after.GetRevision() != before.GetRevision() {
			t.Errorf("the restart changed the server's definition (revision %d -> %d)", before.GetRevision(), after.GetRevision())
		}
		second, err := e.client.RestartServer(c, &metamcpv1.RestartServerRequest{Name: "github"})
		if err != nil || second.GetRevision() <= resp.GetRevision() {
			t.Fatalf("second restart: %v, revision %d", err, second.GetRevision())
		}

		_, err = e.client.RestartServer(c, &metamcpv1.RestartServerRequest{Name: "nope"})
		wantCode(t, err, codes.NotFound)

		if _, err := e.client.DeleteServer(c, &metamcpv1.DeleteServerRequest{Name: "github"}); err != nil {
			t.Fatal(err)
		}
		cfg, _, err = e.svc.BuildConfig(c)
		if err != nil {
			t.Fatal(err)
		}
		if len(cfg.GetServerRestarts()) != 0 {
			t.Errorf("server_restarts after the server was deleted: %v", cfg.GetServerRestarts())
		}
	})
}
