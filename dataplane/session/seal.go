package session

import (
	"bytes"
	"compress/flate"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
)

// A sealed session id is base64url (no padding) of
//
//	version (1 byte) | nonce (12 bytes) | AES-256-GCM(plaintext) with its 16-byte tag
//
// under the snapshot's current session key, authenticated with sealAAD. The
// plaintext is a flags byte (bit 0: the rest is DEFLATE-compressed) and the
// session's fields in a compact binary form (see appendSessionFields). Any
// data plane holding the key opens it; a forged, truncated, altered or
// foreign-key id fails authentication.

const (
	sealVersion  byte = 1
	sealFlagZip  byte = 1
	sessionIDLen      = 16 // random bytes of Info.ID
	// zipAbove is the plaintext size from which compression is tried.
	zipAbove = 384
	// maxSealedPlain bounds the plaintext so that ids stay under ~2 KB (HTTP
	// header limits of proxies start at 4-8 KB); see trimForSeal.
	maxSealedPlain = 1400
	// maxTokenLen refuses longer ids before any work.
	maxTokenLen = 4096
)

// sealAAD binds a sealed id to its purpose: a value sealed with the same key
// for anything else does not open as a session id.
var sealAAD = []byte("metamcp session id v1")

var errBadToken = errors.New("not a session id of this gateway")

// sealKey is one AEAD and the key bytes it was made from.
type sealKey struct {
	key  []byte
	aead cipher.AEAD
}

func newSealKey(key []byte) (*sealKey, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("session key: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("session key: %w", err)
	}
	return &sealKey{key: bytes.Clone(key), aead: aead}, nil
}

// keyset is the current and previous session keys of one snapshot.
type keyset struct {
	src  *metamcpv1.SessionKeys // identity of the snapshot message it was built from
	cur  *sealKey
	prev *sealKey // nil when none
}

// sealer seals and opens session ids with the keys of the snapshot being
// served. Ciphers are made once per key, when a snapshot brings a new one.
// Without keys in the snapshot (a control plane before its first config
// write, tests) it uses a random key of its own: ids then open only in this
// process.
type sealer struct {
	keys     func() *metamcpv1.SessionKeys
	fallback *sealKey

	mu  sync.Mutex // serialises rebuilding ks
	ks  atomic.Pointer[keyset]
	now func() time.Time
}

func newSealer(keys func() *metamcpv1.SessionKeys) (*sealer, error) {
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		return nil, fmt.Errorf("generate a fallback session key: %w", err)
	}
	fb, err := newSealKey(k)
	if err != nil {
		return nil, err
	}
	if keys == nil {
		keys = func() *metamcpv1.SessionKeys { return nil }
	}
	s := &sealer{keys: keys, fallback: fb, now: time.Now}
	s.ks.Store(&keyset{cur: fb})
	return s, nil
}

// current returns the keyset of the snapshot being served.
func (s *sealer) current() *keyset {
	src := s.keys()
	if len(src.GetCurrent()) != 32 {
		src = nil
	}
	ks := s.ks.Load()
	if ks.src == src {
		return ks
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ks = s.ks.Load()
	if ks.src == src {
		return ks
	}
	next := &keyset{src: src, cur: s.fallback}
	if src != nil {
		// Reuse the ciphers of keys that did not change.
		pick := func(key []byte) *sealKey {
			for _, k := range []*sealKey{ks.cur, ks.prev} {
				if k != nil && bytes.Equal(k.key, key) {
					return k
				}
			}
			k, err := newSealKey(key)
			if err != nil {
				return nil // impossible for a 32-byte key
			}
			return k
		}
		if k := pick(src.GetCurrent()); k != nil {
			next.cur = k
		}
		if p := src.GetPrevious(); len(p) == 32 {
			next.prev = pick(p)
		}
	}
	s.ks.Store(next)
	return next
}

// accepts reports whether ids sealed with key still open.
func (ks *keyset) accepts(k *sealKey) bool {
	return k == ks.cur || (ks.prev != nil && k == ks.prev) ||
		bytes.Equal(k.key, ks.cur.key) || (ks.prev != nil && bytes.Equal(k.key, ks.prev.key))
}

// seal returns the sealed id of info and the key that sealed it.
func (s *sealer) seal(info *Info) (string, *sealKey, error) {
	ks := s.current()
	plain, err := encodeSession(info)
	if err != nil {
		return "", nil, err
	}
	ns := ks.cur.aead.NonceSize()
	out := make([]byte, 1+ns, 1+ns+len(plain)+ks.cur.aead.Overhead())
	out[0] = sealVersion
	if _, err := rand.Read(out[1 : 1+ns]); err != nil {
		return "", nil, fmt.Errorf("seal session id: read random nonce: %w", err)
	}
	out = ks.cur.aead.Seal(out, out[1:1+ns], plain, sealAAD)
	return base64.RawURLEncoding.EncodeToString(out), ks.cur, nil
}

// open authenticates and decodes a sealed id with the current or the
// previous key.
func (s *sealer) open(token string) (*Info, *sealKey, error) {
	if len(token) > maxTokenLen {
		return nil, nil, errBadToken
	}
	raw, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil {
		return nil, nil, errBadToken
	}
	ks := s.current()
	ns := ks.cur.aead.NonceSize()
	if len(raw) < 1+ns+ks.cur.aead.Overhead() || raw[0] != sealVersion {
		return nil, nil, errBadToken
	}
	nonce, ct := raw[1:1+ns], raw[1+ns:]
	for _, k := range []*sealKey{ks.cur, ks.prev} {
		if k == nil {
			continue
		}
		plain, err := k.aead.Open(nil, nonce, ct, sealAAD)
		if err != nil {
			continue
		}
		info, err := decodeSession(plain)
		if err != nil {
			return nil, nil, err
		}
		return info, k, nil
	}
	return nil, nil, errBadToken
}

// NewID returns a random session ID (base64url of 16 bytes).
func NewID() (string, error) {
	var b [sessionIDLen]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("create session id: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// encodeSession is the plaintext of a sealed id: compressed when that helps,
// trimmed (client info, then capability details) when still too large.
func encodeSession(info *Info) ([]byte, error) {
	id, err := base64.RawURLEncoding.DecodeString(info.ID)
	if err != nil || len(id) != sessionIDLen {
		return nil, fmt.Errorf("seal session: invalid session ID %q", info.ID)
	}
	trimmed := *info
	for step := 0; ; step++ {
		plain := appendSessionFields([]byte{0}, id, &trimmed)
		if len(plain) > zipAbove {
			if z := deflate(plain[1:]); len(z) < len(plain)-1 {
				plain = append([]byte{sealFlagZip}, z...)
			}
		}
		if len(plain) <= maxSealedPlain {
			return plain, nil
		}
		switch step {
		case 0:
			trimmed.ClientInfo = nil
		case 1:
			trimmed.ClientCapabilities = capabilityNames(trimmed.ClientCapabilities)
		default:
			return nil, fmt.Errorf("seal session: %d bytes even trimmed (%d upstream sessions): too large for a session id", len(plain), len(info.Upstreams))
		}
	}
}

// capabilityNames keeps the names of the top-level capabilities (each as {}):
// what a client may be asked for, without the details.
func capabilityNames(caps json.RawMessage) json.RawMessage {
	var m map[string]json.RawMessage
	if json.Unmarshal(caps, &m) != nil {
		return nil
	}
	for k := range m {
		m[k] = json.RawMessage(`{}`)
	}
	b, _ := json.Marshal(m)
	return b
}

// appendSessionFields encodes: the 16-byte ID, the creation time (uvarint
// Unix seconds), Endpoint, Principal, ProtocolVersion, ClientCapabilities,
// ClientInfo (each uvarint length and bytes), the number of upstream
// sessions and for each: server, session id, protocol version.
func appendSessionFields(b, id []byte, info *Info) []byte {
	b = append(b, id...)
	created := info.Created.Unix()
	b = binary.AppendUvarint(b, uint64(max(created, 0)))
	for _, s := range []string{info.Endpoint, info.Principal, info.ProtocolVersion} {
		b = appendField(b, s)
	}
	b = appendField(b, string(info.ClientCapabilities))
	b = appendField(b, string(info.ClientInfo))
	b = binary.AppendUvarint(b, uint64(len(info.Upstreams)))
	for _, u := range info.Upstreams {
		b = appendField(b, u.Server)
		b = appendField(b, u.SessionID)
		b = appendField(b, u.ProtocolVersion)
	}
	return b
}

func appendField(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// decodeSession reverses encodeSession. The input was authenticated, so an
// error here means a bug or a newer format, never an attack.
func decodeSession(plain []byte) (*Info, error) {
	if len(plain) < 1 {
		return nil, errBadToken
	}
	body := plain[1:]
	if plain[0]&sealFlagZip != 0 {
		var err error
		if body, err = inflate(body); err != nil {
			return nil, errBadToken
		}
	}
	d := fieldReader{b: body}
	if len(d.b) < sessionIDLen {
		return nil, errBadToken
	}
	info := &Info{ID: base64.RawURLEncoding.EncodeToString(d.b[:sessionIDLen])}
	d.b = d.b[sessionIDLen:]
	info.Created = time.Unix(int64(d.uvarint()), 0)
	info.Endpoint = d.str()
	info.Principal = d.str()
	info.ProtocolVersion = d.str()
	if s := d.str(); s != "" {
		info.ClientCapabilities = json.RawMessage(s)
	}
	if s := d.str(); s != "" {
		info.ClientInfo = json.RawMessage(s)
	}
	n := d.uvarint()
	if n > 256 {
		return nil, errBadToken
	}
	for range n {
		info.Upstreams = append(info.Upstreams, Upstream{Server: d.str(), SessionID: d.str(), ProtocolVersion: d.str()})
	}
	if d.bad || len(d.b) != 0 {
		return nil, errBadToken
	}
	return info, nil
}

type fieldReader struct {
	b   []byte
	bad bool
}

func (r *fieldReader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.bad = true
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *fieldReader) str() string {
	n := r.uvarint()
	if r.bad || n > uint64(len(r.b)) {
		r.bad = true
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}

var flateWriters = sync.Pool{New: func() any {
	w, _ := flate.NewWriter(nil, flate.BestCompression)
	return w
}}

func deflate(b []byte) []byte {
	var out bytes.Buffer
	w := flateWriters.Get().(*flate.Writer)
	w.Reset(&out)
	_, _ = w.Write(b)
	_ = w.Close()
	flateWriters.Put(w)
	return out.Bytes()
}

// inflate decompresses at most 64 KiB.
func inflate(b []byte) ([]byte, error) {
	r := flate.NewReader(bytes.NewReader(b))
	defer r.Close()
	out, err := io.ReadAll(io.LimitReader(r, 64<<10+1))
	if err != nil {
		return nil, err
	}
	if len(out) > 64<<10 {
		return nil, errors.New("inflated session id too large")
	}
	return out, nil
}
