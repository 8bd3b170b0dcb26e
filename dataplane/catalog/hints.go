package catalog

import (
	"encoding/json"
	"math"
	"strconv"
)

// Hints merges the caching hints (2026-07-28) of a list's upstream pages:
// the shortest ttlMs (a page without one counts as 0), and public only
// when the endpoint is anonymous, every page said public (or nothing,
// which means public) and no member has a session per client, whose list
// may differ by caller. Through an endpoint that authenticates, a public
// result could be served from an intermediary's cache to a caller the
// gateway never saw.
type Hints struct {
	ttl    int64
	public bool
	pages  int
}

// NewHints starts merging the hints of a list through an endpoint that is
// anonymous or not.
func NewHints(anonymous bool) Hints {
	return Hints{ttl: -1, public: anonymous}
}

// Add merges one page that was fetched: its ttlMs (-1 when it sent none),
// its cacheScope ("" when it sent none) and whether its member keeps a
// session per client.
func (h *Hints) Add(ttlMs int64, scope string, perClient bool) {
	h.pages++
	t := max(ttlMs, 0)
	if h.ttl < 0 || t < h.ttl {
		h.ttl = t
	}
	if scope == "private" || perClient {
		h.public = false
	}
}

// Merged returns the list's hints. A partial list (a member failed) or an
// empty one is not to be kept: ttl 0, private.
func (h *Hints) Merged(partial bool) (ttl int64, public bool) {
	if partial || h.pages == 0 {
		return 0, false
	}
	return max(h.ttl, 0), h.public
}

// AppendHints appends a result's ttlMs and cacheScope members.
func AppendHints(b []byte, ttl int64, public bool) []byte {
	b = append(b, `,"ttlMs":`...)
	b = strconv.AppendInt(b, ttl, 10)
	if public {
		return append(b, `,"cacheScope":"public"`...)
	}
	return append(b, `,"cacheScope":"private"`...)
}

// ParseHints reads a page's raw caching hints: ttlMs -1 and scope "" when
// absent or not what the specification says (a non-negative number, a
// string).
func ParseHints(ttlMs, cacheScope json.RawMessage) (ttl int64, scope string) {
	ttl = -1
	if f, err := strconv.ParseFloat(string(ttlMs), 64); err == nil && f >= 0 && f < math.MaxInt64 {
		ttl = int64(f)
	}
	_ = json.Unmarshal(cacheScope, &scope)
	return ttl, scope
}
