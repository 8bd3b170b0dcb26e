package configcache

import (
	"os"
	"path/filepath"
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
	if err := c.Apply(snap(t, 3, stdio("fs", "npx"))); err != nil {
		t.Fatal(err)
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
		"invalid config": snap(t, 4, stdio("Bad Name", "npx")),
		"no config":      {Revision: 4},
		"hash mismatch": func() *metamcpv1.Snapshot {
			s := snap(t, 4, stdio("fs", "npx"))
			s.Hash = strings.Repeat("0", 64)
			return s
		}(),
	} {
		if err := c.Apply(bad); err == nil {
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
		{nil, "/bin/sh", true},
		{[]string{"npx", "node"}, "npx", true},
		{[]string{"npx", "node"}, "/usr/bin/node", true},
		{[]string{"npx", "node"}, "/bin/sh", false},
		{[]string{"/opt/mcp/*"}, "/opt/mcp/github", true},
		{[]string{"uv*"}, "uvx", true},
	} {
		c := New("", nil, StdioAllowList(tc.patterns))
		err := c.Apply(snap(t, 1, stdio("s", tc.command)))
		if (err == nil) != tc.ok {
			t.Errorf("allow %v, command %q: err = %v, want ok=%v", tc.patterns, tc.command, err, tc.ok)
		}
		if err != nil && !strings.Contains(err.Error(), `server "s" runs`) {
			t.Errorf("error does not name the server: %v", err)
		}
	}
}
