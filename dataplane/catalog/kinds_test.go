package catalog

import "testing"

// TestMasks: every list kind has its notification's bit, and nothing else
// maps to one.
func TestMasks(t *testing.T) {
	for _, tc := range []struct {
		k      Kind
		mask   Mask
		notify string
	}{
		{Tools, MaskTools, "notifications/tools/list_changed"},
		{Prompts, MaskPrompts, "notifications/prompts/list_changed"},
		{Resources, MaskResources, "notifications/resources/list_changed"},
		{Templates, MaskResources, "notifications/resources/list_changed"},
	} {
		if got := MaskOfList(tc.k); got != tc.mask {
			t.Errorf("MaskOfList(%s) = %b, want %b", tc.k.Method, got, tc.mask)
		}
		if got := MaskOfNotification(tc.notify); got != tc.mask {
			t.Errorf("MaskOfNotification(%s) = %b, want %b", tc.notify, got, tc.mask)
		}
		if !KindIn(tc.k.Method, tc.mask) || !KindIn(tc.k.Method, MaskAll) {
			t.Errorf("KindIn(%s) false for its own mask", tc.k.Method)
		}
		if KindIn(tc.k.Method, MaskAll&^tc.mask) {
			t.Errorf("KindIn(%s) true without its bit", tc.k.Method)
		}
	}
	if MaskOfList(Kind{"other/list", "x"}) != 0 || MaskOfNotification("notifications/resources/updated") != 0 || KindIn("tools/call", MaskAll) {
		t.Error("an unknown method has a mask")
	}
}

// TestItemHashesSum: the sum does not depend on the items' order, does on
// their content, and is zero for none.
func TestItemHashesSum(t *testing.T) {
	a, b, c := [32]byte{1}, [32]byte{2}, [32]byte{3}
	if (ItemHashes{}).Sum() != [32]byte{} {
		t.Error("sum of nothing is not zero")
	}
	if (ItemHashes{a, b, c}).Sum() != (ItemHashes{c, a, b}).Sum() {
		t.Error("sum depends on order")
	}
	if (ItemHashes{a, b}).Sum() == (ItemHashes{a, c}).Sum() || (ItemHashes{a}).Sum() == (ItemHashes{a, a}).Sum() {
		t.Error("different items, same sum")
	}
}
