// Package testharness runs the project's programs in tests the way a user
// does: it builds the binaries once per test binary, starts them as
// processes with their output captured, waits for the signals they give
// when ready (a line they print, a readiness endpoint), and stops them when
// the test ends. It also holds the one Eventually helper the test packages
// share. It is for tests only; no program imports it.
package testharness

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// WaitTimeout bounds a wait for a process or the system to get ready or to
// converge, where a test names no bound of its own. It is generous because
// the tests share a small machine with others.
const WaitTimeout = 30 * time.Second

// Env is this process's environment without METAMCP_* variables (a
// developer's shell must not change what a test sees), with extra appended.
func Env(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "METAMCP_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// Tail is the last n lines of s, for failure messages.
func Tail(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = append([]string{fmt.Sprintf("[%d earlier lines left out]", len(l)-n)}, l[len(l)-n:]...)
	}
	return strings.Join(l, "\n")
}

// RandomHex is n random bytes in hex, for names, tokens and keys of a test's
// own.
func RandomHex(tb testing.TB, n int) string {
	tb.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		tb.Fatal(err)
	}
	return hex.EncodeToString(b)
}
