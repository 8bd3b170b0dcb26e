package rpc

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestParse(t *testing.T) {
	cases := []struct {
		name  string
		in    string
		want  Message
		kind  string // request, notification, response
		error string // substring of the error; empty means success
	}{
		{name: "request", in: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"}}`,
			want: Message{ID: json.RawMessage(`1`), Method: "tools/call", Params: json.RawMessage(`{"name":"x"}`)}, kind: "request"},
		{name: "string id and spaces", in: " { \"id\" : \"a-1\" , \"method\":\"ping\", \"jsonrpc\":\"2.0\" } \n",
			want: Message{ID: json.RawMessage(`"a-1"`), Method: "ping"}, kind: "request"},
		{name: "notification", in: `{"jsonrpc":"2.0","method":"notifications/initialized"}`,
			want: Message{Method: "notifications/initialized"}, kind: "notification"},
		{name: "null params", in: `{"jsonrpc":"2.0","method":"ping","id":2,"params":null}`,
			want: Message{ID: json.RawMessage(`2`), Method: "ping"}, kind: "request"},
		{name: "escaped method", in: `{"jsonrpc":"2.0","method":"tools\/list","id":-3}`,
			want: Message{ID: json.RawMessage(`-3`), Method: "tools/list"}, kind: "request"},
		{name: "result", in: `{"jsonrpc":"2.0","id":7,"result":{"content":[{"type":"new","x":[1,2]}]}}`,
			want: Message{ID: json.RawMessage(`7`), Result: json.RawMessage(`{"content":[{"type":"new","x":[1,2]}]}`)}, kind: "response"},
		{name: "error with data", in: `{"jsonrpc":"2.0","id":"q","error":{"code":-32602,"message":"bad \"x\"","data":{"k":[true,null]}}}`,
			want: Message{ID: json.RawMessage(`"q"`), Error: &Error{Code: -32602, Message: `bad "x"`, Data: json.RawMessage(`{"k":[true,null]}`)}}, kind: "response"},
		{name: "error null id", in: `{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"parse error"}}`,
			want: Message{ID: json.RawMessage(`null`), Error: &Error{Code: -32700, Message: "parse error"}}, kind: "response"},
		{name: "float code", in: `{"jsonrpc":"2.0","id":1,"error":{"code":-32000.0,"message":"m"}}`,
			want: Message{ID: json.RawMessage(`1`), Error: &Error{Code: -32000, Message: "m"}}, kind: "response"},
		{name: "duplicate method last wins", in: `{"jsonrpc":"2.0","id":1,"method":"a","method":"b"}`,
			want: Message{ID: json.RawMessage(`1`), Method: "b"}, kind: "request"},
		{name: "unknown members ignored", in: `{"jsonrpc":"2.0","id":1,"method":"a","x":{"y":[1,2,{"z":"\u00e9"}]}}`,
			want: Message{ID: json.RawMessage(`1`), Method: "a"}, kind: "request"},

		{name: "empty", in: ``, error: "unexpected end"},
		{name: "batch", in: `[{"jsonrpc":"2.0","method":"a"}]`, error: "not a JSON object"},
		{name: "no version", in: `{"id":1,"method":"a"}`, error: `missing "jsonrpc"`},
		{name: "wrong version", in: `{"jsonrpc":"1.0","id":1,"method":"a"}`, error: `must be "2.0"`},
		{name: "bool id", in: `{"jsonrpc":"2.0","id":true,"method":"a"}`, error: "string or a number"},
		{name: "object id", in: `{"jsonrpc":"2.0","id":{},"method":"a"}`, error: "string or a number"},
		{name: "null request id", in: `{"jsonrpc":"2.0","id":null,"method":"a"}`, error: "must not be null"},
		{name: "numeric method", in: `{"jsonrpc":"2.0","id":1,"method":5}`, error: `"method" must be a string`},
		{name: "empty method", in: `{"jsonrpc":"2.0","id":1,"method":""}`, error: "empty"},
		{name: "string params", in: `{"jsonrpc":"2.0","id":1,"method":"a","params":"x"}`, error: "object or an array"},
		{name: "result and error", in: `{"jsonrpc":"2.0","id":1,"result":{},"error":{"code":1,"message":"m"}}`, error: "both"},
		{name: "request with result", in: `{"jsonrpc":"2.0","id":1,"method":"a","result":{}}`, error: "must not carry"},
		{name: "response without id", in: `{"jsonrpc":"2.0","result":{}}`, error: `needs an "id"`},
		{name: "nothing", in: `{"jsonrpc":"2.0","id":1}`, error: "neither"},
		{name: "error not object", in: `{"jsonrpc":"2.0","id":1,"error":"boom"}`, error: "must be an object"},
		{name: "error without code", in: `{"jsonrpc":"2.0","id":1,"error":{"message":"m"}}`, error: `missing "code"`},
		{name: "error fractional code", in: `{"jsonrpc":"2.0","id":1,"error":{"code":1.5,"message":"m"}}`, error: "integer"},
		{name: "truncated", in: `{"jsonrpc":"2.0","id":1,"method":"a"`, error: "unexpected end"},
		{name: "trailing data", in: `{"jsonrpc":"2.0","method":"a"} x`, error: "after the JSON object"},
		{name: "trailing comma", in: `{"jsonrpc":"2.0","method":"a",}`, error: "invalid character"},
		{name: "bad params", in: `{"jsonrpc":"2.0","method":"a","params":{"x":01}}`, error: "invalid character"},
		{name: "control char", in: "{\"jsonrpc\":\"2.0\",\"method\":\"a\nb\"}", error: "control character"},
		{name: "bad escape", in: `{"jsonrpc":"2.0","method":"a\qb"}`, error: "escape"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m, err := Parse([]byte(tc.in))
			if tc.error != "" {
				if err == nil || !strings.Contains(err.Error(), tc.error) {
					t.Fatalf("Parse error = %v, want one containing %q", err, tc.error)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if !reflect.DeepEqual(*m, tc.want) {
				t.Errorf("Parse = %+v (error %+v), want %+v (error %+v)", *m, m.Error, tc.want, tc.want.Error)
			}
			got := ""
			switch {
			case m.IsRequest():
				got = "request"
			case m.IsNotification():
				got = "notification"
			case m.IsResponse():
				got = "response"
			}
			if got != tc.kind {
				t.Errorf("kind = %q, want %q", got, tc.kind)
			}
		})
	}
}

func TestAppendMessageRoundTrip(t *testing.T) {
	msgs := []*Message{
		{ID: json.RawMessage(`1`), Method: "tools/call", Params: json.RawMessage(`{"name":"a"}`)},
		{Method: "notifications/progress", Params: json.RawMessage(`{"progress":1}`)},
		{Method: "x\"y\n\x01é"},
		{ID: json.RawMessage(`"s"`), Result: json.RawMessage(`{"a":[1]}`)},
		{ID: json.RawMessage(`2`), Error: &Error{Code: -32601, Message: "no \"such\" method", Data: json.RawMessage(`[1,"x"]`)}},
		{ID: json.RawMessage(`3`), Error: &Error{Code: 5, Message: ""}},
	}
	for _, m := range msgs {
		b := AppendMessage([]byte("prefix"), m)
		if !bytes.HasPrefix(b, []byte("prefix")) {
			t.Fatalf("dst not kept: %s", b)
		}
		b = b[len("prefix"):]
		if !json.Valid(b) {
			t.Fatalf("invalid JSON: %s", b)
		}
		got, err := Parse(b)
		if err != nil {
			t.Fatalf("Parse(%s): %v", b, err)
		}
		if !reflect.DeepEqual(got, m) {
			t.Errorf("round trip of %s = %+v, want %+v", b, got, m)
		}
	}
}

func TestStringField(t *testing.T) {
	cases := []struct {
		obj, key, want string
		ok             bool
	}{
		{`{"name":"echo","arguments":{"name":"inner"}}`, "name", "echo", true},
		{`{"arguments":{"name":"inner"},"name":"echo"}`, "name", "echo", true},
		{`{"arguments":{"name":"inner"}}`, "name", "", false},
		{`{"name":5}`, "name", "", false},
		{`{"name":"a","name":"b"}`, "name", "b", true},
		{`{"na\u006de":"esc"}`, "name", "esc", true},
		{`{"name":"a\"b\\c\u00e9\ud83d\ude00"}`, "name", "a\"b\\cé😀", true},
		{` { "uri" : "file:///x" } `, "uri", "file:///x", true},
		{`{"name":"x"`, "name", "", false},
		{`{"name":"x"} trailing`, "name", "", false},
		{`["name","x"]`, "name", "", false},
		{``, "name", "", false},
		{`null`, "name", "", false},
	}
	for _, tc := range cases {
		got, ok := StringField(json.RawMessage(tc.obj), tc.key)
		if got != tc.want || ok != tc.ok {
			t.Errorf("StringField(%s, %q) = %q, %v; want %q, %v", tc.obj, tc.key, got, ok, tc.want, tc.ok)
		}
	}
}

func TestReplaceStringField(t *testing.T) {
	cases := []struct {
		obj, key, value, want string
	}{
		{`{"name":"gh__search","arguments":{"name":"x"}}`, "name", "search", `{"name":"search","arguments":{"name":"x"}}`},
		{`{"arguments":{"q":1}, "name" : "a"}`, "name", `b"c`, `{"arguments":{"q":1}, "name" : "b\"c"}`},
		{`{"name":"a","x":1,"name":"b"}`, "name", "c", `{"name":"c","x":1,"name":"c"}`},
		{`{"na\u006de":"a"}`, "name", "c", `{"na\u006de":"c"}`},
		{`{"arguments":{}}`, "name", "n", `{"name":"n","arguments":{}}`},
		{` {} `, "name", "n", ` {"name":"n"} `},
		{``, "name", "n", `{"name":"n"}`},
		{`null`, "name", "n", `{"name":"n"}`},
		{`{"name":5}`, "name", "n", `{"name":"n"}`},
		{`[1]`, "name", "n", `[1]`},
		{`{"name":"x"`, "name", "n", `{"name":"x"`},
	}
	for _, tc := range cases {
		got := ReplaceStringField([]byte("pre"), json.RawMessage(tc.obj), tc.key, tc.value)
		if string(got) != "pre"+tc.want {
			t.Errorf("ReplaceStringField(%s, %q, %q) = %s, want pre%s", tc.obj, tc.key, tc.value, got, tc.want)
		}
	}
}

func TestRawField(t *testing.T) {
	tests := []struct {
		obj, key, want string
		ok             bool
	}{
		{`{"a":1,"b":{"c":[1,"}"]},"d":"x"}`, "b", `{"c":[1,"}"]}`, true},
		{`{"a":1,"b":2}`, "c", "", false},
		{` { "a" : true } `, "a", "true", true},
		{`{"a":1,"a":2}`, "a", "2", true}, // last wins, as upstreams read it
		{`{"\u0061":"esc"}`, "a", `"esc"`, true},
		{`{}`, "a", "", false},
		{`[1]`, "a", "", false},
		{`{"a":1`, "a", "", false}, // not a valid object: nothing, not a guess
		{`{"s":"a\"b","t":null}`, "t", "null", true},
	}
	for _, tc := range tests {
		got, ok := RawField([]byte(tc.obj), tc.key)
		if ok != tc.ok || string(got) != tc.want {
			t.Errorf("RawField(%s, %q) = %s, %v; want %s, %v", tc.obj, tc.key, got, ok, tc.want, tc.ok)
		}
	}
}

func TestReplaceField(t *testing.T) {
	tests := []struct {
		obj, key, value, want string
	}{
		{`{"a":1,"b":2}`, "a", `"x"`, `{"a":"x","b":2}`},
		{`{"a":1,"b":2}`, "c", `[]`, `{"a":1,"b":2,"c":[]}`},
		{`{}`, "c", `{}`, `{"c":{}}`},
		{` { } `, "c", `1`, ` { "c":1} `},
		{`{"a":1,"a":2}`, "a", `3`, `{"a":3,"a":3}`},
		{`not json`, "a", `1`, `not json`},
		{`{"a":1,"b":}`, "a", `2`, `{"a":1,"b":}`}, // invalid: unchanged, no half-replaced copy
	}
	for _, tc := range tests {
		if got := string(ReplaceField(nil, []byte(tc.obj), tc.key, []byte(tc.value))); got != tc.want {
			t.Errorf("ReplaceField(%s, %q, %s) = %s, want %s", tc.obj, tc.key, tc.value, got, tc.want)
		}
	}
}

func TestErrorIsError(t *testing.T) {
	var err error = NewError(CodeMethodNotFound, "no such method")
	var e *Error
	if !errors.As(err, &e) || e.Code != -32601 || err.Error() != "jsonrpc error -32601: no such method" {
		t.Errorf("got %v", err)
	}
}

func FuzzParse(f *testing.F) {
	seeds := []string{
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":{"a":[1,2.5e3,-0.1,true,false,null]}}}`,
		`{"jsonrpc":"2.0","id":"x","result":{"content":[]}}`,
		`{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"m","data":"\ud83d\ude00"}}`,
		`{"jsonrpc":"2.0","method":"a\u0000b"}`,
		`{"a":{"b":{"c":[[[[]]]]}}}`,
		`{"name":"a","name":"b"}`,
		`{"x":"\ud800"}`,
		`[]`, `{`, `"`, `{"a":1,}`, `{"a" 1}`, `-`, `{"a":-01}`, `{"a":1e}`, `{"a":tru}`,
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Parse(b)
		valid := json.Valid(b)
		if err == nil {
			if !valid {
				t.Fatalf("Parse accepted invalid JSON %q", b)
			}
			out := AppendMessage(nil, m)
			m2, err := Parse(out)
			if err != nil {
				t.Fatalf("re-parse of %s: %v", out, err)
			}
			if m2.Method != m.Method || !bytes.Equal(m2.ID, m.ID) {
				t.Fatalf("round trip changed %q into %q", b, out)
			}
		}
		// The scanner must agree with encoding/json about objects.
		trimmed := bytes.TrimLeft(b, " \t\r\n")
		if len(trimmed) > 0 && trimmed[0] == '{' {
			it, _ := newObjIter(b)
			var ierr error
			for {
				_, ok, err := it.next()
				if err != nil {
					ierr = err
					break
				}
				if !ok {
					break
				}
			}
			if (ierr == nil) != valid {
				t.Fatalf("scanner error %v but json.Valid = %v for %q", ierr, valid, b)
			}
		}
		s, ok := StringField(b, "name")
		if valid && utf8.Valid(b) {
			var obj map[string]any
			if json.Unmarshal(b, &obj) == nil {
				want, wantOK := obj["name"].(string)
				if ok != wantOK || s != want {
					t.Fatalf("StringField(%q) = %q, %v; encoding/json says %q, %v", b, s, ok, want, wantOK)
				}
				r := ReplaceStringField(nil, b, "name", "new\"name")
				var obj2 map[string]any
				if err := json.Unmarshal(r, &obj2); err != nil {
					t.Fatalf("ReplaceStringField(%q) = %q: %v", b, r, err)
				}
				if obj2["name"] != "new\"name" {
					t.Fatalf("ReplaceStringField(%q) = %q", b, r)
				}
				delete(obj, "name")
				delete(obj2, "name")
				if !reflect.DeepEqual(obj, obj2) {
					t.Fatalf("ReplaceStringField(%q) changed other members: %q", b, r)
				}
			}
		}
	})
}

var sink any

// BenchmarkParse parses a request, a response with a long text result, and
// a 2026-07-28 request whose _meta keys are most of its bytes.
func BenchmarkParse(b *testing.B) {
	for _, tc := range []struct {
		name string
		msg  []byte
	}{
		{"request", []byte(`{"jsonrpc":"2.0","id":42,"method":"tools/call","params":{"name":"gh__search_issues","arguments":{"query":"is:open label:bug","limit":20},"_meta":{"progressToken":"abc"}}}`)},
		{"response", []byte(`{"jsonrpc":"2.0","id":42,"result":{"content":[{"type":"text","text":"` + strings.Repeat("lorem ipsum ", 400) + `"}],"isError":false}}`)},
		{"stateless", statelessCall},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(tc.msg)))
			for b.Loop() {
				m, err := Parse(tc.msg)
				if err != nil {
					b.Fatal(err)
				}
				sink = m
			}
		})
	}
}

func BenchmarkStringField(b *testing.B) {
	params := json.RawMessage(`{"arguments":{"query":"is:open label:bug","limit":20},"_meta":{"progressToken":"abc"},"name":"gh__search_issues"}`)
	b.ReportAllocs()
	for b.Loop() {
		s, ok := StringField(params, "name")
		if !ok {
			b.Fatal("not found")
		}
		sink = s
	}
}

func BenchmarkReplaceStringField(b *testing.B) {
	params := json.RawMessage(`{"name":"gh__search_issues","arguments":{"query":"is:open label:bug","limit":20},"_meta":{"progressToken":"abc"}}`)
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	for b.Loop() {
		buf = ReplaceStringField(buf[:0], params, "name", "search_issues")
	}
	sink = buf
}

// TestPlainRun checks the eight-bytes-at-a-time scan against a byte loop,
// with the byte that stops it at every offset and of every kind, after
// plain ASCII and UTF-8 bytes (whose high bit must not confuse it).
func TestPlainRun(t *testing.T) {
	naive := func(b []byte, i int) int {
		for ; i < len(b); i++ {
			if c := b[i]; c < 0x20 || c == '"' || c == '\\' {
				return i
			}
		}
		return len(b)
	}
	fills := []byte{'a', '!', '#', '[', ']', 0x7f, 0x80, 0xa2, 0xdc, 0xff, 0x21, 0x23, 0x5b, 0x5d}
	stops := []byte{'"', '\\', 0, 0x1f, '\n'}
	for _, fill := range fills {
		for n := 0; n <= 24; n++ {
			for _, stop := range append(stops, 0) {
				for at := 0; at <= n; at++ {
					b := bytes.Repeat([]byte{fill}, n)
					if at < n {
						b[at] = stop
					}
					for start := 0; start <= min(n, 9); start++ {
						if got, want := PlainRun(b, start), naive(b, start); got != want {
							t.Fatalf("PlainRun(%q, %d) = %d, want %d", b, start, got, want)
						}
					}
				}
			}
		}
	}
}

// statelessCall is a 2026-07-28 tools/call as the benchmarks of test/bench
// send it: the per-request _meta keys are most of its bytes.
var statelessCall = []byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"fx__echo","arguments":{"text":"hello"},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{},"io.modelcontextprotocol/clientInfo":{"name":"bench","version":"1"}}}}`)

func BenchmarkStringFieldStateless(b *testing.B) {
	m, err := Parse(statelessCall)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		s, ok := StringField(m.Params, "name")
		if !ok {
			b.Fatal("not found")
		}
		sink = s
	}
}

// FuzzMembers checks the member operations against encoding/json: on a
// valid object RawField finds what decoding into a map does (the last of
// duplicates wins there too), ReplaceField makes a valid object in which the
// key has the new value and every other member is kept, and on anything else
// both refuse (RawField) or copy the input unchanged (ReplaceField).
func FuzzMembers(f *testing.F) {
	for _, s := range []string{
		`{"name":"fx__echo","arguments":{"text":"hi"},"_meta":{"progressToken":"p"}}`,
		`{"name":"a","name":"b"}`, `{"\u006eame":"esc\"aped"}`, ` { "name" : [1, {"}":"]"}] } `,
		`{}`, `[]`, `{"name":1`, `{"name":1}x`, `"name"`,
	} {
		f.Add([]byte(s), "name")
	}
	f.Fuzz(func(t *testing.T, b []byte, key string) {
		if !utf8.Valid(b) || !utf8.ValidString(key) {
			return // encoding/json decodes invalid UTF-8 to U+FFFD; we copy bytes
		}
		var m map[string]json.RawMessage
		valid := json.Unmarshal(b, &m) == nil && m != nil
		raw, ok := RawField(b, key)
		want, wantOK := m[key]
		if ok != (valid && wantOK) {
			t.Fatalf("RawField(%s, %q) found %v; decoding: valid %v, found %v", b, key, ok, valid, wantOK)
		}
		if ok && string(raw) != string(want) {
			t.Fatalf("RawField(%s, %q) = %s, want %s", b, key, raw, want)
		}
		got := ReplaceField([]byte("pre"), b, key, []byte(`["new"]`))
		if string(got[:3]) != "pre" {
			t.Fatalf("ReplaceField dropped dst: %s", got)
		}
		got = got[3:]
		if !valid {
			if string(got) != string(b) {
				t.Fatalf("ReplaceField(%s) = %s, want it unchanged", b, got)
			}
			return
		}
		var after map[string]json.RawMessage
		if err := json.Unmarshal(got, &after); err != nil {
			t.Fatalf("ReplaceField(%s, %q) = %s, not an object: %v", b, key, got, err)
		}
		if string(after[key]) != `["new"]` || len(after) != len(m)+map[bool]int{true: 0, false: 1}[wantOK] {
			t.Fatalf("ReplaceField(%s, %q) = %s", b, key, got)
		}
		for k, v := range m {
			if k != key && string(after[k]) != string(v) {
				t.Fatalf("ReplaceField(%s, %q) changed %q: %s", b, key, k, got)
			}
		}
	})
}
