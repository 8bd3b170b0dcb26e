package catalog

import (
	"bytes"
	"crypto/sha256"
	"slices"
)

// Kind is one of the four list operations.
type Kind struct {
	Method string // the request, e.g. "tools/list"
	Field  string // the result's array field
}

// The list operations.
var (
	Tools     = Kind{"tools/list", "tools"}
	Prompts   = Kind{"prompts/list", "prompts"}
	Resources = Kind{"resources/list", "resources"}
	Templates = Kind{"resources/templates/list", "resourceTemplates"}
)

// Mask is a set of list kinds a list_changed notification is about.
type Mask uint8

// The list_changed kinds.
const (
	MaskTools Mask = 1 << iota
	MaskPrompts
	MaskResources // resources and resource templates
	MaskAll       = MaskTools | MaskPrompts | MaskResources
)

// Group is the list operations behind one bit of a Mask, and the
// notification that says they changed.
type Group struct {
	Mask   Mask
	Kinds  []Kind
	Method string // the notification
}

// Groups are the groups of every bit of MaskAll.
var Groups = []Group{
	{MaskTools, []Kind{Tools}, "notifications/tools/list_changed"},
	{MaskPrompts, []Kind{Prompts}, "notifications/prompts/list_changed"},
	{MaskResources, []Kind{Resources, Templates}, "notifications/resources/list_changed"},
}

// MaskOfList is the Mask of one list operation.
func MaskOfList(k Kind) Mask {
	for _, g := range Groups {
		if slices.Contains(g.Kinds, k) {
			return g.Mask
		}
	}
	return 0
}

// MaskOfNotification maps a list_changed notification to its kind; 0 for
// any other method.
func MaskOfNotification(method string) Mask {
	for _, g := range Groups {
		if g.Method == method {
			return g.Mask
		}
	}
	return 0
}

// KindIn reports whether the list method is one of mask's kinds.
func KindIn(method string, mask Mask) bool {
	for _, g := range Groups {
		if g.Mask&mask != 0 && slices.ContainsFunc(g.Kinds, func(k Kind) bool { return k.Method == method }) {
			return true
		}
	}
	return false
}

// ItemHashes accumulates the hashes of one member's listed items.
type ItemHashes [][32]byte

// Sum is an order-independent hash of the items (the zero value for none).
// It sorts h.
func (h ItemHashes) Sum() [32]byte {
	if len(h) == 0 {
		return [32]byte{}
	}
	slices.SortFunc(h, func(a, b [32]byte) int { return bytes.Compare(a[:], b[:]) })
	d := sha256.New()
	for _, x := range h {
		d.Write(x[:])
	}
	var out [32]byte
	d.Sum(out[:0])
	return out
}
