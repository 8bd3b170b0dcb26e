package gateway

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/dataplane/upstream"
	"github.com/metamcp/metamcp/test/fixtures/fixture"
)

// talkTools are the fixture tools that talk back to the client.
const talkTools = "echo,progress,sample,log,elicit,roots,slow,cancelled"

// talkHarness is a gateway over the real upstream pool in front of two
// mcpfixture upstreams that both serve every client from one shared
// session: "web" (Streamable HTTP, which relates messages to calls on the
// wire) and "local" (stdio, which does not).
func talkHarness(t *testing.T, mod func(*Options)) *harness {
	t.Helper()
	bin := fixture.Build(t)
	webURL := fixture.Start(t, bin, "http", "web", "--tools", talkTools)
	cfg := testConfig(&metamcpv1.NamespaceMember{Server: "local"}, &metamcpv1.NamespaceMember{Server: "web"})
	cfg.Servers = append(cfg.Servers,
		&metamcpv1.Server{Name: "local", Transport: &metamcpv1.Server_Stdio{Stdio: &metamcpv1.StdioTransport{Command: bin, Args: fixture.StdioArgs("local", "--tools", talkTools)}}},
		&metamcpv1.Server{Name: "web", Transport: &metamcpv1.Server_StreamableHttp{StreamableHttp: &metamcpv1.HTTPTransport{Url: webURL}}},
	)
	holder := &configHolder{}
	holder.set(t, cfg)
	newPool := realPool(t, nil, upstream.PoolOptions{MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond}, holder)
	return newHarness(t, cfg, map[string]*mcp.Server{}, func(o *Options) {
		o.Config = holder
		o.Pool = newPool
		if mod != nil {
			mod(o)
		}
	})
}

// talkClient is a go-sdk client that records what the gateway sends it and
// answers sampling, elicitation and roots with its own name.
type talkClient struct {
	name string
	cs   *mcp.ClientSession

	mu       sync.Mutex
	progress []string // token:progress
	logs     []string // level:marker
	asked    []string // methods of the server-to-client requests
}

func (c *talkClient) record(f func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	f()
}

func (c *talkClient) snapshot() (progress, logs, asked []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.progress), slices.Clone(c.logs), slices.Clone(c.asked)
}

// connectTalk connects a talkClient at version ("" = 2026-07-28; 2024-11-05
// uses the SSE transport). noSampling leaves the sampling capability out.
func connectTalk(t *testing.T, h *harness, name, version string, noSampling bool) *talkClient {
	t.Helper()
	tc := &talkClient{name: name}
	opts := &mcp.ClientOptions{
		ElicitationHandler: func(_ context.Context, req *mcp.ElicitRequest) (*mcp.ElicitResult, error) {
			tc.record(func() { tc.asked = append(tc.asked, "elicitation/create:"+req.Params.Mode) })
			if req.Params.Mode == "url" {
				return &mcp.ElicitResult{Action: "accept"}, nil
			}
			return &mcp.ElicitResult{Action: "accept", Content: map[string]any{"answer": name}}, nil
		},
		Capabilities: &mcp.ClientCapabilities{
			RootsV2:     &mcp.RootCapabilities{}, //nolint:staticcheck // roots still pass through
			Elicitation: &mcp.ElicitationCapabilities{Form: &mcp.FormElicitationCapabilities{}, URL: &mcp.URLElicitationCapabilities{}},
		},
		ProgressNotificationHandler: func(_ context.Context, req *mcp.ProgressNotificationClientRequest) {
			tc.record(func() {
				tc.progress = append(tc.progress, fmt.Sprintf("%v:%v", req.Params.ProgressToken, req.Params.Progress))
			})
		},
		LoggingMessageHandler: func(_ context.Context, req *mcp.LoggingMessageRequest) { //nolint:staticcheck // logging still passes through
			d, _ := req.Params.Data.(map[string]any)
			tc.record(func() {
				tc.logs = append(tc.logs, fmt.Sprintf("%s:%v:%s", req.Params.Level, d["marker"], req.Params.Logger))
			})
		},
	}
	if !noSampling {
		opts.CreateMessageHandler = func(_ context.Context, req *mcp.CreateMessageRequest) (*mcp.CreateMessageResult, error) { //nolint:staticcheck // sampling still passes through
			tc.record(func() { tc.asked = append(tc.asked, "sampling/createMessage") })
			return &mcp.CreateMessageResult{Role: "assistant", Model: "test", Content: &mcp.TextContent{Text: "sampled by " + name}}, nil //nolint:staticcheck // sampling still passes through
		}
	}
	client := mcp.NewClient(&mcp.Implementation{Name: name, Version: "1"}, opts)
	client.AddRoots(&mcp.Root{URI: "file:///" + name, Name: name}) //nolint:staticcheck // roots still pass through
	hc := &http.Client{Transport: &keyTransport{key: keyAlice}}
	var tr mcp.Transport
	if version == version20241105 {
		tr = &mcp.SSEClientTransport{Endpoint: h.url("main", "sse"), HTTPClient: hc}
	} else {
		tr = &mcp.StreamableClientTransport{Endpoint: h.url("main", "mcp"), HTTPClient: hc, MaxRetries: -1}
	}
	var copts *mcp.ClientSessionOptions
	if version != "" {
		copts = &mcp.ClientSessionOptions{ProtocolVersion: version}
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	cs, err := client.Connect(ctx, tr, copts)
	if err != nil {
		t.Fatalf("connect %s at %q: %v", name, version, err)
	}
	t.Cleanup(func() { _ = cs.Close() })
	tc.cs = cs
	return tc
}

// call calls a tool and returns its text (or the error's).
func (c *talkClient) call(ctx context.Context, tool string, args map[string]any, meta mcp.Meta) string {
	res, err := c.cs.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: args, Meta: meta})
	if err != nil {
		return "error: " + err.Error()
	}
	var parts []string
	for _, ct := range res.Content {
		if tx, ok := ct.(*mcp.TextContent); ok {
			parts = append(parts, tx.Text)
		}
	}
	s := strings.Join(parts, "\n")
	if res.IsError {
		return "tool error: " + s
	}
	return s
}

// TestTwoClientsTalkBack: two session-based clients at once, on upstreams
// shared by both, each get exactly their own progress and log messages and
// answer their own sampling, elicitation and roots requests.
func TestTwoClientsTalkBack(t *testing.T) {
	if testing.Short() {
		t.Skip("runs mcpfixture processes")
	}
	h := talkHarness(t, nil)
	for _, version := range []string{"2025-11-25", "2025-06-18", version20241105} {
		t.Run(version, func(t *testing.T) {
			ctx := testCtx(t)
			clients := []*talkClient{connectTalk(t, h, "ann", version, false), connectTalk(t, h, "bob", version, false)}
			// Different levels on one shared upstream session: the gateway
			// filters for each client.
			levels := map[string]string{"ann": "warning", "bob": "debug"}
			wantLogs := map[string]int{"ann": 2, "bob": 4}
			for _, c := range clients {
				if err := c.cs.SetLoggingLevel(ctx, &mcp.SetLoggingLevelParams{Level: mcp.LoggingLevel(levels[c.name])}); err != nil { //nolint:staticcheck // logging still passes through
					t.Fatal(err)
				}
			}
			// askAll runs the server-to-client tools of server for c. A
			// stdio upstream relates nothing on the wire: while two clients'
			// calls are in flight on its shared session, its requests have no
			// addressee and fail with an error that says so (lenient); they
			// must never reach the other client.
			askAll := func(c *talkClient, server string, lenient bool) {
				tag := c.name + "-" + server
				check := func(what, got, want string) {
					if got == want || (lenient && strings.Contains(got, "no client is its addressee")) {
						return
					}
					t.Errorf("%s %s: %q, want %q", tag, what, got, want)
				}
				check("sample", c.call(ctx, server+"__sample", map[string]any{"prompt": "hi"}, nil), "sampled by "+c.name)
				check("elicit form", c.call(ctx, server+"__elicit", map[string]any{"mode": "form", "message": "?"}, nil), "accept "+c.name)
				check("elicit url", c.call(ctx, server+"__elicit", map[string]any{"mode": "url", "message": "?"}, nil), "accept")
				check("roots", c.call(ctx, server+"__roots", nil, nil), "file:///"+c.name)
			}
			var wg sync.WaitGroup
			for _, c := range clients {
				for _, server := range []string{"web", "local"} {
					wg.Go(func() {
						tag := c.name + "-" + server
						// Progress tokens are mapped: exact even on stdio.
						if got := c.call(ctx, server+"__progress", map[string]any{"count": 3, "interval_ms": 20}, mcp.Meta{"progressToken": tag}); got != "done" {
							t.Errorf("%s progress: %q", tag, got)
						}
						askAll(c, server, server == "local")
						if server == "web" {
							if got := c.call(ctx, server+"__log", map[string]any{"marker": tag}, nil); got != "logged" {
								t.Errorf("%s log: %q", tag, got)
							}
						}
					})
				}
			}
			wg.Wait()
			// One client at a time, stdio relates everything to the call.
			for _, c := range clients {
				askAll(c, "local", false)
				if got := c.call(ctx, "local__log", map[string]any{"marker": c.name + "-local"}, nil); got != "logged" {
					t.Errorf("%s local log: %q", c.name, got)
				}
			}
			for _, c := range clients {
				waitFor(t, "log messages and progress", func() bool {
					progress, logs, _ := c.snapshot()
					return len(logs) >= 2*wantLogs[c.name] && len(progress) >= 6
				})
				progress, logs, _ := c.snapshot()
				for _, server := range []string{"web", "local"} {
					tag := c.name + "-" + server
					want := []string{tag + ":1", tag + ":2", tag + ":3"}
					var got []string
					for _, p := range progress {
						if strings.HasPrefix(p, tag+":") {
							got = append(got, p)
						}
					}
					if !slices.Equal(got, want) {
						t.Errorf("%s: progress %v, want %v", tag, got, want)
					}
					var gotLogs []string
					for _, l := range logs {
						if strings.Contains(l, ":"+tag+":") {
							gotLogs = append(gotLogs, l)
						}
					}
					if len(gotLogs) != wantLogs[c.name] {
						t.Errorf("%s: log messages %v, want %d (%s and up)", tag, gotLogs, wantLogs[c.name], levels[c.name])
					}
				}
				for _, p := range progress {
					if !strings.HasPrefix(p, c.name+"-") {
						t.Errorf("%s got another client's progress %q", c.name, p)
					}
				}
				for _, l := range logs {
					if !strings.Contains(l, ":"+c.name+"-") {
						t.Errorf("%s got another client's log message %q", c.name, l)
					}
				}
			}
		})
	}
}

// TestSamplingNeedsCapability: a client that did not declare sampling is
// not sent sampling/createMessage; the upstream gets an error instead.
func TestSamplingNeedsCapability(t *testing.T) {
	if testing.Short() {
		t.Skip("runs mcpfixture processes")
	}
	h := talkHarness(t, nil)
	c := connectTalk(t, h, "cap", "2025-11-25", true)
	ctx := testCtx(t)
	for _, server := range []string{"web", "local"} {
		got := c.call(ctx, server+"__sample", map[string]any{"prompt": "hi"}, nil)
		if !strings.Contains(got, "did not declare the sampling capability") {
			t.Errorf("%s sample without the capability: %q", server, got)
		}
	}
	if _, _, asked := c.snapshot(); len(asked) != 0 {
		t.Errorf("the client was asked %v", asked)
	}
}

// TestCancelReachesUpstream: a client's notifications/cancelled (the go-sdk
// sends one when the call's context ends) cancels the upstream call.
func TestCancelReachesUpstream(t *testing.T) {
	if testing.Short() {
		t.Skip("runs mcpfixture processes")
	}
	h := talkHarness(t, nil)
	for _, version := range []string{"2025-11-25", version20241105, ""} {
		t.Run("version "+version, func(t *testing.T) {
			c := connectTalk(t, h, "can", version, false)
			ctx := testCtx(t)
			for _, server := range []string{"web", "local"} {
				tag := fmt.Sprintf("%s-%s-%d", server, version, time.Now().UnixNano())
				cctx, cancel := context.WithCancel(ctx)
				done := make(chan string, 1)
				go func() { done <- c.call(cctx, server+"__slow", map[string]any{"ms": 60000, "tag": tag}, nil) }()
				waitFor(t, "the slow call to start", func() bool {
					return strings.HasPrefix(c.call(ctx, server+"__cancelled", map[string]any{"tag": tag}, nil), "started=1")
				})
				cancel()
				<-done
				waitFor(t, "the upstream call to be cancelled", func() bool {
					return c.call(ctx, server+"__cancelled", map[string]any{"tag": tag}, nil) == "started=1 cancelled=1"
				})
			}
		})
	}
}

// TestStatelessProgressAndLog: a 2026-07-28 client gets its call's progress
// and log messages on the call's response.
func TestStatelessProgressAndLog(t *testing.T) {
	if testing.Short() {
		t.Skip("runs mcpfixture processes")
	}
	h := talkHarness(t, nil)
	c := connectTalk(t, h, "sl", "", false)
	ctx := testCtx(t)
	for _, server := range []string{"web", "local"} {
		if got := c.call(ctx, server+"__progress", map[string]any{"count": 2}, mcp.Meta{"progressToken": "p-" + server}); got != "done" {
			t.Errorf("%s progress: %q", server, got)
		}
	}
	// The go-sdk client hands notifications to their handler apart from
	// the call's answer: wait for them.
	waitFor(t, "progress notifications", func() bool {
		progress, _, _ := c.snapshot()
		return len(progress) >= 4
	})
	progress, _, _ := c.snapshot()
	if want := []string{"p-web:1", "p-web:2", "p-local:1", "p-local:2"}; !slices.Equal(progress, want) {
		t.Errorf("progress %v, want %v", progress, want)
	}
	// Log messages within the level the request's _meta asks for; none
	// when it asks for none.
	for _, server := range []string{"web", "local"} {
		c.call(ctx, server+"__log", map[string]any{"marker": "quiet-" + server}, nil)
		c.call(ctx, server+"__log", map[string]any{"marker": "info-" + server}, mcp.Meta{metaLogLevel: "info"})
	}
	waitFor(t, "log messages", func() bool {
		_, logs, _ := c.snapshot()
		return len(logs) >= 6
	})
	_, logs, _ := c.snapshot()
	slices.Sort(logs)
	want := []string{
		"error:info-local:fixture", "error:info-web:fixture", "info:info-local:fixture",
		"info:info-web:fixture", "warning:info-local:fixture", "warning:info-web:fixture",
	}
	if !slices.Equal(logs, want) {
		t.Errorf("stateless log messages %v, want %v", logs, want)
	}
}
