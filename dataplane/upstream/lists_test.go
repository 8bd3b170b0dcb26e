package upstream

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/dataplane/rpc"
	"github.com/metamcp/metamcp/test/fixtures/fixture"
)

func listNames(t *testing.T, s Session, method string) []string {
	t.Helper()
	p, err := s.(Lister).List(ctxT(t, 20*time.Second), method, "")
	if err != nil {
		t.Fatalf("%s: %v", method, err)
	}
	var names []string
	for _, it := range p.Items {
		n, _ := rpc.StringField(it, "name")
		names = append(names, n)
	}
	return names
}

// TestKeptLists: a session keeps its lists until the upstream says they
// changed (over each transport); a volatile server's are never kept.
func TestKeptLists(t *testing.T) {
	for name, start := range transports(t) {
		t.Run(name, func(t *testing.T) {
			p := newTestPool(t, PoolOptions{}, start(t, "k"))
			ctx := ctxT(t, 20*time.Second)
			s, err := p.Session(ctx, "k", "")
			if err != nil {
				t.Fatal(err)
			}
			ss := s.(*session)
			if ht, ok := ss.t.(*httpTransport); ok {
				// The event stream that carries list_changed opens after
				// initialize.
				deadline := time.Now().Add(10 * time.Second)
				for !ht.hearing() {
					if time.Now().After(deadline) {
						t.Fatal("the event stream never opened")
					}
					time.Sleep(5 * time.Millisecond)
				}
			}
			first := listNames(t, s, "tools/list")
			again := listNames(t, s, "tools/list")
			if !slices.Equal(first, again) || ss.keptHits.Load() != 1 {
				t.Fatalf("second tools/list: %v (first %v), %d served kept; want the kept one", again, first, ss.keptHits.Load())
			}
			if _, err := toolText(ctx, s, "addtool", map[string]any{"name": "fresh"}); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(10 * time.Second)
			for !slices.Contains(listNames(t, s, "tools/list"), "fresh") {
				if time.Now().After(deadline) {
					t.Fatal("the kept list outlived the upstream's list_changed")
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
	t.Run("volatile", func(t *testing.T) {
		srv := stdioServer(fixture.Build(t), "v")
		srv.Volatile = true
		p := newTestPool(t, PoolOptions{}, srv)
		s, err := p.Session(ctxT(t, 20*time.Second), "v", "")
		if err != nil {
			t.Fatal(err)
		}
		listNames(t, s, "tools/list")
		listNames(t, s, "tools/list")
		if n := s.(*session).keptHits.Load(); n != 0 {
			t.Fatalf("a volatile server's list was served kept %d times", n)
		}
	})
}

// countingTransport answers tools/list with one tool and counts the lists.
type countingTransport struct {
	lists atomic.Int64
	ttl   string // the result's ttlMs member, "" for none
	fin   chan struct{}
	block chan struct{} // when set, tools/list waits for it
	sent  chan []byte   // when set, receives what the session sends
}

func (c *countingTransport) roundTrip(ctx context.Context, id int64, body []byte) (*rpc.Message, error) {
	c.lists.Add(1)
	if c.block != nil {
		select {
		case <-c.block:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	res := `{"tools":[{"name":"t","inputSchema":{"type":"object"}}]` + c.ttl + `}`
	return &rpc.Message{ID: json.RawMessage(`1`), Result: json.RawMessage(res)}, nil
}
func (c *countingTransport) send(_ context.Context, b []byte) error {
	if c.sent != nil {
		c.sent <- append([]byte(nil), b...)
	}
	return nil
}
func (c *countingTransport) close()                {}
func (c *countingTransport) done() <-chan struct{} { return c.fin }
func (c *countingTransport) err() error            { return nil }
func (c *countingTransport) processes() int        { return 0 }

func countingSession(t *testing.T, cfg *metamcpv1.Server, caps string, ct *countingTransport) *session {
	ct.fin = make(chan struct{})
	s := newSession(cfg.GetName(), "", cfg, &PoolOptions{DefaultListTimeout: 10 * time.Second, DefaultCallTimeout: 10 * time.Second}, testLogger(t))
	s.t = ct
	s.info = &Info{ProtocolVersion: "2025-11-25"}
	s.setListCapabilities(json.RawMessage(caps))
	t.Cleanup(s.close)
	return s
}

// TestListMaxAge: a list the upstream cannot announce changes of is kept
// for the server's listMaxAge; a ttlMs says how long otherwise, 0 not at
// all; callers that miss at once share one request.
func TestListMaxAge(t *testing.T) {
	list := func(s *session) {
		t.Helper()
		if _, err := s.List(ctxT(t, 10*time.Second), "tools/list", ""); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("bound", func(t *testing.T) {
		ct := &countingTransport{}
		cfg := &metamcpv1.Server{Name: "b", ListMaxAge: durationpb.New(100 * time.Millisecond)}
		s := countingSession(t, cfg, `{"tools":{}}`, ct)
		start := time.Now()
		list(s)
		list(s)
		if n := ct.lists.Load(); n != 1 {
			t.Fatalf("%d requests for two lists within listMaxAge, want 1", n)
		}
		for time.Since(start) < 150*time.Millisecond {
			time.Sleep(10 * time.Millisecond)
		}
		list(s)
		if n := ct.lists.Load(); n != 2 {
			t.Fatalf("%d requests after listMaxAge, want 2", n)
		}
	})
	t.Run("notifying upstream kept past the bound", func(t *testing.T) {
		ct := &countingTransport{}
		cfg := &metamcpv1.Server{Name: "n", ListMaxAge: durationpb.New(time.Millisecond)}
		s := countingSession(t, cfg, `{"tools":{"listChanged":true}}`, ct)
		list(s)
		time.Sleep(5 * time.Millisecond)
		list(s)
		if n := ct.lists.Load(); n != 1 {
			t.Fatalf("%d requests, want 1: the upstream announces changes", n)
		}
		s.onMessage(nil, &rpc.Message{Method: "notifications/tools/list_changed"})
		list(s)
		if n := ct.lists.Load(); n != 2 {
			t.Fatalf("%d requests after list_changed, want 2", n)
		}
	})
	t.Run("ttlMs 0", func(t *testing.T) {
		ct := &countingTransport{ttl: `,"ttlMs":0`}
		s := countingSession(t, &metamcpv1.Server{Name: "z"}, `{"tools":{"listChanged":true}}`, ct)
		// At a session-based revision ttlMs means nothing: kept.
		s.info = &Info{ProtocolVersion: "2025-11-25"}
		list(s)
		list(s)
		if n := ct.lists.Load(); n != 1 {
			t.Fatalf("%d requests at 2025-11-25, want 1: ttlMs is not of that revision", n)
		}
		s.info = &Info{ProtocolVersion: "2026-07-28"}
		s.dropAllLists()
		list(s)
		list(s)
		if n := ct.lists.Load(); n != 3 {
			t.Fatalf("%d requests at 2026-07-28, want 3: ttlMs 0 keeps nothing", n)
		}
	})
	t.Run("one request for concurrent misses", func(t *testing.T) {
		ct := &countingTransport{block: make(chan struct{})}
		s := countingSession(t, &metamcpv1.Server{Name: "c"}, `{}`, ct)
		errs := make(chan error, 3)
		for range 3 {
			go func() {
				_, err := s.List(ctxT(t, 10*time.Second), "tools/list", "")
				errs <- err
			}()
		}
		deadline := time.Now().Add(5 * time.Second)
		for ct.lists.Load() == 0 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		// A caller that stops waiting leaves the request running.
		short, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		if _, err := s.List(short, "tools/list", ""); err == nil {
			t.Fatal("a list answered before the upstream did")
		}
		close(ct.block)
		for range 3 {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
		if n := ct.lists.Load(); n != 1 {
			t.Fatalf("%d requests for concurrent lists, want 1", n)
		}
	})
}

// TestRefusedRequestLogged: a server-to-client request the gateway refuses
// is logged at debug level with the reason.
func TestRefusedRequestLogged(t *testing.T) {
	var logs syncBuffer
	ct := &countingTransport{sent: make(chan []byte, 1), fin: make(chan struct{})}
	s := newSession("r", "", &metamcpv1.Server{Name: "r"}, &PoolOptions{}, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	s.t = ct
	t.Cleanup(s.close)
	s.onMessage(nil, &rpc.Message{ID: json.RawMessage(`9`), Method: "sampling/createMessage", Params: json.RawMessage(`{}`)})
	select {
	case b := <-ct.sent:
		if !bytes.Contains(b, []byte(`"error"`)) {
			t.Fatalf("the upstream got %s, want an error", b)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no answer to the upstream's request")
	}
	if got := logs.String(); !strings.Contains(got, "refused a server-to-client request") || !strings.Contains(got, "sampling/createMessage") || !strings.Contains(got, "belongs to no client call") {
		t.Errorf("log %q lacks the refusal and its reason", got)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
