package rpc

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf16"
	"unicode/utf8"
)

// maxDepth bounds nesting so that hostile input cannot exhaust the stack.
const maxDepth = 10000

var (
	errEOF      = errors.New("unexpected end of JSON input")
	errNotObj   = errors.New("not a JSON object")
	errTooDeep  = errors.New("JSON nested too deeply")
	errTrailing = errors.New("data after the JSON object")
)

func syntaxErr(b []byte, i int, what string) error {
	if i >= len(b) {
		return errEOF
	}
	return fmt.Errorf("invalid character %q at offset %d, expected %s", b[i], i, what)
}

func skipWS(b []byte, i int) int {
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

// Member is where one member of a JSON object is in the object's bytes: its
// key, quotes included, at [KeyStart, KeyEnd), and its value at
// [ValueStart, ValueEnd).
type Member struct {
	KeyStart, KeyEnd     int
	ValueStart, ValueEnd int
}

// key returns the unescaped key. It allocates only for escaped keys.
func (f *Member) key(b []byte) []byte {
	k := b[f.KeyStart+1 : f.KeyEnd-1]
	if bytes.IndexByte(k, '\\') < 0 {
		return k
	}
	k, _ = unquoteBytes(nil, b[f.KeyStart:f.KeyEnd])
	return k
}

// Is reports whether the member's key, unescaped, is key; obj is the
// object's bytes. An escape is never shorter than what it stands for, so a
// shorter key is no match whatever it holds.
func (f *Member) Is(obj []byte, key string) bool {
	k := obj[f.KeyStart+1 : f.KeyEnd-1]
	if len(k) < len(key) {
		return false
	}
	if bytes.IndexByte(k, '\\') < 0 {
		return string(k) == key
	}
	return string(f.key(obj)) == key
}

// Value returns the member's raw value; obj is the object's bytes.
func (f *Member) Value(obj []byte) []byte { return obj[f.ValueStart:f.ValueEnd] }

// objIter walks the members of one JSON object that fills its buffer (apart
// from white space), validating the syntax of every value it skips.
type objIter struct {
	b    []byte
	i    int
	n    int
	done bool
}

func newObjIter(b []byte) (objIter, error) {
	i := skipWS(b, 0)
	if i >= len(b) {
		return objIter{}, errEOF
	}
	if b[i] != '{' {
		return objIter{}, errNotObj
	}
	return objIter{b: b, i: i + 1}, nil
}

func (it *objIter) next() (Member, bool, error) {
	if it.done {
		return Member{}, false, nil
	}
	b := it.b
	i := skipWS(b, it.i)
	if i >= len(b) {
		return Member{}, false, errEOF
	}
	if b[i] == '}' {
		it.done = true
		if skipWS(b, i+1) != len(b) {
			return Member{}, false, errTrailing
		}
		return Member{}, false, nil
	}
	if it.n > 0 {
		if b[i] != ',' {
			return Member{}, false, syntaxErr(b, i, "',' or '}'")
		}
		i = skipWS(b, i+1)
	}
	if i >= len(b) || b[i] != '"' {
		return Member{}, false, syntaxErr(b, i, "a string key")
	}
	var f Member
	var err error
	f.KeyStart = i
	f.KeyEnd, err = scanString(b, i)
	if err != nil {
		return Member{}, false, err
	}
	i = skipWS(b, f.KeyEnd)
	if i >= len(b) || b[i] != ':' {
		return Member{}, false, syntaxErr(b, i, "':'")
	}
	i = skipWS(b, i+1)
	f.ValueStart = i
	f.ValueEnd, err = skipValue(b, i, 1)
	if err != nil {
		return Member{}, false, err
	}
	it.i = f.ValueEnd
	it.n++
	return f, true, nil
}

// EachMember calls fn with every top-level member of the JSON object obj, in
// order. It reports false when obj is not a valid JSON object, fn having been
// called for the members before the fault. Its values are validated as they
// are skipped (never decoded), so hostile input costs one pass.
func EachMember(obj []byte, fn func(Member)) bool {
	it, err := newObjIter(obj)
	if err != nil {
		return false
	}
	for {
		f, ok, err := it.next()
		if err != nil {
			return false
		}
		if !ok {
			return true
		}
		fn(f)
	}
}

// RawField returns the raw value of the top-level member key of the JSON
// object obj; false when obj is not a valid object or has no such member.
// When the key repeats the last one wins, as in StringField.
func RawField(obj []byte, key string) (json.RawMessage, bool) {
	it, err := newObjIter(obj)
	if err != nil {
		return nil, false
	}
	var last json.RawMessage
	for {
		f, ok, err := it.next()
		if err != nil {
			return nil, false
		}
		if !ok {
			return last, last != nil
		}
		if f.Is(obj, key) {
			last = obj[f.ValueStart:f.ValueEnd]
		}
	}
}

// ReplaceField appends to dst the JSON object obj with every top-level
// member key set to the raw JSON value, or with the member added last when
// absent. When obj is not a valid JSON object it is appended unchanged.
func ReplaceField(dst, obj []byte, key string, value []byte) []byte {
	return replaceMember(dst, obj, key, value, "", false)
}

// replaceMember is ReplaceField (value raw) and ReplaceStringField (raw nil,
// the string str): one pass over obj, an absent member added first or last.
func replaceMember(dst, obj []byte, key string, raw []byte, str string, first bool) []byte {
	it, err := newObjIter(obj)
	if err != nil {
		return append(dst, obj...)
	}
	appendValue := func(dst []byte) []byte {
		if raw == nil {
			return AppendString(dst, str)
		}
		return append(dst, raw...)
	}
	start, pos, found := len(dst), 0, false
	for {
		f, ok, err := it.next()
		if err != nil {
			return append(dst[:start], obj...)
		}
		if !ok {
			break
		}
		if f.Is(obj, key) {
			dst = append(dst, obj[pos:f.ValueStart]...)
			dst = appendValue(dst)
			pos, found = f.ValueEnd, true
		}
	}
	if found {
		return append(dst, obj[pos:]...)
	}
	if first {
		open := skipWS(obj, 0) // obj[open] == '{'
		dst = append(dst, obj[:open+1]...)
		dst = AppendString(dst, key)
		dst = append(dst, ':')
		dst = appendValue(dst)
		if it.n > 0 {
			dst = append(dst, ',')
		}
		return append(dst, obj[open+1:]...)
	}
	end := len(obj) - 1 // the closing brace: only white space follows it
	for obj[end] != '}' {
		end--
	}
	dst = append(dst, obj[:end]...)
	if it.n > 0 {
		dst = append(dst, ',')
	}
	dst = AppendString(dst, key)
	dst = append(dst, ':')
	dst = appendValue(dst)
	return append(dst, obj[end:]...)
}

// scanString returns the offset after the string starting at b[i] == '"'.
func scanString(b []byte, i int) (int, error) {
	for i++; i < len(b); i++ {
		i = PlainRun(b, i)
		if i >= len(b) {
			break
		}
		c := b[i]
		switch {
		case c == '"':
			return i + 1, nil
		case c == '\\':
			i++
			if i >= len(b) {
				return 0, errEOF
			}
			switch b[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if i+4 >= len(b) {
					return 0, errEOF
				}
				for _, h := range b[i+1 : i+5] {
					if unhex(h) < 0 {
						return 0, syntaxErr(b, i, "a hex digit in \\u escape")
					}
				}
				i += 4
			default:
				return 0, syntaxErr(b, i, "an escape character")
			}
		case c < 0x20:
			return 0, syntaxErr(b, i, "no control character in a string")
		}
	}
	return 0, errEOF
}

// PlainRun returns the index of the first byte at or after i in b that a
// JSON string scanner must look at: a quote, a backslash or a control
// character; len(b) if none. It tests eight bytes at a time (SWAR), so the
// long keys and values of MCP messages (_meta keys, tool arguments) cost a
// fraction of a byte-by-byte loop.
func PlainRun(b []byte, i int) int {
	const (
		ones  = 0x0101010101010101
		highs = 0x8080808080808080
	)
	for ; i+8 <= len(b); i += 8 {
		x := binary.LittleEndian.Uint64(b[i:])
		// A byte is flagged (its high bit set in m) when it is below 0x20,
		// or equal to '"' or '\\' (a zero byte of x^pattern). Borrows can flag
		// the bytes after a true hit, never a byte before the first one.
		q := x ^ (ones * '"')
		bs := x ^ (ones * '\\')
		m := ((x - ones*0x20) | (q - ones) | (bs - ones)) &^ x & highs
		if m != 0 {
			break
		}
	}
	for ; i < len(b); i++ {
		if c := b[i]; c < 0x20 || c == '"' || c == '\\' {
			return i
		}
	}
	return len(b)
}

func unhex(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c - 'a' + 10)
	case 'A' <= c && c <= 'F':
		return int(c - 'A' + 10)
	}
	return -1
}

func skipValue(b []byte, i, depth int) (int, error) {
	if i >= len(b) {
		return 0, errEOF
	}
	if depth > maxDepth {
		return 0, errTooDeep
	}
	switch c := b[i]; c {
	case '"':
		end, err := scanString(b, i)
		return end, err
	case '{', '[':
		closer := byte('}')
		if c == '[' {
			closer = ']'
		}
		i = skipWS(b, i+1)
		if i < len(b) && b[i] == closer {
			return i + 1, nil
		}
		for {
			if c == '{' {
				if i >= len(b) || b[i] != '"' {
					return 0, syntaxErr(b, i, "a string key")
				}
				end, err := scanString(b, i)
				if err != nil {
					return 0, err
				}
				i = skipWS(b, end)
				if i >= len(b) || b[i] != ':' {
					return 0, syntaxErr(b, i, "':'")
				}
				i = skipWS(b, i+1)
			}
			end, err := skipValue(b, i, depth+1)
			if err != nil {
				return 0, err
			}
			i = skipWS(b, end)
			if i >= len(b) {
				return 0, errEOF
			}
			if b[i] == closer {
				return i + 1, nil
			}
			if b[i] != ',' {
				return 0, syntaxErr(b, i, "',' or '"+string(closer)+"'")
			}
			i = skipWS(b, i+1)
		}
	case 't':
		return literal(b, i, "true")
	case 'f':
		return literal(b, i, "false")
	case 'n':
		return literal(b, i, "null")
	default:
		if c == '-' || ('0' <= c && c <= '9') {
			return scanNumber(b, i)
		}
		return 0, syntaxErr(b, i, "a value")
	}
}

func literal(b []byte, i int, lit string) (int, error) {
	if len(b)-i < len(lit) || string(b[i:i+len(lit)]) != lit {
		return 0, syntaxErr(b, i, lit)
	}
	return i + len(lit), nil
}

func scanNumber(b []byte, i int) (int, error) {
	digits := func(i int) int {
		for i < len(b) && '0' <= b[i] && b[i] <= '9' {
			i++
		}
		return i
	}
	if b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && '1' <= b[i] && b[i] <= '9':
		i = digits(i + 1)
	default:
		return 0, syntaxErr(b, i, "a digit")
	}
	if i < len(b) && b[i] == '.' {
		j := digits(i + 1)
		if j == i+1 {
			return 0, syntaxErr(b, j, "a digit after '.'")
		}
		i = j
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		j := digits(i)
		if j == i {
			return 0, syntaxErr(b, j, "a digit in the exponent")
		}
		i = j
	}
	return i, nil
}

// unquote decodes a JSON string literal (validated by scanString) into a Go string.
func unquote(s []byte) (string, error) {
	inner := s[1 : len(s)-1]
	plain := true
	for _, c := range inner {
		if c == '\\' {
			plain = false
			break
		}
	}
	if plain {
		return string(inner), nil
	}
	b, err := unquoteBytes(make([]byte, 0, len(inner)), s)
	return string(b), err
}

// unquoteBytes appends the decoded contents of the JSON string literal s to dst.
func unquoteBytes(dst, s []byte) ([]byte, error) {
	if len(s) < 2 || s[0] != '"' || s[len(s)-1] != '"' {
		return dst, errors.New("not a JSON string")
	}
	s = s[1 : len(s)-1]
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' {
			dst = append(dst, c)
			continue
		}
		i++
		if i >= len(s) {
			return dst, errEOF
		}
		switch s[i] {
		case '"', '\\', '/':
			dst = append(dst, s[i])
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			r, ok := hex4(s, i+1)
			if !ok {
				return dst, errors.New("invalid \\u escape")
			}
			i += 4
			if utf16.IsSurrogate(r) {
				if r2, ok := hex4(s, i+3); ok && i+2 < len(s) && s[i+1] == '\\' && s[i+2] == 'u' {
					if d := utf16.DecodeRune(r, r2); d != utf8.RuneError {
						dst = utf8.AppendRune(dst, d)
						i += 6
						continue
					}
				}
				r = utf8.RuneError
			}
			dst = utf8.AppendRune(dst, r)
		default:
			return dst, errors.New("invalid escape")
		}
	}
	return dst, nil
}

func hex4(s []byte, i int) (rune, bool) {
	if i+4 > len(s) {
		return 0, false
	}
	var r rune
	for _, c := range s[i : i+4] {
		h := unhex(c)
		if h < 0 {
			return 0, false
		}
		r = r<<4 | rune(h)
	}
	return r, true
}
