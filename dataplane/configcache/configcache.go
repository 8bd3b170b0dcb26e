// Package configcache holds the snapshot a data plane serves: validated and
// compiled before it is swapped in atomically, written to disk (write, then
// rename) so a restarted data plane can serve while the control plane is away.
// It serves what it can of a snapshot it cannot serve whole: the servers this
// data plane may not run are left out, and a snapshot refused whole still
// puts its API keys and session keys in force.
package configcache

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"google.golang.org/protobuf/proto"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/pkg/snapshot"
)

// Check is a data plane's own condition on a snapshot, on top of validation.
// It returns the servers this data plane may not run, each with why: they are
// left out and the rest is served. An error refuses the whole snapshot (its
// API keys and session keys are still applied).
type Check func(*snapshot.Compiled) (refused map[string]string, err error)

// Result says how much of a snapshot Offer put in service.
type Result struct {
	// Outcome is APPLIED, PARTIAL (served without Refused), KEYS_ONLY
	// (refused, but its API keys and session keys are in force) or
	// UNSPECIFIED (nothing of it is in force).
	Outcome metamcpv1.ApplyOutcome
	Refused []*metamcpv1.RefusedServer
}

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

// Apply is Offer without the Result: nil when snap is served, whole or
// without some servers.
func (c *Cache) Apply(snap *metamcpv1.Snapshot) error {
	_, err := c.Offer(snap)
	return err
}

// Offer validates, compiles and checks snap, persists it and swaps it in.
// Servers a check refuses are left out and the rest is served (PARTIAL). A
// snapshot that cannot be served at all returns an error: the config being
// served stays, but the snapshot's API keys and session keys replace its own
// when the snapshot is whole and they are well formed (KEYS_ONLY), so that a
// revocation reaches this data plane whatever else it refuses.
func (c *Cache) Offer(snap *metamcpv1.Snapshot) (Result, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	compiled, err := c.compile(snap)
	if err != nil {
		return c.applyCredentials(snap, err), err
	}
	if err := c.persist(snap); err != nil {
		// Serving the new config matters more than caching it; say so loudly.
		c.log.Error("could not write the snapshot cache; a restart without the control plane will serve an older config", "path", c.path, "err", err)
	}
	c.removeKeysFile()
	c.swap(compiled)
	res := Result{Outcome: metamcpv1.ApplyOutcome_APPLY_OUTCOME_APPLIED, Refused: compiled.RefusedServers()}
	if len(res.Refused) > 0 {
		res.Outcome = metamcpv1.ApplyOutcome_APPLY_OUTCOME_PARTIAL
	}
	return res, nil
}

// compile validates and compiles snap and runs the checks, leaving out the
// servers they refuse and those that fail validation here (see
// snapshot.CompilePartial).
func (c *Cache) compile(snap *metamcpv1.Snapshot) (*snapshot.Compiled, error) {
	compiled, warnings, err := snapshot.CompilePartial(snap)
	if err != nil {
		return nil, err
	}
	for _, w := range warnings {
		c.log.Warn("config warning", "revision", snap.GetRevision(), "warning", w)
	}
	refused := map[string]string{}
	for _, check := range c.checks {
		r, err := check(compiled)
		if err != nil {
			return nil, fmt.Errorf("snapshot %d: %w", snap.GetRevision(), err)
		}
		for name, reason := range r {
			if _, dup := refused[name]; !dup {
				refused[name] = reason
			}
		}
	}
	compiled.LeaveOut(refused)
	return compiled, nil
}

// applyCredentials puts the API keys and session keys of snap, which cannot
// be served (why), in force with the config being served. It returns what it
// did.
func (c *Cache) applyCredentials(snap *metamcpv1.Snapshot, why error) Result {
	cur := c.cur.Load()
	if cur == nil {
		// Keys alone serve nothing: there is no endpoint to use them on.
		return Result{}
	}
	if cur.StoreID != snap.GetStoreId() && cur.StoreID != "" {
		// Keys of another store's config would mix two configs.
		return Result{}
	}
	creds, err := snapshot.CompileCredentials(snap)
	if err != nil {
		c.log.Error("could not apply even the API keys of a refused snapshot", "revision", snap.GetRevision(), "err", err, "refused_because", why)
		return Result{}
	}
	if err := c.persistKeys(snap); err != nil {
		c.log.Error("could not write the API keys of a refused snapshot to the cache; a restart without the control plane would serve older keys", "path", c.keysPath(), "err", err)
	}
	c.swap(cur.WithCredentials(creds))
	return Result{Outcome: metamcpv1.ApplyOutcome_APPLY_OUTCOME_KEYS_ONLY}
}

// Served says how much of its snapshot the cache serves: the outcome, the
// servers left out, and the revision of the keys in force when newer than
// the config's.
func (c *Cache) Served() (metamcpv1.ApplyOutcome, []*metamcpv1.RefusedServer, int64) {
	cur := c.cur.Load()
	switch {
	case cur == nil:
		return metamcpv1.ApplyOutcome_APPLY_OUTCOME_UNSPECIFIED, nil, 0
	case cur.KeysRevision > cur.Revision:
		return metamcpv1.ApplyOutcome_APPLY_OUTCOME_KEYS_ONLY, cur.RefusedServers(), cur.KeysRevision
	case len(cur.Refused) > 0:
		return metamcpv1.ApplyOutcome_APPLY_OUTCOME_PARTIAL, cur.RefusedServers(), 0
	}
	return metamcpv1.ApplyOutcome_APPLY_OUTCOME_APPLIED, nil, 0
}

// StoreID returns the id of the store the served config came from.
func (c *Cache) StoreID() string {
	if s := c.cur.Load(); s != nil {
		return s.StoreID
	}
	return ""
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
	return writeFile(c.path, clean)
}

// keysPath is the file holding the API keys and session keys of the newest
// snapshot refused whole, newer than the one at path.
func (c *Cache) keysPath() string { return c.path + ".keys" }

// persistKeys writes the credentials of snap, a snapshot refused whole, as a
// snapshot of its own (revision, store and a config of only the keys) next
// to the cache, so a restart without the control plane keeps them in force.
func (c *Cache) persistKeys(snap *metamcpv1.Snapshot) error {
	if c.path == "" {
		return nil
	}
	cfg := &metamcpv1.Config{ApiKeys: snap.GetConfig().GetApiKeys(), SessionKeys: snap.GetConfig().GetSessionKeys()}
	hash, err := snapshot.ConfigHash(cfg)
	if err != nil {
		return err
	}
	return writeFile(c.keysPath(), &metamcpv1.Snapshot{Revision: snap.GetRevision(), Hash: hash, Config: cfg, StoreId: snap.GetStoreId()})
}

func (c *Cache) removeKeysFile() {
	if c.path == "" {
		return
	}
	if err := os.Remove(c.keysPath()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		c.log.Warn("could not remove the API keys of an older refused snapshot", "path", c.keysPath(), "err", err)
	}
}

// writeFile writes snap to path atomically (write, sync, rename), owner-only.
func writeFile(path string, snap *metamcpv1.Snapshot) error {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(snap)
	if err != nil {
		return fmt.Errorf("encode snapshot: %w", err)
	}
	dir := filepath.Dir(path)
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
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("rename into %s: %w", path, err)
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
	compiled, err := c.compile(&snap)
	if err != nil {
		return false, fmt.Errorf("snapshot cache %s: %w", c.path, err)
	}
	if creds := c.loadKeysFile(compiled); creds != nil {
		compiled = compiled.WithCredentials(creds)
	}
	c.swap(compiled)
	return true, nil
}

// loadKeysFile returns the credentials kept from a snapshot refused whole
// after compiled, or nil when there are none.
func (c *Cache) loadKeysFile(compiled *snapshot.Compiled) *snapshot.Credentials {
	b, err := os.ReadFile(c.keysPath())
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	var snap metamcpv1.Snapshot
	if err == nil {
		err = proto.Unmarshal(b, &snap)
	}
	if err != nil {
		c.log.Warn("ignoring the API keys kept from a refused snapshot", "path", c.keysPath(), "err", err)
		return nil
	}
	if snap.GetRevision() <= compiled.Revision || snap.GetStoreId() != compiled.StoreID {
		return nil
	}
	creds, err := snapshot.CompileCredentials(&snap)
	if err != nil {
		c.log.Warn("ignoring the API keys kept from a refused snapshot", "path", c.keysPath(), "err", err)
		return nil
	}
	return creds
}
