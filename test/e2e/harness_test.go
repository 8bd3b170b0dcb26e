package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/metamcp/metamcp/controlplane/store/postgres/pgtest"
	"github.com/metamcp/metamcp/internal/syncbuf"
	"github.com/metamcp/metamcp/internal/testharness"
	"github.com/metamcp/metamcp/test/fixtures/fixture"
)

// Paths of the binaries under test, built once by TestMain.
var (
	metamcpBin string
	mmctlBin   string
)

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	// Raw 2026-07-28 requests get the Mcp-Method and Mcp-Name headers that
	// revision requires, as a real client's would.
	http.DefaultTransport = fixture.StandardHeaders(http.DefaultTransport)
	if err := checkPostgres(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		return 1
	}
	defer testharness.Cleanup()
	bins, err := testharness.Binaries("./cmd/metamcp", "./cmd/mmctl")
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		return 1
	}
	metamcpBin, mmctlBin = bins[0], bins[1]
	return m.Run()
}

// checkPostgres fails early, once, with the way to start Postgres, instead of
// every test failing on its own.
func checkPostgres() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, pgtest.AdminURL())
	if err != nil {
		return fmt.Errorf("Postgres is not reachable at %s: %v\n"+
			"start it (e.g. `pg_ctlcluster 15 main start`, or `docker run -d -p 5432:5432 -e POSTGRES_HOST_AUTH_METHOD=trust -e POSTGRES_DB=test postgres:16`)\n"+
			"or point %s at a server where the user may create databases", pgtest.AdminURL(), err, pgtest.EnvAdminURL)
	}
	return conn.Close(ctx)
}

// syncBuffer captures a process's output while the test reads it.
type syncBuffer = syncbuf.Buffer

// randomHex is testharness.RandomHex.
func randomHex(tb testing.TB, n int) string { return testharness.RandomHex(tb, n) }

// baseEnv is this process's environment without METAMCP_* variables (a
// developer's shell must not change what the tests see) and with a config
// directory of the test's own, so no ~/.config/metamcp/mmctl.yaml is read.
func baseEnv(t *testing.T, extra ...string) []string {
	env := slices.DeleteFunc(testharness.Env(), func(kv string) bool { return strings.HasPrefix(kv, "XDG_CONFIG_HOME=") })
	env = append(env, "XDG_CONFIG_HOME="+t.TempDir())
	return append(env, extra...)
}

// controlPlane is a `metamcp controlplane` process on its own database.
type controlPlane struct {
	addr  string
	token string
	dsn   string
	// secretKey is the hex METAMCP_SECRET_KEY, kept for restarts.
	secretKey string
	// extraArgs are added to every start's command line.
	extraArgs []string
	// logs is everything the process wrote, stdout and stderr.
	logs *syncBuffer
	// proc is the running process.
	proc *testharness.Proc
}

var listeningAddr = regexp.MustCompile(`msg="control plane listening" addr=(\S+)`)

// startControlPlane starts a control plane on a fresh Postgres database and a
// free loopback port, waits (bounded) until it listens, and stops it when the
// test ends. extraArgs are added to its command line.
func startControlPlane(t *testing.T, extraArgs ...string) *controlPlane {
	t.Helper()
	cp := &controlPlane{
		token:     "admin-" + randomHex(t, 16),
		dsn:       pgtest.NewDatabase(t),
		secretKey: randomHex(t, 32),
		extraArgs: extraArgs,
	}
	cp.launch(t, "127.0.0.1:0")
	return cp
}

// launch starts the process on listen, waits (bounded) until it listens, and
// stops it when the test ends. Each launch gets a fresh logs buffer.
func (cp *controlPlane) launch(t *testing.T, listen string) {
	t.Helper()
	args := append([]string{"controlplane", "--listen", listen, "--database-url", cp.dsn, "--log-level", "debug"}, cp.extraArgs...)
	cmd := exec.Command(metamcpBin, args...)
	cmd.Env = baseEnv(t,
		"METAMCP_ADMIN_TOKEN="+cp.token,
		"METAMCP_SECRET_KEY="+cp.secretKey,
	)
	cp.proc = testharness.Start(t, "metamcp controlplane", cmd)
	cp.logs = cp.proc.Output
	cp.addr = cp.proc.AwaitMatch(t, listeningAddr, testharness.WaitTimeout)[1]
}

// kill ends the process with SIGKILL, as a crash would, and waits for it.
func (cp *controlPlane) kill(t *testing.T) { cp.proc.Kill(t) }

// stop ends the process (SIGTERM, then SIGKILL after a bounded wait) and
// waits for it; idempotent. After stop, logs holds the complete output.
func (cp *controlPlane) stop(t *testing.T) { cp.proc.Stop(t) }

// result is one finished mmctl run.
type result struct {
	args           []string
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("mmctl %s\nexit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(r.args, " "), r.code, r.stdout, r.stderr)
}

// runMmctl runs the mmctl binary with env (on top of baseEnv) and stdin,
// bounded by a deadline.
func runMmctl(t *testing.T, env []string, stdin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, mmctlBin, args...)
	cmd.Env = baseEnv(t, env...)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{args: args, stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee) && ee.Exited():
		r.code = ee.ExitCode()
	default:
		t.Fatalf("run mmctl %s: %v (deadline: %v)\nstderr:\n%s", strings.Join(args, " "), err, ctx.Err(), stderr.String())
	}
	assertNoRawErrors(t, r)
	return r
}

// assertNoRawErrors fails when mmctl shows a raw gRPC error or a Go stack
// trace: a user must never see either.
func assertNoRawErrors(t *testing.T, r result) {
	t.Helper()
	for _, bad := range []string{"rpc error:", "goroutine ", "panic:", "code = ", "desc = "} {
		if strings.Contains(r.stderr, bad) || strings.Contains(r.stdout, bad) {
			t.Errorf("mmctl output contains %q:\n%s", bad, r)
		}
	}
}

// mmctl runs mmctl against this control plane with its admin token.
func (cp *controlPlane) mmctl(t *testing.T, args ...string) result {
	t.Helper()
	return cp.mmctlIn(t, "", args...)
}

// mmctlIn is mmctl with stdin.
func (cp *controlPlane) mmctlIn(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	return runMmctl(t, []string{"METAMCP_ADDR=" + cp.addr, "METAMCP_TOKEN=" + cp.token}, stdin, args...)
}

// ok runs mmctl and fails the test unless it exits 0 with nothing on stderr.
func (cp *controlPlane) ok(t *testing.T, args ...string) result {
	t.Helper()
	return cp.okIn(t, "", args...)
}

// okIn is ok with stdin.
func (cp *controlPlane) okIn(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	r := cp.mmctlIn(t, stdin, args...)
	if r.code != 0 {
		t.Fatalf("want success:\n%s", r)
	}
	return r
}

// fail runs mmctl and fails the test unless it exits with code, printing
// every want on stderr and nothing on stdout.
func (cp *controlPlane) fail(t *testing.T, code int, want []string, args ...string) result {
	t.Helper()
	r := cp.mmctl(t, args...)
	checkFailure(t, r, code, want)
	return r
}

func checkFailure(t *testing.T, r result, code int, want []string) {
	t.Helper()
	if r.code != code {
		t.Errorf("want exit code %d:\n%s", code, r)
	}
	if !strings.HasPrefix(r.stderr, "error: ") {
		t.Errorf("stderr does not start with \"error: \":\n%s", r)
	}
	for _, w := range want {
		if !strings.Contains(r.stderr, w) {
			t.Errorf("stderr lacks %q:\n%s", w, r)
		}
	}
	if r.stdout != "" {
		t.Errorf("a failure printed on stdout:\n%s", r)
	}
}

// revision is the control plane's current revision, read with mmctl.
func (cp *controlPlane) revision(t *testing.T) string {
	t.Helper()
	return strings.TrimSpace(cp.ok(t, "revision").stdout)
}

// lines splits output into its non-empty lines.
func lines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.TrimSpace(l) != "" {
			out = append(out, l)
		}
	}
	return out
}

// testdata reads a file under testdata/.
func testdata(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// writeFile writes content to path, readable by its owner only.
func writeFile(path, content string) error {
	return os.WriteFile(path, []byte(content), 0o600)
}

// mkdirAll creates a directory and its parents, for the owner only.
func mkdirAll(path string) error {
	return os.MkdirAll(path, 0o700)
}
