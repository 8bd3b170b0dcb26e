package e2e

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/metamcp/metamcp/internal/testharness"
)

// notifTimeout bounds each wait for a notification, a server-to-client
// request or a cancellation to arrive: far above what a working gateway
// needs on loopback, low enough that a missing feature fails in seconds.
const notifTimeout = 5 * time.Second

// quietPeriod is how long a test watches for a notification that must not
// come (10x the gateway's list_changed debounce).
const quietPeriod = 1500 * time.Millisecond

// progressEvent is one notifications/progress a client received.
type progressEvent struct {
	token    any
	progress float64
	total    float64
}

// logEvent is one notifications/message a client received.
type logEvent struct {
	level  string
	marker string
}

// notifClient is a go-sdk client session through the gateway whose handlers
// record what the gateway delivers to it, and answer server-to-client
// requests with answers that name the client (so a request routed to the
// wrong client shows in the tool's result).
type notifClient struct {
	name      string
	stateless bool
	cs        *mcp.ClientSession
	roots     []string

	mu           sync.Mutex
	progress     []progressEvent
	logs         []logEvent
	updated      []string
	toolsChanged int
	elicitURLs   []string
	samples      int
}

// connectNotifClient connects a client named name to the gateway's /mcp at
// version ("" for the go-sdk's newest, 2026-07-28, stateless) with roots
// file:///NAME/r1 and file:///NAME/r2.
func connectNotifClient(ctx context.Context, t *testing.T, base, key, name, version string) *notifClient {
	t.Helper()
	c := &notifClient{name: name, stateless: version == "" || version >= "2026-07-28"}
	c.roots = []string{"file:///" + name + "/r1", "file:///" + name + "/r2"}
	client := mcp.NewClient(&mcp.Implementation{Name: "e2e-" + name, Version: "v0"}, &mcp.ClientOptions{
		Capabilities: &mcp.ClientCapabilities{
			RootsV2:     &mcp.RootCapabilities{ListChanged: true}, //nolint:staticcheck // deprecated from 2026-07-28; clients and servers still use it and the gateway must carry it
			Elicitation: &mcp.ElicitationCapabilities{Form: &mcp.FormElicitationCapabilities{}, URL: &mcp.URLElicitationCapabilities{}},
		},
		CreateMessageHandler: c.createMessage, //nolint:staticcheck // sampling is deprecated from 2026-07-28; the gateway must still carry it
		ElicitationHandler:   c.elicit,
		LoggingMessageHandler: func(_ context.Context, req *mcp.LoggingMessageRequest) { //nolint:staticcheck // as above, for logging
			marker := ""
			if m, ok := req.Params.Data.(map[string]any); ok {
				marker, _ = m["marker"].(string)
			}
			c.mu.Lock()
			defer c.mu.Unlock()
			c.logs = append(c.logs, logEvent{level: string(req.Params.Level), marker: marker})
		},
		ProgressNotificationHandler: func(_ context.Context, req *mcp.ProgressNotificationClientRequest) {
			c.mu.Lock()
			defer c.mu.Unlock()
			c.progress = append(c.progress, progressEvent{token: req.Params.ProgressToken, progress: req.Params.Progress, total: req.Params.Total})
		},
		ResourceUpdatedHandler: func(_ context.Context, req *mcp.ResourceUpdatedNotificationRequest) {
			c.mu.Lock()
			defer c.mu.Unlock()
			c.updated = append(c.updated, req.Params.URI)
		},
		ToolListChangedHandler: func(context.Context, *mcp.ToolListChangedRequest) {
			c.mu.Lock()
			defer c.mu.Unlock()
			c.toolsChanged++
		},
	})
	for _, r := range c.roots {
		client.AddRoots(&mcp.Root{URI: r}) //nolint:staticcheck // deprecated from 2026-07-28; clients and servers still use it and the gateway must carry it
	}
	cs, err := client.Connect(ctx, &mcp.StreamableClientTransport{
		Endpoint:   base + "/mcp",
		HTTPClient: &http.Client{Transport: bearer{key: key}},
	}, &mcp.ClientSessionOptions{ProtocolVersion: version})
	if err != nil {
		t.Fatalf("client %s: connect at %q: %v", name, version, err)
	}
	t.Cleanup(func() { _ = cs.Close() })
	if got := cs.InitializeResult().ProtocolVersion; (got >= "2026-07-28") != c.stateless {
		t.Fatalf("client %s: negotiated %s, asked for %q", name, got, version)
	}
	c.cs = cs
	return c
}

func (c *notifClient) createMessage(_ context.Context, req *mcp.CreateMessageRequest) (*mcp.CreateMessageResult, error) { //nolint:staticcheck // deprecated from 2026-07-28; clients and servers still use it and the gateway must carry it
	prompt := ""
	if len(req.Params.Messages) > 0 {
		if tc, ok := req.Params.Messages[0].Content.(*mcp.TextContent); ok {
			prompt = tc.Text
		}
	}
	c.mu.Lock()
	c.samples++
	c.mu.Unlock()
	return &mcp.CreateMessageResult{Role: "assistant", Model: "e2e-model", Content: &mcp.TextContent{Text: c.name + " saw: " + prompt}}, nil //nolint:staticcheck // deprecated from 2026-07-28; clients and servers still use it and the gateway must carry it
}

func (c *notifClient) elicit(_ context.Context, req *mcp.ElicitRequest) (*mcp.ElicitResult, error) {
	if req.Params.Mode == "url" {
		c.mu.Lock()
		c.elicitURLs = append(c.elicitURLs, req.Params.URL)
		c.mu.Unlock()
		return &mcp.ElicitResult{Action: "accept"}, nil
	}
	return &mcp.ElicitResult{Action: "accept", Content: map[string]any{"answer": c.name + ":" + req.Params.Message}}, nil
}

// call calls a tool and returns its first text content; a tool error result
// is an error. meta is copied (the go-sdk adds to the map it is given).
func (c *notifClient) call(ctx context.Context, tool string, args map[string]any, meta mcp.Meta) (string, error) {
	res, err := c.cs.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: args, Meta: maps.Clone(meta)})
	if err != nil {
		return "", fmt.Errorf("client %s: call %s: %w", c.name, tool, err)
	}
	var text string
	if len(res.Content) > 0 {
		if tc, ok := res.Content[0].(*mcp.TextContent); ok {
			text = tc.Text
		}
	}
	if res.IsError {
		return "", fmt.Errorf("client %s: call %s: error result %q", c.name, tool, text)
	}
	return text, nil
}

// snapshot returns copies of what the client recorded.
func (c *notifClient) snapshot() (progress []progressEvent, logs []logEvent, updated []string, toolsChanged int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.progress), slices.Clone(c.logs), slices.Clone(c.updated), c.toolsChanged
}

func (c *notifClient) toolsChangedCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.toolsChanged
}

// reset forgets what the client recorded so far.
func (c *notifClient) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.progress, c.logs, c.updated, c.toolsChanged, c.elicitURLs, c.samples = nil, nil, nil, 0, nil, 0
}

// each runs f for every client at once and reports each one's error.
func each(t *testing.T, clients []*notifClient, f func(c *notifClient) error) {
	t.Helper()
	errs := make([]error, len(clients))
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Go(func() { errs[i] = f(c) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Error(err)
	}
}

// wait polls cond (testharness.Poll, under the client's lock) until it holds, for at most
// notifTimeout; the error says what cond last saw.
func (c *notifClient) wait(what string, cond func() (bool, string)) error {
	return c.waitWithin(notifTimeout, what, cond)
}

// waitWithin is wait for at most d.
func (c *notifClient) waitWithin(d time.Duration, what string, cond func() (bool, string)) error {
	err := testharness.Poll(d, func() error {
		c.mu.Lock()
		ok, state := cond()
		c.mu.Unlock()
		if !ok {
			return fmt.Errorf("last: %s", state)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("client %s: %s: %w", c.name, what, err)
	}
	return nil
}

// toolNamesOf lists a client's tools, sorted.
func toolNamesOf(ctx context.Context, c *notifClient) ([]string, error) {
	res, err := c.cs.ListTools(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("client %s: tools/list: %w", c.name, err)
	}
	var names []string
	for _, tool := range res.Tools {
		names = append(names, tool.Name)
	}
	slices.Sort(names)
	return names, nil
}

// describeLogs prints log events compactly for failure messages.
func describeLogs(logs []logEvent) string {
	var b strings.Builder
	for _, l := range logs {
		fmt.Fprintf(&b, "%s/%s ", l.marker, l.level)
	}
	return b.String()
}
