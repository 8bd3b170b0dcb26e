package compose

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

// repoRoot is where docker-compose.yml and deploy/ live, relative to this
// package.
const repoRoot = "../.."

// Environment variables the binaries read directly (not flag mirrors).
var directEnv = []string{"METAMCP_ADMIN_TOKEN", "METAMCP_SECRET_KEY", "METAMCP_DATABASE_URL", "METAMCP_BOOTSTRAP_SYNC_TOKEN"}

// givenVars are the secrets a .env may give docker-compose.yml; without
// them the init-secrets service makes random ones.
var givenVars = map[string]string{
	"POSTGRES_PASSWORD":   "pgpass0123456789",
	"METAMCP_ADMIN_TOKEN": "compose-test-admin-token-0123456789",
	"METAMCP_SECRET_KEY":  "bWV0YW1jcC1jb21wb3NlLXRlc3Qta2V5LTAxMjM0NTY=",
	"METAMCP_SYNC_TOKEN":  "mmt_compose-test-sync-token-0123456789",
}

// binaries are the cmd/ programs the test builds, keyed by name.
var binaries = map[string]string{}

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "metamcp-compose-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	build := exec.Command("go", "build", "-o", dir+string(filepath.Separator), "./cmd/metamcp", "./cmd/mmctl")
	build.Dir = repoRoot
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "build metamcp and mmctl: %v\n", err)
		return 1
	}
	binaries["metamcp"] = filepath.Join(dir, "metamcp")
	binaries["mmctl"] = filepath.Join(dir, "mmctl")
	return m.Run()
}

// service is the part of a rendered compose service the test checks.
type service struct {
	Image       string          `json:"image"`
	Build       *build          `json:"build"`
	Command     json.RawMessage `json:"command"`
	Entrypoint  json.RawMessage `json:"entrypoint"`
	Environment json.RawMessage `json:"environment"`
	Ports       []any           `json:"ports"`
	DependsOn   json.RawMessage `json:"depends_on"`
	Healthcheck *struct {
		Test json.RawMessage `json:"test"`
	} `json:"healthcheck"`
	Volumes  []any `json:"volumes"`
	Networks map[string]*struct {
		IPv4Address string `json:"ipv4_address"`
	} `json:"networks"`
}

type build struct {
	Context    string `json:"context"`
	Dockerfile string `json:"dockerfile"`
	Target     string `json:"target"`
}

// composeConfig runs `docker-compose config` on docker-compose.yml with env
// set (and nothing else from the environment's METAMCP_* or a .env file).
func composeConfig(t *testing.T, env map[string]string) (stdout, stderr string, err error) {
	t.Helper()
	bin, lookErr := exec.LookPath("docker-compose")
	if lookErr != nil {
		t.Fatalf("docker-compose is not installed; it renders the compose file for this test. " +
			"Install it with scripts/ensure-services.sh (Debian package docker-compose) or `make services`.")
	}
	emptyEnvFile := filepath.Join(t.TempDir(), "empty.env")
	if err := os.WriteFile(emptyEnvFile, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--env-file", emptyEnvFile, "-f", filepath.Join(repoRoot, "docker-compose.yml"), "config")
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if _, ours := givenVars[name]; !ours && !strings.HasPrefix(name, "METAMCP_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("docker-compose config did not finish within 2 minutes")
	}
	return out.String(), errOut.String(), err
}

func renderedServices(t *testing.T) map[string]service {
	t.Helper()
	out, errOut, err := composeConfig(t, givenVars)
	if err != nil {
		t.Fatalf("docker-compose config: %v\n%s", err, errOut)
	}
	var cf struct {
		Services map[string]service `json:"services"`
	}
	if err := yaml.Unmarshal([]byte(out), &cf); err != nil {
		t.Fatalf("parse docker-compose config output: %v\n%s", err, out)
	}
	if len(cf.Services) == 0 {
		t.Fatalf("docker-compose config shows no services:\n%s", out)
	}
	return cf.Services
}

// TestComposeNeedsNoEnv: `docker compose up` needs no .env, and secrets a
// .env gives reach only the init-secrets service, which writes them into
// files.
func TestComposeNeedsNoEnv(t *testing.T) {
	if _, errOut, err := composeConfig(t, nil); err != nil {
		t.Fatalf("docker-compose config without a .env: %v\n%s", err, errOut)
	}
	out, errOut, err := composeConfig(t, givenVars)
	if err != nil {
		t.Fatalf("docker-compose config: %v\n%s", err, errOut)
	}
	var cf struct {
		Services map[string]json.RawMessage `json:"services"`
	}
	if err := yaml.Unmarshal([]byte(out), &cf); err != nil {
		t.Fatal(err)
	}
	for name, raw := range cf.Services {
		for k, v := range givenVars {
			if name != "init-secrets" && strings.Contains(string(raw), v) {
				t.Errorf("service %s holds %s's value in its definition (visible in docker inspect): give it a file", name, k)
			}
		}
	}
	init := environment(t, renderedServices(t)["init-secrets"].Environment)
	for k, v := range givenVars {
		if init[k] != v {
			t.Errorf("init-secrets does not take %s from the environment (got %q)", k, init[k])
		}
	}
}

// metamcpServices are the services running the image built from
// deploy/Dockerfile.
func metamcpServices(t *testing.T, services map[string]service) map[string]service {
	t.Helper()
	ours := map[string]service{}
	for name, s := range services {
		if s.Build != nil && filepath.ToSlash(s.Build.Dockerfile) == "deploy/Dockerfile" {
			ours[name] = s
		}
	}
	if len(ours) == 0 {
		t.Fatal("no service in docker-compose.yml is built from deploy/Dockerfile")
	}
	return ours
}

func TestComposeServices(t *testing.T) {
	services := renderedServices(t)
	dockerfile := readDockerfile(t)

	for name, s := range services {
		for _, dep := range dependsOn(t, s.DependsOn) {
			target, ok := services[dep.name]
			if !ok {
				t.Errorf("service %s depends on %q, which is not a service", name, dep.name)
				continue
			}
			if dep.condition == "service_healthy" && target.Healthcheck == nil {
				t.Errorf("service %s waits for %s to be healthy, but %s has no healthcheck", name, dep.name, dep.name)
			}
		}
		if s.Healthcheck == nil {
			t.Errorf("service %s has no healthcheck", name)
		}
	}

	for name, s := range metamcpServices(t, services) {
		t.Run(name, func(t *testing.T) {
			if ctx := filepath.Clean(s.Build.Context); ctx != mustAbs(t, repoRoot) {
				t.Errorf("build context %s is not the repository root %s", ctx, mustAbs(t, repoRoot))
			}
			if len(stringList(t, s.Entrypoint)) > 0 {
				t.Errorf("entrypoint is overridden; the image's entrypoint is metamcp and the test checks commands against it")
			}
			args := stringList(t, s.Command)
			if len(args) == 0 {
				args = dockerfile.cmd
			}
			if len(args) == 0 {
				t.Fatal("no command and no CMD in deploy/Dockerfile")
			}
			h := checkCommand(t, "metamcp", args)
			env := environment(t, s.Environment)

			allowed := map[string]bool{}
			for _, n := range directEnv {
				allowed[n] = true
			}
			for _, n := range h.envNames {
				allowed[n] = true
			}
			// The healthcheck may run mmctl or metamcp inside the container,
			// with the container's environment.
			if s.Healthcheck != nil {
				test := stringList(t, s.Healthcheck.Test)
				if len(test) > 1 && test[0] == "CMD" {
					bin := filepath.Base(test[1])
					if _, ok := binaries[bin]; !ok {
						t.Errorf("healthcheck runs %s, which the image does not have (it has metamcp and mmctl only; no shell)", test[1])
					} else {
						if !slices.Contains(dockerfile.installed, test[1]) {
							t.Errorf("healthcheck runs %s, but deploy/Dockerfile installs %v", test[1], dockerfile.installed)
						}
						hh := checkCommand(t, bin, test[2:])
						for _, n := range hh.envNames {
							allowed[n] = true
						}
					}
				} else {
					t.Errorf("healthcheck %q: the image has no shell; use [\"CMD\", \"/usr/local/bin/...\", ...]", test)
				}
			}
			for k := range env {
				if strings.HasPrefix(k, "METAMCP_") && !allowed[k] {
					t.Errorf("environment variable %s is not read by metamcp %s (nor by the healthcheck)", k, args[0])
				}
			}
			// Every value set is one the flags accept (e.g. METAMCP_LOG_FORMAT).
			for k, v := range env {
				if flag, ok := h.flagOfEnv[k]; ok && h.choices[flag] != nil && !slices.Contains(h.choices[flag], v) {
					t.Errorf("%s=%q: --%s takes one of %v", k, v, flag, h.choices[flag])
				}
			}

			// The listen address: from the command, or the environment, or the default.
			listen, ok := flagValue(args, "listen")
			if !ok {
				if v, found := env["METAMCP_LISTEN"]; found {
					listen = v
				} else {
					listen = h.defaults["listen"]
				}
			}
			host, port, err := net.SplitHostPort(listen)
			if err != nil {
				t.Fatalf("--listen %q: %v", listen, err)
			}
			if ip := net.ParseIP(host); host == "localhost" || (ip != nil && ip.IsLoopback()) {
				t.Errorf("--listen %s is loopback inside the container: published ports cannot reach it; listen on 0.0.0.0", listen)
			}
			if len(s.Ports) == 0 && args[0] == "controlplane" {
				t.Errorf("no ports published for the control plane")
			}
			for _, p := range s.Ports {
				target := containerPort(t, p)
				if target != port {
					t.Errorf("published port %v targets container port %s, but the control plane listens on %s", p, target, port)
				}
			}
		})
	}
}

// help is what a binary's --help says about one subcommand.
type help struct {
	flags     map[string]bool
	envNames  []string
	flagOfEnv map[string]string
	defaults  map[string]string
	choices   map[string][]string
}

var (
	flagLine    = regexp.MustCompile(`^\s+(?:-\w, )?--([a-z0-9-]+)(?: \w+)?\s+(.*)$`)
	envMirror   = regexp.MustCompile(`\[\$(METAMCP_[A-Z0-9_]+)\]`)
	defaultText = regexp.MustCompile(`\(default "([^"]*)"\)`)
	choiceText  = regexp.MustCompile(`: ([a-z_]+(?:, [a-z_]+)*) or ([a-z_]+)`)
	envInText   = regexp.MustCompile(`\bMETAMCP_[A-Z0-9_]+\b`)
)

// checkCommand checks that args (subcommand, then flags) is a valid command
// line of bin according to its --help, and returns that help.
func checkCommand(t *testing.T, bin string, args []string) help {
	t.Helper()
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		t.Fatalf("%s %q: no subcommand", bin, args)
	}
	sub := args[0]
	rootHelp := runHelp(t, bin)
	if !regexp.MustCompile(`(?m)^\s+` + regexp.QuoteMeta(sub) + `\s`).MatchString(rootHelp) {
		t.Fatalf("%s has no subcommand %q; its help:\n%s", bin, sub, rootHelp)
	}
	text := runHelp(t, bin, sub)
	h := help{flags: map[string]bool{}, flagOfEnv: map[string]string{}, defaults: map[string]string{}, choices: map[string][]string{}}
	for _, line := range strings.Split(text, "\n") {
		m := flagLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		name, usage := m[1], m[2]
		h.flags[name] = true
		if e := envMirror.FindStringSubmatch(usage); e != nil {
			h.envNames = append(h.envNames, e[1])
			h.flagOfEnv[e[1]] = name
		}
		if d := defaultText.FindStringSubmatch(usage); d != nil {
			h.defaults[name] = d[1]
		}
		if c := choiceText.FindStringSubmatch(usage); c != nil {
			h.choices[name] = append(strings.Split(c[1], ", "), c[2])
		}
	}
	// Variables the help text names outside the flag list (secrets read
	// directly) count too.
	h.envNames = append(h.envNames, envInText.FindAllString(text, -1)...)
	for _, a := range args[1:] {
		if !strings.HasPrefix(a, "--") {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if !h.flags[name] {
			t.Errorf("%s %s has no flag --%s; its help:\n%s", bin, sub, name, text)
		}
	}
	return h
}

func runHelp(t *testing.T, bin string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binaries[bin], append(args, "--help")...)
	cmd.Env = []string{"HOME=" + t.TempDir(), "PATH=/usr/bin:/bin"}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s --help: %v\n%s", bin, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// flagValue finds --name VALUE or --name=VALUE in args.
func flagValue(args []string, name string) (string, bool) {
	for i, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v, true
		}
		if a == "--"+name && i+1 < len(args) {
			return args[i+1], true
		}
	}
	return "", false
}

// stringList decodes a compose command-like value: a list, or a string split
// on spaces.
func stringList(t *testing.T, raw json.RawMessage) []string {
	t.Helper()
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	var list []string
	if err := json.Unmarshal(raw, &list); err == nil {
		return list
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Fatalf("cannot read %s as a command", raw)
	}
	return strings.Fields(s)
}

// environment decodes a compose environment: a map or a list of K=V.
func environment(t *testing.T, raw json.RawMessage) map[string]string {
	t.Helper()
	env := map[string]string{}
	if len(raw) == 0 || string(raw) == "null" {
		return env
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err == nil {
		for k, v := range m {
			env[k] = fmt.Sprint(v)
		}
		return env
	}
	var list []string
	if err := json.Unmarshal(raw, &list); err != nil {
		t.Fatalf("cannot read environment %s", raw)
	}
	for _, kv := range list {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	return env
}

type dependency struct{ name, condition string }

// dependsOn decodes depends_on: a list of names or a map name -> {condition}.
func dependsOn(t *testing.T, raw json.RawMessage) []dependency {
	t.Helper()
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	var deps []dependency
	var list []string
	if err := json.Unmarshal(raw, &list); err == nil {
		for _, n := range list {
			deps = append(deps, dependency{name: n})
		}
		return deps
	}
	var m map[string]struct {
		Condition string `json:"condition"`
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("cannot read depends_on %s", raw)
	}
	for n, d := range m {
		deps = append(deps, dependency{name: n, condition: d.Condition})
	}
	return deps
}

// containerPort returns the container side of a published port, in either
// the short ("HOST:PUBLISHED:TARGET/tcp") or the long ({target: N}) form.
func containerPort(t *testing.T, p any) string {
	t.Helper()
	switch v := p.(type) {
	case string:
		v, _, _ = strings.Cut(v, "/")
		parts := strings.Split(v, ":")
		return parts[len(parts)-1]
	case map[string]any:
		return fmt.Sprint(v["target"])
	case float64:
		return strconv.Itoa(int(v))
	}
	t.Fatalf("cannot read port %v", p)
	return ""
}

func mustAbs(t *testing.T, p string) string {
	t.Helper()
	abs, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return abs
}

// dockerfileInfo is what the test reads from deploy/Dockerfile.
type dockerfileInfo struct {
	buildPaths []string // package paths in `go build` lines
	installed  []string // absolute paths of binaries in the final image
	cmd        []string // CMD of the final image
	stages     []string // names of the stages (FROM ... AS NAME)
	bases      []string // their base images
}

func readDockerfile(t *testing.T) dockerfileInfo {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "deploy", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	// Join continuation lines.
	text := strings.ReplaceAll(string(b), "\\\n", " ")
	var info dockerfileInfo
	for _, line := range strings.Split(text, "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		switch strings.ToUpper(fields[0]) {
		case "RUN":
			i := slices.Index(fields, "build")
			if i < 1 || fields[i-1] != "go" {
				continue
			}
			for _, f := range fields[i+1:] {
				if strings.HasPrefix(f, "./") {
					info.buildPaths = append(info.buildPaths, f)
				}
			}
		case "FROM":
			if len(fields) == 4 && strings.EqualFold(fields[2], "as") {
				info.stages = append(info.stages, fields[3])
				info.bases = append(info.bases, fields[1])
			}
		case "COPY":
			// The binaries built here (uv's come from its image).
			if len(fields) < 3 || fields[1] != "--from=build" {
				continue
			}
			dest := fields[len(fields)-1]
			for _, src := range fields[2 : len(fields)-1] {
				info.installed = append(info.installed, filepath.Join(dest, filepath.Base(src)))
			}
		case "CMD":
			info.cmd = nil
			if err := json.Unmarshal([]byte(strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), fields[0]))), &info.cmd); err != nil {
				t.Errorf("deploy/Dockerfile: CMD is not in exec (JSON) form: %s", line)
			}
		}
	}
	return info
}

func TestDockerfile(t *testing.T) {
	info := readDockerfile(t)
	if len(info.buildPaths) == 0 {
		t.Fatal("deploy/Dockerfile has no `go build ./cmd/...` line")
	}
	built := map[string]bool{}
	for _, p := range info.buildPaths {
		dir := filepath.Join(repoRoot, filepath.FromSlash(p))
		fi, err := os.Stat(dir)
		if err != nil || !fi.IsDir() {
			t.Errorf("deploy/Dockerfile builds %s, which is not a directory of this repository", p)
			continue
		}
		if !hasMainPackage(t, dir) {
			t.Errorf("deploy/Dockerfile builds %s, which has no package main", p)
		}
		built[filepath.Base(p)] = true
	}
	// Every command of the repository ends up in the image.
	cmds, err := os.ReadDir(filepath.Join(repoRoot, "cmd"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cmds {
		if c.IsDir() && !built[c.Name()] {
			t.Errorf("deploy/Dockerfile does not build ./cmd/%s", c.Name())
		}
	}
	for _, inst := range info.installed {
		if !built[filepath.Base(inst)] {
			t.Errorf("deploy/Dockerfile copies %s, which no go build line builds", inst)
		}
	}
	if len(info.installed) == 0 {
		t.Error("deploy/Dockerfile copies no binary into the final image")
	}
	if len(info.cmd) > 0 {
		checkCommand(t, "metamcp", info.cmd)
	}
}

func hasMainPackage(t *testing.T, dir string) bool {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if regexp.MustCompile(`(?m)^package main\b`).Match(b) {
			return true
		}
	}
	return false
}

// dataPlanes are the services running `metamcp dataplane`, by name.
func dataPlanes(t *testing.T, services map[string]service) map[string]service {
	t.Helper()
	dps := map[string]service{}
	for name, s := range metamcpServices(t, services) {
		if args := stringList(t, s.Command); len(args) > 0 && args[0] == "dataplane" {
			dps[name] = s
		}
	}
	return dps
}

// TestComposeDataPlane checks that each data plane reaches the control plane
// service on the port it listens on, waits for it, and takes its sync token
// from a file the init-secrets service writes (never from the command line
// or a variable holding it).
func TestComposeDataPlane(t *testing.T) {
	services := renderedServices(t)
	dps := dataPlanes(t, services)
	if len(dps) != 2 {
		t.Fatalf("%d services run `metamcp dataplane`, want 2 (behind nginx)", len(dps))
	}
	nodeIDs := map[string]string{}
	for dpName, dp := range dps {
		args := stringList(t, dp.Command)
		cpAddr, ok := flagValue(args, "control-plane")
		if !ok {
			t.Fatalf("%s: no --control-plane in %q", dpName, args)
		}
		host, port, err := net.SplitHostPort(cpAddr)
		if err != nil {
			t.Fatalf("--control-plane %q: %v", cpAddr, err)
		}
		cp, ok := services[host]
		if !ok {
			t.Fatalf("--control-plane %s names no service", cpAddr)
		}
		cpArgs := stringList(t, cp.Command)
		if len(cpArgs) == 0 || cpArgs[0] != "controlplane" {
			t.Errorf("--control-plane %s: service %s runs %q, not the control plane", cpAddr, host, cpArgs)
		}
		if listen, ok := flagValue(cpArgs, "listen"); !ok || !strings.HasSuffix(listen, ":"+port) {
			t.Errorf("--control-plane %s, but the control plane listens on %q", cpAddr, listen)
		}
		waits := false
		for _, d := range dependsOn(t, dp.DependsOn) {
			if d.name == host && d.condition == "service_healthy" {
				waits = true
			}
		}
		if !waits {
			t.Errorf("%s does not wait for %s to be healthy", dpName, host)
		}
		env := environment(t, dp.Environment)
		if _, ok := env["METAMCP_SYNC_TOKEN"]; ok {
			t.Errorf("%s: the sync token is in a variable (docker inspect shows it): use METAMCP_SYNC_TOKEN_FILE", dpName)
		}
		checkSecretFile(t, services, dpName, env["METAMCP_SYNC_TOKEN_FILE"])
		if _, ok := flagValue(args, "sync-token"); ok {
			t.Errorf("the sync token is on the command line, where ps shows it")
		}
		id := env["METAMCP_NODE_ID"]
		if id == "" {
			t.Errorf("%s has no METAMCP_NODE_ID (its container's host name would change on every re-create)", dpName)
		} else if other, dup := nodeIDs[id]; dup {
			t.Errorf("%s and %s have the same node id %s", dpName, other, id)
		}
		nodeIDs[id] = dpName
	}
}

// checkSecretFile checks that path is a file the init-secrets service
// writes, in a volume service name mounts.
func checkSecretFile(t *testing.T, services map[string]service, name, path string) {
	t.Helper()
	if path == "" {
		t.Errorf("%s: no secret file given", name)
		return
	}
	initSvc, ok := services["init-secrets"]
	if !ok {
		t.Fatal("no init-secrets service")
	}
	script := strings.Join(stringList(t, initSvc.Command), "\n")
	if !strings.Contains(script, filepath.Base(path)) {
		t.Errorf("%s reads %s, which init-secrets does not write", name, path)
	}
	initVol := volumeAt(t, initSvc, filepath.Dir(path))
	if vol := volumeAt(t, services[name], filepath.Dir(path)); vol == "" || vol != initVol {
		t.Errorf("%s reads %s from volume %q, init-secrets writes volume %q there", name, path, vol, initVol)
	}
}

// volumeAt returns the volume a service mounts at dir.
func volumeAt(t *testing.T, s service, dir string) string {
	t.Helper()
	for _, v := range s.Volumes {
		switch v := v.(type) {
		case string:
			parts := strings.Split(v, ":")
			if len(parts) >= 2 && parts[1] == dir {
				return parts[0]
			}
		case map[string]any:
			if v["target"] == dir {
				return fmt.Sprint(v["source"])
			}
		}
	}
	return ""
}

// TestComposeOneStep: the first `docker compose up` needs no token made by
// hand: init-secrets writes the secrets, the control plane accepts the data
// planes' sync token from the start, and a .env is never committed.
func TestComposeOneStep(t *testing.T) {
	services := renderedServices(t)
	cp := environment(t, services["controlplane"].Environment)
	for _, k := range []string{"METAMCP_ADMIN_TOKEN_FILE", "METAMCP_SECRET_KEY_FILE", "METAMCP_BOOTSTRAP_SYNC_TOKEN_FILE", "PGPASSFILE"} {
		checkSecretFile(t, services, "controlplane", cp[k])
	}
	for name, dp := range dataPlanes(t, services) {
		if got, want := cp["METAMCP_BOOTSTRAP_SYNC_TOKEN_FILE"], environment(t, dp.Environment)["METAMCP_SYNC_TOKEN_FILE"]; got == "" || got != want {
			t.Errorf("the control plane's bootstrap sync token file %q is not %s's sync token file %q", got, name, want)
		}
	}
	if u := cp["METAMCP_DATABASE_URL"]; strings.Contains(u, ":@") || regexp.MustCompile(`//[^/@:]+:[^/@]+@`).MatchString(u) {
		t.Errorf("the database URL %q holds a password: it comes from PGPASSFILE", u)
	}
	pg := environment(t, services["postgres"].Environment)
	checkSecretFile(t, services, "postgres", pg["POSTGRES_PASSWORD_FILE"])
	ignore, err := os.ReadFile(filepath.Join(repoRoot, ".gitignore"))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(strings.Split(string(ignore), "\n"), "/.env") {
		t.Error(".gitignore does not ignore /.env, which holds the compose secrets")
	}
}

// TestComposeNginx: nginx is in front of both data planes, on the port they
// listen on, and is the one proxy they trust.
func TestComposeNginx(t *testing.T) {
	services := renderedServices(t)
	ng, ok := services["nginx"]
	if !ok {
		t.Fatal("no nginx service")
	}
	if len(ng.Ports) == 0 {
		t.Error("nginx publishes no port")
	}
	conf := ""
	for _, v := range ng.Volumes {
		src := ""
		switch v := v.(type) {
		case string:
			src = strings.Split(v, ":")[0]
		case map[string]any:
			src = fmt.Sprint(v["source"])
		}
		if strings.HasSuffix(src, ".conf") {
			conf = src
		}
	}
	if conf == "" {
		t.Fatal("nginx mounts no .conf")
	}
	b, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	upstreams := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\s*server\s+([a-z0-9-]+:\d+)`).FindAllStringSubmatch(string(b), -1) {
		upstreams[m[1]] = true
	}
	if len(upstreams) == 0 {
		t.Fatalf("%s names no upstream server", conf)
	}
	if !strings.Contains(string(b), "listen "+containerPort(t, ng.Ports[0])) {
		t.Errorf("%s does not listen on the published port's target %s", conf, containerPort(t, ng.Ports[0]))
	}
	var nginxIP string
	if nw, ok := ng.Networks["default"]; ok && nw != nil {
		nginxIP = nw.IPv4Address
	}
	waits := map[string]bool{}
	for _, d := range dependsOn(t, ng.DependsOn) {
		waits[d.name] = d.condition == "service_healthy"
	}
	for name, dp := range dataPlanes(t, services) {
		listen, _ := flagValue(stringList(t, dp.Command), "listen")
		_, port, _ := net.SplitHostPort(listen)
		if !upstreams[name+":"+port] {
			t.Errorf("nginx does not proxy to %s:%s (its upstreams: %v)", name, port, upstreams)
		}
		delete(upstreams, name+":"+port)
		if !waits[name] {
			t.Errorf("nginx does not wait for %s to be healthy", name)
		}
		if tp := environment(t, dp.Environment)["METAMCP_TRUSTED_PROXIES"]; nginxIP == "" || tp != nginxIP {
			t.Errorf("%s trusts proxies %q, nginx's address is %q", name, tp, nginxIP)
		}
	}
	if len(upstreams) > 0 {
		t.Errorf("nginx proxies to %v, which are not data planes", upstreams)
	}
}

// TestDockerfileStdio: the stdio target has Node (npx) and uv (uvx) and the
// same binaries, and the data planes can be built from it.
func TestDockerfileStdio(t *testing.T) {
	info := readDockerfile(t)
	i := slices.Index(info.stages, "stdio")
	if i < 0 {
		t.Fatalf("deploy/Dockerfile has no stdio stage (stages: %v)", info.stages)
	}
	if !strings.HasPrefix(info.bases[i], "node:") {
		t.Errorf("the stdio stage is based on %s, not a Node image (npx)", info.bases[i])
	}
	b, err := os.ReadFile(filepath.Join(repoRoot, "deploy", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^COPY --from=uv /uv /uvx /usr/local/bin/`).Match(b) {
		t.Error("the stdio stage does not install uv and uvx")
	}
	if info.stages[len(info.stages)-1] != "final" {
		t.Errorf("the last stage (the default image) is %s, not final", info.stages[len(info.stages)-1])
	}
	for name, dp := range dataPlanes(t, renderedServices(t)) {
		if dp.Build == nil || !slices.Contains(info.stages, dp.Build.Target) {
			t.Errorf("%s is built from target %v, not a stage of deploy/Dockerfile", name, dp.Build)
		}
	}
}
