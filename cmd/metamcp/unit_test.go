package main

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/metamcp/metamcp/internal/testharness"
)

func TestLoadOrCreateDevToken(t *testing.T) {
	path := filepath.Join(t.TempDir(), "admin-token")
	first, err := loadOrCreateDevToken(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(first, devTokenPrefix) || len(first) < len(devTokenPrefix)+32 {
		t.Errorf("token %q: want %s and at least 32 random hex chars", first, devTokenPrefix)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("token file mode %o, want 600", fi.Mode().Perm())
	}
	second, err := loadOrCreateDevToken(path)
	if err != nil {
		t.Fatal(err)
	}
	if second != first {
		t.Errorf("second load %q, want the first token %q", second, first)
	}

	empty := filepath.Join(t.TempDir(), "admin-token")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadOrCreateDevToken(empty); err == nil || !strings.Contains(err.Error(), "delete it") {
		t.Errorf("empty token file: err = %v, want advice to delete it", err)
	}
}

func TestLogFlags(t *testing.T) {
	tests := []struct {
		level, format string
		wantErr       string
		wantLine      string // substring of an Info line, or "" when info is filtered
	}{
		{level: "info", format: "text", wantLine: `level=INFO msg=hello`},
		{level: "INFO", format: "JSON", wantLine: `"msg":"hello"`},
		{level: "debug", format: "text", wantLine: `msg=hello`},
		{level: "warn", format: "text", wantLine: ""},
		{level: "error", format: "json", wantLine: ""},
		{level: "verbose", format: "text", wantErr: "--log-level"},
		{level: "info", format: "logfmt", wantErr: "--log-format"},
	}
	for _, tt := range tests {
		t.Run(tt.level+"/"+tt.format, func(t *testing.T) {
			var buf bytes.Buffer
			logger, err := (&logFlags{level: tt.level, format: tt.format}).logger(&buf)
			if tt.wantErr != "" {
				var ue usageError
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.As(err, &ue) {
					t.Fatalf("err = %v, want a usage error about %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			logger.Info("hello")
			if tt.wantLine == "" && buf.Len() > 0 || !strings.Contains(buf.String(), tt.wantLine) {
				t.Errorf("logged %q, want %q", buf.String(), tt.wantLine)
			}
		})
	}
}

func TestValidateTLSFlags(t *testing.T) {
	tests := []struct {
		cert, key, ca string
		ok            bool
	}{
		{"", "", "", true},
		{"c.pem", "k.pem", "", true},
		{"c.pem", "k.pem", "ca.pem", true},
		{"c.pem", "", "", false},
		{"", "k.pem", "", false},
		{"", "", "ca.pem", false},
	}
	for _, tt := range tests {
		err := validateTLSFlags(tt.cert, tt.key, tt.ca)
		if (err == nil) != tt.ok {
			t.Errorf("validateTLSFlags(%q, %q, %q) = %v, want ok=%v", tt.cert, tt.key, tt.ca, err, tt.ok)
		}
	}
}

func TestRunExitCodes(t *testing.T) {
	tests := []struct {
		args []string
		code int
		out  string
	}{
		{[]string{"version"}, exitOK, "metamcp "},
		{[]string{}, exitOK, "Available Commands"},
		{[]string{"nope"}, exitUsage, `unknown command "nope"`},
		{[]string{"version", "extra"}, exitUsage, "takes no arguments"},
		{[]string{"dev", "--bogus"}, exitUsage, "unknown flag: --bogus"},
		{[]string{"dataplane", "--gc-headroom", "-1"}, exitUsage, "--gc-headroom -1: want 0 (off) or more MiB"},
		{[]string{"dataplane", "--stdio-allow", "npx ... -y"}, exitUsage, `--stdio-allow "npx ... -y": ... may only be the last word`},
		{[]string{"dataplane", "--stdio-allow", "'npx"}, exitUsage, "unterminated quote"},
		{[]string{"dataplane", "--help"}, exitOK, "npx -y @modelcontextprotocol/server-*   npx with -y and one such package only"},
	}
	for _, tt := range tests {
		var stdout, stderr bytes.Buffer
		code := run(context.Background(), tt.args, &stdout, &stderr)
		if code != tt.code {
			t.Errorf("%v: exit code %d, want %d (stderr %q)", tt.args, code, tt.code, stderr.String())
		}
		if !strings.Contains(stdout.String()+stderr.String(), tt.out) {
			t.Errorf("%v: output %q, want %q", tt.args, stdout.String()+stderr.String(), tt.out)
		}
	}
}

func TestHealthcheck(t *testing.T) {
	var ready atomic.Bool
	ready.Store(true)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if !ready.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("not ready: no config yet\n"))
			return
		}
		_, _ = w.Write([]byte("ready: revision 3\n"))
	}))
	defer srv.Close()

	var out bytes.Buffer
	if code := run(context.Background(), []string{"healthcheck", srv.URL + "/readyz"}, &out, &out); code != exitOK {
		t.Errorf("ready: exit %d, output %q", code, out.String())
	}
	ready.Store(false)
	out.Reset()
	if code := run(context.Background(), []string{"healthcheck", srv.URL + "/readyz"}, &out, &out); code != exitError || !strings.Contains(out.String(), "HTTP 503: not ready") {
		t.Errorf("not ready: exit %d, output %q", code, out.String())
	}
	out.Reset()
	if code := run(context.Background(), []string{"healthcheck", "--timeout", "2s", "http://" + testharness.LoopbackAddr(t) + "/readyz"}, &out, &out); code != exitError || !strings.Contains(out.String(), "health check") {
		t.Errorf("nothing listening: exit %d, output %q", code, out.String())
	}
}
