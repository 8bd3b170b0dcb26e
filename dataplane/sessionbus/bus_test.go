package sessionbus_test

import (
	"testing"

	"github.com/metamcp/metamcp/dataplane/sessionbus"
	"github.com/metamcp/metamcp/dataplane/sessionbus/bustest"
)

func TestLocal(t *testing.T) {
	bustest.Run(t, func(t *testing.T) sessionbus.Bus {
		b := sessionbus.NewLocal()
		t.Cleanup(func() { _ = b.Close() })
		return b
	})
}

func TestLocalZeroValue(t *testing.T) {
	var b sessionbus.Local
	ch := bustest.Subscribe(t, &b, "t")
	if n := bustest.Publish(t, &b, "t", []byte("m")); n != 1 {
		t.Fatalf("Publish = %d, want 1", n)
	}
	if got := bustest.Receive(t, ch); string(got) != "m" {
		t.Fatalf("got %q", got)
	}
}
