package gateway

import (
	"os"
	"testing"

	"github.com/metamcp/metamcp/test/fixtures/fixture"
)

func TestMain(m *testing.M) {
	code := m.Run()
	fixture.Cleanup() // the mcpfixture binary TestRealPool builds
	os.Exit(code)
}
