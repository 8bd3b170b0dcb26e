package gateway

import (
	"net/http"
	"os"
	"testing"

	"github.com/metamcp/metamcp/test/fixtures/fixture"
)

func TestMain(m *testing.M) {
	// Raw 2026-07-28 requests get the Mcp-Method and Mcp-Name headers that
	// revision requires, unless a test leaves them out on purpose.
	http.DefaultTransport = fixture.StandardHeaders(http.DefaultTransport)
	code := m.Run()
	fixture.Cleanup() // the mcpfixture binary TestRealPool builds
	os.Exit(code)
}
