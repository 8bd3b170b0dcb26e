package main

import (
	"path/filepath"
	"strings"
	"testing"
)

func TestDataPlaneRedisFlags(t *testing.T) {
	t.Parallel()
	r := runMetamcp(t, baseEnv(), "dataplane", "--help")
	for _, w := range []string{"--redis-url string", "[$METAMCP_REDIS_URL]", "--redis-prefix string", `(default "metamcp:")`, "[$METAMCP_REDIS_PREFIX]"} {
		if !strings.Contains(r.stdout, w) {
			t.Errorf("dataplane --help does not contain %q:\n%s", w, r.stdout)
		}
	}

	// The URL is taken from the environment; a bad one stops the data
	// plane with an error that names the flag and hides the password.
	r = runMetamcp(t, baseEnv("METAMCP_SYNC_TOKEN=mmt_test", "METAMCP_REDIS_URL=redis://u:hunter2@127.0.0.1:1/notadb"),
		"dataplane", "--listen", "127.0.0.1:0", "--control-plane", "127.0.0.1:1", "--node-id", "t",
		"--cache-file", filepath.Join(t.TempDir(), "snapshot.pb"))
	if r.code != exitError {
		t.Errorf("exit code = %d, want %d", r.code, exitError)
	}
	if !strings.Contains(r.stderr, "--redis-url") || !strings.Contains(r.stderr, "invalid database number") || strings.Contains(r.stderr, "hunter2") {
		t.Errorf("stderr should name --redis-url and the problem, without the password:\n%s", r.stderr)
	}
	assertNoCrash(t, r.stderr)
}
