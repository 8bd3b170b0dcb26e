package gateway

import (
	"encoding/json"
	"testing"

	"github.com/metamcp/metamcp/dataplane/rpc"
)

// FuzzObjectIndex checks, on any valid JSON, that lookups through an
// objectIndex answer as rpc.RawField and rpc.StringField do, and that
// forwardParams makes the bytes rpc.ReplaceStringField and stripRequestMeta
// make one after the other.
func FuzzObjectIndex(f *testing.F) {
	for _, seed := range []string{
		`{"name":"fx__echo","arguments":{"text":"hi"},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","progressToken":"p"}}`,
		`{"_meta":{"io.modelcontextprotocol/clientInfo":{}},"name":"a","name":"b"}`,
		`{"\u006eame":"esc\"aped","_meta":{"\u0069o.modelcontextprotocol/logLevel":"info"}}`,
		`{"name":1,"requestState":"s","_meta":[]}`,
		` { "name" : "spaced" , "_meta" : { } } `,
		`{"a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7,"h":8,"name":"ninth"}`,
		`[]`,
	} {
		f.Add([]byte(seed), "echo", true)
	}
	f.Fuzz(func(t *testing.T, b []byte, rename string, strip bool) {
		if !json.Valid(b) {
			return // the params of a parsed message are valid JSON
		}
		var x objectIndex
		for _, key := range []string{"name", "_meta", "requestState"} {
			raw, ok := x.raw(b, key)
			wantRaw, wantOK := rpc.RawField(b, key)
			if string(raw) != string(wantRaw) || ok != wantOK {
				t.Fatalf("raw(%s, %q) = %s, %v; want %s, %v", b, key, raw, ok, wantRaw, wantOK)
			}
			s, ok := x.str(b, key)
			wantS, wantOK := rpc.StringField(b, key)
			if s != wantS || ok != wantOK {
				t.Fatalf("str(%s, %q) = %q, %v; want %q, %v", b, key, s, ok, wantS, wantOK)
			}
		}
		want := json.RawMessage(b)
		if rename != "" {
			want = rpc.ReplaceStringField(nil, want, "name", rename)
		}
		if strip {
			want = stripRequestMeta(want)
		}
		if got := x.forwardParams(b, rename, strip); string(got) != string(want) {
			t.Fatalf("forwardParams(%s, %q, %v) = %s, want %s", b, rename, strip, got, want)
		}
	})
}
