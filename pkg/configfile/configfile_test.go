package configfile

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/pkg/canonical"
	"github.com/metamcp/metamcp/pkg/snapshot"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

func srv(s *metamcpv1.Server) *metamcpv1.Resource {
	return &metamcpv1.Resource{Kind: &metamcpv1.Resource_Server{Server: s}}
}

func stdioServer(name, command string) *metamcpv1.Resource {
	return srv(&metamcpv1.Server{Name: name, Transport: &metamcpv1.Server_Stdio{Stdio: &metamcpv1.StdioTransport{Command: command}}})
}

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []*metamcpv1.Resource
	}{
		{"empty input", "", nil},
		{"only comments and separators", "# nothing\n---\n\n---\n# still nothing\n", nil},
		{"one document", "kind: Server\nname: a\nstdio: {command: x}\n", []*metamcpv1.Resource{stdioServer("a", "x")}},
		{"leading separator and apiVersion", "---\napiVersion: metamcp/v1\nkind: Server\nname: a\nstdio: {command: x}\n",
			[]*metamcpv1.Resource{stdioServer("a", "x")}},
		{"several documents, empty ones skipped", "kind: Server\nname: a\nstdio: {command: x}\n---\n---\n# c\n---\r\nkind: Server\r\nname: b\r\nstdio: {command: z}\r\n",
			[]*metamcpv1.Resource{stdioServer("a", "x"), stdioServer("b", "z")}},
		{"content on the separator line", "--- {kind: Server, name: a, stdio: {command: x}}\n--- # comment\nkind: Server\nname: b\nstdio: {command: z}\n",
			[]*metamcpv1.Resource{stdioServer("a", "x"), stdioServer("b", "z")}},
		{"document end markers", "kind: Server\nname: a\nstdio: {command: x}\n...\n---\nkind: Server\nname: b\nstdio: {command: z}\n...\n",
			[]*metamcpv1.Resource{stdioServer("a", "x"), stdioServer("b", "z")}},
		{"a dashes line inside a block scalar is content", "kind: Server\nname: a\ndescription: |\n  ---- not a separator\nstdio: {command: x}\n",
			[]*metamcpv1.Resource{srv(&metamcpv1.Server{Name: "a", Description: "---- not a separator\n", Transport: &metamcpv1.Server_Stdio{Stdio: &metamcpv1.StdioTransport{Command: "x"}}})}},
		{"JSON document", `{"kind": "Server", "name": "a", "stdio": {"command": "x"}}`, []*metamcpv1.Resource{stdioServer("a", "x")}},
		{"JSON list", "[{\"kind\": \"Server\", \"name\": \"a\", \"stdio\": {\"command\": \"x\"}},\n\t{\"kind\": \"Server\", \"name\": \"b\", \"stdio\": {\"command\": \"z\"}}]",
			[]*metamcpv1.Resource{stdioServer("a", "x"), stdioServer("b", "z")}},
		{"YAML list in a document", "- {kind: Server, name: a, stdio: {command: x}}\n- {kind: Server, name: b, stdio: {command: z}}\n",
			[]*metamcpv1.Resource{stdioServer("a", "x"), stdioServer("b", "z")}},
		{"snake_case names, secrets, Go durations, short enums", `
kind: Server
name: gh
streamable_http:
  url: https://x.example.com/mcp
  headers:
    Authorization: {secret: true, value: "Bearer abc"}
  bearer_token: {secret: true}
session_mode: per-client
timeouts: {call: 1m30s, list: "2s", initialize: 500ms}
limits: {max_processes: 3, idleTtl: 1h}
`, []*metamcpv1.Resource{srv(&metamcpv1.Server{
			Name: "gh",
			Transport: &metamcpv1.Server_StreamableHttp{StreamableHttp: &metamcpv1.HTTPTransport{
				Url:         "https://x.example.com/mcp",
				Headers:     map[string]*metamcpv1.Value{"Authorization": {Secret: true, Value: "Bearer abc"}},
				BearerToken: &metamcpv1.Value{Secret: true},
			}},
			SessionMode: metamcpv1.SessionMode_SESSION_MODE_PER_CLIENT,
			Timeouts: &metamcpv1.Timeouts{
				Call: durationpb.New(90 * time.Second), List: durationpb.New(2 * time.Second), Initialize: durationpb.New(500 * time.Millisecond),
			},
			Limits: &metamcpv1.Limits{MaxProcesses: 3, IdleTtl: durationpb.New(time.Hour)},
		})}},
		{"output-only fields are dropped", `
kind: Server
name: a
revision: 7
createTime: "2026-01-02T03:04:05Z"
update_time: "2026-01-02T03:04:05Z"
stdio:
  command: x
  env:
    T: {secret: true, set: true, sealed: "AAEC"}
`, []*metamcpv1.Resource{srv(&metamcpv1.Server{Name: "a", Transport: &metamcpv1.Server_Stdio{Stdio: &metamcpv1.StdioTransport{
			Command: "x", Env: map[string]*metamcpv1.Value{"T": {Secret: true}},
		}}})}},
		{"namespace with empty and unset prefix", `
kind: Namespace
name: dev
members:
- server: a
  prefix: ""
- server: b
- server: c
  prefix: cc
  toolOverrides:
    t: {name: u, annotations: {readOnlyHint: true}}
`, []*metamcpv1.Resource{{Kind: &metamcpv1.Resource_Namespace{Namespace: &metamcpv1.Namespace{
			Name: "dev",
			Members: []*metamcpv1.NamespaceMember{
				{Server: "a", Prefix: proto.String("")},
				{Server: "b"},
				{Server: "c", Prefix: proto.String("cc"), ToolOverrides: map[string]*metamcpv1.ToolOverride{
					"t": {Name: "u", Annotations: &metamcpv1.ToolAnnotations{ReadOnlyHint: proto.Bool(true)}},
				}},
			},
		}}}}},
		{"endpoint and rate limit", `
kind: Endpoint
name: team
namespace: dev
rateLimits: [slow]
auth: {anonymous: true}
---
kind: RateLimitPolicy
name: slow
rate: 1
burst: "2"
period: 1m
key: CLIENT_IP
onRedisFailure: RATE_LIMIT_FAILURE_MODE_CLOSED
`, []*metamcpv1.Resource{
			{Kind: &metamcpv1.Resource_Endpoint{Endpoint: &metamcpv1.Endpoint{
				Name: "team", Namespace: "dev", RateLimits: []string{"slow"}, Auth: &metamcpv1.EndpointAuth{Anonymous: true},
			}}},
			{Kind: &metamcpv1.Resource_RateLimit{RateLimit: &metamcpv1.RateLimitPolicy{
				Name: "slow", Rate: 1, Burst: proto.Int64(2), Period: durationpb.New(time.Minute),
				Key: metamcpv1.RateLimitKey_RATE_LIMIT_KEY_CLIENT_IP, OnRedisFailure: metamcpv1.RateLimitFailureMode_RATE_LIMIT_FAILURE_MODE_CLOSED,
			}}},
		}},
		{"byte order mark", "\xef\xbb\xbfkind: Server\nname: a\nstdio: {command: x}\n", []*metamcpv1.Resource{stdioServer("a", "x")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(strings.NewReader(tt.in))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %d resources, want %d: %v", len(got), len(tt.want), got)
			}
			for i := range got {
				if !proto.Equal(got[i], tt.want[i]) {
					t.Errorf("resource %d:\n got %v\nwant %v", i+1, got[i], tt.want[i])
				}
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string // each must appear in the error
	}{
		{"unknown field", "kind: Server\nname: a\nstdio: {command: x}\n---\nkind: Server\nname: github\nstdio: {comand: npx}\n",
			[]string{`document 2 (Server "github"): stdio: unknown field "comand" (did you mean "command"?)`}},
		{"unknown top-level field", "kind: Endpoint\nname: e\nnamespce: dev\n",
			[]string{`document 1 (Endpoint "e"): unknown field "namespce" (did you mean "namespace"?)`}},
		{"every unknown field is listed", "kind: Server\nname: a\nfoo: 1\nstdio: {command: x, bar: 2}\n",
			[]string{`unknown field "foo"`, `stdio: unknown field "bar"`}},
		{"unknown field in a map value", "kind: Server\nname: a\nstdio: {command: x, env: {K: {vaule: v}}}\n",
			[]string{`stdio.env["K"]: unknown field "vaule" (did you mean "value"?)`}},
		{"unknown field in a list item", "kind: Namespace\nname: n\nmembers: [{server: a, prefx: b}]\n",
			[]string{`members[0]: unknown field "prefx" (did you mean "prefix"?)`}},
		{"missing kind", "name: a\n", []string{"document 1: kind is required: one of Server, Namespace, Endpoint, RateLimitPolicy"}},
		{"kind not a string", "kind: [a]\nname: a\n", []string{"kind must be a string"}},
		{"unknown kind", "kind: Sever\nname: a\n", []string{`document 1 (Sever "a"): unknown kind "Sever"; want one of Server`}},
		{"kind in the wrong case", "kind: server\nname: a\n", []string{`(did you mean Server?)`}},
		{"api keys are not config", "kind: ApiKey\nname: a\n", []string{"API keys and tokens are not config-file resources"}},
		{"wrong apiVersion", "apiVersion: metamcp/v2\nkind: Server\nname: a\n", []string{`apiVersion "metamcp/v2" is not supported: use metamcp/v1`}},
		{"not a mapping", "just text\n", []string{"document 1: want a resource (a mapping with kind, name, ...), got a string"}},
		{"YAML syntax, line in the file", "kind: Server\nname: a\nstdio: {command: x}\n---\nkind: Server\nname: b\n  stdio: x: y\n",
			[]string{"document 2: invalid YAML: line 7", "mapping values are not allowed"}},
		{"duplicate key", "kind: Server\nname: a\nname: b\n", []string{"document 1: invalid YAML", `line 3`, `"name" already set`}},
		{"tab indentation", "kind: Server\nname: a\nstdio:\n\tcommand: x\n", []string{"document 1: invalid YAML", "line 4"}},
		{"wrong type from protojson", "kind: Server\nname: a\nstdio: {command: x, args: x}\n", []string{`document 1 (Server "a"): stdio.args: want a list, got a string`}},
		{"mapping expected", "kind: Server\nname: a\nstdio: [x]\n", []string{`stdio: want a mapping, got a list`}},
		{"boolean expected", "kind: Endpoint\nname: a\nauth: {anonymous: \"yes\"}\n", []string{`auth.anonymous: want true or false, got "yes"`}},
		{"number expected", "kind: RateLimitPolicy\nname: a\nrate: lots\n", []string{`rate: want a number, got "lots"`}},
		{"number out of range", "kind: Server\nname: a\nlimits: {maxProcesses: 99999999999}\n", []string{`document 1 (Server "a"): invalid value for int32 field maxProcesses`}},
		{"bad duration", "kind: Server\nname: a\nstdio: {command: x}\ntimeouts: {call: 60}\n",
			[]string{`timeouts.call: 60 is not a duration: write it like "30s"`}},
		{"bad duration text", "kind: RateLimitPolicy\nname: a\nrate: 1\nperiod: one minute\n",
			[]string{`period: "one minute" is not a duration`}},
		{"bad enum", "kind: Server\nname: a\nsessionMode: sometimes\n",
			[]string{`sessionMode: unknown value "sometimes": use shared or per_client`}},
		{"number where text is expected", "kind: Server\nname: a\nstdio: {command: x, env: {PORT: {value: 8080}}}\n",
			[]string{`stdio.env["PORT"].value: 8080 is a number`, "quote"}},
		{"boolean where text is expected", "kind: Server\nname: a\nstdio: {command: x, args: [--flag, yes]}\n",
			[]string{`stdio.args[1]: true is a boolean`}},
		{"second resource of a JSON list", `[{"kind": "Server", "name": "a"}, {"kind": "Nope"}]`, []string{"document 1 item 2 (Nope)"}},
		{"broken JSON", "{\"kind\": \"Server\",\n \"name\": \"a\"", []string{"document 1: invalid JSON at line 2, column 12"}},
		{"YAML flow mapping is not JSON", "{kind: Server, name: a, stdio: {command: [}}", []string{"document 1: invalid"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(strings.NewReader(tt.in))
			if err == nil {
				t.Fatal("Parse succeeded, want an error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\ndoes not contain %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "proto:") {
				t.Errorf("error %q leaks protojson's prefix", err)
			}
		})
	}
}

func TestMarshalGolden(t *testing.T) {
	var buf bytes.Buffer
	if err := Marshal(&buf, sampleResources()); err != nil {
		t.Fatalf("Marshal: %v", err)
	}
	golden := filepath.Join("testdata", "export.golden.yaml")
	if *update {
		if err := os.WriteFile(golden, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("read golden file (run go test -update to create it): %v", err)
	}
	if got := buf.String(); got != string(want) {
		t.Errorf("Marshal output differs from %s (run go test -update if the change is intended):\n%s", golden, got)
	}
	for _, secret := range []string{"ghp_secret", "lin_secret", "revision", "createTime", "updateTime", "set:"} {
		if strings.Contains(buf.String(), secret) {
			t.Errorf("Marshal output contains %q", secret)
		}
	}
}

// withoutSecretsAndOutputOnly is what survives a Marshal: no output-only
// field and no secret value.
func withoutSecretsAndOutputOnly(in []*metamcpv1.Resource) []*metamcpv1.Resource {
	out := make([]*metamcpv1.Resource, len(in))
	for i, r := range in {
		r = proto.Clone(r).(*metamcpv1.Resource)
		ClearOutputOnly(r)
		canonical.Strip(r)
		if s := r.GetServer(); s != nil {
			var values []*metamcpv1.Value
			for _, v := range s.GetStdio().GetEnv() {
				values = append(values, v)
			}
			for _, h := range []*metamcpv1.HTTPTransport{s.GetSse(), s.GetStreamableHttp()} {
				for _, v := range h.GetHeaders() {
					values = append(values, v)
				}
				if h.GetBearerToken() != nil {
					values = append(values, h.GetBearerToken())
				}
			}
			for _, v := range values {
				if v.Secret {
					v.Value = ""
				}
			}
		}
		out[i] = r
	}
	return out
}

func TestRoundTrip(t *testing.T) {
	cases := map[string][]*metamcpv1.Resource{
		"sample": sampleResources(),
		"minimal": {
			stdioServer("a", "x"),
			{Kind: &metamcpv1.Resource_Namespace{Namespace: &metamcpv1.Namespace{Name: "n"}}},
		},
		"odd values": {srv(&metamcpv1.Server{
			Name:        "odd",
			Description: "yes", // a YAML 1.1 boolean if unquoted
			Transport: &metamcpv1.Server_Stdio{Stdio: &metamcpv1.StdioTransport{
				Command: "on",
				Args:    []string{"8080", "1.10", "-", "--- ", "# not a comment", "null", "~", "a: b", "'q'", "\"dq\"", "ü", ""},
				Env:     map[string]*metamcpv1.Value{"A": {Value: "0123"}, "B": {Value: "true"}},
			}},
			Timeouts: &metamcpv1.Timeouts{Call: durationpb.New(1), List: &durationpb.Duration{Seconds: 315576000000}},
		})},
	}
	for name, in := range cases {
		t.Run(name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := Marshal(&buf, in); err != nil {
				t.Fatalf("Marshal: %v", err)
			}
			got, err := Parse(&buf)
			if err != nil {
				t.Fatalf("Parse(Marshal(x)): %v\n%s", err, buf.String())
			}
			want := withoutSecretsAndOutputOnly(in)
			if len(got) != len(want) {
				t.Fatalf("got %d resources, want %d", len(got), len(want))
			}
			for i := range got {
				if !proto.Equal(got[i], want[i]) {
					t.Errorf("resource %d:\n got %v\nwant %v\nYAML:\n%s", i+1, got[i], want[i], buf.String())
				}
			}
		})
	}
}

func TestGoldenParsesBack(t *testing.T) {
	f, err := os.Open(filepath.Join("testdata", "export.golden.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, err := Parse(f)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	want := withoutSecretsAndOutputOnly(sampleResources())
	if len(got) != len(want) {
		t.Fatalf("got %d resources, want %d", len(got), len(want))
	}
	for i := range got {
		if !proto.Equal(got[i], want[i]) {
			t.Errorf("resource %d:\n got %v\nwant %v", i+1, got[i], want[i])
		}
	}
}

func TestExampleFileIsValid(t *testing.T) {
	// testdata/example.yaml is the file the docs show: it must parse and
	// pass validation as a whole config.
	f, err := os.Open(filepath.Join("testdata", "example.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	res, err := Parse(f)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	cfg := &metamcpv1.Config{}
	for _, r := range res {
		switch k := r.Kind.(type) {
		case *metamcpv1.Resource_Server:
			cfg.Servers = append(cfg.Servers, k.Server)
		case *metamcpv1.Resource_Namespace:
			cfg.Namespaces = append(cfg.Namespaces, k.Namespace)
		case *metamcpv1.Resource_Endpoint:
			cfg.Endpoints = append(cfg.Endpoints, k.Endpoint)
		case *metamcpv1.Resource_RateLimit:
			cfg.RateLimits = append(cfg.RateLimits, k.RateLimit)
		}
	}
	if len(cfg.Servers) == 0 || len(cfg.Namespaces) == 0 || len(cfg.Endpoints) == 0 || len(cfg.RateLimits) == 0 {
		t.Fatalf("example.yaml should show every kind, got %d resources", len(res))
	}
	warnings, err := snapshot.Validate(cfg)
	if err != nil {
		t.Fatalf("Validate: %v", err)
	}
	if len(warnings) > 0 {
		t.Fatalf("warnings: %q", warnings)
	}
}

func TestMarshalErrors(t *testing.T) {
	err := Marshal(&bytes.Buffer{}, []*metamcpv1.Resource{stdioServer("a", "x"), {}})
	if err == nil || !strings.Contains(err.Error(), "resource 2 has no kind") {
		t.Fatalf("Marshal of an empty resource = %v", err)
	}
	var buf bytes.Buffer
	if err := Marshal(&buf, nil); err != nil || buf.Len() != 0 {
		t.Fatalf("Marshal(nil) = %q, %v; want nothing", buf.String(), err)
	}
}

func TestMarshalDoesNotModifyInput(t *testing.T) {
	in := sampleResources()
	before := proto.Clone(in[0])
	if err := Marshal(&bytes.Buffer{}, in); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(in[0], before) {
		t.Fatal("Marshal changed its input")
	}
}

func TestKindOf(t *testing.T) {
	tests := []struct {
		r          *metamcpv1.Resource
		kind, name string
	}{
		{stdioServer("a", "x"), "Server", "a"},
		{&metamcpv1.Resource{Kind: &metamcpv1.Resource_Namespace{Namespace: &metamcpv1.Namespace{Name: "n"}}}, "Namespace", "n"},
		{&metamcpv1.Resource{Kind: &metamcpv1.Resource_Endpoint{Endpoint: &metamcpv1.Endpoint{Name: "e"}}}, "Endpoint", "e"},
		{&metamcpv1.Resource{Kind: &metamcpv1.Resource_RateLimit{RateLimit: &metamcpv1.RateLimitPolicy{Name: "r"}}}, "RateLimitPolicy", "r"},
		{&metamcpv1.Resource{}, "", ""},
		{nil, "", ""},
	}
	for _, tt := range tests {
		if kind, name := KindOf(tt.r); kind != tt.kind || name != tt.name {
			t.Errorf("KindOf(%v) = %q, %q; want %q, %q", tt.r, kind, name, tt.kind, tt.name)
		}
	}
}

func TestFormatDuration(t *testing.T) {
	tests := []struct {
		d    *durationpb.Duration
		want string
	}{
		{durationpb.New(0), "0s"},
		{durationpb.New(45 * time.Second), "45s"},
		{durationpb.New(90 * time.Second), "1m30s"},
		{durationpb.New(time.Hour), "1h"},
		{durationpb.New(25*time.Hour + 5*time.Second), "25h5s"},
		{durationpb.New(250 * time.Millisecond), "250ms"},
		{durationpb.New(-time.Second), "-1s"},
		{&durationpb.Duration{Seconds: 315576000000}, "315576000000s"},
	}
	for _, tt := range tests {
		got := formatDuration(tt.d)
		if got != tt.want {
			t.Errorf("formatDuration(%v) = %q, want %q", tt.d, got, tt.want)
		}
	}
}
