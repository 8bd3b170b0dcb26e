package gateway

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"sort"
	"testing"
	"time"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/dataplane/upstream"
)

// BenchmarkToolsList20 measures tools/list on an endpoint of 20 Streamable
// HTTP upstreams (go-sdk servers of 4 tools each, on loopback) through the
// real pool: "kept" serves the sessions' kept lists, "volatile" asks all 20
// upstreams each time. It reports the median (p50-ns/op) beside the mean.
func BenchmarkToolsList20(b *testing.B) {
	for _, volatile := range []bool{false, true} {
		name := "kept"
		if volatile {
			name = "volatile"
		}
		b.Run(name, func(b *testing.B) { benchToolsList(b, 20, volatile) })
	}
}

func benchToolsList(b *testing.B, n int, volatile bool) {
	var members []*metamcpv1.NamespaceMember
	cfg := testConfig()
	for i := range n {
		name := fmt.Sprintf("s%02d", i)
		srv := httpUpstream(name, serveHTTP(b, fixtureServer(name, nil)))
		srv.Volatile = volatile
		cfg.Servers = append(cfg.Servers, srv)
		members = append(members, &metamcpv1.NamespaceMember{Server: name})
	}
	cfg.Namespaces[0].Members = members
	holder := &configHolder{}
	holder.set(b, cfg)
	g := New(Options{Config: holder, Pool: realPool(b, nil, upstream.PoolOptions{}, holder), Logger: testLogger(b)})
	b.Cleanup(g.Close)
	handler := g.Handler()

	req, _ := http.NewRequest(http.MethodPost, "http://127.0.0.1:12008/metamcp/main/mcp", nil)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Authorization", "Bearer "+keyAlice)
	init, _ := http.NewRequest(http.MethodPost, req.URL.String(), bytes.NewReader([]byte(initBody)))
	init.Header = req.Header.Clone()
	w := &discardWriter{h: http.Header{}}
	handler.ServeHTTP(w, init)
	sid := w.h.Get(headerSessionID)
	if sid == "" {
		b.Fatalf("initialize: status %d, no session", w.status)
	}
	req.Header.Set(headerSessionID, sid)
	body := []byte(`{"jsonrpc":"2.0","id":7,"method":"tools/list","params":{}}`)
	rd := bytes.NewReader(body)
	list := func() {
		rd.Reset(body)
		r := req.Clone(context.Background())
		r.Body = io.NopCloser(rd)
		r.ContentLength = int64(len(body))
		clear(w.h)
		w.status = 0
		handler.ServeHTTP(w, r)
		if w.status != 0 && w.status != http.StatusOK {
			b.Fatalf("status %d", w.status)
		}
	}
	list() // connects the 20 sessions and keeps their lists
	var times []time.Duration
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		start := time.Now()
		list()
		times = append(times, time.Since(start))
	}
	b.StopTimer()
	sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
	b.ReportMetric(float64(times[len(times)/2].Nanoseconds()), "p50-ns/op")
}
