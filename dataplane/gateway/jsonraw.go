package gateway

import (
	"bytes"
	"encoding/json"
	"slices"
	"unsafe"

	"github.com/metamcp/metamcp/dataplane/rpc"
)

// This file holds the raw-JSON operations the gateway needs beyond package
// rpc: a top-level member of any type, and replacing one with a raw value.
// As in rpc.StringField, the last of duplicate members wins (that is what
// upstream servers read), and a replacement replaces every occurrence.

// skipSpace returns the index of the first non-space byte at or after i.
func skipSpace(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// skipString returns the index just past the JSON string starting at b[i]
// (which must be '"'), or -1.
func skipString(b []byte, i int) int {
	for i++; ; i++ {
		if i = rpc.PlainRun(b, i); i >= len(b) {
			return -1
		}
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
}

// skipValue returns the index just past the JSON value starting at b[i], or -1.
// It trusts that the input is valid JSON (it comes from a parsed message).
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for ; i < len(b); i++ {
			switch b[i] {
			case '"':
				j := skipString(b, i)
				if j < 0 {
					return -1
				}
				i = j - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
		}
		return -1
	default:
		for ; i < len(b); i++ {
			switch b[i] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return i
			}
		}
		return i
	}
}

// eachField calls fn with the value offsets of every occurrence of key at the
// top level of obj. It reports false when obj is not an object.
func eachField(obj []byte, key string, fn func(start, end int)) bool {
	return eachMember(obj, func(ks, ke, vs, ve int) {
		if keyEquals(obj[ks:ke], key) {
			fn(vs, ve)
		}
	})
}

// eachMember calls fn with the offsets of the quoted key and of the value of
// every top-level member of obj. It reports false when obj is not an object.
func eachMember(obj []byte, fn func(ks, ke, vs, ve int)) bool {
	i := skipSpace(obj, 0)
	if i >= len(obj) || obj[i] != '{' {
		return false
	}
	i = skipSpace(obj, i+1)
	if i < len(obj) && obj[i] == '}' {
		return true
	}
	for {
		i = skipSpace(obj, i)
		if i >= len(obj) || obj[i] != '"' {
			return false
		}
		ks := i
		ke := skipString(obj, i)
		if ke < 0 {
			return false
		}
		i = skipSpace(obj, ke)
		if i >= len(obj) || obj[i] != ':' {
			return false
		}
		vs := skipSpace(obj, i+1)
		ve := skipValue(obj, vs)
		if ve < 0 {
			return false
		}
		fn(ks, ke, vs, ve)
		i = skipSpace(obj, ve)
		if i < len(obj) && obj[i] == '}' {
			return true
		}
		if i >= len(obj) || obj[i] != ',' {
			return false
		}
		i++
	}
}

// keyEquals compares a quoted JSON key with key; escaped keys are decoded.
func keyEquals(quoted []byte, key string) bool {
	inner := quoted[1 : len(quoted)-1]
	if bytes.IndexByte(inner, '\\') < 0 {
		return string(inner) == key
	}
	var s string
	if json.Unmarshal(quoted, &s) != nil {
		return false
	}
	return s == key
}

// objectIndex is where the top-level members of one JSON object are, found
// in one pass. A stateless request's params are looked into by several steps
// (the Mcp-Name check, the capabilities in its _meta, bridging, routing),
// each of which would otherwise walk every member, _meta and arguments
// included. Like eachMember it trusts its input to be valid JSON, as the
// params of a parsed message are. It is a value (no pointer into itself),
// so a copy stays right.
type objectIndex struct {
	obj     []byte
	indexed bool
	n       int // members in pos; -1 when obj is not an object or has too many
	pos     [8]memberPos

	// The last string str decoded, which several steps ask for (the
	// Mcp-Name and Mcp-Param checks, routing: params.name).
	lastKey, lastStr string
	lastOK, hasLast  bool
}

// memberPos is where one member's quoted key and its value are in the object.
type memberPos struct{ ks, ke, vs, ve int }

// covers makes x describe obj, in one pass unless it does already (the same
// bytes in memory); false when it cannot (not an object, too many members).
func (x *objectIndex) covers(obj []byte) bool {
	if x.indexed && len(obj) == len(x.obj) && unsafe.SliceData(obj) == unsafe.SliceData(x.obj) {
		return x.n >= 0
	}
	x.obj, x.indexed, x.n, x.hasLast = obj, true, 0, false
	ok := eachMember(obj, func(ks, ke, vs, ve int) {
		if x.n < 0 || x.n == len(x.pos) {
			x.n = -1
			return
		}
		x.pos[x.n] = memberPos{ks, ke, vs, ve}
		x.n++
	})
	if !ok {
		x.n = -1
	}
	return x.n >= 0
}

// raw is rawField(obj, key), from the index.
func (x *objectIndex) raw(obj []byte, key string) (json.RawMessage, bool) {
	if !x.covers(obj) {
		return rawField(obj, key)
	}
	for i := x.n - 1; i >= 0; i-- { // the last of duplicates wins
		p := x.pos[i]
		if keyEquals(obj[p.ks:p.ke], key) {
			return obj[p.vs:p.ve], true
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

// rawField returns the raw value of the top-level member key of obj (the
// last one when it repeats).
func rawField(obj []byte, key string) (json.RawMessage, bool) {
	s, e := -1, -1
	eachField(obj, key, func(vs, ve int) { s, e = vs, ve })
	if s < 0 {
		return nil, false
	}
	return obj[s:e], true
}

// replaceField appends to dst the object obj with every top-level member key
// set to the raw JSON value (added at the end when absent).
func replaceField(dst, obj []byte, key string, value []byte) []byte {
	pos := 0
	found := false
	start := len(dst)
	ok := eachField(obj, key, func(vs, ve int) {
		dst = append(dst, obj[pos:vs]...)
		dst = append(dst, value...)
		pos = ve
		found = true
	})
	if !ok {
		return append(dst[:start], obj...)
	}
	if found {
		return append(dst, obj[pos:]...)
	}
	end := len(obj) - 1
	for end >= 0 && obj[end] != '}' {
		end--
	}
	empty := skipSpace(obj, skipSpace(obj, 0)+1) == end
	dst = append(dst, obj[:end]...)
	if !empty {
		dst = append(dst, ',')
	}
	dst = rpc.AppendString(dst, key)
	dst = append(dst, ':')
	dst = append(dst, value...)
	return append(dst, obj[end:]...)
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
	meta, ok := rawField(params, "_meta")
	if !ok {
		return params
	}
	var buf [512]byte // the kept members are usually few: no allocation
	kept, ok := strippedMeta(buf[:0], meta)
	if !ok {
		return params
	}
	return replaceField(make([]byte, 0, len(params)), params, "_meta", kept)
}

// strippedMeta appends to dst the object meta without the per-request keys
// of 2026-07-28; false when meta is not an object.
func strippedMeta(dst, meta []byte) ([]byte, bool) {
	if len(meta) == 0 || meta[0] != '{' {
		return dst, false
	}
	dst = append(dst, '{')
	n := 0
	ok := eachMember(meta, func(ks, ke, vs, ve int) {
		if slices.ContainsFunc(requestMetaKeys, func(k string) bool { return keyEquals(meta[ks:ke], k) }) {
			return
		}
		if n > 0 {
			dst = append(dst, ',')
		}
		n++
		dst = append(dst, meta[ks:ke]...)
		dst = append(dst, ':')
		dst = append(dst, meta[vs:ve]...)
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
	for _, p := range x.pos[:x.n] {
		key := params[p.ks:p.ke]
		switch {
		case rename != "" && keyEquals(key, "name"):
			dst = append(dst, params[pos:p.vs]...)
			dst = rpc.AppendString(dst, rename)
		case kept != nil && keyEquals(key, "_meta"):
			dst = append(dst, params[pos:p.vs]...)
			dst = append(dst, kept...)
		default:
			continue
		}
		pos = p.ve
	}
	return append(dst, params[pos:]...)
}
