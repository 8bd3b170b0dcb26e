package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/metamcp/metamcp/internal/testharness"
	"github.com/metamcp/metamcp/test/fixtures/fixture"
)

// notifTools are the fixture tools the notification tests use.
const notifTools = "echo,slow,progress,log,elicit,roots,touch,subscribers,cancelled,sample,addtool"

// notifRevisions are the client revisions the notification tests run at:
// a session-based one and the stateless 2026-07-28 (the go-sdk's default).
var notifRevisions = []struct{ name, version string }{
	{"2025-11-25", "2025-11-25"},
	{"2026-07-28", ""},
}

// notifEnv starts a control plane, a data plane and three fixture upstreams
// behind one endpoint: web (Streamable HTTP, shared), loc (stdio,
// per_client) and sh (stdio, shared). It returns the endpoint's base URL
// and an API key.
func notifEnv(t *testing.T, endpoint string) (*controlPlane, *dataPlane, string, string) {
	t.Helper()
	fx := fixture.Build(t)
	webURL := fixture.Start(t, fx, "http", "web", "--tools", notifTools)
	cp := startControlPlane(t)
	dp := startDataPlane(t, cp, "dp-"+endpoint)
	cp.ok(t, "create", "server", "web", "--url", webURL)
	for _, s := range []struct{ name, mode string }{{"loc", "per_client"}, {"sh", "shared"}} {
		args := []string{"create", "server", s.name, "--command", fx, "--session-mode", s.mode}
		for _, a := range fixture.StdioArgs(s.name, "--tools", notifTools) {
			args = append(args, "--arg", a)
		}
		cp.ok(t, args...)
	}
	base, key := gatewayEndpoint(t, cp, dp, endpoint, "web", "loc", "sh")
	return cp, dp, base, key
}

// TestNotifications runs two go-sdk clients at once through a data plane
// process, at a session-based revision and at 2026-07-28, against the
// fixture over Streamable HTTP (shared), stdio (per_client) and stdio
// (shared): progress (both clients use the same token; each gets exactly
// its own notifications), logging (each gets its own messages at the level
// it asked for: logging/setLevel, or the request's _meta at 2026-07-28), cancellation (a cancelled call ends at the upstream, the
// other client's call does not), resource subscription updates (each gets
// the updates of its own subscription only, none after unsubscribing, and
// the upstream subscription ends with the last subscriber), and sampling, elicitation
// (form and URL mode) and roots answered by the client whose call caused
// them (on the shared stdio upstream, which relates nothing on the wire, one
// client at a time).
//
// The clients are two principals (API keys): 2026-07-28 requests have no
// session, so a per_client upstream serves each principal with one session,
// and two clients of one principal share it as they would a shared stdio
// upstream.
func TestNotifications(t *testing.T) {
	cp, dp, base, key := notifEnv(t, "nt")
	keyB := createAPIKey(t, cp, "nt-key-b", "nt")
	waitApplied(t, cp, cp.revisionNum(t), dp)
	for _, rev := range notifRevisions {
		t.Run(rev.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			a := connectNotifClient(ctx, t, base, key, "A", rev.version)
			b := connectNotifClient(ctx, t, base, keyB, "B", rev.version)
			clients := []*notifClient{a, b}
			defer func() {
				if t.Failed() {
					t.Logf("data plane logs:\n%s", dp.logs)
				}
			}()

			t.Run("Progress", func(t *testing.T) {
				for _, up := range []string{"web", "loc", "sh"} {
					for _, c := range clients {
						c.reset()
					}
					counts := map[*notifClient]int{a: 4, b: 6}
					each(t, clients, func(c *notifClient) error {
						n := counts[c]
						got, err := c.call(ctx, up+"__progress", map[string]any{"count": n, "interval_ms": 30}, mcp.Meta{"progressToken": "tok"})
						if err != nil {
							return err
						}
						if got != "done" {
							return fmt.Errorf("client %s: %s__progress = %q", c.name, up, got)
						}
						return c.wait(up+" progress", func() (bool, string) {
							return len(c.progress) >= n, fmt.Sprint(c.progress)
						})
					})
					// A barrier: calls after the progress call, so a stray
					// notification would have arrived.
					each(t, clients, func(c *notifClient) error {
						_, err := c.call(ctx, up+"__echo", map[string]any{"text": "barrier"}, nil)
						return err
					})
					for _, c := range clients {
						progress, _, _, _ := c.snapshot()
						n := counts[c]
						var want []progressEvent
						for i := 1; i <= n; i++ {
							want = append(want, progressEvent{token: "tok", progress: float64(i), total: float64(n)})
						}
						if !slices.Equal(progress, want) {
							t.Errorf("%s: client %s got progress %v, want %v", up, c.name, progress, want)
						}
					}
				}
			})

			t.Run("Logging", func(t *testing.T) {
				// Different levels, so that one client's level applied to
				// the other's messages (or to a shared upstream for both)
				// shows.
				levels := map[*notifClient]string{a: "warning", b: "debug"}
				wantLevels := map[*notifClient][]string{a: {"warning", "error"}, b: {"debug", "info", "warning", "error"}}
				meta := func(c *notifClient) mcp.Meta {
					if c.stateless {
						return mcp.Meta{"io.modelcontextprotocol/logLevel": levels[c]}
					}
					return nil
				}
				if !a.stateless {
					for _, c := range clients {
						if err := c.cs.SetLoggingLevel(ctx, &mcp.SetLoggingLevelParams{Level: mcp.LoggingLevel(levels[c])}); err != nil { //nolint:staticcheck // logging is deprecated from 2026-07-28; the gateway must still carry it
							t.Fatalf("client %s: logging/setLevel: %v", c.name, err)
						}
					}
				}
				for _, up := range []string{"web", "loc"} {
					for _, c := range clients {
						c.reset()
					}
					each(t, clients, func(c *notifClient) error {
						marker := c.name + "-" + up
						if _, err := c.call(ctx, up+"__log", map[string]any{"marker": marker}, meta(c)); err != nil {
							return err
						}
						return c.wait(up+" log messages", func() (bool, string) {
							return len(c.logs) >= len(wantLevels[c]), describeLogs(c.logs)
						})
					})
					each(t, clients, func(c *notifClient) error {
						_, err := c.call(ctx, up+"__echo", map[string]any{"text": "barrier"}, meta(c))
						return err
					})
					for _, c := range clients {
						_, logs, _, _ := c.snapshot()
						var want []logEvent
						for _, l := range wantLevels[c] {
							want = append(want, logEvent{l, c.name + "-" + up})
						}
						if !slices.Equal(logs, want) {
							t.Errorf("%s: client %s (level %s) got log messages %s, want %s", up, c.name, levels[c], describeLogs(logs), describeLogs(want))
						}
					}
				}
			})

			t.Run("Cancellation", func(t *testing.T) {
				for _, up := range []string{"web", "loc"} {
					type running struct {
						tag    string
						cancel context.CancelFunc
						done   chan error
					}
					calls := map[*notifClient]*running{}
					for _, c := range clients {
						cctx, ccancel := context.WithCancel(ctx)
						r := &running{tag: rev.name + "-" + up + "-" + c.name, cancel: ccancel, done: make(chan error, 1)}
						calls[c] = r
						go func() {
							_, err := c.call(cctx, up+"__slow", map[string]any{"ms": 120000, "tag": r.tag}, nil)
							r.done <- err
						}()
						defer ccancel()
					}
					counts := func(c *notifClient) string {
						got, err := c.call(ctx, up+"__cancelled", map[string]any{"tag": calls[c].tag}, nil)
						if err != nil {
							return err.Error()
						}
						return got
					}
					for _, c := range clients {
						eventuallyWithin(t, notifTimeout, up+": client "+c.name+"'s slow call reaches the upstream", func() (bool, string) {
							s := counts(c)
							return s == "started=1 cancelled=0", s
						})
					}
					calls[a].cancel()
					select {
					case err := <-calls[a].done:
						if err == nil {
							t.Errorf("%s: client A's cancelled slow call succeeded", up)
						}
					case <-time.After(notifTimeout):
						t.Fatalf("%s: client A's cancelled slow call did not return within %v", up, notifTimeout)
					}
					eventuallyWithin(t, notifTimeout, up+": the upstream sees client A's call cancelled", func() (bool, string) {
						s := counts(a)
						return s == "started=1 cancelled=1", s
					})
					if s := counts(b); s != "started=1 cancelled=0" {
						t.Errorf("%s: client B's slow call after A cancelled its own: %s, want started=1 cancelled=0", up, s)
					}
					select {
					case err := <-calls[b].done:
						t.Errorf("%s: client B's slow call ended when A cancelled its own: %v", up, err)
					default:
					}
					calls[b].cancel()
					eventuallyWithin(t, notifTimeout, up+": the upstream sees client B's call cancelled", func() (bool, string) {
						s := counts(b)
						return s == "started=1 cancelled=1", s
					})
				}
			})

			t.Run("ResourceUpdates", func(t *testing.T) {
				for _, c := range clients {
					c.reset()
				}
				for _, up := range []string{"web", "loc"} {
					each(t, clients, func(c *notifClient) error {
						uri := fmt.Sprintf("fixture://%s/items/%s-%s", up, rev.name, c.name)
						if err := c.cs.Subscribe(ctx, &mcp.SubscribeParams{URI: uri}); err != nil {
							return fmt.Errorf("client %s: subscribe %s: %w", c.name, uri, err)
						}
						// A 2026-07-28 subscription (subscriptions/listen) is
						// opened in the background: touch until the update
						// arrives.
						deadline := time.Now().Add(notifTimeout)
						for {
							if _, err := c.call(ctx, up+"__touch", map[string]any{"uri": uri}, nil); err != nil {
								return err
							}
							err := c.waitWithin(500*time.Millisecond, "update of "+uri, func() (bool, string) {
								return slices.Contains(c.updated, uri), fmt.Sprint(c.updated)
							})
							if err == nil {
								return nil
							}
							if time.Now().After(deadline) {
								n, serr := c.call(ctx, up+"__subscribers", map[string]any{"uri": uri}, nil)
								if serr != nil {
									n = "? (" + serr.Error() + ")"
								}
								return fmt.Errorf("%w (the upstream has %s subscriptions to it)", err, n)
							}
						}
					})
					// Nobody subscribed to this one.
					if _, err := a.call(ctx, up+"__touch", map[string]any{"uri": fmt.Sprintf("fixture://%s/items/nobody", up)}, nil); err != nil {
						t.Error(err)
					}
				}
				each(t, clients, func(c *notifClient) error {
					_, err := c.call(ctx, "web__echo", map[string]any{"text": "barrier"}, nil)
					return err
				})
				for _, c := range clients {
					_, _, updated, _ := c.snapshot()
					for _, u := range updated {
						if !strings.HasSuffix(u, "/items/"+rev.name+"-"+c.name) {
							t.Errorf("client %s got notifications/resources/updated for %s, which it did not subscribe to (all: %v)", c.name, u, updated)
						}
					}
				}
				if t.Failed() {
					return
				}

				// Unsubscribed: the gateway ends the upstream subscription,
				// and a touch reaches nobody.
				for _, c := range clients {
					c.reset()
				}
				each(t, clients, func(c *notifClient) error {
					for _, up := range []string{"web", "loc"} {
						uri := fmt.Sprintf("fixture://%s/items/%s-%s", up, rev.name, c.name)
						if err := c.cs.Unsubscribe(ctx, &mcp.UnsubscribeParams{URI: uri}); err != nil {
							return fmt.Errorf("client %s: unsubscribe %s: %w", c.name, uri, err)
						}
						if err := testharness.Poll(notifTimeout, func() error {
							n, err := c.call(ctx, up+"__subscribers", map[string]any{"uri": uri}, nil)
							if err != nil {
								return err
							}
							if n != "0" {
								return fmt.Errorf("client %s: %s still has %s subscriptions to %s after the client unsubscribed", c.name, up, n, uri)
							}
							return nil
						}); err != nil {
							return err
						}
						if _, err := c.call(ctx, up+"__touch", map[string]any{"uri": uri}, nil); err != nil {
							return err
						}
					}
					_, err := c.call(ctx, "web__echo", map[string]any{"text": "barrier"}, nil)
					return err
				})
				for _, c := range clients {
					if _, _, updated, _ := c.snapshot(); len(updated) > 0 {
						t.Errorf("client %s got notifications/resources/updated after it unsubscribed: %v", c.name, updated)
					}
				}
			})

			t.Run("Sampling", func(t *testing.T) {
				for _, up := range []string{"web", "loc"} {
					each(t, clients, func(c *notifClient) error {
						cctx, ccancel := context.WithTimeout(ctx, notifTimeout)
						defer ccancel()
						prompt := c.name + "-" + up
						got, err := c.call(cctx, up+"__sample", map[string]any{"prompt": prompt}, nil)
						if err != nil {
							return err
						}
						if want := c.name + " saw: " + prompt; got != want {
							return fmt.Errorf("client %s: %s__sample = %q, want %q", c.name, up, got, want)
						}
						return nil
					})
				}
			})

			t.Run("Elicitation", func(t *testing.T) {
				for _, up := range []string{"web", "loc"} {
					each(t, clients, func(c *notifClient) error {
						cctx, ccancel := context.WithTimeout(ctx, notifTimeout)
						defer ccancel()
						msg := c.name + "-" + up
						got, err := c.call(cctx, up+"__elicit", map[string]any{"message": msg}, nil)
						if err != nil {
							return err
						}
						if want := "accept " + c.name + ":" + msg; got != want {
							return fmt.Errorf("client %s: %s__elicit (form) = %q, want %q", c.name, up, got, want)
						}
						return nil
					})
				}
			})

			t.Run("ElicitationURL", func(t *testing.T) {
				for _, up := range []string{"web", "loc"} {
					for _, c := range clients {
						c.reset()
					}
					each(t, clients, func(c *notifClient) error {
						cctx, ccancel := context.WithTimeout(ctx, notifTimeout)
						defer ccancel()
						got, err := c.call(cctx, up+"__elicit", map[string]any{"mode": "url"}, nil)
						if err != nil {
							return err
						}
						if got != "accept" {
							return fmt.Errorf("client %s: %s__elicit (url) = %q, want accept", c.name, up, got)
						}
						c.mu.Lock()
						defer c.mu.Unlock()
						if !slices.Equal(c.elicitURLs, []string{"https://example.com/consent"}) {
							return fmt.Errorf("client %s: %s__elicit (url): the client was shown %v, want [https://example.com/consent]", c.name, up, c.elicitURLs)
						}
						return nil
					})
				}
			})

			t.Run("Roots", func(t *testing.T) {
				for _, up := range []string{"web", "loc"} {
					each(t, clients, func(c *notifClient) error {
						cctx, ccancel := context.WithTimeout(ctx, notifTimeout)
						defer ccancel()
						got, err := c.call(cctx, up+"__roots", nil, nil)
						if err != nil {
							return err
						}
						if want := strings.Join(c.roots, "\n"); got != want {
							return fmt.Errorf("client %s: %s__roots = %q, want %q", c.name, up, got, want)
						}
						return nil
					})
				}
			})

			// On a shared stdio upstream nothing on the wire says which call
			// a request or log message belongs to: the gateway can tell only
			// while one client has a call in flight there. One client after
			// the other, each gets its own.
			t.Run("SharedStdioOneAtATime", func(t *testing.T) {
				for _, c := range clients {
					cctx, ccancel := context.WithTimeout(ctx, notifTimeout)
					prompt := c.name + "-sh"
					if got, err := c.call(cctx, "sh__sample", map[string]any{"prompt": prompt}, nil); err != nil || got != c.name+" saw: "+prompt {
						t.Errorf("client %s: sh__sample = %q, %v; want %q", c.name, got, err, c.name+" saw: "+prompt)
					}
					if got, err := c.call(cctx, "sh__elicit", map[string]any{"message": prompt}, nil); err != nil || got != "accept "+c.name+":"+prompt {
						t.Errorf("client %s: sh__elicit = %q, %v; want %q", c.name, got, err, "accept "+c.name+":"+prompt)
					}
					if got, err := c.call(cctx, "sh__roots", nil, nil); err != nil || got != strings.Join(c.roots, "\n") {
						t.Errorf("client %s: sh__roots = %q, %v; want %q", c.name, got, err, strings.Join(c.roots, "\n"))
					}
					ccancel()
				}
			})
		})
	}
}

// TestNotificationsListChanged connects two session-based (2025-11-25) and
// two 2026-07-28 clients to one endpoint and checks that
// notifications/tools/list_changed reaches them when, and only when, the
// endpoint's effective tool set changes: not for an mmctl change elsewhere,
// nor for one that leaves the tools as they are, nor for an upstream change
// hidden by the namespace's filter; once (debounced) for a tool added by a
// shared upstream and for a tool disabled with mmctl; and, for a per_client
// upstream, only to the client whose upstream changed.
func TestNotificationsListChanged(t *testing.T) {
	cp, dp, base, key := notifEnv(t, "lc")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	s1 := connectNotifClient(ctx, t, base, key, "s1", "2025-11-25")
	s2 := connectNotifClient(ctx, t, base, key, "s2", "2025-11-25")
	n1 := connectNotifClient(ctx, t, base, key, "n1", "")
	n2 := connectNotifClient(ctx, t, base, key, "n2", "")
	all := []*notifClient{s1, s2, n1, n2}
	defer func() {
		if t.Failed() {
			t.Logf("data plane logs:\n%s", dp.logs)
		}
	}()
	for _, c := range all {
		if _, err := toolNamesOf(ctx, c); err != nil {
			t.Fatal(err)
		}
	}

	// quiet checks that no client's count moves from want for quietPeriod;
	// with fatal false a move is reported and the counts taken as they are.
	quiet := func(what string, want map[*notifClient]int, fatal bool) {
		t.Helper()
		deadline := time.Now().Add(quietPeriod)
		for time.Now().Before(deadline) {
			for _, c := range all {
				if got := c.toolsChangedCount(); got != want[c] {
					if fatal {
						t.Fatalf("%s: client %s got %d tools/list_changed, want %d", what, c.name, got-want[c], 0)
					}
					t.Errorf("%s: client %s got %d tools/list_changed, want none", what, c.name, got-want[c])
					want[c] = got
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	// counts are the clients' tools/list_changed counts so far, plus n.
	counts := func(n int) map[*notifClient]int {
		m := map[*notifClient]int{}
		for _, c := range all {
			m[c] = c.toolsChangedCount() + n
		}
		return m
	}
	// notified waits until every client has count want[c], then checks for
	// quietPeriod that no count moves (debounced: one change, one
	// notification).
	notified := func(what string, want map[*notifClient]int) {
		t.Helper()
		each(t, all, func(c *notifClient) error {
			return c.wait(what, func() (bool, string) {
				return c.toolsChanged >= want[c], fmt.Sprintf("%d tools/list_changed, want %d", c.toolsChanged, want[c])
			})
		})
		if t.Failed() {
			t.FailNow()
		}
		quiet(what+" (then nothing more)", want, true)
	}
	// Connecting and listing changed nothing: no notification.
	quiet("clients connected to an unchanged endpoint", counts(0), false)

	namespace := func(webExtra string) string {
		return "kind: Namespace\nname: lc\nmembers:\n  - server: web\n    denyTools: [\"nonexistent\", \"hidden\"]\n" + webExtra +
			"  - server: loc\n  - server: sh\n"
	}

	// An mmctl change outside the endpoint, and one that changes its
	// namespace without changing its tools: nothing.
	cp.ok(t, "create", "server", "unused", "--url", "http://127.0.0.1:9/mcp")
	waitApplied(t, cp, cp.revisionNum(t), dp)
	quiet("a server added to no namespace", counts(0), true)
	cp.okIn(t, namespace(""), "apply", "-f", "-")
	waitApplied(t, cp, cp.revisionNum(t), dp)
	quiet("a deny filter naming no existing tool", counts(0), true)

	// The shared upstream adds a tool the filter hides: its list_changed
	// changes nothing the clients see.
	if _, err := s1.call(ctx, "web__addtool", map[string]any{"name": "hidden"}, nil); err != nil {
		t.Fatal(err)
	}
	quiet("an upstream tool hidden by the namespace's filter", counts(0), true)

	// The shared upstream adds a visible tool: everyone hears once.
	if _, err := s1.call(ctx, "web__addtool", map[string]any{"name": "late"}, nil); err != nil {
		t.Fatal(err)
	}
	notified("web added web__late", counts(1))
	for _, c := range all {
		names, err := toolNamesOf(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(names, "web__late") || slices.Contains(names, "web__hidden") {
			t.Errorf("client %s: tools after web added late (and hidden, denied) = %v", c.name, names)
		}
	}

	// mmctl disables a tool: everyone hears once, and the tool is gone.
	cp.okIn(t, namespace("    toolOverrides:\n      echo: {disabled: true}\n"), "apply", "-f", "-")
	waitApplied(t, cp, cp.revisionNum(t), dp)
	notified("mmctl disabled web__echo", counts(1))
	for _, c := range all {
		names, err := toolNamesOf(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		if slices.Contains(names, "web__echo") || !slices.Contains(names, "loc__echo") {
			t.Errorf("client %s: tools after web's echo was disabled = %v", c.name, names)
		}
	}

	// A per_client upstream adds a tool: only the client whose upstream
	// process it is hears of it and sees it.
	if _, err := s1.call(ctx, "loc__addtool", map[string]any{"name": "mine"}, nil); err != nil {
		t.Fatal(err)
	}
	want := counts(0)
	want[s1]++
	notified("s1's per_client upstream added loc__mine", want)
	for _, c := range all {
		names, err := toolNamesOf(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		if has := slices.Contains(names, "loc__mine"); has != (c == s1) {
			t.Errorf("client %s: has loc__mine = %v (tools %v); only s1's upstream added it", c.name, has, names)
		}
	}
}

// TestNotificationsCancelledByNotification drives a session-based client by
// hand: a tools/call in flight is cancelled with notifications/cancelled
// sent in a separate POST while the call's own request stays open (as a
// client does whose request went through another connection or replica).
// The upstream sees the call cancelled, through a shared and a per_client
// upstream, and the call's request ends.
func TestNotificationsCancelledByNotification(t *testing.T) {
	_, dp, base, key := notifEnv(t, "cn")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := &rawMCP{url: base + "/mcp", key: key}
	c.initialize(ctx, t, "2025-11-25")
	defer func() {
		if t.Failed() {
			t.Logf("data plane logs:\n%s", dp.logs)
		}
	}()
	for _, up := range []string{"web", "loc"} {
		tag := "byhand-" + up
		counts := func() string {
			r := c.call(ctx, t, "tools/call", `{"name":"`+up+`__cancelled","arguments":{"tag":"`+tag+`"}}`)
			var res struct {
				Content []struct{ Text string } `json:"content"`
			}
			if err := json.Unmarshal(r.Result, &res); err != nil || len(res.Content) == 0 {
				return fmt.Sprintf("no counts: %s %s", r.Result, r.Error)
			}
			return res.Content[0].Text
		}
		id := `"slow-` + up + `"`
		done := make(chan error, 1)
		go func() {
			_, err := c.do(ctx, id, "tools/call", `{"name":"`+up+`__slow","arguments":{"ms":120000,"tag":"`+tag+`"}}`)
			done <- err
		}()
		eventuallyWithin(t, notifTimeout, up+": the slow call reaches the upstream", func() (bool, string) {
			s := counts()
			return s == "started=1 cancelled=0", s
		})
		if code, body := c.post(ctx, t, `{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":`+id+`,"reason":"e2e"}}`); code != http.StatusAccepted {
			t.Fatalf("%s: notifications/cancelled: HTTP %d %s, want 202", up, code, body)
		}
		eventuallyWithin(t, notifTimeout, up+": the upstream sees the call cancelled", func() (bool, string) {
			s := counts()
			return s == "started=1 cancelled=1", s
		})
		select {
		case err := <-done:
			t.Logf("%s: the cancelled call's request ended: %v", up, err)
		case <-time.After(notifTimeout):
			t.Errorf("%s: the cancelled call's request is still open %v after the upstream cancelled it", up, notifTimeout)
		}
	}
}
