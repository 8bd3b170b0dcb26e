package auth

import (
	"crypto/sha256"
	"sync"
	"time"
	"unsafe"
)

// tokenKey is the SHA-256 of a token: the cache never holds tokens
// themselves, and a hash collision is out of reach.
type tokenKey [sha256.Size]byte

// hashToken hashes the token's bytes in place: []byte(token) would copy the
// token to the heap on every request (Sum256 neither keeps nor changes them).
func hashToken(token string) tokenKey {
	return sha256.Sum256(unsafe.Slice(unsafe.StringData(token), len(token)))
}

const cacheShards = 16

// tokenCache remembers verified tokens until they expire, up to a bounded
// number. It is sharded so that concurrent requests rarely meet on a lock;
// a hit takes a read lock only.
type tokenCache struct {
	shards [cacheShards]cacheShard
}

type cacheShard struct {
	mu        sync.RWMutex
	m         map[tokenKey]*verifiedToken
	max       int
	lastSweep time.Time
}

func newTokenCache(size int) *tokenCache {
	c := &tokenCache{}
	per := max(size/cacheShards, 1)
	for i := range c.shards {
		c.shards[i].m = make(map[tokenKey]*verifiedToken)
		c.shards[i].max = per
	}
	return c
}

func (c *tokenCache) shard(k tokenKey) *cacheShard { return &c.shards[k[0]%cacheShards] }

func (c *tokenCache) get(k tokenKey) *verifiedToken {
	s := c.shard(k)
	s.mu.RLock()
	e := s.m[k]
	s.mu.RUnlock()
	return e
}

// put remembers a verified token. A full shard first drops the tokens that
// have expired (at most once a second, as that walks the shard), then, if
// still full, an arbitrary one: Go's map iteration starts at a random
// place, so that is a random eviction, which cannot be gamed into evicting
// a chosen token and costs no bookkeeping on hits.
func (c *tokenCache) put(k tokenKey, e *verifiedToken) {
	s := c.shard(k)
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.m[k]; !ok && len(s.m) >= s.max {
		if now.Sub(s.lastSweep) >= time.Second {
			s.lastSweep = now
			horizon := now.UnixNano() - int64(MaxClockSkew)
			for key, x := range s.m {
				if x.exp < horizon {
					delete(s.m, key)
				}
			}
		}
		if len(s.m) >= s.max {
			for key := range s.m {
				delete(s.m, key)
				break
			}
		}
	}
	s.m[k] = e
}

// dropKeySet forgets the tokens verified with a key set no longer in use.
func (c *tokenCache) dropKeySet(ks *keySet) {
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		for key, x := range s.m {
			if x.keys == ks {
				delete(s.m, key)
			}
		}
		s.mu.Unlock()
	}
}

// len is the number of remembered tokens (for tests).
func (c *tokenCache) len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.RLock()
		n += len(s.m)
		s.mu.RUnlock()
	}
	return n
}
