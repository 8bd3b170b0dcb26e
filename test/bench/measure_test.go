package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// warmCalls are made by each client before it is measured: connections,
// upstream sessions and caches are set up, the Go runtimes have grown their
// heaps.
const warmCalls = 100

// latencyResult is the latency of single-client calls, direct and proxied.
type latencyResult struct {
	directP50, directP99, proxiedP50, proxiedP99 time.Duration
}

// measureLatency makes n calls with one direct and one proxied client (one
// session each) in alternating blocks of 50, so that whatever else runs on
// the machine slows both alike, and returns the percentiles.
func measureLatency(ctx context.Context, direct, proxied target, m mode, n int) (latencyResult, error) {
	dc, err := newClient(ctx, direct, m)
	if err != nil {
		return latencyResult{}, fmt.Errorf("direct: %w", err)
	}
	defer dc.close()
	pc, err := newClient(ctx, proxied, m)
	if err != nil {
		return latencyResult{}, fmt.Errorf("proxied: %w", err)
	}
	defer pc.close()
	for _, c := range []*client{dc, pc} {
		if _, err := latencies(ctx, c, warmCalls, nil); err != nil {
			return latencyResult{}, err
		}
	}
	d := make([]time.Duration, 0, n)
	p := make([]time.Duration, 0, n)
	for len(d) < n {
		block := min(50, n-len(d))
		if d, err = latencies(ctx, dc, block, d); err != nil {
			return latencyResult{}, err
		}
		if p, err = latencies(ctx, pc, block, p); err != nil {
			return latencyResult{}, err
		}
	}
	return latencyResult{
		directP50: percentile(d, 50), directP99: percentile(d, 99),
		proxiedP50: percentile(p, 50), proxiedP99: percentile(p, 99),
	}, nil
}

// throughputRounds is how many alternating rounds measureThroughput splits
// each side's calls into, so that a burst of other work on the machine hits
// direct and proxied calls alike.
const throughputRounds = 4

// measureThroughput opens clients clients on direct and as many on proxied
// (each its own session and connection), warms them up, then makes n calls
// on each side in alternating rounds, and returns each side's calls per
// second (calls over the summed time of its rounds).
func measureThroughput(ctx context.Context, direct, proxied target, m mode, clients, n int) (directCPS, proxiedCPS float64, err error) {
	dcs, closeDirect, err := openClients(ctx, direct, m, clients)
	if err != nil {
		return 0, 0, fmt.Errorf("direct: %w", err)
	}
	defer closeDirect()
	pcs, closeProxied, err := openClients(ctx, proxied, m, clients)
	if err != nil {
		return 0, 0, fmt.Errorf("proxied: %w", err)
	}
	defer closeProxied()
	for _, cs := range [][]*client{dcs, pcs} {
		if _, err := run(ctx, cs, max(clients*10, warmCalls)); err != nil {
			return 0, 0, err
		}
	}
	var dt, pt time.Duration
	for i := range throughputRounds {
		calls := n / throughputRounds
		if i == 0 {
			calls += n % throughputRounds
		}
		d, err := run(ctx, dcs, calls)
		if err != nil {
			return 0, 0, fmt.Errorf("direct: %w", err)
		}
		p, err := run(ctx, pcs, calls)
		if err != nil {
			return 0, 0, fmt.Errorf("proxied: %w", err)
		}
		dt, pt = dt+d, pt+p
	}
	return float64(n) / dt.Seconds(), float64(n) / pt.Seconds(), nil
}

// cpuResult is the CPU time per proxied call of the data plane process and,
// for scale, of the upstream process.
type cpuResult struct {
	dataPlane, upstream time.Duration
	// dataPlaneUser and dataPlaneSys split dataPlane into user and kernel time.
	dataPlaneUser, dataPlaneSys time.Duration
	dataPlaneTicks              int64 // the data plane's measured clock ticks (the resolution)
	// dataPlaneInstr is the instructions the data plane ran per call in
	// user space, under -dpcallgrind; 0 otherwise.
	dataPlaneInstr float64
}

// measureCPU makes n proxied calls from clients clients and reads the CPU
// time of the data plane and upstream processes before and after (see
// cpuTime: to the nanosecond in total, in clock ticks for the user and
// system split). What the data plane does in the background meanwhile (status
// reports, sending call records to the control plane) is part of it, as it
// is in production.
func measureCPU(ctx context.Context, proxied target, m mode, clients, n, dataPlanePID, upstreamPID int, ins *callgrindCounter) (cpuResult, error) {
	cs, closeAll, err := openClients(ctx, proxied, m, clients)
	if err != nil {
		return cpuResult{}, err
	}
	defer closeAll()
	if _, err := run(ctx, cs, max(clients*10, warmCalls)); err != nil {
		return cpuResult{}, err
	}
	if ins != nil {
		if err := ins.zero(ctx); err != nil {
			return cpuResult{}, err
		}
	}
	dp0, err := cpuTime(dataPlanePID)
	if err != nil {
		return cpuResult{}, err
	}
	up0, err := cpuTime(upstreamPID)
	if err != nil {
		return cpuResult{}, err
	}
	if _, err := run(ctx, cs, n); err != nil {
		return cpuResult{}, err
	}
	dp1, err := cpuTime(dataPlanePID)
	if err != nil {
		return cpuResult{}, err
	}
	up1, err := cpuTime(upstreamPID)
	if err != nil {
		return cpuResult{}, err
	}
	ticks := (dp1.user + dp1.sys) - (dp0.user + dp0.sys)
	r := cpuResult{
		dataPlane:      (dp1.total() - dp0.total()) / time.Duration(n),
		dataPlaneUser:  (dp1.user - dp0.user) / time.Duration(n),
		dataPlaneSys:   (dp1.sys - dp0.sys) / time.Duration(n),
		upstream:       (up1.total() - up0.total()) / time.Duration(n),
		dataPlaneTicks: int64(ticks * time.Duration(clockTicks()) / time.Second),
	}
	if ins != nil {
		total, err := ins.read(ctx)
		if err != nil {
			return cpuResult{}, err
		}
		r.dataPlaneInstr = float64(total) / float64(n)
	}
	return r, nil
}

// callgrindCounter reads the instruction count of a process run under
// callgrind (-dpcallgrind), through callgrind_control.
type callgrindCounter struct {
	pid  int
	out  string // the --callgrind-out-file; dumps are out.1, out.2, ...
	last string // the dump read last
}

func (c *callgrindCounter) control(ctx context.Context, arg string) error {
	out, err := exec.CommandContext(ctx, "callgrind_control", arg, strconv.Itoa(c.pid)).CombinedOutput()
	if err != nil {
		return fmt.Errorf("callgrind_control %s: %w: %s", arg, err, out)
	}
	return nil
}

// zero sets the counts to zero.
func (c *callgrindCounter) zero(ctx context.Context) error { return c.control(ctx, "-z") }

// read dumps the counts and returns the instructions executed since zero.
func (c *callgrindCounter) read(ctx context.Context) (int64, error) {
	if err := c.control(ctx, "-d"); err != nil {
		return 0, err
	}
	dumps, _ := filepath.Glob(c.out + ".*")
	var last string
	var lastTime time.Time
	for _, f := range dumps {
		if fi, err := os.Stat(f); err == nil && !fi.ModTime().Before(lastTime) {
			last, lastTime = f, fi.ModTime()
		}
	}
	if last == "" {
		return 0, fmt.Errorf("callgrind wrote no dump next to %s", c.out)
	}
	c.last = last
	b, err := os.ReadFile(last)
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "totals:"); ok {
			return strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, fmt.Errorf("no totals line in callgrind dump %s", last)
}

// allocResult is what the in-process data plane allocates per proxied call.
type allocResult struct {
	bytes, objects float64
}

// measureAllocs returns the bytes and objects the data plane allocates per
// proxied call. Method: the data plane's components (gateway, upstream pool,
// HTTP server) run in this process, the upstream in its own. runtime.MemStats
// TotalAlloc and Mallocs count every allocation of this process, so the load
// generator's own are counted too. They are calibrated away: n direct calls
// to the upstream (a separate process) measure the load generator alone, n
// calls through the in-process gateway measure load generator plus data
// plane, and the difference per call is the data plane's. One client each,
// sequential calls, after a warm-up, so both runs make the same requests and
// read responses into an already grown buffer.
func measureAllocs(ctx context.Context, direct, inProcess target, m mode, n int) (allocResult, error) {
	dc, err := newClient(ctx, direct, m)
	if err != nil {
		return allocResult{}, fmt.Errorf("direct: %w", err)
	}
	defer dc.close()
	pc, err := newClient(ctx, inProcess, m)
	if err != nil {
		return allocResult{}, fmt.Errorf("in-process gateway: %w", err)
	}
	defer pc.close()
	calls := func(c *client, n int) error {
		for range n {
			if err := c.call(ctx); err != nil {
				return err
			}
		}
		return nil
	}
	for _, c := range []*client{dc, pc} {
		if err := calls(c, warmCalls); err != nil {
			return allocResult{}, err
		}
	}
	var m0, m1, m2 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	if err := calls(dc, n); err != nil {
		return allocResult{}, err
	}
	runtime.ReadMemStats(&m1)
	if err := calls(pc, n); err != nil {
		return allocResult{}, err
	}
	runtime.ReadMemStats(&m2)
	loadBytes := float64(m1.TotalAlloc - m0.TotalAlloc)
	loadObjects := float64(m1.Mallocs - m0.Mallocs)
	allBytes := float64(m2.TotalAlloc - m1.TotalAlloc)
	allObjects := float64(m2.Mallocs - m1.Mallocs)
	return allocResult{
		bytes:   (allBytes - loadBytes) / float64(n),
		objects: (allObjects - loadObjects) / float64(n),
	}, nil
}

// profileDataPlane takes a CPU profile of the data plane process (pprof at
// debugAddr) for seconds while clients clients make proxied calls without
// pause, and writes it to path.
func profileDataPlane(ctx context.Context, debugAddr string, proxied target, m mode, clients, seconds int, path string) error {
	cs, closeAll, err := openClients(ctx, proxied, m, clients)
	if err != nil {
		return err
	}
	defer closeAll()
	loadCtx, stopLoad := context.WithCancel(ctx)
	loadDone := make(chan error, 1)
	go func() {
		for {
			if _, err := run(loadCtx, cs, clients*50); err != nil {
				if loadCtx.Err() != nil {
					err = nil
				}
				loadDone <- err
				return
			}
		}
	}()
	url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", debugAddr, seconds)
	var prof []byte
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	var resp *http.Response
	if err == nil {
		resp, err = http.DefaultClient.Do(req)
	}
	if err == nil {
		prof, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("HTTP %d: %s", resp.StatusCode, prof)
		}
	}
	stopLoad()
	if lerr := <-loadDone; lerr != nil {
		return fmt.Errorf("load while profiling: %w", lerr)
	}
	if err != nil {
		return fmt.Errorf("profile the data plane at %s: %w", url, err)
	}
	return os.WriteFile(path, prof, 0o644)
}
