package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/controlplane/store"
	"github.com/metamcp/metamcp/controlplane/store/postgres"
)

// putEndpointRecord writes an endpoint straight into the control plane's
// database: the admin API refuses access rules until data planes enforce
// them, and can-i must already work on them.
func putEndpointRecord(t *testing.T, cp *controlPlane, ep *metamcpv1.Endpoint) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := postgres.Open(ctx, cp.dsn, postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(ep)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.Update(ctx, func(ctx context.Context, tx store.Tx) error {
		return tx.Put(ctx, store.Record{Kind: store.KindEndpoint, Name: ep.GetName(), Data: data})
	}); err != nil {
		t.Fatal(err)
	}
}

type bearerToken string

func (b bearerToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}
func (bearerToken) RequireTransportSecurity() bool { return false }

// reportTools plays a data plane that reports the tools it listed for an
// endpoint on its sync stream, as the real one does in its Status.
func reportTools(t *testing.T, cp *controlPlane, node string, tools *metamcpv1.EndpointTools) {
	t.Helper()
	token := cp.createSyncToken(t, node)
	conn, err := grpc.NewClient(cp.addr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithPerRPCCredentials(bearerToken(token)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stream, err := metamcpv1.NewSyncServiceClient(conn).Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []*metamcpv1.SyncRequest{
		{Message: &metamcpv1.SyncRequest_Hello{Hello: &metamcpv1.Hello{NodeId: node}}},
		{Message: &metamcpv1.SyncRequest_Status{Status: &metamcpv1.Status{EndpointTools: []*metamcpv1.EndpointTools{tools}}}},
	} {
		if err := stream.Send(m); err != nil {
			t.Fatalf("sync stream: %v", err)
		}
	}
}

// no runs an mmctl auth can-i that must answer no: exit code 1, the answer
// on stdout, no error.
func no(t *testing.T, cp *controlPlane, args ...string) result {
	t.Helper()
	r := cp.mmctl(t, args...)
	if r.code != 1 || !strings.HasPrefix(r.stdout, "no: ") || strings.Contains(r.stderr, "error") {
		t.Errorf("want a \"no\" with exit code 1:\n%s", r)
	}
	return r
}

// TestAuthCanI asks `mmctl auth can-i` about callers of an endpoint with
// access rules, before and after a data plane reports its tools.
func TestAuthCanI(t *testing.T) {
	t.Parallel()
	cp := startControlPlane(t)
	cp.ok(t, "create", "server", "github", "--stdio", "npx -y @modelcontextprotocol/server-github")
	cp.ok(t, "create", "server", "fs", "--stdio", "npx -y @modelcontextprotocol/server-filesystem /srv")
	cp.ok(t, "create", "namespace", "dev", "--server", "github:gh", "--server", "fs")
	cp.ok(t, "create", "endpoint", "team", "--namespace", "dev")
	putEndpointRecord(t, cp, &metamcpv1.Endpoint{Name: "team", Namespace: "dev", AccessRules: []*metamcpv1.AccessRule{
		{Name: "eng", Groups: []string{"eng"}, Servers: []string{"fs"}},
		{Name: "bots-read-only", ApiKeys: []string{"ci"}, Tools: []string{"*"}, Condition: "tool.annotations.readOnlyHint"},
		{Name: "no-deletes", Effect: metamcpv1.AccessEffect_ACCESS_EFFECT_DENY, Tools: []string{"*delete*"}},
		{Name: "tmp", Principals: []string{"alice"}, Tools: []string{"fs__write"}, Condition: `arguments.path.startsWith("/tmp/")`},
	}})

	// describe shows the rules.
	r := cp.ok(t, "describe", "endpoint", "team")
	for _, want := range []string{"Access rules:", "eng (allow):", "groups eng -> servers fs", "no-deletes (deny):", `if arguments.path.startsWith("/tmp/")`} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("describe endpoint misses %q:\n%s", want, r.stdout)
		}
	}

	// No data plane has reported tools: the list is unknown, the rules shown.
	r = cp.ok(t, "auth", "can-i", "team", "--as", "bob", "--group", "eng")
	for _, want := range []string{`tool list of endpoint "team" is not known yet`, "RULE", "bots-read-only", "api keys ci", "tool.annotations.readOnlyHint"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("can-i before a report misses %q:\n%s", want, r.stdout)
		}
	}
	// One tool is still decided, with the exit code as the answer.
	r = cp.ok(t, "auth", "can-i", "team", "--as", "bob", "--group", "eng", "fs__read")
	if r.stdout != "yes: allowed by rule \"eng\"\n" || !strings.Contains(r.stderr, "annotations are not known") {
		t.Errorf("can-i fs__read for bob:\n%s", r)
	}
	no(t, cp, "auth", "can-i", "team", "--as", "carol", "fs__read")
	r = no(t, cp, "auth", "can-i", "team", "--as", "bob", "--group", "eng", "fs__delete")
	if r.stdout != "no: denied by rule \"no-deletes\"\n" {
		t.Errorf("can-i fs__delete for bob:\n%s", r)
	}
	cp.ok(t, "auth", "can-i", "team", "--as", "alice", "fs__write", "--arguments", `{"path": "/tmp/a"}`)
	no(t, cp, "auth", "can-i", "team", "--as", "alice", "fs__write", "--arguments", `{"path": "/etc/a"}`)
	cp.fail(t, 2, []string{"--as is required"}, "auth", "can-i", "team", "fs__read")
	cp.fail(t, 1, []string{`endpoint "nosuch" not found`}, "auth", "can-i", "nosuch", "--as", "bob")

	// A data plane reports what it listed.
	readOnly := true
	reportTools(t, cp, "dp-cani", &metamcpv1.EndpointTools{Endpoint: "team", Revision: 5, Tools: []*metamcpv1.ListedTool{
		{Name: "fs__read", Server: "fs"},
		{Name: "fs__write", Server: "fs"},
		{Name: "fs__delete", Server: "fs"},
		{Name: "gh__get_issue", Server: "github", Annotations: &metamcpv1.ToolAnnotations{ReadOnlyHint: &readOnly}},
		{Name: "gh__create_issue", Server: "github"},
	}})
	eventuallyWithin(t, 20*time.Second, "the reported tools in mmctl auth can-i", func() (bool, string) {
		r = cp.ok(t, "auth", "can-i", "team", "--as", "ci-bot", "--api-key", "ci")
		return strings.Contains(r.stdout, "ALLOWED"), r.String()
	})
	rows := map[string]string{}
	for _, l := range lines(r.stdout)[1:] {
		if f := strings.Fields(l); len(f) >= 4 && strings.Contains(f[0], "__") {
			rows[f[0]] = strings.Join(f[2:], " ")
		}
	}
	want := map[string]string{
		"fs__read":         "no (no rule allows it)",
		"fs__write":        "no (no rule allows it)",
		"fs__delete":       "no no-deletes (deny)",
		"gh__get_issue":    "yes bots-read-only",
		"gh__create_issue": "no (no rule allows it)",
	}
	for tool, w := range want {
		if rows[tool] != w {
			t.Errorf("ci-bot on %s: %q, want %q\n%s", tool, rows[tool], w, r.stdout)
		}
	}
	if !strings.Contains(r.stdout, "listed by data plane dp-cani at revision 5") {
		t.Errorf("can-i does not say where the list comes from:\n%s", r.stdout)
	}
	r = cp.ok(t, "auth", "can-i", "team", "--as", "alice")
	if !strings.Contains(r.stdout, "yes*") || !strings.Contains(r.stdout, "decided on its arguments") {
		t.Errorf("alice's conditional tool:\n%s", r.stdout)
	}
	// Now the tool is known, its annotations decide.
	r = cp.ok(t, "auth", "can-i", "team", "--as", "ci-bot", "--api-key", "ci", "gh__get_issue")
	if r.stdout != "yes: allowed by rule \"bots-read-only\"\n" || r.stderr != "" {
		t.Errorf("can-i gh__get_issue for ci-bot:\n%s", r)
	}
}
