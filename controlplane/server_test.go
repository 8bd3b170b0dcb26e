package controlplane_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding/gzip"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/controlplane"
	"github.com/metamcp/metamcp/controlplane/auth"
	"github.com/metamcp/metamcp/controlplane/secret"
	"github.com/metamcp/metamcp/controlplane/store/sqlite"
	"github.com/metamcp/metamcp/internal/syncbuf"
	"github.com/metamcp/metamcp/internal/testca"
)

const bootstrapToken = "bootstrap-token-for-tests-0123456789"

// syncBuffer captures a process's output while the test reads it.
type syncBuffer = syncbuf.Buffer

type testServer struct {
	srv  *controlplane.Server
	addr string
	logs *syncBuffer
	done chan error
	stop context.CancelFunc
}

func startServer(t *testing.T, opts controlplane.Options) *testServer {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "cp.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	key, err := secret.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	sealer, err := secret.New(key)
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	opts.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if opts.AdminTokenHash == nil {
		opts.AdminTokenHash = auth.HashToken(bootstrapToken)
	}
	srv, err := controlplane.New(st, sealer, opts)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ts := &testServer{srv: srv, addr: lis.Addr().String(), logs: logs, done: make(chan error, 1), stop: cancel}
	go func() { ts.done <- srv.Serve(ctx, lis) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-ts.done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("Serve did not return after its context was cancelled")
		}
	})
	return ts
}

func dial(t *testing.T, addr string, creds credentials.TransportCredentials) *grpc.ClientConn {
	t.Helper()
	if creds == nil {
		creds = insecure.NewCredentials()
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func withToken(t *testing.T, token string) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	if token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	}
	return ctx
}

func TestAuthOverGRPC(t *testing.T) {
	ts := startServer(t, controlplane.Options{})
	conn := dial(t, ts.addr, nil)
	admin := metamcpv1.NewAdminServiceClient(conn)
	syncc := metamcpv1.NewSyncServiceClient(conn)

	// The bootstrap token administers; it makes the other tokens.
	mk := func(name string, scope metamcpv1.TokenScope) string {
		r, err := admin.CreateToken(withToken(t, bootstrapToken), &metamcpv1.CreateTokenRequest{Token: &metamcpv1.Token{Name: name, Scope: scope}})
		if err != nil {
			t.Fatalf("create token %s: %v", name, err)
		}
		return r.GetSecret()
	}
	adminTok := mk("ops", metamcpv1.TokenScope_TOKEN_SCOPE_ADMIN)
	syncTok := mk("dp", metamcpv1.TokenScope_TOKEN_SCOPE_SYNC)
	revokedTok := mk("gone", metamcpv1.TokenScope_TOKEN_SCOPE_ADMIN)
	if _, err := admin.RevokeToken(withToken(t, adminTok), &metamcpv1.RevokeTokenRequest{Name: "gone"}); err != nil {
		t.Fatal(err)
	}

	adminCall := func(token string) error {
		_, err := admin.GetRevision(withToken(t, token), &metamcpv1.GetRevisionRequest{})
		return err
	}
	// A sync stream that gets past auth says hello and receives the current
	// snapshot.
	syncCall := func(token string) (int64, error) {
		stream, err := syncc.Sync(withToken(t, token))
		if err != nil {
			return 0, err
		}
		hello := &metamcpv1.SyncRequest{Message: &metamcpv1.SyncRequest_Hello{Hello: &metamcpv1.Hello{NodeId: "probe"}}}
		if err := stream.Send(hello); err != nil && !errors.Is(err, io.EOF) {
			return 0, err
		}
		resp, err := stream.Recv()
		if err != nil {
			return 0, err
		}
		return resp.GetSnapshot().GetRevision(), nil
	}

	for _, tc := range []struct {
		name  string
		token string
		code  codes.Code
		msg   string
	}{
		{"no token", "", codes.Unauthenticated, "missing or invalid token: pass --token or set METAMCP_TOKEN"},
		{"wrong token", "mmt_wrong", codes.Unauthenticated, "missing or invalid token"},
		{"sync token", syncTok, codes.PermissionDenied, `token "dp" has scope sync; the admin API needs an admin token`},
		{"revoked token", revokedTok, codes.Unauthenticated, "revoked"},
		{"admin token", adminTok, codes.OK, ""},
		{"bootstrap token", bootstrapToken, codes.OK, ""},
	} {
		t.Run("admin/"+tc.name, func(t *testing.T) {
			err := adminCall(tc.token)
			if status.Code(err) != tc.code || !strings.Contains(status.Convert(err).Message(), tc.msg) {
				t.Errorf("err = %v, want %v with %q", err, tc.code, tc.msg)
			}
		})
	}
	for _, tc := range []struct {
		name, token string
		code        codes.Code
	}{
		{"no token", "", codes.Unauthenticated},
		{"admin token", adminTok, codes.PermissionDenied},
		{"sync token", syncTok, codes.OK},
	} {
		t.Run("sync/"+tc.name, func(t *testing.T) {
			rev, err := syncCall(tc.token)
			if status.Code(err) != tc.code || (tc.code == codes.OK && rev < 1) {
				t.Errorf("sync = revision %d, %v; want a snapshot and %v", rev, err, tc.code)
			}
		})
	}

	// Health checks need no token.
	hr, err := healthpb.NewHealthClient(conn).Check(withToken(t, ""), &healthpb.HealthCheckRequest{})
	if err != nil || hr.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health = %v, %v", hr, err)
	}

	logs := ts.logs.String()
	for _, secret := range []string{bootstrapToken, adminTok, syncTok, revokedTok} {
		if strings.Contains(logs, secret) {
			t.Fatalf("a token reached the log:\n%s", logs)
		}
	}
	for _, want := range []string{"principal=ops", "principal=" + auth.BootstrapName, "method=/metamcp.v1.AdminService/GetRevision", "code=OK", "duration=", "call refused"} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %q:\n%s", want, logs)
		}
	}
}

func TestLargeMessagesAndGzip(t *testing.T) {
	ts := startServer(t, controlplane.Options{})
	admin := metamcpv1.NewAdminServiceClient(dial(t, ts.addr, nil))
	// 8 MiB: over gRPC's default 4 MiB limit, under ours. Validation rejects
	// the description, which proves the message arrived.
	big := &metamcpv1.Server{Name: "big", Description: strings.Repeat("x", 8<<20),
		Transport: &metamcpv1.Server_Stdio{Stdio: &metamcpv1.StdioTransport{Command: "true"}}}
	_, err := admin.CreateServer(withToken(t, bootstrapToken), &metamcpv1.CreateServerRequest{Server: big})
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("8 MiB request: %v, want InvalidArgument from validation", err)
	}
	_, err = admin.GetRevision(withToken(t, bootstrapToken), &metamcpv1.GetRevisionRequest{}, grpc.UseCompressor(gzip.Name))
	if err != nil {
		t.Errorf("gzip call: %v", err)
	}
}

func TestServeStopsOnCancel(t *testing.T) {
	ts := startServer(t, controlplane.Options{ShutdownTimeout: time.Second})
	conn := dial(t, ts.addr, nil)
	admin := metamcpv1.NewAdminServiceClient(conn)
	tok, err := admin.CreateToken(withToken(t, bootstrapToken), &metamcpv1.CreateTokenRequest{
		Token: &metamcpv1.Token{Name: "dp", Scope: metamcpv1.TokenScope_TOKEN_SCOPE_SYNC},
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := ts.srv.Addr(); got == nil || got.String() != ts.addr {
		t.Errorf("Addr = %v, want %s", got, ts.addr)
	}
	// A stream that never ends must not hold up the stop beyond the timeout.
	stream, err := metamcpv1.NewSyncServiceClient(conn).Sync(withToken(t, tok.GetSecret()))
	if err != nil {
		t.Fatal(err)
	}
	hello := &metamcpv1.SyncRequest{Message: &metamcpv1.SyncRequest_Hello{Hello: &metamcpv1.Hello{NodeId: "probe"}}}
	if err := stream.Send(hello); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	ts.stop()
	select {
	case err := <-ts.done:
		if err != nil {
			t.Errorf("Serve = %v, want nil after cancel", err)
		}
		ts.done <- nil // for the cleanup
	case <-time.After(30 * time.Second):
		t.Fatal("Serve did not return")
	}
	// What was sent before the stop (the fleet count) may still be read.
	var recvErr error
	for range 3 {
		if _, recvErr = stream.Recv(); recvErr != nil {
			break
		}
	}
	if recvErr == nil {
		t.Error("the sync stream outlived the server")
	}
	_, err = admin.GetRevision(withToken(t, bootstrapToken), &metamcpv1.GetRevisionRequest{})
	if status.Code(err) != codes.Unavailable {
		t.Errorf("call after stop: %v, want Unavailable", err)
	}
}

func TestCheckListen(t *testing.T) {
	for _, tc := range []struct {
		addr string
		tls  bool
		warn bool
	}{
		{"127.0.0.1:12009", false, false},
		{"localhost:12009", false, false},
		{"[::1]:12009", false, false},
		{"0.0.0.0:12009", false, true},
		{":12009", false, true},
		{"[::]:12009", false, true},
		{"10.1.2.3:12009", false, true},
		{"cp.example.com:12009", false, true},
		{"0.0.0.0:12009", true, false},
	} {
		w := controlplane.CheckListen(tc.addr, tc.tls)
		if (w != "") != tc.warn {
			t.Errorf("CheckListen(%q, %v) = %q, want warning %v", tc.addr, tc.tls, w, tc.warn)
		}
		if w != "" && !strings.Contains(w, "listening on "+tc.addr+" without TLS: admin tokens cross the network in clear text; pass --tls-cert/--tls-key") {
			t.Errorf("warning = %q", w)
		}
	}
}

func TestNewRejectsBadTLSOptions(t *testing.T) {
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "cp.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	key, _ := secret.GenerateKey()
	sealer, _ := secret.New(key)
	for _, opts := range []controlplane.Options{
		{TLSCertFile: "cert.pem"},
		{ClientCAFile: "ca.pem"},
		{TLSCertFile: "/nonexistent/cert.pem", TLSKeyFile: "/nonexistent/key.pem"},
	} {
		if _, err := controlplane.New(st, sealer, opts); err == nil {
			t.Errorf("New(%+v) succeeded", opts)
		}
	}
}

// TestMutualTLS serves with a server certificate and a client CA: a client
// with a certificate from that CA gets through, one without does not.
func TestMutualTLS(t *testing.T) {
	dir := t.TempDir()
	ca := testca.New(t)
	serverCert, serverKey := ca.Issue(t, "127.0.0.1", false)
	clientCert, clientKey := ca.Issue(t, "mmctl", true)
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ts := startServer(t, controlplane.Options{
		TLSCertFile:  write("server.pem", serverCert),
		TLSKeyFile:   write("server-key.pem", serverKey),
		ClientCAFile: write("ca.pem", ca.CertPEM),
	})
	if strings.Contains(ts.logs.String(), "without TLS") {
		t.Error("TLS server warned about clear text")
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.CertPEM)
	pair, err := tls.X509KeyPair(clientCert, clientKey)
	if err != nil {
		t.Fatal(err)
	}

	withCert := dial(t, ts.addr, credentials.NewTLS(&tls.Config{RootCAs: roots, Certificates: []tls.Certificate{pair}}))
	if _, err := metamcpv1.NewAdminServiceClient(withCert).GetRevision(withToken(t, bootstrapToken), &metamcpv1.GetRevisionRequest{}); err != nil {
		t.Errorf("client with certificate: %v", err)
	}
	noCert := dial(t, ts.addr, credentials.NewTLS(&tls.Config{RootCAs: roots}))
	if _, err := metamcpv1.NewAdminServiceClient(noCert).GetRevision(withToken(t, bootstrapToken), &metamcpv1.GetRevisionRequest{}); err == nil {
		t.Error("client without certificate got through")
	}
	plain := dial(t, ts.addr, nil)
	if _, err := metamcpv1.NewAdminServiceClient(plain).GetRevision(withToken(t, bootstrapToken), &metamcpv1.GetRevisionRequest{}); err == nil {
		t.Error("plain-text client got through")
	}
}
