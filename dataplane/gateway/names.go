package gateway

import (
	"encoding/json"
	"sort"
	"sync"
	"time"

	"github.com/metamcp/metamcp/dataplane/catalog"
	"github.com/metamcp/metamcp/dataplane/rpc"
	"github.com/metamcp/metamcp/pkg/snapshot"
)

// Name collisions at list time. Validation refuses what the config alone
// says collides (pkg/snapshot); what only the upstreams' lists show (an
// unprefixed server's tool named like another's prefixed one, an override
// renaming a tool onto one the config does not name) is found when a list is
// merged: of the tools or prompts that share an exposed name, the one calls
// are routed to is kept (routeTool, routeName), else the first in namespace
// order; the others are left out, logged once, and kept for the data
// plane's status (Collisions).

// exposedNames finds the items of one merged list that share an exposed name.
type exposedNames struct {
	seen  map[string]int // exposed name -> index in spans
	spans []nameSpan
	drops int
	// found are the names that collided in this list.
	found map[string]bool
}

// nameSpan is one item of the merged list: where it is in the output, and
// who it came from.
type nameSpan struct {
	start, end int
	name       string
	member     int
	upstream   string
	drop       bool
}

// add records an item about to be appended at offset start (after its
// comma) and reports whether to append it.
func (n *exposedNames) add(g *Gateway, c *call, k catalog.Kind, j listJob, item, rewritten json.RawMessage, start int) bool {
	if len(n.spans) == 0 {
		start-- // the first item has no comma
	}
	exposed, _ := rpc.StringField(rewritten, "name")
	upstream, _ := rpc.StringField(item, "name")
	if k == catalog.Tools && len(exposed) > snapshot.PortableToolNameLength {
		g.noteLongName(c.t.name, exposed, j.member.Server.GetName())
	}
	span := nameSpan{start: start, end: start + len(rewritten), name: exposed, member: j.index, upstream: upstream}
	prev, dup := n.seen[exposed]
	if !dup {
		n.seen[exposed] = len(n.spans)
		n.spans = append(n.spans, span)
		return true
	}
	kept := &n.spans[prev]
	ep := c.t.ep
	winsNew := false
	if k == catalog.Tools {
		if m, up, ok := routeTool(ep, exposed); ok {
			winsNew = m == ep.Members[j.index] && up == upstream && (m != ep.Members[kept.member] || up != kept.upstream)
		}
	} else if m, _ := routeName(ep, exposed); m != nil {
		winsNew = m == ep.Members[j.index] && m != ep.Members[kept.member]
	}
	keptServer, droppedServer := ep.Members[kept.member].Server.GetName(), j.member.Server.GetName()
	if winsNew {
		keptServer, droppedServer = droppedServer, keptServer
		kept.drop = true
		n.drops++
		n.seen[exposed] = len(n.spans)
		n.spans = append(n.spans, span)
	}
	g.noteCollision(c.t, k, exposed, keptServer, droppedServer)
	if n.found == nil {
		n.found = make(map[string]bool)
	}
	n.found[exposed] = true
	return winsNew
}

// rebuild removes the items add replaced from out (the list's bytes so far).
func (n *exposedNames) rebuild(out []byte) []byte {
	if n.drops == 0 {
		return out
	}
	head := n.spans[0].start
	b := make([]byte, 0, len(out))
	b = append(b, out[:head]...)
	first := true
	for _, sp := range n.spans {
		if sp.drop {
			continue
		}
		if !first {
			b = append(b, ',')
		}
		first = false
		b = append(b, out[sp.start:sp.end]...)
	}
	return b
}

// Collision is a name two upstream tools or prompts share on an endpoint.
type Collision struct {
	Endpoint, Namespace string
	// Kind is "tool" or "prompt".
	Kind, Name string
	// Kept is the server whose item is listed and called; Dropped the other.
	Kept, Dropped string
	Seen          time.Time
}

// maxCollisions bounds the collisions and long names a gateway remembers.
const maxCollisions = 1000

// nameNotes remembers collisions and long tool names, each logged once.
type nameNotes struct {
	mu         sync.Mutex
	collisions map[[3]string]Collision // endpoint, kind, name
	long       map[[2]string]bool      // endpoint, name
}

func (g *Gateway) noteCollision(t target, k catalog.Kind, name, kept, dropped string) {
	kind := "tool"
	if k == catalog.Prompts {
		kind = "prompt"
	}
	key := [3]string{t.name, kind, name}
	nn := &g.names
	nn.mu.Lock()
	old, had := nn.collisions[key]
	if !had && len(nn.collisions) >= maxCollisions {
		nn.mu.Unlock()
		return
	}
	if nn.collisions == nil {
		nn.collisions = make(map[[3]string]Collision)
	}
	nn.collisions[key] = Collision{Endpoint: t.name, Namespace: t.ep.Namespace.GetName(), Kind: kind, Name: name, Kept: kept, Dropped: dropped, Seen: time.Now()}
	nn.mu.Unlock()
	if !had || old.Kept != kept || old.Dropped != dropped {
		g.log.Warn("two "+kind+"s share one exposed name: one is listed and called, the other left out; rename one with a tool override or change a prefix",
			"endpoint", t.name, "namespace", t.ep.Namespace.GetName(), "name", name, "kept", kept, "left_out", dropped)
	}
}

// settleCollisions forgets the collisions of endpoint's kind that a whole
// list (every member answered, one page) no longer shows.
func (g *Gateway) settleCollisions(endpoint string, k catalog.Kind, found map[string]bool) {
	kind := "tool"
	if k == catalog.Prompts {
		kind = "prompt"
	}
	nn := &g.names
	nn.mu.Lock()
	defer nn.mu.Unlock()
	for key := range nn.collisions {
		if key[0] == endpoint && key[1] == kind && !found[key[2]] {
			delete(nn.collisions, key)
		}
	}
}

func (g *Gateway) noteLongName(endpoint, name, server string) {
	key := [2]string{endpoint, name}
	nn := &g.names
	nn.mu.Lock()
	if nn.long[key] || len(nn.long) >= maxCollisions {
		nn.mu.Unlock()
		return
	}
	if nn.long == nil {
		nn.long = make(map[[2]string]bool)
	}
	nn.long[key] = true
	nn.mu.Unlock()
	g.log.Warn("an exposed tool name is over 64 characters: OpenAI, Anthropic and Bedrock reject it; rename the tool with a tool override or shorten the prefix",
		"endpoint", endpoint, "name", name, "length", len(name), "server", server)
}

// Collisions returns the name collisions the gateway's lists found, of the
// endpoints in the snapshot being served, sorted.
func (g *Gateway) Collisions() []Collision {
	var endpoints map[string]*snapshot.Endpoint
	if g.opts.Config != nil {
		if cur := g.opts.Config.Current(); cur != nil {
			endpoints = cur.Endpoints
		}
	}
	nn := &g.names
	nn.mu.Lock()
	out := make([]Collision, 0, len(nn.collisions))
	for k, c := range nn.collisions {
		ep := endpoints[k[0]]
		if ep == nil || ep.Namespace.GetName() != c.Namespace {
			delete(nn.collisions, k)
			continue
		}
		out = append(out, c)
	}
	nn.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Endpoint != b.Endpoint {
			return a.Endpoint < b.Endpoint
		}
		if a.Kind != b.Kind {
			return a.Kind < b.Kind
		}
		return a.Name < b.Name
	})
	return out
}
