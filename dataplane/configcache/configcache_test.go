package configcache

import (
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/pkg/snapshot"
)

func snap(t *testing.T, rev int64, servers ...*metamcpv1.Server) *metamcpv1.Snapshot {
	t.Helper()
	cfg := &metamcpv1.Config{Servers: servers}
	hash, err := snapshot.ConfigHash(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &metamcpv1.Snapshot{Revision: rev, Hash: hash, Nonce: "n", Config: cfg}
}

func stdio(name, cmd string) *metamcpv1.Server {
	return &metamcpv1.Server{Name: name, Transport: &metamcpv1.Server_Stdio{Stdio: &metamcpv1.StdioTransport{Command: cmd}}}
}

func TestApplySwapsPersistsAndRefuses(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "snapshot.pb")
	c := New(path, nil)
	if c.Ready() || c.Current() != nil {
		t.Fatal("a new cache is ready")
	}
	changed := c.Changed()
	if res, err := c.Offer(snap(t, 3, stdio("fs", "npx"))); err != nil || res.Outcome != metamcpv1.ApplyOutcome_APPLY_OUTCOME_APPLIED {
		t.Fatal(res, err)
	}
	select {
	case <-changed:
	default:
		t.Error("Changed did not fire on a swap")
	}
	if rev, _ := c.Revision(); rev != 3 || c.Current().Servers["fs"] == nil {
		t.Fatalf("serving %d", rev)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("cache file: %v %v", fi, err)
	}

	for name, bad := range map[string]*metamcpv1.Snapshot{
		"invalid config": func() *metamcpv1.Snapshot {
			s := snap(t, 4, stdio("fs", "npx"))
			s.Config.Endpoints = []*metamcpv1.Endpoint{{Name: "dev", Namespace: "missing"}}
			s.Hash, _ = snapshot.ConfigHash(s.Config)
			return s
		}(),
		"no config": {Revision: 4},
		"hash mismatch": func() *metamcpv1.Snapshot {
			s := snap(t, 4, stdio("fs", "npx"))
			s.Hash = strings.Repeat("0", 64)
			return s
		}(),
	} {
		if _, err := c.Offer(bad); err == nil {
			t.Errorf("%s: applied", name)
		}
		if rev, _ := c.Revision(); rev != 3 {
			t.Errorf("%s: serving %d after a refused snapshot, want 3", name, rev)
		}
	}

	// A restart serves what was persisted, nonce dropped.
	again := New(path, nil)
	if ok, err := again.LoadFile(); !ok || err != nil {
		t.Fatalf("LoadFile = %v, %v", ok, err)
	}
	if rev, _ := again.Revision(); rev != 3 {
		t.Fatalf("reloaded revision %d", rev)
	}
	b, _ := os.ReadFile(path)
	var onDisk metamcpv1.Snapshot
	if err := proto.Unmarshal(b, &onDisk); err != nil || onDisk.GetNonce() != "" {
		t.Errorf("persisted snapshot: nonce %q, %v", onDisk.GetNonce(), err)
	}
}

func TestLoadFile(t *testing.T) {
	dir := t.TempDir()
	if ok, err := New(filepath.Join(dir, "none.pb"), nil).LoadFile(); ok || err != nil {
		t.Errorf("missing file: %v, %v", ok, err)
	}
	if ok, err := New("", nil).LoadFile(); ok || err != nil {
		t.Errorf("no path: %v, %v", ok, err)
	}
	corrupt := filepath.Join(dir, "corrupt.pb")
	if err := os.WriteFile(corrupt, []byte("\xff\xff not a snapshot"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := New(corrupt, nil)
	if ok, err := c.LoadFile(); ok || err == nil || !strings.Contains(err.Error(), "delete it") {
		t.Errorf("corrupt file: %v, %v", ok, err)
	}
	if c.Ready() {
		t.Error("a corrupt cache made the data plane ready")
	}
}

func TestStdioAllowList(t *testing.T) {
	for _, tc := range []struct {
		patterns []string
		command  string
		ok       bool
	}{
		{nil, "/bin/sh", false},
		{[]string{"npx", "node"}, "npx", true},
		{[]string{"npx", "node"}, "/usr/bin/node", false},
		{[]string{"/usr/bin/node"}, "/usr/bin/node", true},
		{[]string{"npx", "node"}, "/bin/sh", false},
		{[]string{"/opt/mcp/*"}, "/opt/mcp/github", true},
		{[]string{"uv*"}, "uvx", true},
	} {
		c := New("", nil, StdioAllowList(tc.patterns))
		res, err := c.Offer(snap(t, 1, stdio("s", tc.command)))
		if err != nil {
			t.Fatalf("allow %v, command %q: %v", tc.patterns, tc.command, err)
		}
		if got := c.Current().Servers["s"] != nil; got != tc.ok {
			t.Errorf("allow %v, command %q: served = %v, want %v", tc.patterns, tc.command, got, tc.ok)
		}
		if tc.ok {
			if res.Outcome != metamcpv1.ApplyOutcome_APPLY_OUTCOME_APPLIED || len(res.Refused) != 0 {
				t.Errorf("allow %v, command %q: %v", tc.patterns, tc.command, res)
			}
			continue
		}
		if res.Outcome != metamcpv1.ApplyOutcome_APPLY_OUTCOME_PARTIAL || len(res.Refused) != 1 || res.Refused[0].GetServer() != "s" ||
			!strings.Contains(res.Refused[0].GetReason(), `stdio command "`+tc.command+`" is not allowed`) {
			t.Errorf("allow %v, command %q: result %v", tc.patterns, tc.command, res)
		}
	}
}

// TestStdioPolicy covers argument patterns and loader variables: each
// refusal names its reason, and never the arguments or values.
func TestStdioPolicy(t *testing.T) {
	allow := []string{"npx -y @modelcontextprotocol/server-*", "uvx ...", "node", `/opt/bin/srv --name "a b" ...`}
	for _, tc := range []struct {
		cmd    string
		args   []string
		env    []string
		allowE []string
		why    string // "" when allowed
	}{
		{"npx", []string{"-y", "@modelcontextprotocol/server-github"}, nil, nil, ""},
		{"npx", []string{"-y", "evil-package"}, nil, nil, `the 2 arguments of stdio command "npx" match no --stdio-allow pattern for it (npx -y @modelcontextprotocol/server-*)`},
		{"npx", []string{"-y", "@modelcontextprotocol/server-github", "--extra"}, nil, nil, "match no --stdio-allow pattern"},
		{"npx", []string{"@modelcontextprotocol/server-github"}, nil, nil, "match no --stdio-allow pattern"},
		{"npx", nil, nil, nil, "match no --stdio-allow pattern"},
		{"uvx", nil, nil, nil, ""},
		{"uvx", []string{"mcp-server-time", "--tz", "UTC"}, nil, nil, ""},
		{"node", nil, nil, nil, ""},
		{"node", []string{"-e", "require('child_process')"}, nil, nil, `arguments of stdio command "node" match no`},
		{"/opt/bin/srv", []string{"--name", "a b", "x"}, nil, nil, ""},
		{"/opt/bin/srv", []string{"--name", "a"}, nil, nil, "match no --stdio-allow pattern"},
		{"python", nil, nil, nil, `stdio command "python" is not allowed on this data plane (--stdio-allow npx,uvx,node,/opt/bin/srv)`},
		{"/tmp/x/npx", []string{"-y", "@modelcontextprotocol/server-github"}, nil, nil, `stdio command "/tmp/x/npx" is not allowed`},
		{"uvx", nil, []string{"LD_PRELOAD"}, nil, "stdio environment variable LD_PRELOAD changes what the process loads: refused unless --stdio-allow-env allows it"},
		{"uvx", nil, []string{"ld_preload", "NODE_OPTIONS", "API_TOKEN"}, nil, "stdio environment variable NODE_OPTIONS, ld_preload changes"},
		{"uvx", nil, []string{"npm_config_registry"}, nil, "npm_config_registry changes"},
		{"uvx", nil, []string{"PYTHONPATH", "API_TOKEN", "PYTHONUNBUFFERED"}, []string{"pythonpath"}, ""},
		{"uvx", nil, []string{"LD_LIBRARY_PATH"}, []string{"LD_*"}, ""},
		{"uvx", nil, []string{"LD_PRELOAD", "DYLD_INSERT_LIBRARIES"}, []string{"LD_LIBRARY_PATH"}, "DYLD_INSERT_LIBRARIES, LD_PRELOAD changes"},
	} {
		env := map[string]*metamcpv1.Value{}
		for _, k := range tc.env {
			env[k] = &metamcpv1.Value{Value: "secret-value"}
		}
		srv := &metamcpv1.Server{Name: "s", Transport: &metamcpv1.Server_Stdio{Stdio: &metamcpv1.StdioTransport{Command: tc.cmd, Args: tc.args, Env: env}}}
		c := New("", nil, StdioAllowList(allow, tc.allowE...))
		res, err := c.Offer(snap(t, 1, srv))
		if err != nil {
			t.Fatalf("%s %q env %v: %v", tc.cmd, tc.args, tc.env, err)
		}
		served := c.Current().Servers["s"] != nil
		if tc.why == "" {
			if !served || len(res.Refused) != 0 {
				t.Errorf("%s %q env %v: refused: %v", tc.cmd, tc.args, tc.env, res.Refused)
			}
			continue
		}
		if served || res.Outcome != metamcpv1.ApplyOutcome_APPLY_OUTCOME_PARTIAL || len(res.Refused) != 1 {
			t.Errorf("%s %q env %v: served %v, result %v", tc.cmd, tc.args, tc.env, served, res)
			continue
		}
		why := res.Refused[0].GetReason()
		if !strings.Contains(why, tc.why) {
			t.Errorf("%s %q env %v: reason %q, want %q", tc.cmd, tc.args, tc.env, why, tc.why)
		}
		for _, secret := range []string{"secret-value", "evil-package", "child_process", "--extra"} {
			if strings.Contains(why, secret) {
				t.Errorf("reason %q quotes %q", why, secret)
			}
		}
	}
}

func TestParseStdioPolicy(t *testing.T) {
	for _, bad := range []string{"... x", "npx ... -y", `npx "unterminated`} {
		if _, err := ParseStdioPolicy([]string{bad}, nil); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
	p, err := ParseStdioPolicy([]string{" npx  -y 'a b' ... ", ""}, []string{" PATH ", ""})
	if err != nil || len(p.Allow) != 1 || p.Allow[0].Command != "npx" || !slices.Equal(p.Allow[0].Args, []string{"-y", "a b"}) || !p.Allow[0].AnyRest ||
		!slices.Equal(p.AllowEnv, []string{"PATH"}) {
		t.Fatalf("%+v %v", p, err)
	}
}

// keyed is a config with an endpoint whose namespace mounts a stdio server
// running cmd and one running npx, and API keys named keys.
func keyed(t *testing.T, rev int64, cmd string, keys ...string) *metamcpv1.Snapshot {
	t.Helper()
	cfg := &metamcpv1.Config{
		Servers: []*metamcpv1.Server{stdio("shell", cmd), stdio("fs", "npx")},
		Namespaces: []*metamcpv1.Namespace{{Name: "dev", Members: []*metamcpv1.NamespaceMember{
			{Server: "shell"}, {Server: "fs"},
		}}},
		Endpoints:   []*metamcpv1.Endpoint{{Name: "dev", Namespace: "dev"}},
		SessionKeys: &metamcpv1.SessionKeys{Current: make([]byte, 32)},
	}
	for _, k := range keys {
		sum := sha256.Sum256([]byte(k))
		cfg.ApiKeys = append(cfg.ApiKeys, &metamcpv1.ApiKeyEntry{Name: k, KeyHash: sum[:], Endpoints: []string{"dev"}})
	}
	hash, err := snapshot.ConfigHash(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &metamcpv1.Snapshot{Revision: rev, Hash: hash, Config: cfg, StoreId: "store-a"}
}

func hasKey(c *Cache, key string) bool {
	return c.Current().APIKeys[sha256.Sum256([]byte(key))] != nil
}

func TestPartialApplyLeavesOutRefusedServers(t *testing.T) {
	path := filepath.Join(t.TempDir(), "snapshot.pb")
	c := New(path, nil, StdioAllowList([]string{"npx"}))
	res, err := c.Offer(keyed(t, 5, "/bin/sh", "alice"))
	if err != nil || res.Outcome != metamcpv1.ApplyOutcome_APPLY_OUTCOME_PARTIAL {
		t.Fatal(res, err)
	}
	cur := c.Current()
	if rev, _ := c.Revision(); rev != 5 || cur.Servers["shell"] != nil || cur.Servers["fs"] == nil || !hasKey(c, "alice") {
		t.Fatalf("serving %d, servers %v", rev, cur.Servers)
	}
	ep := cur.Endpoints["dev"]
	if m := ep.RefusedMember("shell__run"); m == nil || m.Server != nil || !strings.Contains(m.Refused, "not allowed") {
		t.Errorf("RefusedMember(shell__run) = %+v", m)
	}
	if m := ep.RefusedMember("fs__read"); m != nil {
		t.Errorf("RefusedMember(fs__read) = %+v, want nil", m)
	}
	if out, refused, keysRev := c.Served(); out != metamcpv1.ApplyOutcome_APPLY_OUTCOME_PARTIAL || len(refused) != 1 || keysRev != 0 {
		t.Errorf("Served = %v %v %d", out, refused, keysRev)
	}
	// A restart leaves the same servers out.
	again := New(path, nil, StdioAllowList([]string{"npx"}))
	if ok, err := again.LoadFile(); !ok || err != nil {
		t.Fatal(ok, err)
	}
	if again.Current().Servers["shell"] != nil || again.Current().Refused["shell"] == "" {
		t.Errorf("reloaded: servers %v refused %v", again.Current().Servers, again.Current().Refused)
	}
}

// refuseRevision refuses every snapshot of revision rev or later whole.
func refuseFrom(rev int64) Check {
	return func(s *snapshot.Compiled) (map[string]string, error) {
		if s.Revision >= rev {
			return nil, fmt.Errorf("this data plane cannot serve revision %d", s.Revision)
		}
		return nil, nil
	}
}

func TestRefusedSnapshotStillAppliesKeys(t *testing.T) {
	path := filepath.Join(t.TempDir(), "snapshot.pb")
	c := New(path, nil, refuseFrom(6))
	if _, err := c.Offer(keyed(t, 5, "npx", "alice", "bob")); err != nil {
		t.Fatal(err)
	}
	// Revision 6 revokes bob and adds carol: refused whole, keys applied.
	res, err := c.Offer(keyed(t, 6, "npx", "alice", "carol"))
	if err == nil || res.Outcome != metamcpv1.ApplyOutcome_APPLY_OUTCOME_KEYS_ONLY {
		t.Fatalf("Apply = %v, %v; want KEYS_ONLY with an error", res, err)
	}
	if rev, _ := c.Revision(); rev != 5 {
		t.Errorf("serving config %d, want 5", rev)
	}
	if !hasKey(c, "alice") || hasKey(c, "bob") || !hasKey(c, "carol") {
		t.Errorf("keys after a refused snapshot: alice %v bob %v carol %v", hasKey(c, "alice"), hasKey(c, "bob"), hasKey(c, "carol"))
	}
	if out, _, keysRev := c.Served(); out != metamcpv1.ApplyOutcome_APPLY_OUTCOME_KEYS_ONLY || keysRev != 6 {
		t.Errorf("Served = %v keys %d", out, keysRev)
	}
	// A corrupted snapshot gives nothing, not even its keys.
	bad := keyed(t, 7, "npx", "alice", "bob")
	bad.Hash = strings.Repeat("0", 64)
	if res, err := c.Offer(bad); err == nil || res.Outcome != metamcpv1.ApplyOutcome_APPLY_OUTCOME_UNSPECIFIED || hasKey(c, "bob") {
		t.Errorf("corrupted snapshot: %v, %v, bob %v", res, err, hasKey(c, "bob"))
	}

	// A restart without the control plane keeps the newer keys.
	again := New(path, nil, refuseFrom(6))
	if ok, err := again.LoadFile(); !ok || err != nil {
		t.Fatal(ok, err)
	}
	if rev, _ := again.Revision(); rev != 5 || hasKey(again, "bob") || !hasKey(again, "carol") {
		t.Errorf("reloaded: revision %d, bob %v carol %v", rev, hasKey(again, "bob"), hasKey(again, "carol"))
	}

	// A snapshot applied whole supersedes the kept keys.
	c2 := New(path, nil)
	if _, err := c2.Offer(keyed(t, 8, "npx", "bob")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path + ".keys"); !os.IsNotExist(err) {
		t.Errorf("keys file left after a whole apply: %v", err)
	}
	if out, _, keysRev := c2.Served(); out != metamcpv1.ApplyOutcome_APPLY_OUTCOME_APPLIED || keysRev != 0 {
		t.Errorf("Served = %v keys %d", out, keysRev)
	}
}

// TestServerThatDoesNotValidateIsLeftOut: a server this data plane cannot
// validate (here: no transport, as a transport of a newer control plane
// would look) is left out and the rest served; a violation of anything else
// refuses the snapshot whole.
func TestServerThatDoesNotValidateIsLeftOut(t *testing.T) {
	c := New(filepath.Join(t.TempDir(), "snapshot.pb"), nil)
	s := keyed(t, 5, "npx", "alice")
	s.Config.Servers[0].Transport = nil // "shell"
	s.Hash, _ = snapshot.ConfigHash(s.Config)
	res, err := c.Offer(s)
	if err != nil || res.Outcome != metamcpv1.ApplyOutcome_APPLY_OUTCOME_PARTIAL || len(res.Refused) != 1 ||
		res.Refused[0].GetServer() != "shell" || !strings.Contains(res.Refused[0].GetReason(), "transport") {
		t.Fatalf("Offer = %v, %v", res, err)
	}
	cur := c.Current()
	if _, hash := c.Revision(); hash != s.GetHash() || cur.Servers["shell"] != nil || cur.Servers["fs"] == nil || !hasKey(c, "alice") {
		t.Errorf("serving hash %s, servers %v", hash, cur.Servers)
	}
	if m := cur.Endpoints["dev"].RefusedMember("shell__run"); m == nil || !strings.Contains(m.Refused, "cannot validate") {
		t.Errorf("RefusedMember(shell__run) = %+v", m)
	}
	if len(cur.Endpoints["dev"].Members) != 2 {
		t.Errorf("endpoint members: %d, want 2 (one left out)", len(cur.Endpoints["dev"].Members))
	}

	bad := keyed(t, 6, "npx", "bob")
	bad.Config.Servers[0].Transport = nil
	bad.Config.Endpoints[0].Namespace = "missing"
	bad.Hash, _ = snapshot.ConfigHash(bad.Config)
	if res, err := c.Offer(bad); err == nil || res.Outcome != metamcpv1.ApplyOutcome_APPLY_OUTCOME_KEYS_ONLY {
		t.Errorf("a snapshot with an invalid endpoint: %v, %v; want refused, keys applied", res, err)
	}
	if rev, _ := c.Revision(); rev != 5 || !hasKey(c, "bob") || hasKey(c, "alice") {
		t.Errorf("serving %d; alice %v bob %v", rev, hasKey(c, "alice"), hasKey(c, "bob"))
	}
}
