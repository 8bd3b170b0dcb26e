package bench

import (
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/metamcp/metamcp/internal/testharness"
	"github.com/metamcp/metamcp/test/fixtures/fixture"
)

// BenchmarkReference measures two proxies that do nothing but forward, in
// the data plane's place, with the same load, upstream and machine, for the
// scale of the data plane's figures: relay (test/fixtures/relay, a Go proxy
// that copies each HTTP message across as bytes over one upstream
// connection per client) and nginx (when installed: one process, upstream
// keep-alive, no buffering). Neither authenticates, parses JSON-RPC, routes
// or records anything. Points: added p50 at one client, calls per second
// versus direct and proxy CPU per call at 32 clients, session-based, as in
// BenchmarkLatency, BenchmarkThroughput and BenchmarkCPUPerCall.
func BenchmarkReference(b *testing.B) {
	upstreamURL, upstreamPID := startUpstream(b)
	proxies := []struct {
		name  string
		start func(testing.TB, string) (string, int)
	}{
		{"relay", startRelay},
		{"nginx", startNginxProxy},
	}
	for _, p := range proxies {
		b.Run(p.name, func(b *testing.B) {
			proxyURL, pid := p.start(b, upstreamURL)
			direct := target{url: upstreamURL, tool: directTool}
			proxied := target{url: proxyURL, tool: directTool}
			ctx := benchContext(b)
			n := *callsPerPoint * b.N
			lat, err := measureLatency(ctx, direct, proxied, sessionMode, n)
			if err != nil {
				b.Fatal(err)
			}
			dcps, pcps, err := measureThroughput(ctx, direct, proxied, sessionMode, 32, n)
			if err != nil {
				b.Fatal(err)
			}
			cpu, err := measureCPU(ctx, proxied, sessionMode, 32, *cpuCallsPerPoint*b.N, pid, upstreamPID, nil)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(ms(lat.proxiedP50-lat.directP50), "added-p50-ms")
			b.ReportMetric(100*pcps/dcps, "proxied/direct-%")
			b.ReportMetric(float64(cpu.dataPlane)/float64(time.Microsecond), "proxy-us/call")
			b.ReportMetric(float64(cpu.dataPlaneSys)/float64(time.Microsecond), "proxy-sys-us/call")
			b.ReportMetric(float64(cpu.upstream)/float64(time.Microsecond), "upstream-us/call")
		})
	}
}

var relayListening = regexp.MustCompile(`relay listening on (\S+)`)

// startRelay builds and runs test/fixtures/relay in front of the upstream.
func startRelay(tb testing.TB, upstreamURL string) (string, int) {
	tb.Helper()
	u, err := url.Parse(upstreamURL)
	if err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(testharness.Binary(tb, "./test/fixtures/relay"), "-listen", "127.0.0.1:0", "-upstream", u.Host)
	p := testharness.Start(tb, "relay", cmd)
	m := p.AwaitMatch(tb, relayListening, waitTimeout)
	return "http://" + m[1] + u.Path, cmd.Process.Pid
}

// startNginxProxy runs nginx as a single process (so that its CPU is one
// process's) proxying to the upstream; without nginx the benchmark fails.
func startNginxProxy(tb testing.TB, upstreamURL string) (string, int) {
	tb.Helper()
	bin := fixture.Nginx(tb)
	u, err := url.Parse(upstreamURL)
	if err != nil {
		tb.Fatal(err)
	}
	addr := testharness.LoopbackAddr(tb)
	dir := tb.TempDir()
	conf := strings.NewReplacer("DIR", dir, "UPSTREAM", u.Host, "LISTEN", addr).Replace(`
master_process off;
daemon off;
worker_processes 1;
pid DIR/nginx.pid;
error_log DIR/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path DIR;
  proxy_temp_path DIR;
  upstream mcp { server UPSTREAM; keepalive 64; }
  server {
    listen LISTEN;
    location / {
      proxy_pass http://mcp;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host 127.0.0.1;
      proxy_buffering off;
    }
  }
}
`)
	if err := os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(conf), 0o600); err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(bin, "-p", dir, "-c", filepath.Join(dir, "nginx.conf"))
	p := testharness.Start(tb, "nginx", cmd)
	testharness.WaitDial(tb, p, addr, waitTimeout)
	return fmt.Sprintf("http://%s%s", addr, u.Path), cmd.Process.Pid
}
