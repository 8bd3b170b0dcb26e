package upstream

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/metamcp/metamcp/dataplane/rpc"
)

// testCaller is a Caller that records what reaches it and answers sampling
// with its own name.
type testCaller struct {
	id string

	mu     sync.Mutex
	tokens []string // progress tokens of the notifications received
	notes  []string // methods
	reqs   []string
}

func (c *testCaller) CallerID() string { return c.id }

func (c *testCaller) Notification(msg *rpc.Message) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.notes = append(c.notes, msg.Method)
	if msg.Method == "notifications/progress" {
		tok, _ := rpc.StringField(msg.Params, "progressToken")
		c.tokens = append(c.tokens, tok)
	}
}

func (c *testCaller) Request(_ context.Context, msg *rpc.Message) (json.RawMessage, error) {
	c.mu.Lock()
	c.reqs = append(c.reqs, msg.Method)
	c.mu.Unlock()
	if msg.Method != "sampling/createMessage" {
		return nil, rpc.NewError(rpc.CodeMethodNotFound, "no "+msg.Method)
	}
	return json.RawMessage(`{"role":"assistant","content":{"type":"text","text":"from ` + c.id + `"},"model":"test"}`), nil
}

func (c *testCaller) snapshot() (tokens, notes, reqs []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.tokens...), append([]string(nil), c.notes...), append([]string(nil), c.reqs...)
}

// tokenRecorder is an Events that records the progress tokens it gets.
type tokenRecorder struct {
	recorder
	mu     sync.Mutex
	tokens []string
}

func (r *tokenRecorder) Notification(server, clientID string, msg *rpc.Message) {
	r.recorder.Notification(server, clientID, msg)
	if msg.Method == "notifications/progress" {
		tok, _ := rpc.StringField(msg.Params, "progressToken")
		r.mu.Lock()
		r.tokens = append(r.tokens, tok)
		r.mu.Unlock()
	}
}

func progressParams(token string, count, intervalMS int) json.RawMessage {
	return json.RawMessage(fmt.Sprintf(`{"name":"progress","arguments":{"count":%d,"interval_ms":%d},"_meta":{"progressToken":%q}}`, count, intervalMS, token))
}

// TestCallerRouting: what an upstream sends while serving a call reaches
// that call's Caller, and two clients' calls on one shared session never
// get each other's messages.
func TestCallerRouting(t *testing.T) {
	for tname, mk := range transports(t) {
		t.Run(tname, func(t *testing.T) {
			ev := &tokenRecorder{}
			p := newTestPool(t, PoolOptions{Events: ev}, mk(t, "rt"))
			ctx := ctxT(t, 60*time.Second)
			s, err := p.Session(ctx, "rt", "")
			if err != nil {
				t.Fatal(err)
			}

			// One call alone: its progress and its sampling request reach its Caller.
			solo := &testCaller{id: "solo"}
			if _, err := s.Call(WithCaller(ctx, solo), "tools/call", progressParams("solo-1", 3, 0)); err != nil {
				t.Fatal(err)
			}
			out, err := toolText(WithCaller(ctx, solo), s, "sample", map[string]any{"prompt": "hi"})
			if err != nil || out != "from solo" {
				t.Errorf("sample through a Caller: %q, %v", out, err)
			}
			tokens, _, reqs := solo.snapshot()
			if len(tokens) != 3 || len(reqs) != 1 {
				t.Errorf("solo caller got progress %v and requests %v, want 3 and 1", tokens, reqs)
			}
			if n := ev.count("notifications/progress"); n != 0 {
				t.Errorf("%d progress notifications of a call with a Caller went to Events", n)
			}

			// Two clients at once.
			a, b := &testCaller{id: "A"}, &testCaller{id: "B"}
			var wg sync.WaitGroup
			results := map[string]string{}
			var mu sync.Mutex
			for _, c := range []*testCaller{a, b} {
				wg.Go(func() {
					cctx := WithCaller(ctx, c)
					if _, err := s.Call(cctx, "tools/call", progressParams("tok-"+c.id, 4, 40)); err != nil {
						t.Errorf("progress for %s: %v", c.id, err)
					}
					out, err := toolText(cctx, s, "sample", map[string]any{"prompt": c.id})
					if err != nil {
						t.Errorf("sample for %s: %v", c.id, err)
					}
					mu.Lock()
					results[c.id] = out
					mu.Unlock()
				})
			}
			wg.Wait()
			for _, c := range []*testCaller{a, b} {
				other := map[string]string{"A": "B", "B": "A"}[c.id]
				tokens, _, _ := c.snapshot()
				for _, tok := range tokens {
					if tok != "tok-"+c.id {
						t.Errorf("caller %s got progress token %q", c.id, tok)
					}
				}
				if results[c.id] == "from "+other {
					t.Errorf("caller %s's sampling request was answered by %s", c.id, other)
				}
				// Streamable HTTP relates progress on the wire; for stdio and
				// SSE the session maps tokens.
				if len(tokens) != 4 {
					t.Errorf("caller %s: progress %v, want 4 of its own", c.id, tokens)
				}
				if tname == "http" && results[c.id] != "from "+c.id {
					t.Errorf("caller %s: sample %q, want its own answer", c.id, results[c.id])
				}
			}
			ev.mu.Lock()
			if len(ev.tokens) != 0 {
				t.Errorf("progress tokens %v went to Events, not to their calls", ev.tokens)
			}
			ev.mu.Unlock()
		})
	}
}
