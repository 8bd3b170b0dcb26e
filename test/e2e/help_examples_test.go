package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// exampleOrder is the order in which TestHelpExamples runs the examples of
// each command: creates before what uses them, deletes last. Commands not
// named here run after "mmctl import".
var exampleOrder = []string{
	"mmctl", "mmctl create server", "mmctl create namespace", "mmctl create ratelimit", "mmctl create endpoint",
	"mmctl create apikey", "mmctl create token", "mmctl get", "mmctl describe", "mmctl edit", "mmctl export",
	"mmctl apply", "mmctl import",
	"mmctl rotate", "mmctl revoke", "mmctl delete",
}

// TestHelpExamples runs every example that `mmctl ... --help` shows, as
// written, in a shell (bash -o pipefail: a failure inside a pipeline counts), against `metamcp dev`: each must succeed. The shell
// has what a reader of the help would have: the files the examples name
// (metamcp.yaml, old-servers.yaml, ~/.sentry-token, a Cursor config), the
// variables they read, and an editor that saves nothing.
func TestHelpExamples(t *testing.T) {
	t.Parallel()
	env, _ := startDev(t)
	work, home, bin := t.TempDir(), t.TempDir(), t.TempDir()
	for path, content := range map[string]string{
		filepath.Join(work, "metamcp.yaml"):        "kind: Server\nname: time\nstdio: {command: uvx, args: [mcp-server-time]}\n",
		filepath.Join(work, "old-servers.yaml"):    "kind: Server\nname: legacy\n",
		filepath.Join(home, ".sentry-token"):       "sntrys_example\n",
		filepath.Join(home, ".cursor", "mcp.json"): `{"mcpServers": {"notes": {"command": "uvx", "args": ["mcp-notes"], "env": {"NOTES_TOKEN": "example"}}}}`,
		filepath.Join(bin, "code"):                 "#!/bin/sh\nexit 0\n",
	} {
		if err := mkdirAll(filepath.Dir(path)); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := mkdirAll(filepath.Join(home, ".config")); err != nil {
		t.Fatal(err)
	}
	env = append(env,
		"PATH="+filepath.Dir(mmctlBin)+string(os.PathListSeparator)+bin+string(os.PathListSeparator)+os.Getenv("PATH"),
		"HOME="+home, "XDG_CONFIG_HOME="+filepath.Join(home, ".config"), "EDITOR=true",
		"GITHUB_PERSONAL_ACCESS_TOKEN=ghp_example")

	commands := helpCommands(t, env, "mmctl")
	slices.SortStableFunc(commands, func(a, b string) int { return exampleRank(a) - exampleRank(b) })
	seen := map[string]bool{}
	ran := 0
	for _, cmd := range commands {
		for _, ex := range helpExamples(t, env, cmd) {
			if seen[ex] || strings.HasPrefix(ex, "export METAMCP_") {
				continue // already run; or the connection settings, which the test sets
			}
			seen[ex] = true
			ran++
			// A follow (mmctl logs -f) runs until stopped: it passes when it
			// is still running, without an error, after a few seconds.
			follow := strings.Contains(" "+ex+" ", " -f ")
			limit := time.Minute
			if follow {
				limit = 3 * time.Second
			}
			ctx, cancel := context.WithTimeout(context.Background(), limit)
			sh := exec.CommandContext(ctx, "bash", "-o", "pipefail", "-c", ex)
			sh.Dir, sh.Env = work, baseEnv(t, env...)
			out, err := sh.CombinedOutput()
			stopped := ctx.Err() != nil
			cancel()
			if follow && stopped && !strings.Contains(string(out), "error") {
				continue
			}
			if err != nil {
				t.Errorf("the example of `%s --help` fails as written (%v):\n  %s\n%s", cmd, err, ex, out)
			}
		}
	}
	t.Logf("ran %d examples", ran)
	if ran < 25 {
		t.Errorf("ran %d examples: the help output was not read right", ran)
	}
}

// exampleRank places a command in exampleOrder.
func exampleRank(cmd string) int {
	if i := slices.Index(exampleOrder, cmd); i >= 0 {
		return 2 * i
	}
	return 2*slices.Index(exampleOrder, "mmctl import") + 1
}

// helpCommands lists a command and, recursively, its subcommands, from
// `--help`'s "Available Commands".
func helpCommands(t *testing.T, env []string, cmd string) []string {
	t.Helper()
	out := []string{cmd}
	for _, line := range helpSection(t, env, cmd, "Available Commands:") {
		name := strings.Fields(line)[0]
		if name == "help" || name == "completion" {
			continue
		}
		out = append(out, helpCommands(t, env, cmd+" "+name)...)
	}
	return out
}

// helpExamples returns the example command lines of `cmd --help`, with
// continuation lines joined.
func helpExamples(t *testing.T, env []string, cmd string) []string {
	t.Helper()
	var out []string
	pending := ""
	for _, line := range helpSection(t, env, cmd, "Examples:") {
		line = strings.TrimSpace(line)
		if c, ok := strings.CutSuffix(line, `\`); ok {
			pending += c
			continue
		}
		out = append(out, pending+line)
		pending = ""
	}
	return out
}

// helpSection returns the indented lines under a heading of `cmd --help`.
func helpSection(t *testing.T, env []string, cmd, heading string) []string {
	t.Helper()
	args := append(strings.Fields(cmd)[1:], "--help")
	r := runMmctl(t, env, "", args...)
	if r.code != 0 {
		t.Fatalf("help:\n%s", r)
	}
	var out []string
	in := false
	for _, line := range strings.Split(r.stdout, "\n") {
		switch {
		case line == heading:
			in = true
		case in && strings.HasPrefix(line, "  ") && strings.TrimSpace(line) != "":
			out = append(out, line)
		case in:
			return out
		}
	}
	return out
}
