package gateway

import "encoding/json"

// This file holds the few raw-JSON operations the hot path needs: find one
// top-level field of an object and replace one top-level string field, without
// decoding the rest. They are the gateway's stand-ins for rpc.StringField and
// rpc.ReplaceStringField until dataplane/rpc lands.

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
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return -1
}

// skipValue returns the index just past the JSON value starting at b[i], or -1.
// It trusts that the input is valid JSON (the envelope was parsed already).
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

// findField locates the value of a top-level key in the object obj: it
// returns the value's start and end offsets and whether it was found.
func findField(obj []byte, key string) (start, end int, ok bool) {
	i := skipSpace(obj, 0)
	if i >= len(obj) || obj[i] != '{' {
		return 0, 0, false
	}
	i++
	for {
		i = skipSpace(obj, i)
		if i >= len(obj) || obj[i] != '"' {
			return 0, 0, false
		}
		ks := i
		ke := skipString(obj, i)
		if ke < 0 {
			return 0, 0, false
		}
		i = skipSpace(obj, ke)
		if i >= len(obj) || obj[i] != ':' {
			return 0, 0, false
		}
		vs := skipSpace(obj, i+1)
		ve := skipValue(obj, vs)
		if ve < 0 {
			return 0, 0, false
		}
		if keyEquals(obj[ks:ke], key) {
			return vs, ve, true
		}
		i = skipSpace(obj, ve)
		if i >= len(obj) || obj[i] != ',' {
			return 0, 0, false
		}
		i++
	}
}

// keyEquals compares a quoted JSON key with key; escaped keys are decoded.
func keyEquals(quoted []byte, key string) bool {
	inner := quoted[1 : len(quoted)-1]
	for _, c := range inner {
		if c == '\\' {
			var s string
			if json.Unmarshal(quoted, &s) != nil {
				return false
			}
			return s == key
		}
	}
	return string(inner) == key
}

// rawField returns the raw value of a top-level field of obj.
func rawField(obj []byte, key string) (json.RawMessage, bool) {
	s, e, ok := findField(obj, key)
	if !ok {
		return nil, false
	}
	return obj[s:e], true
}

// stringField returns a top-level string field of obj.
func stringField(obj []byte, key string) (string, bool) {
	v, ok := rawField(obj, key)
	if !ok || len(v) < 2 || v[0] != '"' {
		return "", false
	}
	inner := v[1 : len(v)-1]
	for _, c := range inner {
		if c == '\\' {
			var s string
			if json.Unmarshal(v, &s) != nil {
				return "", false
			}
			return s, true
		}
	}
	return string(inner), true
}

// replaceField appends to dst the object obj with the top-level field key's
// value set to the raw JSON value (added at the end when absent).
func replaceField(dst, obj []byte, key string, value []byte) []byte {
	if s, e, ok := findField(obj, key); ok {
		dst = append(dst, obj[:s]...)
		dst = append(dst, value...)
		return append(dst, obj[e:]...)
	}
	// Absent: insert before the closing brace.
	end := len(obj) - 1
	for end >= 0 && obj[end] != '}' {
		end--
	}
	if end < 0 {
		return append(dst, obj...)
	}
	body := skipSpace(obj, 0) + 1
	empty := skipSpace(obj, body) == end
	dst = append(dst, obj[:end]...)
	if !empty {
		dst = append(dst, ',')
	}
	dst = appendJSONString(dst, key)
	dst = append(dst, ':')
	dst = append(dst, value...)
	return append(dst, obj[end:]...)
}

// replaceStringField is replaceField with a string value.
func replaceStringField(dst, obj []byte, key, value string) []byte {
	q := appendJSONString(make([]byte, 0, len(value)+2), value)
	return replaceField(dst, obj, key, q)
}

// appendJSONString appends s as a JSON string.
func appendJSONString(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c == '"' || c == '\\' || c >= 0x80 {
			b, _ := json.Marshal(s)
			return append(dst, b...)
		}
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"')
}
