package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/controlplane/store/postgres/pgtest"
	"github.com/metamcp/metamcp/internal/testharness"
)

// metamcpBin is the binary under test, built once by TestMain.
var metamcpBin string

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	defer testharness.Cleanup()
	bins, err := testharness.Binaries("./cmd/metamcp")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	metamcpBin = bins[0]
	return m.Run()
}

// Values the tests use; the secret key is 32 bytes in hex.
const (
	testSecretKey  = "6d6574616d63702d746573742d6b65792d6e6f742d666f722d70726f64212121"
	testAdminToken = "test-admin-token-0123456789abcdef"
	unreachableDSN = "postgres://postgres@127.0.0.1:1/test?sslmode=disable&connect_timeout=5"
)

// baseEnv is the test process's environment without METAMCP_* variables, so
// a developer's shell does not change what the tests see.
func baseEnv(extra ...string) []string { return testharness.Env(extra...) }

type result struct {
	stdout, stderr string
	code           int
}

// runMetamcp runs the binary to completion (bounded by a deadline).
func runMetamcp(t *testing.T, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, metamcpBin, args...)
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("metamcp %s did not finish within 60s\nstderr:\n%s", strings.Join(args, " "), stderr.String())
	}
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run metamcp: %v", err)
	}
	return result{stdout: stdout.String(), stderr: stderr.String(), code: code}
}

// startMetamcp starts the binary with env and args; it is stopped when the
// test ends.
func startMetamcp(t *testing.T, env []string, args ...string) *testharness.Proc {
	t.Helper()
	cmd := exec.Command(metamcpBin, args...)
	cmd.Env = env
	return testharness.Start(t, "metamcp "+args[0], cmd)
}

var listeningAddr = regexp.MustCompile(`msg="control plane listening" addr=(\S+)`)

// waitListening waits (bounded) for the "control plane listening" log line
// and returns the logged address.
func waitListening(t *testing.T, p *testharness.Proc) string {
	t.Helper()
	return p.AwaitMatch(t, listeningAddr, testharness.WaitTimeout)[1]
}

// stopTimeout bounds how long a test waits for metamcp to exit after SIGTERM.
const stopTimeout = 30 * time.Second

// adminClient dials the control plane and returns a client plus a context
// that carries token.
func adminClient(t *testing.T, addr string) metamcpv1.AdminServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return metamcpv1.NewAdminServiceClient(conn)
}

func withToken(t *testing.T, token string) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	t.Cleanup(cancel)
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}

// assertNoCrash checks that output shows no panic or Go stack trace.
func assertNoCrash(t *testing.T, out string) {
	t.Helper()
	for _, bad := range []string{"panic:", "goroutine ", "runtime error", "rpc error:"} {
		if strings.Contains(out, bad) {
			t.Errorf("output contains %q:\n%s", bad, out)
		}
	}
}

func TestControlPlaneConfigErrors(t *testing.T) {
	t.Parallel()
	const badKey = "not-a-key-but-secret-looking-text"
	tests := []struct {
		name     string
		env      []string
		args     []string
		wantCode int
		want     []string // substrings of stderr
		notWant  []string
	}{
		{
			name:     "missing database url",
			env:      []string{"METAMCP_SECRET_KEY=" + testSecretKey, "METAMCP_ADMIN_TOKEN=" + testAdminToken},
			wantCode: exitUsage,
			want:     []string{"--database-url", "METAMCP_DATABASE_URL", "metamcp dev"},
		},
		{
			name:     "missing secret key",
			env:      []string{"METAMCP_DATABASE_URL=" + unreachableDSN, "METAMCP_ADMIN_TOKEN=" + testAdminToken},
			wantCode: exitError,
			want:     []string{"no secret key", "METAMCP_SECRET_KEY", "--secret-key-file", "head -c 32 /dev/urandom | base64"},
		},
		{
			name:     "bad secret key",
			env:      []string{"METAMCP_DATABASE_URL=" + unreachableDSN, "METAMCP_ADMIN_TOKEN=" + testAdminToken, "METAMCP_SECRET_KEY=" + badKey},
			wantCode: exitError,
			want:     []string{"secret key", "METAMCP_SECRET_KEY", "32 bytes"},
			notWant:  []string{badKey},
		},
		{
			name: "short secret key",
			env: []string{"METAMCP_DATABASE_URL=" + unreachableDSN, "METAMCP_ADMIN_TOKEN=" + testAdminToken,
				"METAMCP_SECRET_KEY=" + testSecretKey[:32]},
			wantCode: exitError,
			want:     []string{"secret key", "32 bytes"},
		},
		{
			name:     "missing secret key file",
			env:      []string{"METAMCP_DATABASE_URL=" + unreachableDSN, "METAMCP_ADMIN_TOKEN=" + testAdminToken},
			args:     []string{"--secret-key-file", "/nonexistent/secret.key"},
			wantCode: exitError,
			want:     []string{"/nonexistent/secret.key"},
		},
		{
			name:     "unreachable database",
			env:      []string{"METAMCP_DATABASE_URL=" + unreachableDSN, "METAMCP_ADMIN_TOKEN=" + testAdminToken, "METAMCP_SECRET_KEY=" + testSecretKey},
			wantCode: exitError,
			want:     []string{"database", "127.0.0.1"},
			notWant:  []string{testSecretKey, testAdminToken},
		},
		{
			name:     "tls cert without key",
			env:      []string{"METAMCP_DATABASE_URL=" + unreachableDSN},
			args:     []string{"--tls-cert", "cert.pem"},
			wantCode: exitUsage,
			want:     []string{"--tls-cert and --tls-key"},
		},
		{
			name:     "invalid log level",
			env:      []string{"METAMCP_DATABASE_URL=" + unreachableDSN},
			args:     []string{"--log-level", "loud"},
			wantCode: exitUsage,
			want:     []string{"--log-level", "debug, info, warn or error"},
		},
		{
			name:     "invalid env log format",
			env:      []string{"METAMCP_DATABASE_URL=" + unreachableDSN, "METAMCP_LOG_FORMAT=xml"},
			wantCode: exitUsage,
			want:     []string{"--log-format", "text or json"},
		},
		{
			name:     "unknown flag",
			args:     []string{"--no-such-flag"},
			wantCode: exitUsage,
			want:     []string{"unknown flag: --no-such-flag"},
		},
		{
			name:     "positional argument",
			args:     []string{"extra"},
			wantCode: exitUsage,
			want:     []string{"takes no arguments"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			args := append([]string{"controlplane", "--listen", "127.0.0.1:0"}, tt.args...)
			r := runMetamcp(t, baseEnv(tt.env...), args...)
			if r.code != tt.wantCode {
				t.Errorf("exit code = %d, want %d\nstderr:\n%s", r.code, tt.wantCode, r.stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("stderr does not contain %q:\n%s", w, r.stderr)
				}
			}
			for _, w := range tt.notWant {
				if strings.Contains(r.stderr+r.stdout, w) {
					t.Errorf("output contains %q, which must not be shown:\n%s", w, r.stderr)
				}
			}
			if !strings.Contains(r.stderr, "metamcp: error: ") {
				t.Errorf("stderr has no 'metamcp: error:' line:\n%s", r.stderr)
			}
			assertNoCrash(t, r.stderr)
		})
	}
}

func TestUnknownCommand(t *testing.T) {
	t.Parallel()
	r := runMetamcp(t, baseEnv(), "controlplain")
	if r.code != exitUsage || !strings.Contains(r.stderr, `unknown command "controlplain"`) {
		t.Errorf("code %d, stderr:\n%s", r.code, r.stderr)
	}
}

func TestControlPlaneNeedsAdminToken(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	r := runMetamcp(t, baseEnv("METAMCP_DATABASE_URL="+dsn, "METAMCP_SECRET_KEY="+testSecretKey),
		"controlplane", "--listen", "127.0.0.1:0")
	if r.code != exitError {
		t.Errorf("exit code = %d, want %d", r.code, exitError)
	}
	for _, w := range []string{"no admin token", "METAMCP_ADMIN_TOKEN", "--admin-token-file", "head -c 32 /dev/urandom | base64"} {
		if !strings.Contains(r.stderr, w) {
			t.Errorf("stderr does not contain %q:\n%s", w, r.stderr)
		}
	}
	assertNoCrash(t, r.stderr)
}

func TestControlPlaneServesAndStops(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	tokenFile := filepath.Join(t.TempDir(), "admin-token")
	if err := os.WriteFile(tokenFile, []byte(testAdminToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startMetamcp(t, baseEnv("METAMCP_DATABASE_URL="+dsn, "METAMCP_SECRET_KEY="+testSecretKey,
		"METAMCP_ADMIN_TOKEN_FILE="+tokenFile),
		"controlplane", "--listen", "127.0.0.1:0", "--log-level", "debug")
	addr := waitListening(t, p)
	if strings.HasSuffix(addr, ":0") {
		t.Fatalf("logged address %q is not the bound port", addr)
	}
	client := adminClient(t, addr)

	rev, err := client.GetRevision(withToken(t, testAdminToken), &metamcpv1.GetRevisionRequest{})
	if err != nil {
		t.Fatalf("GetRevision with the admin token: %v", err)
	}
	if rev.GetRevision() != 0 {
		t.Errorf("revision of a fresh database = %d, want 0", rev.GetRevision())
	}
	_, err = client.GetRevision(withToken(t, "wrong-token-wrong-token"), &metamcpv1.GetRevisionRequest{})
	if status.Code(err) != codes.Unauthenticated {
		t.Errorf("GetRevision with a wrong token: %v, want Unauthenticated", err)
	}

	if code := p.Terminate(t, stopTimeout); code != 0 {
		t.Errorf("exit code after SIGTERM = %d, want 0\nstderr:\n%s", code, p.Stderr)
	}
	logs := p.Stderr.String()
	for _, secretText := range []string{testAdminToken, testSecretKey} {
		if strings.Contains(logs+p.Stdout.String(), secretText) {
			t.Errorf("a secret appears in the output:\n%s", logs)
		}
	}
	assertNoCrash(t, logs)
}

// Once an admin token exists in the store, the bootstrap token may go; once
// it is revoked, the bootstrap token is needed again.
func TestControlPlaneStoredAdminToken(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	base := []string{"METAMCP_DATABASE_URL=" + dsn, "METAMCP_SECRET_KEY=" + testSecretKey}

	p := startMetamcp(t, baseEnv(append(base, "METAMCP_ADMIN_TOKEN="+testAdminToken)...), "controlplane", "--listen", "127.0.0.1:0")
	client := adminClient(t, waitListening(t, p))
	created, err := client.CreateToken(withToken(t, testAdminToken), &metamcpv1.CreateTokenRequest{Token: &metamcpv1.Token{
		Name: "ops", Scope: metamcpv1.TokenScope_TOKEN_SCOPE_ADMIN,
	}})
	if err != nil {
		t.Fatalf("CreateToken: %v", err)
	}
	if _, err := client.CreateToken(withToken(t, testAdminToken), &metamcpv1.CreateTokenRequest{Token: &metamcpv1.Token{
		Name: "dp", Scope: metamcpv1.TokenScope_TOKEN_SCOPE_SYNC,
	}}); err != nil {
		t.Fatalf("CreateToken: %v", err)
	}
	if code := p.Terminate(t, stopTimeout); code != 0 {
		t.Fatalf("exit code %d\nstderr:\n%s", code, p.Stderr)
	}

	// No bootstrap token: the stored admin token is enough.
	p = startMetamcp(t, baseEnv(base...), "controlplane", "--listen", "127.0.0.1:0")
	client = adminClient(t, waitListening(t, p))
	ctx := withToken(t, created.GetSecret())
	if _, err := client.GetRevision(ctx, &metamcpv1.GetRevisionRequest{}); err != nil {
		t.Fatalf("GetRevision with the stored admin token: %v", err)
	}
	if _, err := client.RevokeToken(ctx, &metamcpv1.RevokeTokenRequest{Name: "ops"}); err != nil {
		t.Fatalf("RevokeToken: %v", err)
	}
	if code := p.Terminate(t, stopTimeout); code != 0 {
		t.Fatalf("exit code %d\nstderr:\n%s", code, p.Stderr)
	}

	// Only a revoked admin token and a sync token are left: refuse to start.
	r := runMetamcp(t, baseEnv(base...), "controlplane", "--listen", "127.0.0.1:0")
	if r.code != exitError || !strings.Contains(r.stderr, "no admin token") {
		t.Errorf("start with only a revoked admin token: code %d, stderr:\n%s", r.code, r.stderr)
	}
}

func TestControlPlaneTLS(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	certFile, keyFile, pool := selfSignedCert(t)
	p := startMetamcp(t, baseEnv("METAMCP_DATABASE_URL="+dsn, "METAMCP_SECRET_KEY="+testSecretKey,
		"METAMCP_ADMIN_TOKEN="+testAdminToken, "METAMCP_TLS_CERT="+certFile),
		"controlplane", "--listen", "127.0.0.1:0", "--tls-key", keyFile)
	addr := waitListening(t, p)

	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS12})))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := metamcpv1.NewAdminServiceClient(conn).GetRevision(withToken(t, testAdminToken), &metamcpv1.GetRevisionRequest{}); err != nil {
		t.Fatalf("GetRevision over TLS: %v", err)
	}
	// A plain-text client cannot talk to a TLS server.
	if _, err := adminClient(t, addr).GetRevision(withToken(t, testAdminToken), &metamcpv1.GetRevisionRequest{}); status.Code(err) != codes.Unavailable {
		t.Errorf("plain-text GetRevision against TLS: %v, want Unavailable", err)
	}
	if code := p.Terminate(t, stopTimeout); code != 0 {
		t.Errorf("exit code after SIGTERM = %d, want 0\nstderr:\n%s", code, p.Stderr)
	}
}

// selfSignedCert writes a certificate for localhost/127.0.0.1 and its key,
// and returns their paths and a pool that trusts the certificate.
func selfSignedCert(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "localhost"},
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

func TestControlPlaneJSONLogs(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	p := startMetamcp(t, baseEnv("METAMCP_DATABASE_URL="+dsn, "METAMCP_SECRET_KEY="+testSecretKey,
		"METAMCP_ADMIN_TOKEN="+testAdminToken, "METAMCP_LOG_FORMAT=json"),
		"controlplane", "--listen", "127.0.0.1:0")
	p.Await(t, "a JSON listening line", testharness.WaitTimeout, func(string) bool {
		return strings.Contains(p.Stderr.String(), `"msg":"control plane listening"`)
	})
	if code := p.Terminate(t, stopTimeout); code != 0 {
		t.Errorf("exit code after SIGTERM = %d, want 0\nstderr:\n%s", code, p.Stderr)
	}
}

func TestDev(t *testing.T) {
	t.Parallel()
	dataDir := filepath.Join(t.TempDir(), "state")
	env := baseEnv()

	// First run: fresh state, seeded.
	p := startMetamcp(t, env, "dev", "--data-dir", dataDir, "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0")
	addr := waitListening(t, p)
	b := waitBanner(t, p)
	if b.addr != addr {
		t.Errorf("banner address %q, logged address %q", b.addr, addr)
	}
	banner := p.Stdout.String()
	for _, w := range []string{
		dataDir, "Admin token:    " + b.token, "API key:        " + b.apiKey, "Seeded:", "mmctl get servers", "mmctl import", "dev only",
		"claude mcp add --transport http metamcp " + b.url + ` --header "Authorization: Bearer ` + b.apiKey + `"`,
		`"args": ["-y", "mcp-remote", "` + b.url + `", "--header", "Authorization: Bearer ` + b.apiKey + `"]`,
		"claude_desktop_config.json", "Cursor", "Windsurf", "VS Code",
		`"headers": {"Authorization": "Bearer ` + b.apiKey + `"}`,
	} {
		if !strings.Contains(banner, w) {
			t.Errorf("banner does not contain %q:\n%s", w, banner)
		}
	}
	if !strings.HasSuffix(b.url, "/metamcp/default/mcp") || !strings.HasPrefix(b.apiKey, "mm_") {
		t.Errorf("banner URL %q, API key %q", b.url, b.apiKey)
	}
	fi, err := os.Stat(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o700 {
		t.Errorf("data dir mode = %o, want 700", perm)
	}
	for _, f := range []string{devAdminTokenFile, devAPIKeyFile, devSyncTokenFile} {
		fi, err = os.Stat(filepath.Join(dataDir, f))
		if err != nil {
			t.Fatal(err)
		}
		if perm := fi.Mode().Perm(); perm != 0o600 {
			t.Errorf("%s mode = %o, want 600", f, perm)
		}
	}
	checkReadyz(t, b.url)
	checkMCPEndpoint(t, b.url, b.apiKey)

	client := adminClient(t, addr)
	ctx := withToken(t, b.token)
	if _, err := client.GetRevision(withToken(t, "mmt_dev_wrong"), &metamcpv1.GetRevisionRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("GetRevision with a wrong token: %v, want Unauthenticated", err)
	}
	demo, err := client.GetServer(ctx, &metamcpv1.GetServerRequest{Name: "demo"})
	if err != nil {
		t.Fatalf("the seeded server demo: %v", err)
	}
	if got := demo.GetStdio(); got.GetCommand() != metamcpBin || !slices.Equal(got.GetArgs(), []string{"demo-server"}) {
		t.Errorf("demo server runs %q %q, want %q demo-server", got.GetCommand(), got.GetArgs(), metamcpBin)
	}
	if ep, err := client.GetEndpoint(ctx, &metamcpv1.GetEndpointRequest{Name: "default"}); err != nil || ep.GetNamespace() != "default" {
		t.Errorf("the seeded endpoint default: %v %v", ep, err)
	}
	created, err := client.CreateServer(ctx, &metamcpv1.CreateServerRequest{Server: &metamcpv1.Server{
		Name:      "files",
		Transport: &metamcpv1.Server_Stdio{Stdio: &metamcpv1.StdioTransport{Command: "npx", Args: []string{"-y", "@modelcontextprotocol/server-filesystem", "/tmp"}}},
	}})
	if err != nil {
		t.Fatalf("CreateServer: %v", err)
	}
	// The data plane in the process is a real sync client: it shows in the
	// registry and ACKs the change.
	waitDevDataPlane(ctx, t, client, created.GetRevision())
	if code := p.Terminate(t, stopTimeout); code != 0 {
		t.Fatalf("exit code after SIGTERM = %d, want 0\nstderr:\n%s", code, p.Stderr)
	}
	assertNoCrash(t, p.Stderr.String())
	if left := testharness.Leftovers(10*time.Second, metamcpBin, "demo-server"); len(left) > 0 {
		t.Errorf("demo-server processes left after metamcp dev stopped: %v", left)
	}
	for _, secret := range []string{b.token, b.apiKey} {
		if strings.Contains(p.Stderr.String(), secret) {
			t.Errorf("a secret appears in the logs:\n%s", p.Stderr)
		}
	}

	// Second run: same token, key and state; nothing seeded again.
	p2 := startMetamcp(t, env, "dev", "--data-dir", dataDir, "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--allowed-hosts", "mcp.dev.test")
	addr2 := waitListening(t, p2)
	b2 := waitBanner(t, p2)
	if b2.token != b.token || b2.apiKey != b.apiKey {
		t.Errorf("second run's banner shows token %q key %q, want the first run's %q %q", b2.token, b2.apiKey, b.token, b.apiKey)
	}
	if strings.Contains(p2.Stdout.String(), "Seeded:") {
		t.Errorf("second run seeded again:\n%s", p2.Stdout)
	}
	checkReadyz(t, b2.url)
	checkMCPEndpoint(t, b2.url, b2.apiKey)
	// --allowed-hosts: a name behind a proxy is let in, others still not.
	for host, want := range map[string]bool{"mcp.dev.test": true, "evil.test": false} {
		req, _ := http.NewRequest(http.MethodPost, b2.url, strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"ping"}`))
		req.Host = host
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("Authorization", "Bearer "+b2.apiKey)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if allowed := resp.StatusCode != http.StatusForbidden; allowed != want {
			t.Errorf("Host %s with --allowed-hosts mcp.dev.test: %s", host, resp.Status)
		}
	}
	client2 := adminClient(t, addr2)
	ctx2 := withToken(t, b.token)
	got, err := client2.GetServer(ctx2, &metamcpv1.GetServerRequest{Name: "files"})
	if err != nil {
		t.Fatalf("GetServer after restart: %v", err)
	}
	if got.GetStdio().GetCommand() != "npx" {
		t.Errorf("server after restart = %v", got)
	}
	rev, err := client2.GetRevision(ctx2, &metamcpv1.GetRevisionRequest{})
	if err != nil {
		t.Fatalf("GetRevision after restart: %v", err)
	}
	if rev.GetRevision() != created.GetRevision() || rev.GetRevision() == 0 {
		t.Errorf("revision after restart = %d, want %d (non-zero)", rev.GetRevision(), created.GetRevision())
	}
	tokens, err := client2.ListTokens(ctx2, &metamcpv1.ListTokensRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(tokens.GetTokens()); n != 1 {
		t.Errorf("%d tokens after the second run, want 1 (the sync token is made once): %v", n, tokens.GetTokens())
	}
	waitDevDataPlane(ctx2, t, client2, created.GetRevision())
	if code := p2.Terminate(t, stopTimeout); code != 0 {
		t.Errorf("second run's exit code after SIGTERM = %d, want 0\nstderr:\n%s", code, p2.Stderr)
	}
}

// devBannerValues is what the dev banner told.
type devBannerValues struct {
	addr, token, url, apiKey string
}

var (
	bannerTokenLine = regexp.MustCompile(`export METAMCP_ADDR=(\S+) METAMCP_TOKEN=(\S+)`)
	bannerURL       = regexp.MustCompile(`MCP endpoint:\s+(\S+)`)
	bannerKey       = regexp.MustCompile(`API key:\s+(mm_\S+)`)
)

// waitBanner waits (bounded) for the whole dev banner and parses it.
func waitBanner(t *testing.T, p *testharness.Proc) devBannerValues {
	t.Helper()
	p.Await(t, "the banner", testharness.WaitTimeout, func(string) bool { return strings.Contains(p.Stdout.String(), "Stop with Ctrl-C") })
	out := p.Stdout.String()
	var b devBannerValues
	if m := bannerTokenLine.FindStringSubmatch(out); m != nil {
		b.addr, b.token = m[1], m[2]
	}
	if m := bannerURL.FindStringSubmatch(out); m != nil {
		b.url = m[1]
	}
	if m := bannerKey.FindStringSubmatch(out); m != nil {
		b.apiKey = m[1]
	}
	if b.addr == "" || b.token == "" || b.url == "" || b.apiKey == "" {
		t.Fatalf("banner lacks the address, token, URL or API key (%+v):\n%s", b, out)
	}
	return b
}

// checkReadyz checks the dev data plane (the host of endpointURL) is ready.
func checkReadyz(t *testing.T, endpointURL string) {
	t.Helper()
	base := strings.TrimSuffix(endpointURL, "/metamcp/default/mcp")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/readyz", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s/readyz: %v", base, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "ready: revision") {
		t.Errorf("GET %s/readyz = %d %q, want 200 ready", base, resp.StatusCode, body)
	}
}

// bearerTransport adds an Authorization header to every request.
type bearerTransport struct{ key string }

func (b bearerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.key)
	return http.DefaultTransport.RoundTrip(r)
}

// checkMCPEndpoint connects a go-sdk client to the dev endpoint with the
// banner's API key: the data plane serves MCP and accepts the seeded key.
func checkMCPEndpoint(t *testing.T, url, key string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := mcp.NewClient(&mcp.Implementation{Name: "dev-test", Version: "v0"}, nil)
	cs, err := client.Connect(ctx, &mcp.StreamableClientTransport{
		Endpoint:   url,
		HTTPClient: &http.Client{Transport: bearerTransport{key: key}},
	}, nil)
	if err != nil {
		t.Fatalf("connect an MCP client to %s with the banner's API key: %v", url, err)
	}
	defer cs.Close()
	if got := cs.InitializeResult().ServerInfo.Name; got != "metamcp" {
		t.Errorf("serverInfo.name = %q, want metamcp", got)
	}
	// The seeded demo server runs as a stdio upstream of the endpoint.
	tools, err := cs.ListTools(ctx, nil)
	if err != nil {
		t.Fatalf("tools/list: %v", err)
	}
	var names []string
	for _, tool := range tools.Tools {
		names = append(names, tool.Name)
	}
	if !slices.Contains(names, "demo__echo") {
		t.Errorf("tools = %v, want demo__echo among them", names)
	}
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "demo__echo", Arguments: map[string]any{"text": "hi from dev"}})
	if err != nil || res.IsError || len(res.Content) == 0 {
		t.Fatalf("call demo__echo: %v %+v", err, res)
	}
	if tc, ok := res.Content[0].(*mcp.TextContent); !ok || tc.Text != "hi from dev" {
		t.Errorf("demo__echo = %+v", res.Content[0])
	}
	// Without the key the endpoint refuses the client.
	_, err = client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: url, MaxRetries: -1}, nil)
	if err == nil {
		t.Errorf("an MCP client without an API key connected to %s", url)
	}
}

// waitDevDataPlane waits (bounded) until the dev data plane is connected and
// has applied rev.
func waitDevDataPlane(ctx context.Context, t *testing.T, client metamcpv1.AdminServiceClient, rev int64) {
	t.Helper()
	testharness.Eventually(t, testharness.WaitTimeout, func() error {
		resp, err := client.ListDataPlanes(ctx, &metamcpv1.ListDataPlanesRequest{})
		if err != nil {
			t.Fatalf("ListDataPlanes: %v", err)
		}
		for _, d := range resp.GetDataPlanes() {
			if d.GetNodeId() == devNodeID && d.GetConnected() && d.GetAppliedRevision() == rev {
				return nil
			}
		}
		return fmt.Errorf("the dev data plane has not applied revision %d: %v", rev, resp.GetDataPlanes())
	})
}

func TestDevDataDirIsAFile(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	r := runMetamcp(t, baseEnv(), "dev", "--data-dir", file, "--listen", "127.0.0.1:0")
	if r.code != exitError || !strings.Contains(r.stderr, "not a directory") {
		t.Errorf("code %d, stderr:\n%s", r.code, r.stderr)
	}
	assertNoCrash(t, r.stderr)
}

func TestMigrate(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	env := baseEnv("METAMCP_DATABASE_URL=" + dsn)

	first := runMetamcp(t, env, "migrate")
	if first.code != 0 {
		t.Fatalf("first migrate: exit code %d\nstderr:\n%s", first.code, first.stderr)
	}
	if !regexp.MustCompile(`Applied [1-9][0-9]* migration`).MatchString(first.stdout) {
		t.Errorf("first migrate stdout = %q, want some migrations applied", first.stdout)
	}
	second := runMetamcp(t, env, "migrate", "--database-url", dsn)
	if second.code != 0 {
		t.Fatalf("second migrate: exit code %d\nstderr:\n%s", second.code, second.stderr)
	}
	if !strings.Contains(second.stdout, "0 migrations applied") {
		t.Errorf("second migrate stdout = %q, want 0 applied", second.stdout)
	}
}

func TestMigrateErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		env      []string
		wantCode int
		want     string
	}{
		{"no database url", nil, exitUsage, "METAMCP_DATABASE_URL"},
		{"unreachable database", []string{"METAMCP_DATABASE_URL=" + unreachableDSN}, exitError, "127.0.0.1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := runMetamcp(t, baseEnv(tt.env...), "migrate")
			if r.code != tt.wantCode || !strings.Contains(r.stderr, tt.want) {
				t.Errorf("code %d (want %d), stderr (want %q):\n%s", r.code, tt.wantCode, tt.want, r.stderr)
			}
			assertNoCrash(t, r.stderr)
		})
	}
}

func TestVersionAndHelp(t *testing.T) {
	t.Parallel()
	r := runMetamcp(t, baseEnv(), "version")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "metamcp dev (commit ") {
		t.Errorf("version: code %d, stdout %q", r.code, r.stdout)
	}
	tests := []struct {
		args []string
		want []string
	}{
		{[]string{"--help"}, []string{"controlplane", "dev", "migrate", "version", `--log-level string`, `(default "info")`, "[$METAMCP_LOG_LEVEL]"}},
		{[]string{"controlplane", "--help"}, []string{
			`--listen string`, `(default "127.0.0.1:12009")`, "[$METAMCP_LISTEN]",
			"[$METAMCP_DATABASE_URL]", "[$METAMCP_ADMIN_TOKEN_FILE]", "[$METAMCP_SECRET_KEY_FILE]",
			"[$METAMCP_TLS_CERT]", "[$METAMCP_TLS_KEY]", "[$METAMCP_TLS_CLIENT_CA]",
			"METAMCP_SECRET_KEY ", "METAMCP_ADMIN_TOKEN ", `(default "text")`,
		}},
		{[]string{"dev", "--help"}, []string{`(default ".metamcp")`, "[$METAMCP_DATA_DIR]", `(default "127.0.0.1:12009")`}},
		{[]string{"migrate", "--help"}, []string{"[$METAMCP_DATABASE_URL]"}},
	}
	for _, tt := range tests {
		r := runMetamcp(t, baseEnv(), tt.args...)
		if r.code != 0 {
			t.Errorf("%v: exit code %d", tt.args, r.code)
		}
		for _, w := range tt.want {
			if !strings.Contains(r.stdout, w) {
				t.Errorf("%v: output does not contain %q:\n%s", tt.args, w, r.stdout)
			}
		}
	}
}
