package testharness

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"
)

// Root is the module's root directory, found from this file's location (the
// tests run from the source tree).
func Root() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

var (
	buildMu  sync.Mutex
	buildDir string
	built    = map[string]string{} // package path -> binary
)

// Binaries builds the main packages pkgs (paths from the module root, such
// as "./cmd/metamcp") with one `go build`, once per test binary, and returns
// their executables in the same order. A package built before is not built
// again. Cleanup removes them; call it from TestMain.
func Binaries(pkgs ...string) ([]string, error) {
	buildMu.Lock()
	defer buildMu.Unlock()
	var todo []string
	for _, p := range pkgs {
		if _, ok := built[p]; !ok {
			todo = append(todo, p)
		}
	}
	if len(todo) > 0 {
		if buildDir == "" {
			dir, err := os.MkdirTemp("", "metamcp-test-bin-")
			if err != nil {
				return nil, err
			}
			buildDir = dir
		}
		// Several tests may build at once in other test binaries: a bound
		// keeps a wedged toolchain from hanging the run.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		args := append([]string{"build", "-o", buildDir + string(filepath.Separator)}, todo...)
		cmd := exec.CommandContext(ctx, "go", args...)
		cmd.Dir = Root()
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("go build %v: %w\n%s", todo, err, out)
		}
		for _, p := range todo {
			name := path.Base(p)
			if runtime.GOOS == "windows" {
				name += ".exe"
			}
			built[p] = filepath.Join(buildDir, name)
		}
	}
	out := make([]string, len(pkgs))
	for i, p := range pkgs {
		out[i] = built[p]
	}
	return out, nil
}

// Binary is Binaries for one package in a test: it fails the test when the
// package does not build.
func Binary(tb testing.TB, pkg string) string {
	tb.Helper()
	bins, err := Binaries(pkg)
	if err != nil {
		tb.Fatal(err)
	}
	return bins[0]
}

// Cleanup removes the binaries Binaries built. Safe to call when nothing
// was built.
func Cleanup() {
	buildMu.Lock()
	defer buildMu.Unlock()
	if buildDir != "" {
		_ = os.RemoveAll(buildDir)
		buildDir = ""
		clear(built)
	}
}
