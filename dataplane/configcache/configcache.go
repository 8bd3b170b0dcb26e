// Package configcache holds the snapshot a data plane serves: validated and
// compiled before it is swapped in atomically, written to disk (write, then
// rename) so a restarted data plane can serve while the control plane is away.
package configcache

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	"google.golang.org/protobuf/proto"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/pkg/snapshot"
)

// Check is a data plane's own condition on a snapshot, on top of validation
// (for example, which stdio commands it may run). An error refuses the snapshot.
type Check func(*snapshot.Compiled) error

// Cache is the data plane's current config. The zero value is not usable; use New.
type Cache struct {
	path   string
	checks []Check
	log    *slog.Logger

	cur atomic.Pointer[snapshot.Compiled]

	mu       sync.Mutex // serialises Apply and guards watchers
	watchers []chan struct{}
}

// New returns an empty cache that persists to path ("" keeps nothing on disk).
func New(path string, logger *slog.Logger, checks ...Check) *Cache {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Cache{path: path, checks: checks, log: logger}
}

// Current returns the snapshot being served, or nil before the first.
func (c *Cache) Current() *snapshot.Compiled { return c.cur.Load() }

// Revision returns the revision and hash being served (0, "" before the first).
func (c *Cache) Revision() (int64, string) {
	if s := c.cur.Load(); s != nil {
		return s.Revision, s.Hash
	}
	return 0, ""
}

// Ready reports whether a snapshot is being served.
func (c *Cache) Ready() bool { return c.cur.Load() != nil }

// Changed returns a channel closed at the next swap.
func (c *Cache) Changed() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan struct{})
	c.watchers = append(c.watchers, ch)
	return ch
}

// Apply validates, compiles and checks snap, persists it and swaps it in. On
// any error the snapshot being served stays.
func (c *Cache) Apply(snap *metamcpv1.Snapshot) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	compiled, warnings, err := snapshot.Compile(snap)
	if err != nil {
		return err
	}
	for _, w := range warnings {
		c.log.Warn("config warning", "revision", snap.GetRevision(), "warning", w)
	}
	for _, check := range c.checks {
		if err := check(compiled); err != nil {
			return fmt.Errorf("snapshot %d: %w", snap.GetRevision(), err)
		}
	}
	if err := c.persist(snap); err != nil {
		// Serving the new config matters more than caching it; say so loudly.
		c.log.Error("could not write the snapshot cache; a restart without the control plane will serve an older config", "path", c.path, "err", err)
	}
	c.swap(compiled)
	return nil
}

func (c *Cache) swap(compiled *snapshot.Compiled) {
	c.cur.Store(compiled)
	for _, ch := range c.watchers {
		close(ch)
	}
	c.watchers = nil
}

func (c *Cache) persist(snap *metamcpv1.Snapshot) error {
	if c.path == "" {
		return nil
	}
	clean := proto.Clone(snap).(*metamcpv1.Snapshot)
	clean.Nonce = ""
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(clean)
	if err != nil {
		return fmt.Errorf("encode snapshot: %w", err)
	}
	dir := filepath.Dir(c.path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create cache dir: %w", err)
	}
	// The snapshot holds upstream credentials in clear text: owner-only.
	tmp, err := os.CreateTemp(dir, ".snapshot-*")
	if err != nil {
		return fmt.Errorf("create temp file: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op after a successful rename
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", tmp.Name(), err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("sync %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), c.path); err != nil {
		return fmt.Errorf("rename into %s: %w", c.path, err)
	}
	return nil
}

// LoadFile serves the snapshot cached on disk, if any. It returns false with
// no error when there is no cache file.
func (c *Cache) LoadFile() (bool, error) {
	if c.path == "" {
		return false, nil
	}
	b, err := os.ReadFile(c.path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read snapshot cache: %w", err)
	}
	var snap metamcpv1.Snapshot
	if err := proto.Unmarshal(b, &snap); err != nil {
		return false, fmt.Errorf("snapshot cache %s is corrupt (delete it to start clean): %w", c.path, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	compiled, _, err := snapshot.Compile(&snap)
	if err != nil {
		return false, fmt.Errorf("snapshot cache %s: %w", c.path, err)
	}
	for _, check := range c.checks {
		if err := check(compiled); err != nil {
			return false, fmt.Errorf("snapshot cache %s: %w", c.path, err)
		}
	}
	c.swap(compiled)
	return true, nil
}

// StdioAllowList returns a Check that refuses snapshots with a stdio server
// whose command does not match one of the glob patterns (matched against the
// command as configured and against its base name). An empty list allows every
// command.
func StdioAllowList(patterns []string) Check {
	return func(s *snapshot.Compiled) error {
		if len(patterns) == 0 {
			return nil
		}
		var refused []string
		for _, srv := range s.Config.GetServers() {
			cmd := srv.GetStdio().GetCommand()
			if cmd == "" {
				continue
			}
			ok := false
			for _, p := range patterns {
				if snapshot.MatchGlob(p, cmd) || snapshot.MatchGlob(p, filepath.Base(cmd)) {
					ok = true
					break
				}
			}
			if !ok {
				refused = append(refused, fmt.Sprintf("server %q runs %q", srv.GetName(), cmd))
			}
		}
		if len(refused) > 0 {
			return fmt.Errorf("stdio command not allowed on this data plane (--stdio-allow %s): %s", strings.Join(patterns, ","), strings.Join(refused, "; "))
		}
		return nil
	}
}
