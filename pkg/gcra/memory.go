package gcra

import (
	"context"
	"sync"
	"time"
)

// Memory keeps buckets in this process, with the arithmetic of Redis's
// script: `metamcp dev` counts there, and a data plane whose Redis is away
// counts its `local` policies there.
type Memory struct {
	// now returns seconds since epoch2017; time.Now by default (tests
	// may move it).
	now func() float64

	mu        sync.Mutex
	tats      map[string]float64 // key -> TAT, gone once the bucket is full
	nextSweep float64
}

// NewMemory returns an empty in-process store.
func NewMemory() *Memory {
	return &Memory{
		now: func() float64 {
			return float64(time.Now().UnixMicro())/1e6 - epoch2017
		},
		tats: map[string]float64{},
	}
}

// Allow implements Store.
func (m *Memory) Allow(_ context.Context, buckets []Bucket, res []Result) (bool, error) {
	var tatsBuf [4]float64
	newTATs := tatsBuf[:0]
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	m.sweep(now)
	admitted := true
	for i := range buckets {
		r, newTAT := gcra(m.tats[buckets[i].Key], now, buckets[i].Limit, 1)
		res[i] = r
		if !r.Allowed && !buckets[i].Shadow {
			admitted = false
		}
		newTATs = append(newTATs, newTAT)
	}
	if admitted {
		for i := range buckets {
			if res[i].Allowed {
				m.tats[buckets[i].Key] = newTATs[i]
			}
		}
	}
	return admitted, nil
}

// Peek implements Store.
func (m *Memory) Peek(_ context.Context, key string, limit Limit) (Result, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, _ := gcra(m.tats[key], m.now(), limit, 1)
	return peeked(r, limit), nil
}

// Reset implements Store.
func (m *Memory) Reset(_ context.Context, keys ...string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, k := range keys {
		delete(m.tats, k)
	}
	return nil
}

// sweep forgets full buckets (TAT in the past: the same as none), at most
// once a second, as Redis's EX does.
func (m *Memory) sweep(now float64) {
	if now < m.nextSweep {
		return
	}
	m.nextSweep = now + 1
	for k, tat := range m.tats {
		if tat <= now {
			delete(m.tats, k)
		}
	}
}
