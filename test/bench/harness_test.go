package bench

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/controlplane"
	"github.com/metamcp/metamcp/controlplane/auth"
	"github.com/metamcp/metamcp/controlplane/secret"
	"github.com/metamcp/metamcp/controlplane/store/sqlite"
	"github.com/metamcp/metamcp/dataplane/configcache"
	"github.com/metamcp/metamcp/dataplane/gateway"
	"github.com/metamcp/metamcp/dataplane/upstream"
	"github.com/metamcp/metamcp/internal/syncbuf"
	"github.com/metamcp/metamcp/internal/testharness"
	"github.com/metamcp/metamcp/test/fixtures/fixture"
)

// callsPerPoint is how many measured calls each benchmark point makes per b.N.
var callsPerPoint = flag.Int("calls", 2000, "measured calls per benchmark point (per b.N)")

// cpuCallsPerPoint is how many calls each CPU-time point measures per b.N
// (BenchmarkCPUPerCall and BenchmarkReference's proxy-us/call). It is ten
// times -calls: CPU time per call is what the machine's other tenants
// disturb most, and a point of about 7 s at 32 clients averages over that
// where one of under a second does not. Lower it under -dpcallgrind, which
// runs 20 to 50 times slower.
var cpuCallsPerPoint = flag.Int("cpucalls", 20000, "measured calls per CPU-time point (per b.N): BenchmarkCPUPerCall and BenchmarkReference's proxy-us/call")

// dpProfileDir, when set, makes BenchmarkCPUPerCall also take a CPU profile
// of the data plane process (through its --debug-listen pprof server) while
// it serves each point's load, written as DIR/dataplane-MODE-clients=N.pprof.
var dpProfileDir = flag.String("dpprofile", "", "directory for CPU profiles of the data plane process (BenchmarkCPUPerCall); none when empty")

// dpProfileSeconds is how long each -dpprofile profile runs: 5 s gives a
// few hundred samples; merge several runs or raise it for a finer profile.
var dpProfileSeconds = flag.Int("dpprofilesecs", 5, "seconds of each -dpprofile CPU profile")

// dpFlags are extra flags for the data plane process, e.g.
// -dpflags=--h2c to let clients speak HTTP/2 without TLS.
var dpFlags = flag.String("dpflags", "", "extra flags for the `metamcp dataplane` process, space separated")

// dpEnv adds environment variables to the data plane process, for trying
// runtime settings: -dpenv 'GOGC=400 GOMAXPROCS=1'.
var dpEnv = flag.String("dpenv", "", "extra environment for the `metamcp dataplane` process, space-separated NAME=value pairs")

// dpCallgrind runs the data plane under valgrind's callgrind, which counts
// the instructions it executes in user space: BenchmarkCPUPerCall then also
// reports dp-instr/call. Measured here, the count moves by about 5% between
// runs of one build (the runtime's scheduling and GC), against 10-15% for
// CPU time, and not with the load on the rest of the machine. It leaves out
// the kernel (about half the data plane's CPU time) and the cost of cache
// misses, and valgrind runs one thread at a time, 20 to 50 times slower
// (requests then outlast the server's watch delay, which native runs do
// not): use few -cpucalls, and read no other figure of the run.
// With -dpprofile=DIR, each point's counts are kept as
// DIR/callgrind-MODE-clients=N.out for callgrind_annotate; goroutine
// switches confuse its call stacks, so trust totals and the self counts of
// leaf functions, not inclusive counts.
var dpCallgrind = flag.Bool("dpcallgrind", false, "run the data plane under valgrind --tool=callgrind and report its instructions per call (BenchmarkCPUPerCall)")

// metamcpBin is the `metamcp` binary under test, built once by TestMain.
var metamcpBin string

// waitTimeout bounds every wait for a process or a config to be ready.
const waitTimeout = testharness.WaitTimeout

// Names in the benchmark config.
const (
	serverName   = "fx"
	endpointName = "bench"
	directTool   = "echo"
	proxiedTool  = "fx__echo" // snapshot.ExposedName("fx", "__", "echo")
	echoText     = "hello"
)

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	defer testharness.Cleanup()
	bins, err := testharness.Binaries("./cmd/metamcp")
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		return 1
	}
	metamcpBin = bins[0]
	return m.Run()
}

// syncBuffer captures a process's output while the test reads it.
type syncBuffer = syncbuf.Buffer

// randomHex is testharness.RandomHex.
func randomHex(tb testing.TB, n int) string { return testharness.RandomHex(tb, n) }

// startUpstream runs the mcpfixture over Streamable HTTP and returns its URL
// and process id. The process is killed at cleanup.
func startUpstream(tb testing.TB) (string, int) {
	tb.Helper()
	url, cmd := fixture.StartProcess(tb, fixture.Build(tb), "http", serverName, "--tools", "echo")
	return url, cmd.Process.Pid
}

// benchConfig is the config the benchmarks serve: the upstream as server fx
// (shared session), namespace and endpoint "bench" that mount it.
func benchConfig(upstreamURL string) []*metamcpv1.Resource {
	return []*metamcpv1.Resource{
		{Kind: &metamcpv1.Resource_Server{Server: &metamcpv1.Server{
			Name:      serverName,
			Transport: &metamcpv1.Server_StreamableHttp{StreamableHttp: &metamcpv1.HTTPTransport{Url: upstreamURL}},
		}}},
		{Kind: &metamcpv1.Resource_Namespace{Namespace: &metamcpv1.Namespace{
			Name:    endpointName,
			Members: []*metamcpv1.NamespaceMember{{Server: serverName}},
		}}},
		{Kind: &metamcpv1.Resource_Endpoint{Endpoint: &metamcpv1.Endpoint{Name: endpointName, Namespace: endpointName}}},
	}
}

// controlPlane is a control plane served inside the test binary on a SQLite
// store, so that a data plane process has something to sync from without
// Postgres. Its CPU is not the data plane's.
type controlPlane struct {
	addr  string
	conn  *grpc.ClientConn
	admin metamcpv1.AdminServiceClient
	token string
}

func startControlPlane(tb testing.TB) *controlPlane {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	st, err := sqlite.Open(ctx, filepath.Join(tb.TempDir(), "metamcp.db"), sqlite.Options{})
	if err != nil {
		cancel()
		tb.Fatalf("open the control plane's SQLite store: %v", err)
	}
	key, err := secret.GenerateKey()
	if err != nil {
		tb.Fatal(err)
	}
	sealer, err := secret.New(key)
	if err != nil {
		tb.Fatal(err)
	}
	cp := &controlPlane{token: "admin-" + randomHex(tb, 16)}
	srv, err := controlplane.New(st, sealer, controlplane.Options{AdminTokenHash: auth.HashToken(cp.token)})
	if err != nil {
		tb.Fatalf("control plane: %v", err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	cp.addr = lis.Addr().String()
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, lis) }()
	cp.conn, err = grpc.NewClient(cp.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatal(err)
	}
	cp.admin = metamcpv1.NewAdminServiceClient(cp.conn)
	tb.Cleanup(func() {
		_ = cp.conn.Close()
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("control plane: %v", err)
		}
		_ = st.Close()
	})
	return cp
}

func (cp *controlPlane) ctx() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+cp.token), cancel
}

// configure applies the benchmark config for upstreamURL and returns a new
// API key for the endpoint and a new sync token.
func (cp *controlPlane) configure(tb testing.TB, upstreamURL string) (apiKey, syncToken string) {
	tb.Helper()
	ctx, cancel := cp.ctx()
	defer cancel()
	if _, err := cp.admin.Apply(ctx, &metamcpv1.ApplyRequest{Resources: benchConfig(upstreamURL)}); err != nil {
		tb.Fatalf("apply the benchmark config: %v", err)
	}
	k, err := cp.admin.CreateApiKey(ctx, &metamcpv1.CreateApiKeyRequest{ApiKey: &metamcpv1.ApiKey{Name: "bench", Endpoints: []string{endpointName}}})
	if err != nil {
		tb.Fatalf("create API key: %v", err)
	}
	tok, err := cp.admin.CreateToken(ctx, &metamcpv1.CreateTokenRequest{Token: &metamcpv1.Token{Name: "bench-dp", Scope: metamcpv1.TokenScope_TOKEN_SCOPE_SYNC}})
	if err != nil {
		tb.Fatalf("create sync token: %v", err)
	}
	return k.GetKey(), tok.GetSecret()
}

// dataPlane is a `metamcp dataplane` process.
type dataPlane struct {
	url       string // the benchmark endpoint's MCP URL
	pid       int
	debugAddr string // its pprof server, "" unless -dpprofile is set
	// callgrindOut is the file callgrind dumps its counts to (numbered
	// .1, .2, ... per dump), "" unless -dpcallgrind is set.
	callgrindOut string
	logs         *syncBuffer
}

var (
	dataPlaneListening = regexp.MustCompile(`msg="data plane listening" addr=(\S+)`)
	debugListening     = regexp.MustCompile(`msg="debug server listening" addr=(\S+)`)
)

// startDataPlane runs `metamcp dataplane` against cp with syncToken and waits
// until it serves a config. It is stopped (SIGTERM, then SIGKILL) at cleanup.
func startDataPlane(tb testing.TB, cp *controlPlane, syncToken string) *dataPlane {
	tb.Helper()
	dp := &dataPlane{}
	cmd := exec.Command(metamcpBin, "dataplane",
		"--control-plane", cp.addr,
		"--listen", "127.0.0.1:0",
		"--node-id", "bench",
		"--cache-file", filepath.Join(tb.TempDir(), "snapshot.pb"),
		"--log-level", "info",
	)
	if *dpCallgrind {
		vg, err := exec.LookPath("valgrind")
		if err != nil {
			tb.Fatalf("-dpcallgrind: %v", err)
		}
		dp.callgrindOut = filepath.Join(tb.TempDir(), "callgrind.out")
		cmd.Args = append([]string{vg, "--tool=callgrind", "--callgrind-out-file=" + dp.callgrindOut}, cmd.Args...)
		cmd.Path = vg
	}
	if *dpProfileDir != "" {
		cmd.Args = append(cmd.Args, "--debug-listen", "127.0.0.1:0")
	}
	cmd.Args = append(cmd.Args, strings.Fields(*dpFlags)...)
	cmd.Env = testharness.Env("METAMCP_SYNC_TOKEN=" + syncToken)
	if *dpCallgrind {
		// Callgrind trips on the signals of Go's asynchronous preemption,
		// and valgrind 3.19 cannot run RDTSCP, which the runtime uses to
		// time a contended lock (now and then: a SIGILL then).
		cmd.Env = append(cmd.Env, "GODEBUG=asyncpreemptoff=1,cpu.rdtscp=off")
	}
	cmd.Env = append(cmd.Env, strings.Fields(*dpEnv)...)
	p := testharness.Start(tb, "data plane", cmd)
	dp.logs = p.Output
	dp.pid = cmd.Process.Pid
	addr := p.AwaitMatch(tb, dataPlaneListening, waitTimeout)[1]
	dp.url = "http://" + addr + "/metamcp/" + endpointName + "/mcp"
	if *dpProfileDir != "" {
		dp.debugAddr = p.AwaitMatch(tb, debugListening, waitTimeout)[1]
	}
	testharness.WaitHTTP(tb, p, "http://"+addr+"/readyz", waitTimeout)
	return dp
}

// env is an upstream, a control plane and a data plane process serving it.
type env struct {
	upstreamURL string
	upstreamPID int
	apiKey      string
	dp          *dataPlane
}

func newEnv(tb testing.TB) *env {
	tb.Helper()
	e := &env{}
	e.upstreamURL, e.upstreamPID = startUpstream(tb)
	cp := startControlPlane(tb)
	var syncToken string
	e.apiKey, syncToken = cp.configure(tb, e.upstreamURL)
	e.dp = startDataPlane(tb, cp, syncToken)
	return e
}

func (e *env) direct() target { return target{url: e.upstreamURL, tool: directTool} }
func (e *env) proxied() target {
	return target{url: e.dp.url, tool: proxiedTool, apiKey: e.apiKey}
}

// startInProcessGateway serves the benchmark config for upstreamURL with the
// data plane's real components inside the test binary: a configcache.Cache
// holding the compiled snapshot, the upstream.Pool following it, and the
// gateway on a loopback HTTP server. Call records are drained and dropped
// (a data plane process sends them to the control plane). Only the sync
// client is left out. It returns the endpoint's target.
func startInProcessGateway(tb testing.TB, upstreamURL string) target {
	tb.Helper()
	logger := slog.New(slog.DiscardHandler)
	key := "mm_bench_" + randomHex(tb, 16)
	sum := sha256.Sum256([]byte(key))
	cfg := &metamcpv1.Config{ApiKeys: []*metamcpv1.ApiKeyEntry{{Name: "bench", Principal: "bench", KeyHash: sum[:], Endpoints: []string{endpointName}}}}
	for _, r := range benchConfig(upstreamURL) {
		switch k := r.GetKind().(type) {
		case *metamcpv1.Resource_Server:
			cfg.Servers = append(cfg.Servers, k.Server)
		case *metamcpv1.Resource_Namespace:
			cfg.Namespaces = append(cfg.Namespaces, k.Namespace)
		case *metamcpv1.Resource_Endpoint:
			cfg.Endpoints = append(cfg.Endpoints, k.Endpoint)
		}
	}
	cache := configcache.New("", logger)
	if err := cache.Apply(&metamcpv1.Snapshot{Revision: 1, Config: cfg}); err != nil {
		tb.Fatalf("apply the benchmark snapshot: %v", err)
	}
	calls := make(chan *metamcpv1.CallRecord, 4096)
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		for range calls {
		}
	}()
	var pool *upstream.Pool
	gw := gateway.New(gateway.Options{Config: cache, Logger: logger, Calls: calls, NodeID: "bench",
		Pool: func(events upstream.Events) gateway.Upstreams {
			pool = upstream.NewPool(upstream.PoolOptions{Logger: logger, Events: events})
			pool.Update(cache.Current().Servers)
			return pool
		}})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	// What `metamcp dataplane` serves its port with: net/http.
	srv := &http.Server{Handler: gw.Handler(), ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			tb.Errorf("stop the in-process gateway's HTTP server: %v", err)
		}
		if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
			tb.Errorf("in-process gateway: %v", err)
		}
		gw.Close()
		if err := pool.Close(); err != nil {
			tb.Errorf("close the upstream pool: %v", err)
		}
		close(calls)
		<-drained
	})
	return target{url: "http://" + lis.Addr().String() + "/metamcp/" + endpointName + "/mcp", tool: proxiedTool, apiKey: key}
}

// procCPU is a process's CPU time so far.
type procCPU struct {
	user, sys time.Duration // from /proc/PID/stat, whole clock ticks
	// clock is the same total to the nanosecond, from the process's CPU
	// clock; valid when precise.
	clock   time.Duration
	precise bool
}

// total is the process's CPU time: the nanosecond clock where there is one,
// else user+system time in clock ticks.
func (c procCPU) total() time.Duration {
	if c.precise {
		return c.clock
	}
	return c.user + c.sys
}

// cpuTime is the CPU time the process pid has used: user and system time
// from /proc/<pid>/stat (utime and stime, in clock ticks) and the total from
// the process's CPU clock, to the nanosecond.
func cpuTime(pid int) (procCPU, error) {
	clock, precise := processCPUClock(pid)
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procCPU{}, fmt.Errorf("read the CPU time of process %d: %w", pid, err)
	}
	// The command name (field 2) is in parentheses and may hold spaces;
	// utime and stime are fields 14 and 15, i.e. the 12th and 13th after it.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procCPU{}, fmt.Errorf("parse /proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return procCPU{}, fmt.Errorf("parse /proc/%d/stat: %d fields after the command name", pid, len(f))
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return procCPU{}, fmt.Errorf("parse /proc/%d/stat: utime %q stime %q", pid, f[11], f[12])
	}
	tick := time.Second / time.Duration(clockTicks())
	return procCPU{user: time.Duration(utime) * tick, sys: time.Duration(stime) * tick, clock: clock, precise: precise}, nil
}

var (
	clkTckOnce sync.Once
	clkTck     int64
)

// clockTicks is getconf CLK_TCK (100 when getconf is missing, as on every
// Linux build that matters).
func clockTicks() int64 {
	clkTckOnce.Do(func() {
		clkTck = 100
		out, err := exec.Command("getconf", "CLK_TCK").Output()
		if err != nil {
			return
		}
		if n, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64); err == nil && n > 0 {
			clkTck = n
		}
	})
	return clkTck
}
