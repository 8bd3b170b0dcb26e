package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/internal/testharness"
	"github.com/metamcp/metamcp/pkg/configfile"
)

// waitTimeout bounds every wait for the system to converge.
const waitTimeout = testharness.WaitTimeout

// dataPlane is a `metamcp dataplane` process. Its cache file and node id stay
// the same across restarts.
type dataPlane struct {
	node      string
	token     string
	cacheFile string
	cpAddr    string
	extraArgs []string

	addr string
	logs *syncBuffer
	// proc is the running process.
	proc *testharness.Proc
}

var dataPlaneListening = regexp.MustCompile(`msg="data plane listening" addr=(\S+)`)

// createSyncToken creates a sync-scoped token with mmctl and returns its secret.
func (cp *controlPlane) createSyncToken(t *testing.T, name string) string {
	t.Helper()
	r := cp.ok(t, "create", "token", name, "--scope", "sync", "-o", "json")
	var out struct {
		Secret string `json:"secret"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil || out.Secret == "" {
		t.Fatalf("create token %s: no secret in the JSON output (%v):\n%s", name, err, r)
	}
	return out.Secret
}

// startDataPlane creates a sync token named node and starts a data plane
// with it against cp, its cache file in a temp dir, on a free loopback port.
// defaultStdioAllow is the --stdio-allow of a data plane whose test passes
// none: the test binaries (built under the temp directory) and the launchers
// the tests' configs name, with any arguments. Tests of the policy pass their
// own.
var defaultStdioAllow = filepath.Join(os.TempDir(), "*") + " ...,npx ...,uvx ...,node ..."

func startDataPlane(t *testing.T, cp *controlPlane, node string, extraArgs ...string) *dataPlane {
	t.Helper()
	dp := &dataPlane{
		node:      node,
		token:     cp.createSyncToken(t, node),
		cacheFile: filepath.Join(t.TempDir(), "snapshot.pb"),
		cpAddr:    cp.addr,
		extraArgs: extraArgs,
	}
	dp.launch(t)
	return dp
}

// launch starts the process and waits (bounded) until it listens.
func (dp *dataPlane) launch(t *testing.T) {
	t.Helper()
	args := append([]string{"dataplane",
		"--control-plane", dp.cpAddr,
		"--listen", "127.0.0.1:0",
		"--node-id", dp.node,
		"--cache-file", dp.cacheFile,
		"--log-level", "debug",
	}, dp.extraArgs...)
	if !slices.ContainsFunc(dp.extraArgs, func(a string) bool { return strings.HasPrefix(a, "--stdio-allow") }) {
		args = append(args, "--stdio-allow", defaultStdioAllow)
	}
	cmd := exec.Command(metamcpBin, args...)
	cmd.Env = baseEnv(t, "METAMCP_SYNC_TOKEN="+dp.token)
	dp.proc = testharness.Start(t, "data plane "+dp.node, cmd)
	dp.logs = dp.proc.Output
	dp.addr = dp.proc.AwaitMatch(t, dataPlaneListening, waitTimeout)[1]
}

var debugListening = regexp.MustCompile(`msg="debug server listening" addr=(\S+)`)

// debugAddr is the address of the --debug-listen server, once it logged it.
func (dp *dataPlane) debugAddr(t *testing.T) string {
	t.Helper()
	return dp.proc.AwaitMatch(t, debugListening, waitTimeout)[1]
}

// stop ends the process (SIGTERM, then SIGKILL after a bounded wait); idempotent.
func (dp *dataPlane) stop(t *testing.T) { dp.proc.Stop(t) }

// readyz is the data plane's /readyz answer.
type readyz struct {
	code     int
	body     string
	revision int64 // -1 when the body names none
}

var readyzRevision = regexp.MustCompile(`revision (\d+)`)

func (dp *dataPlane) readyz(t *testing.T) readyz {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+dp.addr+"/readyz", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return readyz{code: 0, body: err.Error(), revision: -1}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := readyz{code: resp.StatusCode, body: string(b), revision: -1}
	if m := readyzRevision.FindStringSubmatch(r.body); m != nil {
		r.revision, _ = strconv.ParseInt(m[1], 10, 64)
	}
	return r
}

// dataPlanes is `mmctl get dataplanes -o json`, decoded.
func (cp *controlPlane) dataPlanes(t *testing.T) (map[string]*metamcpv1.DataPlane, int64) {
	t.Helper()
	r := cp.ok(t, "get", "dataplanes", "-o", "json")
	var resp metamcpv1.ListDataPlanesResponse
	if err := configfile.UnmarshalJSON([]byte(r.stdout), &resp); err != nil {
		t.Fatalf("decode mmctl get dataplanes -o json: %v\n%s", err, r)
	}
	out := map[string]*metamcpv1.DataPlane{}
	for _, d := range resp.GetDataPlanes() {
		out[d.GetNodeId()] = d
	}
	return out, resp.GetRevision()
}

// revisionNum is the control plane's current revision as a number.
func (cp *controlPlane) revisionNum(t *testing.T) int64 {
	t.Helper()
	s := cp.revision(t)
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		t.Fatalf("mmctl revision printed %q, not a number", s)
	}
	return n
}

// eventually is testharness.Eventually (bounded by waitTimeout) for a
// condition that reports whether it holds and, when not, the state it saw.
func eventually(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	eventuallyWithin(t, waitTimeout, what, cond)
}

// eventuallyWithin is eventually bounded by d.
func eventuallyWithin(t *testing.T, d time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	testharness.Eventually(t, d, func() error {
		if ok, state := cond(); !ok {
			return fmt.Errorf("%s; last state:\n%s", what, state)
		}
		return nil
	})
}

// describeDataPlanes is a readable dump of the registry for failure messages.
func describeDataPlanes(dps map[string]*metamcpv1.DataPlane, current int64) string {
	var b strings.Builder
	fmt.Fprintf(&b, "control plane revision %d\n", current)
	for _, d := range dps {
		fmt.Fprintf(&b, "  %s connected=%v applied=%d last_error=%q\n", d.GetNodeId(), d.GetConnected(), d.GetAppliedRevision(), d.GetLastError())
		for _, r := range d.GetRefusedServers() {
			fmt.Fprintf(&b, "    left out %s: %s\n", r.GetServer(), r.GetReason())
		}
	}
	return b.String()
}

// waitApplied waits until every one of dps is connected and has ACKed rev in
// the registry and serves rev on /readyz.
func waitApplied(t *testing.T, cp *controlPlane, rev int64, dps ...*dataPlane) {
	t.Helper()
	eventually(t, fmt.Sprintf("revision %d applied by every data plane", rev), func() (bool, string) {
		reg, current := cp.dataPlanes(t)
		for _, dp := range dps {
			d := reg[dp.node]
			if d == nil || !d.GetConnected() || d.GetAppliedRevision() != rev {
				return false, describeDataPlanes(reg, current)
			}
			if rz := dp.readyz(t); rz.code != http.StatusOK || rz.revision != rev {
				return false, fmt.Sprintf("%s /readyz: %d %s", dp.node, rz.code, rz.body)
			}
		}
		return true, ""
	})
}
