package gateway

import (
	"bytes"
	"encoding/json"
	"slices"
	"unsafe"

	"github.com/metamcp/metamcp/dataplane/rpc"
)

// This file holds what the gateway does to MCP params beyond package rpc's
// raw JSON operations: an index of one params object that the steps of a call
// share, and the rewriting of params on their way upstream. Like rpc, the
// last of duplicate members wins (that is what upstream servers read), and a
// replacement replaces every occurrence.

// objectIndex is where the top-level members of one JSON object are, found
// in one pass. A stateless request's params are looked into by several steps
// (the Mcp-Name check, the capabilities in its _meta, bridging, routing),
// each of which would otherwise walk every member, _meta and arguments
// included. It is a value (no pointer into itself), so a copy stays right.
type objectIndex struct {
	obj     []byte
	indexed bool
	n       int // members in pos; -1 when obj is not an object or has too many
	pos     [8]rpc.Member

	// The last string str decoded, which several steps ask for (the
	// Mcp-Name and Mcp-Param checks, routing: params.name).
	lastKey, lastStr string
	lastOK, hasLast  bool
}

// covers makes x describe obj, in one pass unless it does already (the same
// bytes in memory); false when it cannot (not an object, too many members).
func (x *objectIndex) covers(obj []byte) bool {
	if x.indexed && len(obj) == len(x.obj) && unsafe.SliceData(obj) == unsafe.SliceData(x.obj) {
		return x.n >= 0
	}
	x.obj, x.indexed, x.n, x.hasLast = obj, true, 0, false
	ok := rpc.EachMember(obj, func(m rpc.Member) {
		if x.n < 0 || x.n == len(x.pos) {
			x.n = -1
			return
		}
		x.pos[x.n] = m
		x.n++
	})
	if !ok {
		x.n = -1
	}
	return x.n >= 0
}

// raw is rpc.RawField(obj, key), from the index.
func (x *objectIndex) raw(obj []byte, key string) (json.RawMessage, bool) {
	if !x.covers(obj) {
		return rpc.RawField(obj, key)
	}
	for i := x.n - 1; i >= 0; i-- { // the last of duplicates wins
		if p := &x.pos[i]; p.Is(obj, key) {
			return p.Value(obj), true
		}
	}
	return nil, false
}

// str is rpc.StringField(obj, key), from the index.
func (x *objectIndex) str(obj []byte, key string) (string, bool) {
	if !x.covers(obj) {
		return rpc.StringField(obj, key)
	}
	if x.hasLast && x.lastKey == key {
		return x.lastStr, x.lastOK
	}
	var str string
	v, ok := x.raw(obj, key)
	if ok {
		str, ok = rpc.Unquote(v)
	}
	x.lastKey, x.lastStr, x.lastOK, x.hasLast = key, str, ok, true
	return str, ok
}

// requestMetaKeys are the per-request _meta keys of 2026-07-28: they describe
// the client's side of the connection, and must not reach an upstream that
// speaks another revision (the pool sets its own).
var requestMetaKeys = []string{
	"io.modelcontextprotocol/protocolVersion",
	"io.modelcontextprotocol/clientCapabilities",
	"io.modelcontextprotocol/clientInfo",
	"io.modelcontextprotocol/logLevel",
}

var reservedMetaPrefix = []byte(`"io.modelcontextprotocol/`)

// stripRequestMeta returns params without the per-request _meta keys of
// 2026-07-28; other _meta members (progressToken, ...) are kept.
func stripRequestMeta(params json.RawMessage) json.RawMessage {
	if !bytes.Contains(params, reservedMetaPrefix) {
		return params
	}
	meta, ok := rpc.RawField(params, "_meta")
	if !ok {
		return params
	}
	var buf [512]byte // the kept members are usually few: no allocation
	kept, ok := strippedMeta(buf[:0], meta)
	if !ok {
		return params
	}
	return rpc.ReplaceField(make([]byte, 0, len(params)), params, "_meta", kept)
}

// strippedMeta appends to dst the object meta without the per-request keys
// of 2026-07-28; false when meta is not an object.
func strippedMeta(dst, meta []byte) ([]byte, bool) {
	if len(meta) == 0 || meta[0] != '{' {
		return dst, false
	}
	dst = append(dst, '{')
	n := 0
	ok := rpc.EachMember(meta, func(m rpc.Member) {
		if slices.ContainsFunc(requestMetaKeys, func(k string) bool { return m.Is(meta, k) }) {
			return
		}
		if n > 0 {
			dst = append(dst, ',')
		}
		n++
		dst = append(dst, meta[m.KeyStart:m.KeyEnd]...)
		dst = append(dst, ':')
		dst = append(dst, m.Value(meta)...)
	})
	return append(dst, '}'), ok
}

// forwardParams returns params as an upstream gets them: every member
// "name" set to rename (unless rename is ""), and with strip the
// per-request keys of _meta removed, as rpc.ReplaceStringField and
// stripRequestMeta would make them. From the index that is one pass over
// params, where those make one for each lookup and each change.
func (x *objectIndex) forwardParams(params json.RawMessage, rename string, strip bool) json.RawMessage {
	strip = strip && bytes.Contains(params, reservedMetaPrefix)
	if rename == "" && !strip {
		return params
	}
	_, named := x.raw(params, "name")
	if !x.covers(params) || rename != "" && !named {
		fwd := params
		if rename != "" {
			fwd = rpc.ReplaceStringField(make([]byte, 0, len(params)+len(rename)), params, "name", rename)
		}
		if strip {
			fwd = stripRequestMeta(fwd)
		}
		return fwd
	}
	var buf [512]byte
	var kept []byte
	if strip {
		if meta, ok := x.raw(params, "_meta"); ok {
			if k, ok := strippedMeta(buf[:0], meta); ok {
				kept = k
			}
		}
	}
	if rename == "" && kept == nil {
		return params
	}
	dst := make([]byte, 0, len(params)+len(rename))
	pos := 0
	for i := range x.n {
		p := &x.pos[i]
		switch {
		case rename != "" && p.Is(params, "name"):
			dst = append(dst, params[pos:p.ValueStart]...)
			dst = rpc.AppendString(dst, rename)
		case kept != nil && p.Is(params, "_meta"):
			dst = append(dst, params[pos:p.ValueStart]...)
			dst = append(dst, kept...)
		default:
			continue
		}
		pos = p.ValueEnd
	}
	return append(dst, params[pos:]...)
}
