package catalog

import (
	"iter"
	"maps"
)

// MaxBaselines bounds the baselines kept; beyond it arbitrary ones are
// dropped (a missing baseline only means a list_changed notification that
// may not have been needed).
const MaxBaselines = 100000

// BaselineKey names one baseline. Scope is "" for endpoints whose lists are
// the same for every client, else the client (per_client upstreams list
// per downstream session).
type BaselineKey struct {
	Endpoint string
	Kind     string // the list method
	Scope    string
}

// Baselines keeps, per endpoint, list kind and scope, a hash per upstream
// server of the items a client was served for it: list_changed goes out
// only when a recomputed hash differs. It is not safe for concurrent use:
// its owner's lock guards it. The zero value is ready.
type Baselines struct {
	m       map[BaselineKey]map[string][32]byte
	byScope map[string]map[BaselineKey]struct{} // keys of the client scopes ("" aside)
}

// Get returns the hashes by server of one baseline.
func (b *Baselines) Get(k BaselineKey) (map[string][32]byte, bool) {
	h, ok := b.m[k]
	return h, ok
}

// Set replaces one baseline, dropping arbitrary others past MaxBaselines.
func (b *Baselines) Set(k BaselineKey, hashes map[string][32]byte) {
	if b.m == nil {
		b.m = make(map[BaselineKey]map[string][32]byte)
	}
	if _, ok := b.m[k]; !ok && len(b.m) >= MaxBaselines {
		for old := range b.m {
			b.Delete(old)
			if len(b.m) < MaxBaselines/2 {
				break
			}
		}
	}
	b.m[k] = hashes
	if k.Scope != "" {
		if b.byScope == nil {
			b.byScope = make(map[string]map[BaselineKey]struct{})
		}
		ks := b.byScope[k.Scope]
		if ks == nil {
			ks = make(map[BaselineKey]struct{})
			b.byScope[k.Scope] = ks
		}
		ks[k] = struct{}{}
	}
}

// Delete removes one baseline.
func (b *Baselines) Delete(k BaselineKey) {
	delete(b.m, k)
	if k.Scope == "" {
		return
	}
	if ks := b.byScope[k.Scope]; ks != nil {
		delete(ks, k)
		if len(ks) == 0 {
			delete(b.byScope, k.Scope)
		}
	}
}

// DeleteScope removes the baselines of one client scope.
func (b *Baselines) DeleteScope(scope string) {
	for k := range b.byScope[scope] {
		b.Delete(k)
	}
}

// Keys yields the keys of the baselines; the loop may Delete.
func (b *Baselines) Keys() iter.Seq[BaselineKey] {
	return maps.Keys(b.m)
}

// Len is the number of baselines.
func (b *Baselines) Len() int { return len(b.m) }
