package testharness

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// LoopbackAddr is a loopback address ("127.0.0.1:PORT") that nothing listened
// on a moment ago: for a process that cannot be told to listen on port 0, or
// for a test that needs an address where nothing answers. Another process
// may take the port in between; a program that can listen on port 0 and
// print its address should be started that way instead.
func LoopbackAddr(tb testing.TB) string {
	tb.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := lis.Addr().String()
	if err := lis.Close(); err != nil {
		tb.Fatal(err)
	}
	return addr
}

// GetStatus is the status code of a GET of url, bounded by a few seconds,
// its body discarded.
func GetStatus(url string) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

// WaitHTTP waits until a GET of url (a readiness endpoint) answers 200 OK,
// failing the test when timeout passes first or p (when not nil) exits.
func WaitHTTP(tb testing.TB, p *Proc, url string, timeout time.Duration) {
	tb.Helper()
	Eventually(tb, timeout, func() error {
		if p != nil {
			p.failIfExited(tb, "answering "+url)
		}
		code, err := GetStatus(url)
		if err != nil {
			return fmt.Errorf("GET %s: %w", url, err)
		}
		if code != http.StatusOK {
			return fmt.Errorf("GET %s: %d %s", url, code, http.StatusText(code))
		}
		return nil
	})
}

// WaitDial waits until addr accepts TCP connections, for a program that
// prints nothing when it is ready; it fails the test when timeout passes
// first or p (when not nil) exits.
func WaitDial(tb testing.TB, p *Proc, addr string, timeout time.Duration) {
	tb.Helper()
	Eventually(tb, timeout, func() error {
		if p != nil {
			p.failIfExited(tb, "listening on "+addr)
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return err
		}
		return c.Close()
	})
}
