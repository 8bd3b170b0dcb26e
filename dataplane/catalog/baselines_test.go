package catalog

import (
	"fmt"
	"testing"
)

// TestBaselines: a scope's baselines go with DeleteScope and only them;
// past MaxBaselines older ones are dropped, the new one kept.
func TestBaselines(t *testing.T) {
	var b Baselines
	shared := BaselineKey{Endpoint: "e", Kind: "tools/list"}
	c1 := BaselineKey{Endpoint: "e", Kind: "tools/list", Scope: "c1"}
	c1p := BaselineKey{Endpoint: "e", Kind: "prompts/list", Scope: "c1"}
	c2 := BaselineKey{Endpoint: "e", Kind: "tools/list", Scope: "c2"}
	for _, k := range []BaselineKey{shared, c1, c1p, c2} {
		b.Set(k, map[string][32]byte{"s": {byte(len(k.Scope))}})
	}
	if h, ok := b.Get(c1); !ok || h["s"] != [32]byte{2} {
		t.Errorf("Get(c1) = %v, %v", h, ok)
	}
	b.DeleteScope("c1")
	for k, want := range map[BaselineKey]bool{shared: true, c1: false, c1p: false, c2: true} {
		if _, ok := b.Get(k); ok != want {
			t.Errorf("after DeleteScope(c1), Get(%+v) = %v, want %v", k, ok, want)
		}
	}
	for k := range b.Keys() {
		b.Delete(k)
	}
	if b.Len() != 0 {
		t.Errorf("%d baselines after deleting every key", b.Len())
	}
	b.DeleteScope("c2") // nothing left of it: no panic, nothing to do
	for i := range MaxBaselines {
		b.Set(BaselineKey{Endpoint: fmt.Sprint(i), Scope: "x"}, nil)
	}
	last := BaselineKey{Endpoint: "last", Scope: "x"}
	b.Set(last, nil)
	if _, ok := b.Get(last); !ok || b.Len() > MaxBaselines/2+1 {
		t.Errorf("past the bound: last kept %v, %d baselines", ok, b.Len())
	}
	b.DeleteScope("x")
	if b.Len() != 0 {
		t.Errorf("%d baselines after deleting their scope", b.Len())
	}
}
