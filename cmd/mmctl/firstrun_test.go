package main

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestAddrAsURL(t *testing.T) {
	f := &fakeAdmin{}
	addr := startFake(t, f)
	r := runMmctl(t, "", "revision", "--token", "t", "--addr", "http://"+addr)
	if r.code != 0 {
		t.Errorf("--addr http://%s: %+v", addr, r)
	}
	for in, want := range map[string]string{
		"http://127.0.0.1:12009/admin": "has no path",
		"http://127.0.0.1":             "the port is missing",
		"ftp://127.0.0.1:21":           `unknown scheme "ftp"`,
	} {
		r := runMmctl(t, "", "revision", "--addr", in)
		if r.code != exitUsage || !strings.Contains(r.stderr, want) || !strings.Contains(r.stderr, "give HOST:PORT") {
			t.Errorf("--addr %s: %+v", in, r)
		}
	}
	a := &app{addr: "https://cp.example.com:443"}
	if err := a.addrFromURL(); err != nil || a.addr != "cp.example.com:443" || !a.tls {
		t.Errorf("https URL: %+v, %v", a, err)
	}
}

func TestDataPlanePortIsNamed(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) }))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	r := runMmctl(t, "", "revision", "--token", "t", "--addr", addr)
	if r.code != exitError || !strings.Contains(r.stderr, "answers HTTP/1.1") || !strings.Contains(r.stderr, "data plane") ||
		strings.Contains(r.stderr, "TLS") {
		t.Errorf("mmctl against an HTTP port: %+v", r)
	}
}

func TestImportFindsClientConfig(t *testing.T) {
	home, cfg := t.TempDir(), t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("XDG_CONFIG_HOME", cfg)
	t.Chdir(t.TempDir())
	if _, err := findClientConfig(""); err == nil || !strings.Contains(err.Error(), filepath.Join(home, ".cursor", "mcp.json")) {
		t.Errorf("nothing there: %v", err)
	}
	cursor := filepath.Join(home, ".cursor", "mcp.json")
	claude := filepath.Join(cfg, "Claude", "claude_desktop_config.json")
	for _, p := range []string{cursor, claude} {
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(`{"mcpServers": {}}`), 0o600); err != nil {
			t.Fatal(err)
		}
		if p == cursor {
			if got, err := findClientConfig(""); err != nil || got != cursor {
				t.Errorf("one config: %q, %v", got, err)
			}
		}
	}
	if _, err := findClientConfig(""); err == nil || !strings.Contains(err.Error(), "--from") {
		t.Errorf("two configs: %v", err)
	}
	if got, err := findClientConfig("claude-desktop"); err != nil || got != claude {
		t.Errorf("--from claude-desktop: %q, %v", got, err)
	}
}
