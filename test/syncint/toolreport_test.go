package syncint

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/dataplane/configcache"
	"github.com/metamcp/metamcp/dataplane/syncclient"
	"github.com/metamcp/metamcp/dataplane/toolreport"
	"github.com/metamcp/metamcp/internal/testharness"
)

// TestToolReportReachesCanI checks that the tool lists a data plane records
// reach the control plane in its Status and answer CanI, and that a changed
// list replaces the old one.
func TestToolReportReachesCanI(t *testing.T) {
	c := startCP(t, openSQLite(t), newSealer(t), "127.0.0.1:0")
	createServer(t, c, "fs", "fs-server")
	if _, err := c.admin.CreateNamespace(adminCtx(t), &metamcpv1.CreateNamespaceRequest{Namespace: &metamcpv1.Namespace{
		Name: "dev", Members: []*metamcpv1.NamespaceMember{{Server: "fs"}}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.admin.CreateEndpoint(adminCtx(t), &metamcpv1.CreateEndpointRequest{Endpoint: &metamcpv1.Endpoint{Name: "team", Namespace: "dev"}}); err != nil {
		t.Fatal(err)
	}
	report := toolreport.New()
	report.Set("team", 3, []*metamcpv1.ListedTool{
		toolreport.Tool("fs__read", "fs", json.RawMessage(`{"name":"read","annotations":{"readOnlyHint":true}}`)),
	})
	client, err := syncclient.New(configcache.New("", testLogger(t)), syncclient.Options{
		Addr: c.addr, Token: syncToken(t, c, "dp"), NodeID: "lister", StatusInterval: 50 * time.Millisecond,
		Tools: report.Changed, Logger: testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	runClient(t, client)

	waitTools := func(want ...string) {
		t.Helper()
		testharness.Eventually(t, 10*time.Second, func() error {
			resp, err := c.admin.CanI(adminCtx(t), &metamcpv1.CanIRequest{Endpoint: "team", Caller: &metamcpv1.Caller{Name: "alice"}})
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, d := range resp.GetDecisions() {
				got = append(got, d.GetTool())
			}
			if resp.GetToolsKnown() && resp.GetListedBy() == "lister" && slices.Equal(got, want) {
				return nil
			}
			return fmt.Errorf("CanI does not show tools %q: %v", want, resp)
		})
	}
	waitTools("fs__read")
	report.Set("team", 4, []*metamcpv1.ListedTool{
		toolreport.Tool("fs__read", "fs", json.RawMessage(`{"name":"read"}`)),
		toolreport.Tool("fs__write", "fs", json.RawMessage(`{"name":"write"}`)),
	})
	waitTools("fs__read", "fs__write")
}
