package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestServeDebug(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", "example.com:6060", "10.0.0.1:6060", "6060"} {
		var lc net.ListenConfig
		stop, err := serveDebug(context.Background(), &lc, addr, slog.New(slog.DiscardHandler))
		var ue usageError
		if err == nil || !errors.As(err, &ue) {
			if stop != nil {
				stop()
			}
			t.Errorf("--debug-listen %s: err = %v, want a usage error", addr, err)
		}
	}

	var logs bytes.Buffer
	var lc net.ListenConfig
	stop, err := serveDebug(context.Background(), &lc, "127.0.0.1:0", slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	m := regexp.MustCompile(`msg="debug server listening" addr=(\S+)`).FindStringSubmatch(logs.String())
	if m == nil {
		t.Fatalf("no address logged: %s", logs.String())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+m[1]+"/debug/pprof/goroutine?debug=1", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(string(b), "goroutine profile: total ") {
		t.Errorf("goroutine profile: HTTP %d %.100s", resp.StatusCode, b)
	}
}
