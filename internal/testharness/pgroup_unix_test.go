//go:build unix

package testharness

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"syscall"
	"testing"
)

// TestCleanupKillsTheGroup: a child the process started is gone once the
// test that started the process has ended.
func TestCleanupKillsTheGroup(t *testing.T) {
	var pid int
	t.Run("start", func(t *testing.T) {
		p := Start(t, "parent", child("parent"))
		m := p.AwaitMatch(t, regexp.MustCompile(`child (\d+)`), WaitTimeout)
		pid, _ = strconv.Atoi(m[1])
	})
	if pid == 0 {
		t.Fatal("the parent printed no child pid")
	}
	// The killed child is reaped by init (or the nearest subreaper) in its
	// own time; until then signal 0 still finds it, as a zombie.
	Eventually(t, WaitTimeout, func() error {
		err := syscall.Kill(pid, 0)
		if errors.Is(err, syscall.ESRCH) {
			return nil
		}
		if b, rerr := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); rerr == nil {
			if i := bytes.LastIndexByte(b, ')'); i > 0 && bytes.HasPrefix(b[i+1:], []byte(" Z")) {
				return nil
			}
		}
		return fmt.Errorf("the child %d still runs (kill 0: %w)", pid, err)
	})
}
