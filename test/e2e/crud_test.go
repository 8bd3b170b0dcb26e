package e2e

import (
	"encoding/json"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestCreateGetDescribeDelete creates each kind with flags, reads it back in
// every format, and deletes it, as an admin would from a terminal.
func TestCreateGetDescribeDelete(t *testing.T) {
	t.Parallel()
	cp := startControlPlane(t)

	if rev := cp.revision(t); rev != "0" {
		t.Fatalf("a fresh control plane is at revision %s, want 0", rev)
	}
	r := cp.mmctl(t, "get", "servers")
	if r.code != 0 || r.stdout != "" || r.stderr != "No servers found.\n" {
		t.Errorf("empty list:\n%s", r)
	}

	// Each create is one revision and says so.
	creates := []struct {
		stdin string
		args  []string
		want  string
	}{
		{args: []string{"create", "server", "github", "--stdio", "npx -y @modelcontextprotocol/server-github",
			"--env", "LOG_LEVEL=debug", "--secret-env", "GITHUB_PERSONAL_ACCESS_TOKEN=ghp_crudExample0000", "--call-timeout", "90s",
			"--init-timeout", "20s", "--max-processes", "4", "--idle-ttl", "15m", "--description", "GitHub tools"},
			want: "server/github created (revision 1)\n"},
		{stdin: "sntrys_crudExampleBearer\n", args: []string{"create", "srv", "sentry", "--url", "https://mcp.sentry.dev/mcp",
			"--bearer-token-stdin", "--header", "X-Org=acme", "--session-mode", "per_client"},
			want: "server/sentry created (revision 2)\n"},
		{args: []string{"create", "server", "legacy", "--url", "http://127.0.0.1:9/sse", "--transport", "sse",
			"--secret-header", "X-Api-Key=legacyCrudKey"},
			want: "server/legacy created (revision 3)\n"},
		{args: []string{"create", "ratelimit", "per-user", "--rate", "60", "--per", "1m", "--burst", "10", "--key", "principal",
			"--on-redis-failure", "local"},
			want: "ratelimit/per-user created (revision 4)\n"},
		{args: []string{"create", "rl", "slow-pages", "--rate", "1", "--per", "1m", "--server", "sentry", "--tool", "sentry__create_*",
			"--key", "api_key", "--on-redis-failure", "closed"},
			want: "ratelimit/slow-pages created (revision 5)\n"},
		{args: []string{"create", "namespace", "dev", "--server", "github:gh", "--server", "sentry", "--server", "legacy:old",
			"--description", "for developers"},
			want: "namespace/dev created (revision 6)\n"},
		{args: []string{"create", "ep", "dev", "--namespace", "dev", "--rate-limit", "per-user", "--rate-limit", "slow-pages"},
			want: "endpoint/dev created (revision 7)\n"},
	}
	for _, c := range creates {
		r := cp.okIn(t, c.stdin, c.args...)
		if r.stdout != c.want {
			t.Errorf("stdout = %q, want %q\n%s", r.stdout, c.want, r)
		}
	}
	if rev := cp.revision(t); rev != "7" {
		t.Errorf("revision after 7 creates = %s", rev)
	}

	// Tables, under every spelling of each kind.
	tables := []struct {
		spellings []string
		header    string
		rows      []string
	}{
		{[]string{"servers", "server", "srv"}, "NAME TRANSPORT TARGET SESSION-MODE REVISION AGE", []string{
			"github stdio npx -y @modelcontextprotocol/server-github shared 1",
			"legacy sse http://127.0.0.1:9/sse shared 3",
			"sentry streamable_http https://mcp.sentry.dev/mcp per_client 2",
		}},
		{[]string{"namespaces", "namespace", "ns"}, "NAME SERVERS SEPARATOR REVISION AGE", []string{
			"dev github:gh,sentry,legacy:old __ 6",
		}},
		{[]string{"endpoints", "endpoint", "ep"}, "NAME NAMESPACE AUTH RATE-LIMITS REVISION AGE", []string{
			"dev dev api-key per-user,slow-pages 7",
		}},
		{[]string{"ratelimits", "ratelimit", "ratelimitpolicy", "rl"}, "NAME RATE BURST KEY SERVER TOOL ON-REDIS-FAILURE REVISION AGE", []string{
			"per-user 60/1m 10 principal - - local 4",
			"slow-pages 1/1m 1 api_key sentry sentry__create_* closed 5",
		}},
	}
	for _, tt := range tables {
		for _, spelling := range tt.spellings {
			r := cp.ok(t, "get", spelling)
			got := lines(r.stdout)
			if len(got) != len(tt.rows)+1 || strings.Join(strings.Fields(got[0]), " ") != tt.header {
				t.Errorf("get %s: want header %q and %d rows:\n%s", spelling, tt.header, len(tt.rows), r)
				continue
			}
			for i, want := range tt.rows {
				// Rows start with the expected cells; AGE varies.
				if row := strings.Join(strings.Fields(got[i+1]), " "); !strings.HasPrefix(row, want+" ") {
					t.Errorf("get %s row %d = %q, want it to start with %q", spelling, i+1, row, want)
				}
			}
			// Columns are aligned: every line has its second column at the
			// same offset.
			col := strings.Index(got[0], strings.Fields(got[0])[1])
			for _, l := range got[1:] {
				if len(l) <= col || l[col-1] != ' ' || l[col] == ' ' {
					t.Errorf("get %s: column 2 not aligned at %d:\n%s", spelling, col, r.stdout)
					break
				}
			}
		}
	}

	// One item, JSON: protojson of the resource; secrets never carry a value.
	var srv struct {
		Name  string `json:"name"`
		Stdio struct {
			Command string   `json:"command"`
			Args    []string `json:"args"`
			Env     map[string]struct {
				Value  string `json:"value"`
				Secret bool   `json:"secret"`
				Set    bool   `json:"set"`
			} `json:"env"`
		} `json:"stdio"`
		Timeouts struct {
			Call string `json:"call"`
		} `json:"timeouts"`
		Revision string `json:"revision"`
	}
	r = cp.ok(t, "get", "server", "github", "-o", "json")
	if err := json.Unmarshal([]byte(r.stdout), &srv); err != nil {
		t.Fatalf("get server -o json is not JSON: %v\n%s", err, r)
	}
	tok := srv.Stdio.Env["GITHUB_PERSONAL_ACCESS_TOKEN"]
	if srv.Name != "github" || srv.Stdio.Command != "npx" || len(srv.Stdio.Args) != 2 || srv.Timeouts.Call != "90s" || srv.Revision != "1" ||
		srv.Stdio.Env["LOG_LEVEL"].Value != "debug" || !tok.Secret || !tok.Set || tok.Value != "" {
		t.Errorf("get server github -o json: %+v\n%s", srv, r.stdout)
	}

	// Lists in JSON.
	var list struct {
		Servers []json.RawMessage `json:"servers"`
	}
	r = cp.ok(t, "get", "servers", "-o", "json")
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil || len(list.Servers) != 3 {
		t.Errorf("get servers -o json: %v\n%s", err, r)
	}

	// YAML is the config-file form: what apply reads, without output-only
	// fields and without secret values.
	r = cp.ok(t, "get", "server", "github", "-o", "yaml")
	for _, want := range []string{"apiVersion: metamcp/v1\n", "kind: Server\n", "name: github\n", "command: npx\n",
		"GITHUB_PERSONAL_ACCESS_TOKEN:\n      secret: true\n", "call: 1m30s\n"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("get server github -o yaml lacks %q:\n%s", want, r.stdout)
		}
	}
	r = cp.ok(t, "get", "ns", "-o", "yaml")
	if !strings.Contains(r.stdout, "kind: Namespace\n") || !strings.Contains(r.stdout, "prefix: gh\n") {
		t.Errorf("get ns -o yaml:\n%s", r.stdout)
	}
	r = cp.ok(t, "get", "endpoints", "-o", "yaml")
	if !strings.Contains(r.stdout, "kind: Endpoint\n") || !strings.Contains(r.stdout, "- slow-pages\n") {
		t.Errorf("get endpoints -o yaml:\n%s", r.stdout)
	}

	// Describe shows every field, secrets as <set>.
	describes := map[string][]string{
		"server github": {"Name:", "github", "Description:", "GitHub tools", "Transport:", "stdio", "Command:", "npx",
			"Args:", "-y @modelcontextprotocol/server-github", "GITHUB_PERSONAL_ACCESS_TOKEN=<set>", "LOG_LEVEL=debug",
			"Session mode:", "shared", "Initialize:", "20s", "Call:", "1m30s", "Max processes:", "4", "Idle TTL:", "15m", "Revision:", "1"},
		"server sentry": {"streamable_http", "https://mcp.sentry.dev/mcp", "X-Org=acme", "Bearer token:", "<set>", "per_client"},
		"server legacy": {"sse", "X-Api-Key=<set>"},
		"namespace dev": {"Servers:", "github:", "Prefix:", "gh", "sentry:", "legacy:", "old", "for developers", "Separator:", "__"},
		"endpoint dev":  {"Namespace:", "dev", "/metamcp/dev/mcp", "API keys:", "Rate limits:", "per-user, slow-pages", "Streamable HTTP:", "on"},
		"rl slow-pages": {"Rate:", "1/1m", "Key:", "api_key", "Server:", "sentry", "Tool:", "sentry__create_*", "On Redis failure:", "closed"},
	}
	for target, wants := range describes {
		r := cp.ok(t, append([]string{"describe"}, strings.Fields(target)...)...)
		for _, w := range wants {
			if !strings.Contains(r.stdout, w) {
				t.Errorf("describe %s lacks %q:\n%s", target, w, r.stdout)
			}
		}
		for _, leak := range []string{"ghp_crudExample0000", "sntrys_crudExampleBearer", "legacyCrudKey"} {
			if strings.Contains(r.stdout, leak) {
				t.Errorf("describe %s shows a secret:\n%s", target, r.stdout)
			}
		}
	}

	// API keys: shown once, at creation; never again.
	r = cp.ok(t, "create", "apikey", "alice", "--endpoint", "dev", "--principal", "alice@example.com", "--expires", "30d")
	m := regexp.MustCompile(`(?m)^key: (mm_[A-Za-z0-9]+)$`).FindStringSubmatch(r.stdout)
	if m == nil || !strings.HasPrefix(r.stdout, "apikey/alice created (revision 8)\n") || !strings.Contains(r.stdout, "not shown again") {
		t.Fatalf("create apikey output:\n%s", r)
	}
	key := m[1]
	r = cp.ok(t, "create", "key", "ci-bot", "--endpoint", "*", "-o", "json")
	var created struct {
		ApiKey struct {
			Name      string   `json:"name"`
			Endpoints []string `json:"endpoints"`
			KeyPrefix string   `json:"keyPrefix"`
		} `json:"apiKey"`
		Key string `json:"key"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &created); err != nil || created.ApiKey.Name != "ci-bot" ||
		!strings.HasPrefix(created.Key, "mm_") || !strings.HasPrefix(created.Key, created.ApiKey.KeyPrefix) {
		t.Fatalf("create apikey -o json: %v\n%s", err, r)
	}
	for _, args := range [][]string{
		{"get", "apikeys"}, {"get", "apikeys", "-o", "json"}, {"get", "apikeys", "-o", "yaml"},
		{"get", "apikey", "alice"}, {"get", "apikey", "alice", "-o", "json"}, {"describe", "apikey", "alice"},
		{"get", "apikey", "ci-bot", "-o", "yaml"}, {"describe", "key", "ci-bot"},
	} {
		r := cp.ok(t, args...)
		for _, k := range []string{key, created.Key} {
			if strings.Contains(r.stdout, k) || strings.Contains(r.stdout, k[len(k)-12:]) {
				t.Errorf("mmctl %s shows an API key again:\n%s", strings.Join(args, " "), r.stdout)
			}
		}
	}
	r = cp.ok(t, "get", "apikeys")
	if !regexp.MustCompile(`(?m)^alice\s+alice@example\.com\s+dev\s+mm_\S+\.\.\.\s+20\d\d-\S+\s+active\s`).MatchString(r.stdout) ||
		!regexp.MustCompile(`(?m)^ci-bot\s+ci-bot\s+\*\s+mm_\S+\.\.\.\s+never\s+active\s`).MatchString(r.stdout) {
		t.Errorf("get apikeys:\n%s", r.stdout)
	}

	// Revoke keeps the record and marks it.
	r = cp.ok(t, "revoke", "apikey", "alice")
	if r.stdout != "apikey/alice revoked\n" {
		t.Errorf("revoke apikey:\n%s", r)
	}
	if r := cp.ok(t, "describe", "apikey", "alice"); !strings.Contains(r.stdout, "revoked") || !strings.Contains(r.stdout, "Revoked:") {
		t.Errorf("describe a revoked key:\n%s", r.stdout)
	}

	// Tokens: shown once; revocable.
	r = cp.ok(t, "create", "token", "dp-eu-1", "--scope", "sync")
	tm := regexp.MustCompile(`(?m)^token: (mmt_[A-Za-z0-9]+)$`).FindStringSubmatch(r.stdout)
	if tm == nil || !strings.Contains(r.stdout, "not shown again") {
		t.Fatalf("create token:\n%s", r)
	}
	for _, args := range [][]string{{"get", "tokens"}, {"get", "tokens", "-o", "json"}, {"describe", "token", "dp-eu-1"}, {"get", "token", "dp-eu-1", "-o", "yaml"}} {
		if r := cp.ok(t, args...); strings.Contains(r.stdout, tm[1]) {
			t.Errorf("mmctl %s shows the token again:\n%s", strings.Join(args, " "), r.stdout)
		}
	}
	if r := cp.ok(t, "get", "tokens"); !regexp.MustCompile(`(?m)^dp-eu-1\s+sync\s+mmt_\S+\.\.\.\s+never\s+active\s`).MatchString(r.stdout) {
		t.Errorf("get tokens:\n%s", r.stdout)
	}
	cp.ok(t, "revoke", "token", "dp-eu-1")
	if r := cp.ok(t, "get", "token", "dp-eu-1"); !strings.Contains(r.stdout, "revoked") {
		t.Errorf("get a revoked token:\n%s", r.stdout)
	}

	// No data plane has connected.
	if r := cp.ok(t, "get", "dp"); r.stderr != "No dataplanes found.\n" {
		t.Errorf("get dp:\n%s", r)
	}

	// Version: the client's and the server's revision.
	r = cp.ok(t, "version")
	if !strings.HasPrefix(r.stdout, "mmctl ") || !strings.Contains(r.stdout, "config revision") {
		t.Errorf("version:\n%s", r)
	}

	// Delete in dependency order; each is one revision.
	rev, _ := strconv.Atoi(cp.revision(t))
	for _, target := range [][]string{{"endpoint", "dev"}, {"namespace", "dev"}, {"server", "github"}, {"rl", "slow-pages"}, {"apikey", "ci-bot"}} {
		rev++
		r := cp.ok(t, "delete", target[0], target[1])
		kindName := map[string]string{"rl": "ratelimit"}[target[0]]
		if kindName == "" {
			kindName = target[0]
		}
		if want := kindName + "/" + target[1] + " deleted (revision " + strconv.Itoa(rev) + ")\n"; r.stdout != want {
			t.Errorf("delete: stdout %q, want %q", r.stdout, want)
		}
	}
	cp.fail(t, 1, []string{`server "github" not found`}, "get", "server", "github")
	cp.fail(t, 1, []string{`server "github" not found`}, "describe", "server", "github")
	cp.fail(t, 1, []string{`server "github" not found`}, "delete", "server", "github")
	if r := cp.ok(t, "get", "servers"); len(lines(r.stdout)) != 3 {
		t.Errorf("get servers after deleting one:\n%s", r.stdout)
	}
}
