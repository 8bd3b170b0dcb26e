package catalog

import (
	"encoding/base64"
	"encoding/json"
)

// Cursor is the client's opaque list cursor: the snapshot revision the
// list was made from, and the members that have more pages, with each
// upstream's own cursor.
type Cursor struct {
	Revision int64         `json:"r"`
	Pending  []CursorEntry `json:"p"`
}

// CursorEntry is one member that has more pages.
type CursorEntry struct {
	Member int    `json:"m"` // index in the namespace
	Server string `json:"s"`
	Cursor string `json:"c"` // the upstream's cursor
}

// EncodeCursor returns c as the opaque string a client is given.
func EncodeCursor(c *Cursor) string {
	b, _ := json.Marshal(c)
	return base64.RawURLEncoding.EncodeToString(b)
}

// DecodeCursor reads a cursor a client sent back; false when it is not
// one EncodeCursor made.
func DecodeCursor(s string) (*Cursor, bool) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, false
	}
	var c Cursor
	if json.Unmarshal(b, &c) != nil {
		return nil, false
	}
	return &c, true
}
