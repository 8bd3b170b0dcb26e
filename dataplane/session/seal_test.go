package session

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
)

// keyHolder hands out session keys the way a snapshot does (a new message
// for every snapshot).
type keyHolder struct {
	p atomic.Pointer[metamcpv1.SessionKeys]
}

func (k *keyHolder) set(cur, prev byte) {
	sk := &metamcpv1.SessionKeys{Current: bytes.Repeat([]byte{cur}, 32)}
	if prev != 0 {
		sk.Previous = bytes.Repeat([]byte{prev}, 32)
	}
	k.p.Store(sk)
}

func (k *keyHolder) get() *metamcpv1.SessionKeys { return k.p.Load() }

func newTestStore(t *testing.T, keys *keyHolder) *Sealed {
	t.Helper()
	s, err := NewSealed(keys.get)
	if err != nil {
		t.Fatal(err)
	}
	return s.(*Sealed)
}

func sampleInfo() *Info {
	return &Info{
		Endpoint:           "main",
		Principal:          "alice",
		ProtocolVersion:    "2025-11-25",
		ClientCapabilities: json.RawMessage(`{"roots":{"listChanged":true},"sampling":{},"elicitation":{"form":{},"url":{}}}`),
		ClientInfo:         json.RawMessage(`{"name":"claude-code","version":"2.1.0"}`),
		Upstreams:          []Upstream{{Server: "web", SessionID: "ABCDEFGHIJKLMNOPQRSTUVWXYZ", ProtocolVersion: "2025-11-25"}},
	}
}

// TestSealedIDs: an id opens on every replica holding the key, with what it
// carries; anything forged, truncated, altered or sealed with another key is
// refused.
func TestSealedIDs(t *testing.T) {
	keys := &keyHolder{}
	keys.set(1, 0)
	a, b := newTestStore(t, keys), newTestStore(t, keys)
	want := sampleInfo()
	sid, err := a.Create(want)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("sealed id: %d bytes", len(sid))
	if len(sid) > 1024 {
		t.Errorf("sealed id is %d bytes, want under 1 KB for a typical session", len(sid))
	}
	if strings.Contains(sid, "alice") || strings.Contains(sid, "ABCDEFGH") {
		t.Error("the sealed id shows its contents")
	}
	got, ok := b.Acquire(sid)
	if !ok {
		t.Fatal("another replica with the same key refused the id")
	}
	defer b.Release(sid)
	if got.Local {
		t.Error("a rehydrated session says it is local")
	}
	if local, _ := a.Open(sid); !local.Local {
		t.Error("the creating replica does not see its session as local")
	}
	if got.ID == "" || got.Endpoint != want.Endpoint || got.Principal != want.Principal || got.ProtocolVersion != want.ProtocolVersion ||
		string(got.ClientCapabilities) != string(want.ClientCapabilities) || string(got.ClientInfo) != string(want.ClientInfo) ||
		len(got.Upstreams) != 1 || got.Upstreams[0] != want.Upstreams[0] || time.Since(got.Created) > time.Minute {
		t.Errorf("rehydrated %+v, want %+v", got, want)
	}
	if b.Len() != 1 {
		t.Errorf("the replica that opened the id tracks %d sessions, want 1", b.Len())
	}

	other := &keyHolder{}
	other.set(9, 0)
	foreign := newTestStore(t, other)
	raw, _ := base64.RawURLEncoding.DecodeString(sid)
	refused := map[string]string{
		"empty":      "",
		"not base64": "!!!" + sid,
		"garbage":    base64.RawURLEncoding.EncodeToString(bytes.Repeat([]byte{7}, 120)),
		"truncated":  sid[:len(sid)-4],
		"too long":   strings.Repeat("A", maxTokenLen+1),
	}
	// Every byte altered in turn (version, nonce, ciphertext, tag).
	for i := range raw {
		alt := bytes.Clone(raw)
		alt[i] ^= 0x01
		refused[fmt.Sprintf("byte %d altered", i)] = base64.RawURLEncoding.EncodeToString(alt)
	}
	for name, id := range refused {
		if _, ok := b.Open(id); ok {
			t.Errorf("%s: opened", name)
		}
	}
	if _, ok := foreign.Open(sid); ok {
		t.Error("a replica with another key opened the id")
	}
	// An id altered in its base64 text (one character) is refused too.
	c := []byte(sid)
	c[len(c)/2] ^= 0x02
	if _, ok := newTestStore(t, keys).Open(string(c)); ok {
		t.Error("an id with one character altered opened")
	}
}

// TestSealedIDRotation: after one rotation old ids still open (previous key),
// after the next they are refused, also where they were cached.
func TestSealedIDRotation(t *testing.T) {
	keys := &keyHolder{}
	keys.set(1, 0)
	a, b := newTestStore(t, keys), newTestStore(t, keys)
	old, err := a.Create(sampleInfo())
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := b.Open(old); !ok {
		t.Fatal("open before rotation")
	}
	keys.set(2, 1)
	newer, err := a.Create(sampleInfo())
	if err != nil {
		t.Fatal(err)
	}
	fresh := newTestStore(t, keys)
	for name, s := range map[string]*Sealed{"creator": a, "cached": b, "fresh": fresh} {
		if _, ok := s.Open(old); !ok {
			t.Errorf("%s: an id of the previous key is refused after one rotation", name)
		}
		if _, ok := s.Open(newer); !ok {
			t.Errorf("%s: an id of the current key is refused", name)
		}
	}
	keys.set(3, 2)
	for name, s := range map[string]*Sealed{"creator": a, "cached": b, "fresh": newTestStore(t, keys)} {
		if _, ok := s.Open(old); ok {
			t.Errorf("%s: an id sealed two keys ago still opens", name)
		}
		if _, ok := s.Open(newer); !ok {
			t.Errorf("%s: an id of the previous key is refused", name)
		}
	}
}

// TestSealedIDSize: a client announcing huge capabilities still gets an id
// under 2 KB (compressed, then trimmed to the capability names).
func TestSealedIDSize(t *testing.T) {
	keys := &keyHolder{}
	keys.set(1, 0)
	s := newTestStore(t, keys)
	info := sampleInfo()
	var big strings.Builder
	big.WriteString(`{"sampling":{},"experimental":{`)
	for i := range 400 {
		if i > 0 {
			big.WriteString(",")
		}
		big.WriteString(`"x` + strings.Repeat(string(rune('a'+i%26)), 1+i%7) + time.Duration(i).String() + `":{"v":"` + time.Duration(i*7919).String() + `"}`)
	}
	big.WriteString(`}}`)
	info.ClientCapabilities = json.RawMessage(big.String())
	info.ClientInfo = json.RawMessage(`{"name":"` + strings.Repeat("n", 3000) + `"}`)
	sid, err := s.Create(info)
	if err != nil {
		t.Fatal(err)
	}
	if len(sid) > 2048 {
		t.Fatalf("sealed id of a large session is %d bytes, want at most 2 KB", len(sid))
	}
	got, ok := newTestStore(t, keys).Open(sid)
	if !ok {
		t.Fatal("refused")
	}
	var caps map[string]json.RawMessage
	if err := json.Unmarshal(got.ClientCapabilities, &caps); err != nil || caps["sampling"] == nil || caps["experimental"] == nil {
		t.Errorf("trimmed capabilities %s lost the capability names", got.ClientCapabilities)
	}
}

// TestSealedEnded: an id ended here (DELETE, idle sweep) is refused here,
// while a replica that never saw the end still opens it.
func TestSealedEnded(t *testing.T) {
	keys := &keyHolder{}
	keys.set(1, 0)
	a, b := newTestStore(t, keys), newTestStore(t, keys)
	sid, _ := a.Create(sampleInfo())
	idle, _ := a.Create(sampleInfo())
	if !a.End(sid) {
		t.Fatal("End of a live session reported it was not")
	}
	if _, ok := a.Open(sid); ok {
		t.Error("an ended session opens again where it ended")
	}
	if ids := a.Expired(time.Now().Add(time.Second)); len(ids) != 1 || ids[0] != idle {
		t.Fatalf("Expired = %v, want the idle session", ids)
	}
	if _, ok := a.Acquire(idle); ok {
		t.Error("a swept session opens again where it was swept")
	}
	if _, ok := b.Open(sid); !ok {
		t.Error("a replica that did not end the session refuses it")
	}
	// DELETE on a replica that never served the session ends it there too.
	if b.End(idle) {
		t.Error("End of a session never seen here reported it live")
	}
	if _, ok := b.Open(idle); ok {
		t.Error("a session ended on a replica that had not seen it opens there")
	}
}

// TestSealedChurnMemory: the store's memory of a burst of sessions is given
// back after they are swept, and the bytes per idle session stay small.
func TestSealedChurnMemory(t *testing.T) {
	keys := &keyHolder{}
	keys.set(1, 0)
	s := newTestStore(t, keys)
	const n = 20000
	before := heapInUse()
	for range n {
		if _, err := s.Create(sampleInfo()); err != nil {
			t.Fatal(err)
		}
	}
	during := heapInUse()
	per := float64(during-before) / n
	t.Logf("store: %.0f bytes per idle session (heap %d -> %d for %d sessions)", per, before, during, n)
	if per > 4096 {
		t.Errorf("%.0f bytes per idle session, want under 4 KiB", per)
	}
	s.Expired(time.Now().Add(time.Second))
	s.Expired(time.Now().Add(time.Second)) // drops the ended IDs too: retention follows the cutoff
	s.Expired(time.Now().Add(time.Hour))
	after := heapInUse()
	t.Logf("store: heap %d before, %d after the sweep", before, after)
	if s.Len() != 0 || len(s.ended) != 0 {
		t.Fatalf("after the sweep: %d sessions, %d ended IDs kept", s.Len(), len(s.ended))
	}
	if after > before+(during-before)/10 {
		t.Errorf("heap after the sweep %d, want close to %d (it held %d)", after, before, during)
	}
}

// TestEndedSetBounded: the set of ended IDs stays bounded however many
// sessions end within one idle TTL.
func TestEndedSetBounded(t *testing.T) {
	keys := &keyHolder{}
	keys.set(1, 0)
	s := newTestStore(t, keys)
	s.mu.Lock()
	for i := range maxEnded + 100 {
		var k endedKey
		binary.BigEndian.PutUint64(k[:], uint64(i))
		s.markEndedLocked(k, int64(i))
	}
	n := len(s.ended)
	s.mu.Unlock()
	if n > maxEnded || n < maxEnded*8/10 {
		t.Errorf("%d ended IDs kept after %d ended, want at most %d and most of them", n, maxEnded+100, maxEnded)
	}
}

// BenchmarkSealedSessions measures sealing a new session's id (initialize),
// opening a known id (every later request) and rehydrating an id first seen
// here (the first request on another replica).
func BenchmarkSealedSessions(b *testing.B) {
	keys := &keyHolder{}
	keys.set(1, 0)
	s, err := NewSealed(keys.get)
	if err != nil {
		b.Fatal(err)
	}
	store := s.(*Sealed)
	b.Run("create", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := store.Create(sampleInfo()); err != nil {
				b.Fatal(err)
			}
		}
	})
	sid, _ := store.Create(sampleInfo())
	b.Run("acquire", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, ok := store.Acquire(sid); !ok {
				b.Fatal("refused")
			}
			store.Release(sid)
		}
	})
	b.Run("rehydrate", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, _, err := store.seal.open(sid); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// heapInUse is the live heap after a collection.
func heapInUse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}
