package gateway

import (
	"encoding/json"
	"net/http"
	"sync"

	"github.com/metamcp/metamcp/dataplane/catalog"
	"github.com/metamcp/metamcp/dataplane/rpc"
)

// metaSubscriptionID is the _meta key that ties a notification to the
// subscriptions/listen request it belongs to (2026-07-28).
const metaSubscriptionID = "io.modelcontextprotocol/subscriptionId"

// listener is one open subscriptions/listen stream of a 2026-07-28 client.
type listener struct {
	endpoint  string
	principal string
	id        json.RawMessage // the listen request's id
	mask      catalog.Mask    // the list_changed kinds it asked for
	resp      *sseResponse
}

// send queues a message on the stream. It never blocks: a client that does
// not read its stream loses notifications rather than stall the gateway.
func (l *listener) send(msg []byte) { l.resp.Send(msg) }

// listenRegistry holds the open listen streams of this replica by endpoint.
type listenRegistry struct {
	mu sync.Mutex
	m  map[string]map[*listener]struct{}
}

func (r *listenRegistry) add(l *listener) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = make(map[string]map[*listener]struct{})
	}
	s := r.m[l.endpoint]
	if s == nil {
		s = make(map[*listener]struct{})
		r.m[l.endpoint] = s
	}
	s[l] = struct{}{}
}

func (r *listenRegistry) remove(l *listener) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if s := r.m[l.endpoint]; s != nil {
		delete(s, l)
		if len(s) == 0 {
			delete(r.m, l.endpoint)
		}
	}
}

// of returns the listen streams of endpoint.
func (r *listenRegistry) of(endpoint string) []*listener {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*listener, 0, len(r.m[endpoint]))
	for l := range r.m[endpoint] {
		out = append(out, l)
	}
	return out
}

// count is the number of open listen streams.
func (r *listenRegistry) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, s := range r.m {
		n += len(s)
	}
	return n
}

// listenNotification builds a notification for a listen stream: params (nil
// for none) with the stream's subscription id set in its _meta.
func listenNotification(method string, id json.RawMessage, params json.RawMessage) []byte {
	b := make([]byte, 0, 96+len(method)+len(params)+len(id))
	b = append(b, `{"jsonrpc":"2.0","method":`...)
	b = rpc.AppendString(b, method)
	b = append(b, `,"params":`...)
	return append(append(b, withSubscriptionID(params, id)...), '}')
}

// withSubscriptionID returns params (an object, or nil for {}) with the
// subscription id set in its _meta; other _meta keys are kept.
func withSubscriptionID(params, id json.RawMessage) []byte {
	if len(params) == 0 || params[0] != '{' {
		params = emptyObject
	}
	meta, ok := rpc.RawField(params, "_meta")
	if !ok || len(meta) == 0 || meta[0] != '{' {
		meta = emptyObject
	}
	m := rpc.ReplaceField(make([]byte, 0, len(meta)+len(id)+48), meta, metaSubscriptionID, id)
	return rpc.ReplaceField(make([]byte, 0, len(params)+len(m)+16), params, "_meta", m)
}

// listenParams are the params of subscriptions/listen.
type listenParams struct {
	Notifications *struct {
		ToolsListChanged      bool     `json:"toolsListChanged,omitempty"`
		PromptsListChanged    bool     `json:"promptsListChanged,omitempty"`
		ResourcesListChanged  bool     `json:"resourcesListChanged,omitempty"`
		ResourceSubscriptions []string `json:"resourceSubscriptions,omitempty"`
	} `json:"notifications"`
}

// maxListenURIs bounds the resource subscriptions of one listen stream.
const maxListenURIs = 1000

// listen serves subscriptions/listen (2026-07-28): the POST's response
// becomes an event stream that starts with
// notifications/subscriptions/acknowledged (what the gateway agreed to) and
// then carries the list_changed and resources/updated notifications asked
// for, until the client closes it. When the gateway closes, the stream ends
// with the request's result.
func (g *Gateway) listen(w http.ResponseWriter, r *http.Request, c *call, msg *rpc.Message) {
	var p listenParams
	if len(msg.Params) > 0 {
		if err := json.Unmarshal(msg.Params, &p); err != nil {
			g.writeResponse(w, msg.ID, nil, &rpc.Error{Code: codeInvalidParams, Message: "invalid subscriptions/listen params: " + err.Error()}, true)
			return
		}
	}
	if p.Notifications == nil {
		g.writeResponse(w, msg.ID, nil, &rpc.Error{Code: codeInvalidParams, Message: "subscriptions/listen needs params.notifications (which notifications to receive)"}, true)
		return
	}
	n := p.Notifications
	if len(n.ResourceSubscriptions) > maxListenURIs {
		g.writeResponse(w, msg.ID, nil, &rpc.Error{Code: codeInvalidParams, Message: "subscriptions/listen: at most " + itoa(maxListenURIs) + " resourceSubscriptions per stream; open another stream for more"}, true)
		return
	}
	l := &listener{endpoint: c.t.name, principal: c.principal, id: msg.ID, resp: newSSEResponse(r.Context(), w)}
	if n.ToolsListChanged {
		l.mask |= catalog.MaskTools
	}
	if n.PromptsListChanged {
		l.mask |= catalog.MaskPrompts
	}
	if n.ResourcesListChanged {
		l.mask |= catalog.MaskResources
	}
	// Joined to wg under mu, as SSE streams are: Close ends the stream.
	g.mu.Lock()
	if g.ctx.Err() != nil {
		g.mu.Unlock()
		g.writeResponse(w, msg.ID, nil, &rpc.Error{Code: codeServerError, Message: "the data plane is shutting down; retry"}, true)
		return
	}
	g.wg.Add(1)
	g.mu.Unlock()
	defer g.wg.Done()

	me := subscriber{listen: l}
	defer g.dropSubscriber(me)
	var uris []string
	seen := map[string]bool{}
	for _, uri := range n.ResourceSubscriptions {
		if uri == "" || seen[uri] {
			continue
		}
		seen[uri] = true
		if rerr := g.subscribe(r.Context(), c, uri, nil, me); rerr != nil {
			// As go-sdk servers do: what cannot be honoured is left out of
			// the acknowledgement, which the client reads.
			g.log.Debug("resource subscription of a listen stream not honoured", "endpoint", c.t.name, "uri", uri, "err", rerr.Message)
			continue
		}
		uris = append(uris, uri)
	}
	final := g.listenResult(msg.ID)
	if l.mask == 0 && len(uris) == 0 {
		// Nothing to listen for: the request ends at once.
		g.writeResponse(w, msg.ID, final, nil, true)
		return
	}
	g.state.listeners.add(l)
	defer g.state.listeners.remove(l)
	if l.mask != 0 {
		g.listenerAttached(l.endpoint)
	}
	if !l.resp.Start() {
		return
	}
	l.send(listenNotification("notifications/subscriptions/acknowledged", msg.ID, g.agreed(l.mask, uris)))
	select {
	case <-r.Context().Done():
		l.resp.Finish(nil)
	case <-l.resp.Done():
		l.resp.Finish(nil)
	case <-g.ctx.Done():
		l.resp.Finish(appendResult(nil, msg.ID, g.withServerInfo(final)))
	}
}

// agreed builds the acknowledged notification's params (without _meta).
func (g *Gateway) agreed(mask catalog.Mask, uris []string) json.RawMessage {
	b := []byte(`{"notifications":{`)
	sep := ""
	for _, f := range []struct {
		m    catalog.Mask
		name string
	}{{catalog.MaskTools, "toolsListChanged"}, {catalog.MaskPrompts, "promptsListChanged"}, {catalog.MaskResources, "resourcesListChanged"}} {
		if mask&f.m != 0 {
			b = append(b, sep+`"`+f.name+`":true`...)
			sep = ","
		}
	}
	if len(uris) > 0 {
		u, _ := json.Marshal(uris)
		b = append(b, sep+`"resourceSubscriptions":`...)
		b = append(b, u...)
	}
	return append(b, "}}"...)
}

// listenResult is the result that ends a listen request.
func (g *Gateway) listenResult(id json.RawMessage) json.RawMessage {
	b := []byte(`{"resultType":"complete","_meta":{`)
	b = rpc.AppendString(b, metaSubscriptionID)
	b = append(b, ':')
	b = append(b, id...)
	return append(b, "}}"...)
}
