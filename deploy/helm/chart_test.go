// Package helm holds the Helm chart of MetaMCP (deploy/helm/metamcp); its
// test lints and renders the chart with the helm pinned in tools/helm, and
// checks the manifests against the binaries: the flags and variables they
// set exist, the probes reach the ports served, no secret is in clear.
package helm

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/metamcp/metamcp/deploy/internal/metricnames"
)

const (
	repoRoot = "../.."
	chartDir = "metamcp"
)

// Tools the tests run, set up by TestMain.
var helmBin, metamcpBin string

func TestMain(m *testing.M) { os.Exit(testMain(m)) }

func testMain(m *testing.M) int {
	root, err := filepath.Abs(repoRoot)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// helm: the one `make helm` builds into ./bin from tools/helm, built
	// here when missing (the first build takes minutes; no network beyond
	// the module proxy).
	helmBin = filepath.Join(root, "bin", "helm")
	if _, err := os.Stat(helmBin); err != nil {
		fmt.Fprintln(os.Stderr, "building helm from tools/helm into bin/ (once)")
		install := exec.Command("go", "install", "helm.sh/helm/v4/cmd/helm")
		install.Dir = filepath.Join(root, "tools", "helm")
		install.Env = append(os.Environ(), "GOBIN="+filepath.Join(root, "bin"))
		install.Stdout, install.Stderr = os.Stderr, os.Stderr
		if err := install.Run(); err != nil {
			fmt.Fprintf(os.Stderr, "build helm: %v\n", err)
			return 1
		}
	}
	dir, err := os.MkdirTemp("", "metamcp-helm-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	build := exec.Command("go", "build", "-o", dir+string(filepath.Separator), "./cmd/metamcp")
	build.Dir = root
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "build metamcp: %v\n", err)
		return 1
	}
	metamcpBin = filepath.Join(dir, "metamcp")
	return m.Run()
}

func runHelm(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, helmBin, args...)
	// No kube config, no repositories: lint and template need neither.
	home := t.TempDir()
	cmd.Env = []string{"HOME=" + home, "PATH=/usr/bin:/bin", "KUBECONFIG=" + filepath.Join(home, "none"),
		"HELM_CACHE_HOME=" + home, "HELM_CONFIG_HOME=" + home, "HELM_DATA_HOME=" + home}
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("helm %v did not finish within 2 minutes", args)
	}
	return out.String(), errOut.String(), err
}

// Secrets the scenarios pass in values; none may appear in clear.
const (
	secretKey   = "c2VjcmV0LWtleS1vZi10aGUtaGVsbS10ZXN0LTAxMjM="
	adminToken  = "admin-token-of-the-helm-test-0123456789abc"
	syncToken   = "mmt_sync-token-of-the-helm-test-0123456789"
	pgPassword  = "pgPasswordOfTheHelmTest0123"
	redisPasswd = "redisPasswordOfTheHelmTest0123"
)

// scenario is one set of values the chart is rendered with.
type scenario struct {
	name string
	set  []string
	// kinds the render must hold, with their count.
	kinds map[string]int
	// clear are strings that must not appear anywhere in the render.
	clear []string
}

var scenarios = []scenario{
	{
		name: "trial: bundled Postgres and Redis, monitoring",
		set: []string{"postgres.bundled.enabled=true", "redis.bundled.enabled=true",
			"metrics.serviceMonitor.enabled=true", "metrics.prometheusRule.enabled=true",
			"dataplane.stdioAllow={npx -y @modelcontextprotocol/server-*,uvx mcp-server-time ...}",
			"dataplane.otlpEndpoint=http://otel-collector:4318", "dataplane.accessLog=errors"},
		kinds: map[string]int{"Deployment": 3, "StatefulSet": 1, "Service": 4, "Secret": 2, "ServiceAccount": 1,
			"HorizontalPodAutoscaler": 1, "PodDisruptionBudget": 1, "Job": 1, "ServiceMonitor": 2, "PrometheusRule": 1},
	},
	{
		name: "production: external Postgres and Redis, secrets given",
		set: []string{"postgres.external.url=postgres://metamcp:" + pgPassword + "@db.internal:5432/metamcp",
			"redis.external.url=rediss://:" + redisPasswd + "@redis.internal:6379/0",
			"secrets.secretKey=" + secretKey, "secrets.adminToken=" + adminToken, "secrets.syncToken=" + syncToken,
			"dataplane.allowedHosts={other.example.com}", "dataplane.trustedProxies={10.0.0.0/8}",
			"dataplane.publicURL=https://mcp.example.com",
			"ingress.enabled=true", "ingress.host=mcp.example.com", "ingress.tlsSecret=mcp-tls"},
		kinds: map[string]int{"Deployment": 2, "Service": 2, "Secret": 2, "ServiceAccount": 1,
			"HorizontalPodAutoscaler": 1, "PodDisruptionBudget": 1, "Job": 1, "Ingress": 1},
		clear: []string{secretKey, adminToken, syncToken, pgPassword, redisPasswd},
	},
	{
		name: "existing secrets, one data plane without Redis",
		set: []string{"secrets.existingSecret=mine", "postgres.external.existingSecret=db",
			"dataplane.autoscaling.enabled=false", "dataplane.replicas=1", "dataplane.podDisruptionBudget.enabled=false",
			"controlplane.migrationJob.enabled=false", "serviceAccount.create=false"},
		kinds: map[string]int{"Deployment": 2, "Service": 2},
	},
}

func TestChartLintAndTemplate(t *testing.T) {
	names := exportedMetrics(t)
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			args := []string{}
			for _, s := range sc.set {
				args = append(args, "--set", s)
			}
			if out, errOut, err := runHelm(t, append([]string{"lint", "--strict", chartDir}, args...)...); err != nil {
				t.Fatalf("helm lint: %v\n%s%s", err, out, errOut)
			}
			out, errOut, err := runHelm(t, append([]string{"template", "rel", chartDir, "--namespace", "mcp"}, args...)...)
			if err != nil {
				t.Fatalf("helm template: %v\n%s", err, errOut)
			}
			for _, s := range sc.clear {
				if strings.Contains(out, s) {
					t.Errorf("a secret given in values appears in clear in the manifests: %q", s)
				}
			}
			objs := parseManifests(t, out)
			kinds := map[string]int{}
			for _, o := range objs {
				kinds[o.Kind]++
			}
			for k, n := range sc.kinds {
				if kinds[k] != n {
					t.Errorf("%d %s, want %d (all kinds: %v)", kinds[k], k, n, kinds)
				}
			}
			for k := range kinds {
				if _, ok := sc.kinds[k]; !ok {
					t.Errorf("unexpected %d %s", kinds[k], k)
				}
			}
			checkManifests(t, objs, sc, names)
		})
	}
}

// TestChartRefuses checks values the chart must refuse, with a message
// that says what to do.
func TestChartRefuses(t *testing.T) {
	for _, c := range []struct {
		set  []string
		want string
	}{
		{nil, "postgres.external.url"},
		{[]string{"postgres.external.url=postgres://a@db/m"}, "several data planes need a Redis"},
		{[]string{"postgres.bundled.enabled=true", "redis.bundled.enabled=true", "dataplane.accessLog=sometimes"}, "accessLog"},
		{[]string{"postgres.bundled.enabled=true", "redis.bundled.enabled=true", "dataplane.drainDelay=5 seconds"}, "drainDelay"},
		{[]string{"postgres.bundled.enabled=true", "redis.bundled.enabled=true", "dataplane.resources.limits=null"}, "limits"},
		{[]string{"postgres.bundled.enabled=true", "redis.bundled.enabled=true", "dataplane.replica=3"}, "replica"},
		{[]string{"postgres.bundled.enabled=true", "redis.bundled.enabled=true", "ingress.enabled=true"}, "ingress.host"},
	} {
		args := []string{"template", "rel", chartDir}
		for _, s := range c.set {
			args = append(args, "--set", s)
		}
		_, errOut, err := runHelm(t, args...)
		if err == nil {
			t.Errorf("helm template with %v succeeded", c.set)
			continue
		}
		if !strings.Contains(errOut, c.want) {
			t.Errorf("helm template with %v: the error does not name %q:\n%s", c.set, c.want, errOut)
		}
	}
}

// object is the part of a manifest the test reads.
type object struct {
	Kind     string `json:"kind"`
	Metadata struct {
		Name        string            `json:"name"`
		Labels      map[string]string `json:"labels"`
		Annotations map[string]string `json:"annotations"`
	} `json:"metadata"`
	Spec json.RawMessage `json:"spec"`
	// Secrets.
	Data       map[string]string `json:"data"`
	StringData map[string]string `json:"stringData"`
	raw        map[string]any
}

func parseManifests(t *testing.T, out string) []object {
	t.Helper()
	var objs []object
	for _, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(out, -1) {
		if strings.TrimSpace(stripComments(doc)) == "" {
			continue
		}
		j, err := yaml.YAMLToJSON([]byte(doc))
		if err != nil {
			t.Fatalf("a rendered manifest is not YAML: %v\n%s", err, doc)
		}
		var o object
		if err := json.Unmarshal(j, &o); err != nil {
			t.Fatalf("manifest: %v\n%s", err, doc)
		}
		if err := json.Unmarshal(j, &o.raw); err != nil {
			t.Fatal(err)
		}
		if o.Kind == "" || o.Metadata.Name == "" {
			t.Fatalf("manifest without kind or name:\n%s", doc)
		}
		objs = append(objs, o)
	}
	return objs
}

func stripComments(doc string) string {
	var b strings.Builder
	for _, l := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

// Pod-level types.
type (
	podTemplate struct {
		Metadata struct {
			Labels map[string]string `json:"labels"`
		} `json:"metadata"`
		Spec podSpec `json:"spec"`
	}
	podSpec struct {
		TerminationGracePeriodSeconds *int        `json:"terminationGracePeriodSeconds"`
		Containers                    []container `json:"containers"`
	}
	container struct {
		Name  string   `json:"name"`
		Image string   `json:"image"`
		Args  []string `json:"args"`
		Env   []envVar `json:"env"`
		Ports []struct {
			Name          string `json:"name"`
			ContainerPort int    `json:"containerPort"`
		} `json:"ports"`
		ReadinessProbe *probe `json:"readinessProbe"`
		LivenessProbe  *probe `json:"livenessProbe"`
		StartupProbe   *probe `json:"startupProbe"`
		Resources      struct {
			Limits map[string]any `json:"limits"`
		} `json:"resources"`
	}
	envVar struct {
		Name      string  `json:"name"`
		Value     *string `json:"value"`
		ValueFrom *struct {
			SecretKeyRef *struct {
				Name string `json:"name"`
				Key  string `json:"key"`
			} `json:"secretKeyRef"`
			ResourceFieldRef *struct {
				Resource string `json:"resource"`
			} `json:"resourceFieldRef"`
			FieldRef *struct {
				FieldPath string `json:"fieldPath"`
			} `json:"fieldRef"`
		} `json:"valueFrom"`
	}
	probe struct {
		HTTPGet *struct {
			Path string `json:"path"`
			Port any    `json:"port"`
		} `json:"httpGet"`
		GRPC *struct {
			Port int `json:"port"`
		} `json:"grpc"`
		Exec      any `json:"exec"`
		TCPSocket any `json:"tcpSocket"`
	}
)

// secretEnv are the variables that carry secrets: they must come from a
// Secret, never a value.
var secretEnv = regexp.MustCompile(`^(METAMCP_.*(TOKEN|SECRET|PASSWORD|_URL$).*|POSTGRES_PASSWORD)$`)

func checkManifests(t *testing.T, objs []object, sc scenario, metricNames map[string]bool) {
	t.Helper()
	byKind := map[string][]object{}
	secrets := map[string]map[string]string{}
	for _, o := range objs {
		byKind[o.Kind] = append(byKind[o.Kind], o)
		if o.Kind == "Secret" {
			if len(o.StringData) > 0 {
				t.Errorf("Secret %s uses stringData (values in clear): use data", o.Metadata.Name)
			}
			dec := map[string]string{}
			for k, v := range o.Data {
				b, err := base64.StdEncoding.DecodeString(v)
				if err != nil {
					t.Errorf("Secret %s key %s is not base64: %v", o.Metadata.Name, k, err)
				}
				if len(b) == 0 {
					t.Errorf("Secret %s key %s is empty", o.Metadata.Name, k)
				}
				dec[k] = string(b)
			}
			secrets[o.Metadata.Name] = dec
		}
	}
	if sc.clear != nil {
		// The given values are what the Secrets hold.
		var all []string
		for _, s := range secrets {
			for _, v := range s {
				all = append(all, v)
			}
		}
		for _, want := range []string{secretKey, adminToken, syncToken} {
			if !slices.Contains(all, want) {
				t.Errorf("no Secret holds the value given for %q", want)
			}
		}
	}

	pods := map[string]podTemplate{} // by component
	for _, kind := range []string{"Deployment", "StatefulSet", "Job"} {
		for _, o := range byKind[kind] {
			var spec struct {
				Selector struct {
					MatchLabels map[string]string `json:"matchLabels"`
				} `json:"selector"`
				Template podTemplate `json:"template"`
			}
			if err := json.Unmarshal(o.Spec, &spec); err != nil {
				t.Fatalf("%s %s: %v", kind, o.Metadata.Name, err)
			}
			for k, v := range spec.Selector.MatchLabels {
				if spec.Template.Metadata.Labels[k] != v {
					t.Errorf("%s %s: the selector %s=%s does not match its pods' labels", kind, o.Metadata.Name, k, v)
				}
			}
			comp := spec.Template.Metadata.Labels["app.kubernetes.io/component"]
			pods[comp] = spec.Template
			for _, c := range spec.Template.Spec.Containers {
				for _, e := range c.Env {
					if !secretEnv.MatchString(e.Name) {
						continue
					}
					if e.Value != nil || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
						t.Errorf("%s %s: %s is not taken from a Secret", kind, o.Metadata.Name, e.Name)
						continue
					}
					ref := e.ValueFrom.SecretKeyRef
					if s, ok := secrets[ref.Name]; ok {
						if _, ok := s[ref.Key]; !ok {
							t.Errorf("%s %s: %s refers to key %s, which Secret %s lacks", kind, o.Metadata.Name, e.Name, ref.Key, ref.Name)
						}
					} else if !slices.Contains(sc.set, "secrets.existingSecret="+ref.Name) && !slices.Contains(sc.set, "postgres.external.existingSecret="+ref.Name) {
						t.Errorf("%s %s: %s refers to Secret %s, which is neither rendered nor given", kind, o.Metadata.Name, e.Name, ref.Name)
					}
				}
				if slices.Contains([]string{"controlplane", "dataplane", "migrate"}, comp) {
					checkMetamcpContainer(t, kind+" "+o.Metadata.Name, c)
				}
			}
		}
	}

	dp, ok := pods["dataplane"]
	if !ok {
		t.Fatal("no data plane Deployment")
	}
	checkDataPlane(t, dp)
	cp, ok := pods["controlplane"]
	if !ok {
		t.Fatal("no control plane Deployment")
	}
	cc := cp.Spec.Containers[0]
	listen := portOf(t, flagArg(cc.Args, "listen"))
	for name, p := range map[string]*probe{"readiness": cc.ReadinessProbe, "liveness": cc.LivenessProbe} {
		if p == nil || p.GRPC == nil || fmt.Sprint(p.GRPC.Port) != listen {
			t.Errorf("control plane: the %s probe is not the gRPC health check on --listen's port %s: %+v", name, listen, p)
		}
	}

	// Services select pods that exist, on ports those pods name.
	for _, o := range byKind["Service"] {
		var spec struct {
			Selector map[string]string `json:"selector"`
			Ports    []struct {
				TargetPort any `json:"targetPort"`
			} `json:"ports"`
		}
		if err := json.Unmarshal(o.Spec, &spec); err != nil {
			t.Fatal(err)
		}
		pt, ok := pods[spec.Selector["app.kubernetes.io/component"]]
		if !ok {
			t.Errorf("Service %s selects no pod of the chart", o.Metadata.Name)
			continue
		}
		for _, p := range spec.Ports {
			found := false
			for _, c := range pt.Spec.Containers {
				for _, cp := range c.Ports {
					if fmt.Sprint(p.TargetPort) == cp.Name || fmt.Sprint(p.TargetPort) == fmt.Sprint(cp.ContainerPort) {
						found = true
					}
				}
			}
			if !found {
				t.Errorf("Service %s targets port %v, which its pods do not open", o.Metadata.Name, p.TargetPort)
			}
		}
	}
	for _, o := range byKind["HorizontalPodAutoscaler"] {
		var spec struct {
			ScaleTargetRef struct{ Kind, Name string } `json:"scaleTargetRef"`
		}
		_ = json.Unmarshal(o.Spec, &spec)
		if spec.ScaleTargetRef.Kind != "Deployment" || !strings.HasSuffix(spec.ScaleTargetRef.Name, "-dataplane") {
			t.Errorf("the HPA scales %+v, not the data plane Deployment", spec.ScaleTargetRef)
		}
	}
	for _, o := range byKind["PodDisruptionBudget"] {
		var spec struct {
			Selector struct {
				MatchLabels map[string]string `json:"matchLabels"`
			} `json:"selector"`
		}
		_ = json.Unmarshal(o.Spec, &spec)
		if spec.Selector.MatchLabels["app.kubernetes.io/component"] != "dataplane" {
			t.Errorf("the PodDisruptionBudget selects %v, not the data planes", spec.Selector.MatchLabels)
		}
	}
	for _, o := range byKind["Ingress"] {
		var spec struct {
			Rules []struct {
				Host string `json:"host"`
				HTTP struct {
					Paths []struct {
						Path    string `json:"path"`
						Backend struct {
							Service struct {
								Name string `json:"name"`
								Port struct {
									Name string `json:"name"`
								} `json:"port"`
							} `json:"service"`
						} `json:"backend"`
					} `json:"paths"`
				} `json:"http"`
			} `json:"rules"`
		}
		_ = json.Unmarshal(o.Spec, &spec)
		hosts := strings.Split(flagArg(dp.Spec.Containers[0].Args, "allowed-hosts"), ",")
		for _, r := range spec.Rules {
			if !slices.Contains(hosts, r.Host) {
				t.Errorf("the Ingress host %s is not among the data planes' allowed hosts %v", r.Host, hosts)
			}
			for _, p := range r.HTTP.Paths {
				svc := p.Backend.Service
				if !strings.HasSuffix(svc.Name, "-dataplane") || svc.Port.Name != "http" {
					t.Errorf("the Ingress sends %s to %s:%s, not the data planes' http port", p.Path, svc.Name, svc.Port.Name)
				}
				if p.Path == "/" || strings.HasPrefix(p.Path, "/metrics") || strings.HasPrefix(p.Path, "/readyz") {
					t.Errorf("the Ingress publishes %s", p.Path)
				}
			}
		}
	}
	for _, o := range byKind["Job"] {
		if !strings.Contains(o.Metadata.Annotations["helm.sh/hook"], "pre-upgrade") {
			t.Errorf("Job %s is not a pre-upgrade hook: %v", o.Metadata.Name, o.Metadata.Annotations)
		}
	}
	for _, o := range byKind["PrometheusRule"] {
		var spec struct {
			Groups []struct {
				Rules []struct {
					Alert, Expr string
				} `json:"rules"`
			} `json:"groups"`
		}
		_ = json.Unmarshal(o.Spec, &spec)
		n := 0
		for _, g := range spec.Groups {
			for _, r := range g.Rules {
				n++
				for _, m := range metricRef.FindAllString(r.Expr, -1) {
					if !metricNames[m] {
						t.Errorf("alert %s uses %s, which neither plane exports", r.Alert, m)
					}
				}
			}
		}
		if n == 0 {
			t.Error("the PrometheusRule has no rule")
		}
	}
}

var metricRef = regexp.MustCompile(`\bmetamcp_[a-z0-9_]+\b`)

// checkDataPlane checks the data plane's probes, ports and drain times.
func checkDataPlane(t *testing.T, pt podTemplate) {
	t.Helper()
	c := pt.Spec.Containers[0]
	if c.Args[0] != "dataplane" {
		t.Fatalf("data plane runs %v", c.Args)
	}
	listen := portOf(t, flagArg(c.Args, "listen"))
	portNames := map[string]string{}
	for _, p := range c.Ports {
		portNames[p.Name] = fmt.Sprint(p.ContainerPort)
	}
	for name, want := range map[string]struct {
		p    *probe
		path string
	}{"readiness": {c.ReadinessProbe, "/readyz"}, "liveness": {c.LivenessProbe, "/healthz"}} {
		if want.p == nil || want.p.HTTPGet == nil {
			t.Errorf("data plane: no HTTP %s probe", name)
			continue
		}
		port := fmt.Sprint(want.p.HTTPGet.Port)
		if n, ok := portNames[port]; ok {
			port = n
		}
		if want.p.HTTPGet.Path != want.path || port != listen {
			t.Errorf("data plane: the %s probe gets %s on port %s, want %s on --listen's port %s", name, want.p.HTTPGet.Path, port, want.path, listen)
		}
	}
	if m := flagArg(c.Args, "metrics-listen"); m != "" && !slices.Contains(mapValues(portNames), portOf(t, m)) {
		t.Errorf("--metrics-listen %s is not a container port (%v)", m, portNames)
	}
	grace := pt.Spec.TerminationGracePeriodSeconds
	delay, err1 := time.ParseDuration(flagArg(c.Args, "drain-delay"))
	timeout, err2 := time.ParseDuration(flagArg(c.Args, "drain-timeout"))
	if err1 != nil || err2 != nil || grace == nil {
		t.Errorf("data plane: --drain-delay, --drain-timeout or terminationGracePeriodSeconds missing (%v, %v, %v)", err1, err2, grace)
	} else if time.Duration(*grace)*time.Second <= delay+timeout {
		t.Errorf("terminationGracePeriodSeconds %d is not longer than --drain-delay %s plus --drain-timeout %s: calls in flight would be killed", *grace, delay, timeout)
	}
}

// checkMetamcpContainer checks a container of the metamcp image against the
// binary: the subcommand and flags parse, the variables set are read, and
// GOMEMLIMIT follows the memory limit.
func checkMetamcpContainer(t *testing.T, what string, c container) {
	t.Helper()
	if len(c.Args) == 0 {
		t.Errorf("%s: no args (the image's entrypoint is metamcp; give the subcommand)", what)
		return
	}
	sub := c.Args[0]
	h := helpOf(t, sub)
	env := map[string]string{}
	for _, e := range c.Env {
		switch {
		case e.Value != nil:
			env[e.Name] = *e.Value
		case e.ValueFrom != nil && e.ValueFrom.FieldRef != nil:
			env[e.Name] = "10.0.0.1"
		default:
			env[e.Name] = "x"
		}
		if strings.HasPrefix(e.Name, "METAMCP_") && !slices.Contains(h.env, e.Name) {
			t.Errorf("%s: metamcp %s does not read %s", what, sub, e.Name)
		}
	}
	// The args, with Kubernetes' $(VAR) expansion, parse: run them with
	// --help, which parses every flag (and its value) first.
	var args []string
	for _, a := range c.Args {
		args = append(args, regexp.MustCompile(`\$\(([A-Z_]+)\)`).ReplaceAllStringFunc(a, func(m string) string {
			v, ok := env[m[2:len(m)-1]]
			if !ok {
				t.Errorf("%s: %s refers to an unset variable", what, a)
			}
			return v
		}))
		if name, val, ok := strings.Cut(strings.TrimPrefix(a, "--"), "="); ok && strings.HasPrefix(a, "--") {
			if choices := h.choices[name]; choices != nil && !slices.Contains(choices, val) {
				t.Errorf("%s: --%s=%s: it takes one of %v", what, name, val, choices)
			}
		}
	}
	runMetamcp(t, append(args, "--help")...)
	var gomem *envVar
	for i := range c.Env {
		if c.Env[i].Name == "GOMEMLIMIT" {
			gomem = &c.Env[i]
		}
	}
	if gomem == nil || gomem.ValueFrom == nil || gomem.ValueFrom.ResourceFieldRef == nil || gomem.ValueFrom.ResourceFieldRef.Resource != "limits.memory" {
		t.Errorf("%s: GOMEMLIMIT is not taken from the container's memory limit", what)
	}
	if c.Resources.Limits["memory"] == nil {
		t.Errorf("%s: no memory limit (GOMEMLIMIT would be the node's memory)", what)
	}
}

type help struct {
	env     []string
	choices map[string][]string
}

var (
	helpCache  = map[string]help{}
	flagLine   = regexp.MustCompile(`^\s+(?:-\w, )?--([a-z0-9-]+)(?: \w+)?\s+(.*)$`)
	envMirror  = regexp.MustCompile(`\[\$(METAMCP_[A-Z0-9_]+)\]`)
	envInText  = regexp.MustCompile(`\bMETAMCP_[A-Z0-9_]+\b`)
	choiceText = regexp.MustCompile(`: ([a-z_]+(?:, [a-z_]+)*) or ([a-z_]+)`)
)

// helpOf reads `metamcp SUB --help`: the variables it reads (flag mirrors
// and those its text names) and the flags with a fixed set of values.
func helpOf(t *testing.T, sub string) help {
	t.Helper()
	if h, ok := helpCache[sub]; ok {
		return h
	}
	text := runMetamcp(t, sub, "--help")
	h := help{choices: map[string][]string{}}
	for _, line := range strings.Split(text, "\n") {
		m := flagLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		if e := envMirror.FindStringSubmatch(m[2]); e != nil {
			h.env = append(h.env, e[1])
		}
		if c := choiceText.FindStringSubmatch(m[2]); c != nil {
			h.choices[m[1]] = append(strings.Split(c[1], ", "), c[2])
		}
	}
	h.env = append(h.env, envInText.FindAllString(text, -1)...)
	if len(h.env) == 0 {
		t.Fatalf("metamcp %s --help names no variable:\n%s", sub, text)
	}
	helpCache[sub] = h
	return h
}

func runMetamcp(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, metamcpBin, args...)
	cmd.Env = []string{"HOME=" + t.TempDir(), "PATH=/usr/bin:/bin"}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Errorf("metamcp %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func flagArg(args []string, name string) string {
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v
		}
	}
	return ""
}

func portOf(t *testing.T, hostport string) string {
	t.Helper()
	i := strings.LastIndexByte(hostport, ':')
	if i < 0 {
		t.Fatalf("%q has no port", hostport)
	}
	return hostport[i+1:]
}

func mapValues(m map[string]string) []string {
	var vs []string
	for _, v := range m {
		vs = append(vs, v)
	}
	return vs
}

// exportedMetrics are the names of the metrics both planes export.
func exportedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	names := metricnames.Exported()
	if len(names) < 20 {
		t.Fatalf("only %d metrics described", len(names))
	}
	return names
}
