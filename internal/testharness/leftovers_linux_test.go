package testharness

import (
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestLeftovers(t *testing.T) {
	p := Start(t, "ready child", child("ready"))
	p.AwaitMatch(t, regexp.MustCompile(`listening on`), WaitTimeout)
	args := strings.Split(strings.TrimRight(readFile(t, fmt.Sprintf("/proc/%d/cmdline", p.Cmd.Process.Pid)), "\x00"), "\x00")
	if left := Leftovers(50*time.Millisecond, args...); len(left) == 0 {
		t.Errorf("Leftovers found no process running %q while one does", args)
	}
	p.Stop(t)
	if left := Leftovers(WaitTimeout, args...); len(left) > 0 {
		t.Errorf("Leftovers found %v after the process stopped", left)
	}
}

func readFile(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
