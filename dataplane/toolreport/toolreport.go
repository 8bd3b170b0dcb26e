// Package toolreport keeps the tool list a data plane last served per
// endpoint (before access rules filter it per caller) and hands the lists
// that changed to the sync client, which reports them to the control plane
// for `mmctl auth can-i`.
package toolreport

import (
	"encoding/json"
	"sort"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
)

// Report holds the newest tool list of each endpoint. A nil *Report ignores
// everything, so the gateway may call it unconditionally. Safe for concurrent
// use.
type Report struct {
	mu    sync.Mutex
	lists map[string]*metamcpv1.EndpointTools
	dirty map[string]bool
	// set is when each endpoint's list was last set.
	set map[string]time.Time
	now func() time.Time
}

// RefreshInterval is how long a recorded list counts as fresh (Due).
const RefreshInterval = 10 * time.Second

// New returns an empty Report.
func New() *Report {
	return &Report{lists: map[string]*metamcpv1.EndpointTools{}, dirty: map[string]bool{}, set: map[string]time.Time{}, now: time.Now}
}

// Due reports whether the endpoint's list is worth recording: none was set
// at this revision in the last RefreshInterval. The gateway asks before it
// builds the ListedTools of a list, to keep that work off most lists.
func (r *Report) Due(endpoint string, revision int64) bool {
	if r == nil {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	l, ok := r.lists[endpoint]
	return !ok || l.GetRevision() != revision || r.now().Sub(r.set[endpoint]) >= RefreshInterval
}

// Tool describes one listed tool: its exposed name, its server and the tool
// object as listed to clients (the annotations are read from it).
func Tool(exposed, server string, item json.RawMessage) *metamcpv1.ListedTool {
	t := &metamcpv1.ListedTool{Name: exposed, Server: server}
	var v struct {
		Annotations *struct {
			Title           *string `json:"title"`
			ReadOnlyHint    *bool   `json:"readOnlyHint"`
			DestructiveHint *bool   `json:"destructiveHint"`
			IdempotentHint  *bool   `json:"idempotentHint"`
			OpenWorldHint   *bool   `json:"openWorldHint"`
		} `json:"annotations"`
	}
	if json.Unmarshal(item, &v) == nil && v.Annotations != nil {
		a := v.Annotations
		t.Annotations = &metamcpv1.ToolAnnotations{Title: a.Title, ReadOnlyHint: a.ReadOnlyHint,
			DestructiveHint: a.DestructiveHint, IdempotentHint: a.IdempotentHint, OpenWorldHint: a.OpenWorldHint}
	}
	return t
}

// Set records the whole tool list of an endpoint, served at a snapshot
// revision. The list must be complete (every page) and unfiltered by access
// rules. Only a list that differs from the last one is reported again.
func (r *Report) Set(endpoint string, revision int64, tools []*metamcpv1.ListedTool) {
	if r == nil {
		return
	}
	sorted := make([]*metamcpv1.ListedTool, len(tools))
	copy(sorted, tools)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].GetName() < sorted[j].GetName() })
	list := &metamcpv1.EndpointTools{Endpoint: endpoint, Revision: revision, Tools: sorted}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.set[endpoint] = r.now()
	if prev, ok := r.lists[endpoint]; ok && sameTools(prev.GetTools(), sorted) {
		prev.Revision = revision // not worth a report on its own
		return
	}
	r.lists[endpoint] = list
	r.dirty[endpoint] = true
}

func sameTools(a, b []*metamcpv1.ListedTool) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !proto.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

// Changed returns the lists set since the last call, or every list when all
// is true (a new stream: the control plane knows nothing of this replica).
// The sync client puts them in its next Status.
func (r *Report) Changed(all bool) []*metamcpv1.EndpointTools {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*metamcpv1.EndpointTools
	for name, l := range r.lists {
		if all || r.dirty[name] {
			out = append(out, proto.Clone(l).(*metamcpv1.EndpointTools))
		}
	}
	clear(r.dirty)
	sort.Slice(out, func(i, j int) bool { return out[i].GetEndpoint() < out[j].GetEndpoint() })
	return out
}
