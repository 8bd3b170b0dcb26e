package testharness

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// The test binary doubles as the processes the tests start: with
// TESTHARNESS_CHILD set it plays the part named there instead of testing.
func TestMain(m *testing.M) {
	switch os.Getenv("TESTHARNESS_CHILD") {
	case "":
		os.Exit(m.Run())
	case "ready":
		// Prints its readiness line after some noise, then waits for a
		// signal (the default SIGTERM action ends it).
		fmt.Fprintln(os.Stderr, "starting")
		fmt.Println("listening on 127.0.0.1:4242")
		select {}
	case "exit":
		fmt.Fprintln(os.Stderr, "fatal: no config")
		os.Exit(3)
	case "parent":
		// Starts a grandchild, which stays in its process group (as a data
		// plane's stdio servers do), and prints its pid.
		c := exec.Command(os.Args[0])
		c.Env = append(os.Environ(), "TESTHARNESS_CHILD=ready")
		if err := c.Start(); err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		fmt.Printf("child %d\n", c.Process.Pid)
		select {}
	}
}

func child(role string) *exec.Cmd {
	c := exec.Command(os.Args[0])
	c.Env = append(os.Environ(), "TESTHARNESS_CHILD="+role)
	return c
}

func TestPoll(t *testing.T) {
	calls := 0
	err := Poll(5*time.Second, func() error {
		calls++
		if calls < 3 {
			return fmt.Errorf("call %d", calls)
		}
		return nil
	})
	if err != nil || calls != 3 {
		t.Errorf("Poll = %v after %d calls, want nil after 3", err, calls)
	}

	calls = 0
	start := time.Now()
	err = Poll(200*time.Millisecond, func() error {
		calls++
		return errors.New("never")
	})
	if err == nil || !strings.Contains(err.Error(), "never") || !strings.Contains(err.Error(), "200ms") {
		t.Errorf("Poll of a condition that never holds = %v, want its last error and the timeout", err)
	}
	// Bounded: 10, 20, 40, 80, then 100 ms apart fills 200 ms in a few calls.
	if calls < 2 || calls > 10 {
		t.Errorf("Poll called cond %d times in 200ms, want 2 to 10", calls)
	}
	if el := time.Since(start); el < 200*time.Millisecond {
		t.Errorf("Poll gave up after %v, before its timeout", el)
	}
}

// recorder is a testing.TB whose Fatal ends only the goroutine calling it,
// so a test can see a helper fail.
type recorder struct {
	testing.TB
	mu  sync.Mutex
	msg string
}

func (r *recorder) Fatalf(format string, args ...any) {
	r.mu.Lock()
	r.msg = fmt.Sprintf(format, args...)
	r.mu.Unlock()
	runtime.Goexit()
}

func (r *recorder) Fatal(args ...any) { r.Fatalf("%s", fmt.Sprint(args...)) }

// failure runs f with a recorder and returns what it failed with, "" if
// nothing.
func failure(t *testing.T, f func(tb testing.TB)) string {
	r := &recorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(r)
	}()
	<-done
	return r.msg
}

func TestEventuallyFails(t *testing.T) {
	msg := failure(t, func(tb testing.TB) {
		Eventually(tb, 50*time.Millisecond, func() error { return errors.New("the thing is not there") })
	})
	if !strings.Contains(msg, "the thing is not there") {
		t.Errorf("Eventually failed with %q, want the condition's last error", msg)
	}
}

func TestProcAwaitAndStop(t *testing.T) {
	p := Start(t, "ready child", child("ready"))
	m := p.AwaitMatch(t, regexp.MustCompile(`listening on (\S+)`), WaitTimeout)
	if m[1] != "127.0.0.1:4242" {
		t.Errorf("AwaitMatch = %q, want the printed address", m)
	}
	if got := p.Stdout.String(); got != "listening on 127.0.0.1:4242\n" {
		t.Errorf("Stdout = %q, want the stdout line alone", got)
	}
	if got := p.Stderr.String(); got != "starting\n" {
		t.Errorf("Stderr = %q, want the stderr line alone", got)
	}
	if got := p.Output.String(); !strings.Contains(got, "starting\n") || !strings.Contains(got, "listening on") {
		t.Errorf("Output = %q, want both lines", got)
	}
	p.Stop(t)
	if !p.Exited() {
		t.Fatal("Stop returned with the process running")
	}
	if runtime.GOOS != "windows" && p.ExitCode() != -1 {
		t.Errorf("exit code %d after SIGTERM, want -1 (ended by the signal)", p.ExitCode())
	}
	p.Stop(t) // idempotent
}

func TestProcExitsBeforeReady(t *testing.T) {
	var p *Proc
	msg := failure(t, func(tb testing.TB) {
		p = Start(t, "exiting child", child("exit"))
		p.AwaitMatch(tb, regexp.MustCompile(`listening on`), WaitTimeout)
	})
	if !strings.Contains(msg, "exiting child exited") || !strings.Contains(msg, "fatal: no config") {
		t.Errorf("AwaitMatch on a process that exits failed with %q, want that it exited and its output", msg)
	}
	if p.ExitCode() != 3 {
		t.Errorf("exit code %d, want 3", p.ExitCode())
	}
}

func TestAwaitTimesOut(t *testing.T) {
	p := Start(t, "ready child", child("ready"))
	msg := failure(t, func(tb testing.TB) {
		p.AwaitMatch(tb, regexp.MustCompile(`never printed`), 100*time.Millisecond)
	})
	if !strings.Contains(msg, "within 100ms") {
		t.Errorf("AwaitMatch of a line never printed failed with %q, want a timeout", msg)
	}
}

func TestBinary(t *testing.T) {
	bin := Binary(t, "./test/fixtures/mcpfixture")
	again := Binary(t, "./test/fixtures/mcpfixture")
	if bin != again {
		t.Errorf("a second Binary built again: %s then %s", bin, again)
	}
	if _, err := os.Stat(bin); err != nil {
		t.Errorf("Binary's executable: %v", err)
	}
	t.Cleanup(Cleanup)
}

func TestWaitDial(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	WaitDial(t, nil, lis.Addr().String(), WaitTimeout)
	msg := failure(t, func(tb testing.TB) { WaitDial(tb, nil, LoopbackAddr(t), 100*time.Millisecond) })
	if !strings.Contains(msg, "refused") {
		t.Errorf("WaitDial of an address nothing listens on failed with %q, want the dial error", msg)
	}
}

func TestLoopbackAddr(t *testing.T) {
	addr := LoopbackAddr(t)
	if !strings.HasPrefix(addr, "127.0.0.1:") {
		t.Errorf("LoopbackAddr = %q, want a 127.0.0.1 address", addr)
	}
	if _, err := GetStatus("http://" + addr + "/"); err == nil {
		t.Errorf("something answers on %s", addr)
	}
}
