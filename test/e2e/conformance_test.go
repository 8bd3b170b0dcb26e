package e2e

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/metamcp/metamcp/internal/testharness"
	"github.com/metamcp/metamcp/test/fixtures/fixture"
)

// conformanceVersion is the release of the official MCP conformance suite
// (npm @modelcontextprotocol/conformance) that scripts/ensure-services.sh
// installs: a pre-release, as the latest release (0.1.16) does not check
// protocol version 2026-07-28.
const conformanceVersion = "0.2.0-alpha.12"

// conformanceSuite returns the wrapper script that runs the suite, from the
// directory ensure-services.sh installs it to. Without it the test fails:
// `make test` installs it first.
func conformanceSuite(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("METAMCP_CONFORMANCE_DIR")
	if dir == "" {
		cache := os.Getenv("XDG_CACHE_HOME")
		if cache == "" {
			home, err := os.UserHomeDir()
			if err != nil {
				t.Fatalf("no home directory to find the MCP conformance suite in: %v", err)
			}
			cache = filepath.Join(home, ".cache")
		}
		dir = filepath.Join(cache, "metamcp", "conformance-"+conformanceVersion)
	}
	wrapper := filepath.Join(dir, "conformance")
	if _, err := os.Stat(wrapper); err != nil {
		t.Fatal("the MCP conformance suite is not installed in " + dir + ": run scripts/ensure-services.sh (make test does)")
	}
	return wrapper
}

// TestConformanceSuite runs the official MCP conformance suite, as an MCP
// client, against endpoints of a real data plane, and through nginx in
// front of two replicas of it (round robin, sharing a session bus on
// Redis). Behind each endpoint is one upstream, with an empty prefix so
// that tool names are the suite's: go-sdk's conformance server
// (conformance/everything-server, the server go-sdk tests itself with), as
// a stateful Streamable HTTP server in shared and per_client mode, over
// stdio, and as a stateless HTTP server, which the data plane speaks
// 2026-07-28 to. The suite runs for protocol versions 2025-11-25 (and the
// older ones it covers) and 2026-07-28.
//
// Each check must pass, save the ones knownFailure lists with why, and at
// least 25 scenarios must run. Against the stateless server directly, the
// suite passes 40 scenarios of 40 at 2026-07-28: so it must through the
// data plane.
func TestConformanceSuite(t *testing.T) {
	suite := conformanceSuite(t)
	nginx := fixture.Nginx(t)
	server := buildConformanceServer(t)
	stateful := startConformanceServer(t, server, "-stateless=false")
	stateless := startConformanceServer(t, server, "-stateless=true")

	cp := startControlPlane(t)
	bus := []string{"--redis-url", "redis://127.0.0.1:6379/0", "--redis-prefix", "e2e-conformance-" + randomHex(t, 4) + ":"}
	dp := startDataPlane(t, cp, "dp-conformance", bus...)
	dpB := startDataPlane(t, cp, "dp-conformance-b", bus...)
	config := `kind: Server
name: conf-shared
streamableHttp: {url: "` + stateful + `"}
sessionMode: shared
---
kind: Server
name: conf-client
streamableHttp: {url: "` + stateful + `"}
sessionMode: per-client
---
kind: Server
name: conf-stdio
stdio: {command: "` + server + `"}
sessionMode: per-client
# Every scenario of the suite is a new session that it leaves open.
limits: {maxProcesses: 128}
---
kind: Server
name: conf-stateless
streamableHttp: {url: "` + stateless + `"}
sessionMode: shared
`
	endpoints := []string{"conf-shared", "conf-client", "conf-stdio", "conf-stateless"}
	for _, name := range endpoints {
		config += "---\nkind: Namespace\nname: " + name + "\nmembers: [{server: " + name + `, prefix: ""}]` + "\n" +
			"---\nkind: Endpoint\nname: " + name + "\nnamespace: " + name + "\nauth: {anonymous: true}\n"
	}
	cp.okIn(t, config, "apply", "-f", "-")
	waitApplied(t, cp, cp.revisionNum(t), dp, dpB)
	ng := startNginx(t, nginx, dp.addr, dpB.addr)

	for _, path := range []struct{ name, addr string }{{"direct", dp.addr}, {"nginx", ng.addr}} {
		for _, name := range endpoints {
			for _, version := range []string{"2025-11-25", "2026-07-28"} {
				if path.name == "nginx" && name == "conf-stdio" && version != "2026-07-28" {
					// A session's per_client stdio process lives on the
					// replica that started it and cannot move: behind round
					// robin, half of the session's requests are refused so.
					// Sessions with stdio servers need affinity.
					continue
				}
				// Behind nginx every check that passes directly must pass.
				mayFail := knownFailure(name, version)
				t.Run(path.name+"/"+name+"/"+version, func(t *testing.T) {
					runConformance(t, suite, "http://"+path.addr+"/metamcp/"+name+"/mcp", version, 25, mayFail)
				})
			}
		}
	}
}

// knownFailure says which checks may fail on an endpoint of
// TestConformanceSuite at a version, and why. Every other check must pass.
func knownFailure(endpoint, version string) func(scenario, check string) bool {
	return func(scenario, check string) bool {
		if os.Getenv("METAMCP_CONFORMANCE_STRICT") != "" {
			return false
		}
		if endpoint == "conf-stateless" {
			// The stateless server's sampling and elicitation tools ask the
			// session-based way, which a stateless server cannot: they fail
			// at 2025-11-25 as they do with the suite run against that
			// server directly. At 2026-07-28 nothing may fail.
			switch scenario {
			case "tools-call-sampling", "tools-call-elicitation", "elicitation-sep1034-defaults", "elicitation-sep1330-enums":
				return version == "2025-11-25"
			}
			return false
		}
		if version != "2026-07-28" {
			return false
		}
		// The stateful server speaks a session-based revision to the data
		// plane's session, so what 2026-07-28 carries per request does not
		// pass through it.
		switch check {
		case "sep-2322-elicitation-incomplete":
			// The upstream's input request reaches the gateway as a request
			// of the session, under an id of go-sdk's: the input_required
			// round the gateway makes of it has a key of its own, not the
			// upstream's ("user_name").
			return true
		case "sep-2322-respect-client-capabilities":
			// The upstream session declares the gateway's capabilities,
			// not the request's: it asks a client that declared sampling
			// only for an elicitation too, which the gateway refuses
			// (-32021) where a 2026-07-28 server asks for sampling alone.
			return true
		case "sep-2575-server-rejects-undeclared-capability", "sep-2575-missing-capability-http-400":
			// Likewise the tool runs for a client that declared no sampling.
			return scenario == "server-stateless"
		}
		return false
	}
}

// runConformance runs the suite's server scenarios of version against url
// and fails on a failed check that mayFail does not allow (by scenario, or
// scenario/check), or when too few scenarios ran.
func runConformance(t *testing.T, suite, url, version string, minScenarios int, mayFail func(scenario, check string) bool) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, suite, "server", "--url", url, "--suite", "all", "--spec-version", version, "-o", dir)
	cmd.Env = append(os.Environ(), "NO_COLOR=1")
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("the conformance suite (%s) did not finish against %s within 4 minutes: %v\n%s", version, url, err, out)
	}
	// Its exit status says whether any check failed; which ones may is
	// decided here, from the results it wrote for each scenario.
	entries, rerr := os.ReadDir(dir)
	if rerr != nil {
		t.Fatal(rerr)
	}
	scenarios, passed, allowed := 0, 0, 0
	for _, e := range entries {
		m := resultDir.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		scenario := m[1]
		b, err := os.ReadFile(filepath.Join(dir, e.Name(), "checks.json"))
		if err != nil {
			t.Errorf("scenario %s wrote no checks: %v", scenario, err)
			continue
		}
		var checks []struct {
			ID, Status, ErrorMessage string
		}
		if err := json.Unmarshal(b, &checks); err != nil {
			t.Errorf("scenario %s: checks.json: %v", scenario, err)
			continue
		}
		scenarios++
		for _, c := range checks {
			switch {
			case c.Status == "SUCCESS":
				passed++
			case c.Status != "FAILURE":
			case mayFail(scenario, c.ID):
				allowed++
			default:
				t.Errorf("%s %s: check %s failed: %s", version, scenario, c.ID, c.ErrorMessage)
			}
		}
	}
	if scenarios < minScenarios {
		t.Errorf("the conformance suite (%s) ran %d scenarios against %s, want at least %d (exit: %v)\n%s", version, scenarios, url, minScenarios, err, out)
	}
	t.Logf("%s: %d scenarios, %d checks passed, %d known failures", version, scenarios, passed, allowed)
}

// resultDir is the name of the directory the suite writes a scenario's
// results to: server-{scenario}-{timestamp}.
var resultDir = regexp.MustCompile(`^server-(.+)-\d{4}-\d{2}-\d{2}T[0-9-]+Z$`)

// buildConformanceServer builds go-sdk's conformance server (a tool of this
// module, so that its version is go.mod's go-sdk).
func buildConformanceServer(t *testing.T) string {
	t.Helper()
	return testharness.Binary(t, "github.com/modelcontextprotocol/go-sdk/conformance/everything-server")
}

// startConformanceServer runs the server on a free loopback port and
// returns its URL once it accepts connections (bounded); it is stopped at
// the end of the test.
func startConformanceServer(t *testing.T, bin string, args ...string) string {
	t.Helper()
	addr := testharness.LoopbackAddr(t)
	p := testharness.Start(t, "go-sdk's conformance server", exec.Command(bin, append([]string{"-http", addr}, args...)...))
	testharness.WaitDial(t, p, addr, waitTimeout)
	return "http://" + addr + "/mcp"
}
