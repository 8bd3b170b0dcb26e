package snapshot

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"google.golang.org/protobuf/proto"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
)

// A data plane may be unable to serve all of a snapshot: a server it may not
// run (a stdio command outside its allow list) or cannot validate (a
// transport or setting of a newer control plane), or a snapshot it cannot
// validate at all. It serves what it can rather than freeze on the previous
// config, so that security never waits on a server: refused servers are left
// out (CompilePartial, LeaveOut), and a snapshot refused whole still gives its
// credentials (CompileCredentials, then WithCredentials).

// CompilePartial is Compile, except that a snapshot whose only violations
// are of particular servers is compiled without those servers: they are
// left out as LeaveOut leaves them (Refused, with the violations as the
// reason). The Compiled keeps the snapshot's hash.
func CompilePartial(snap *metamcpv1.Snapshot) (*Compiled, []string, error) {
	compiled, warnings, err := Compile(snap)
	var verr *Error
	if err == nil || !errors.As(err, &verr) {
		return compiled, warnings, err
	}
	bad := map[string][]string{}
	for _, v := range verr.Violations {
		if v.Kind != KindServer || v.Name == "" {
			return nil, warnings, err
		}
		bad[v.Name] = append(bad[v.Name], v.Field+": "+v.Description)
	}
	// Compile checked the hash before validating: the config is whole.
	cfg := proto.CloneOf(snap.GetConfig())
	cfg.Servers = slices.DeleteFunc(cfg.Servers, func(s *metamcpv1.Server) bool { return bad[s.GetName()] != nil })
	left := map[string][]*metamcpv1.NamespaceMember{} // by namespace
	for _, ns := range cfg.GetNamespaces() {
		ns.Members = slices.DeleteFunc(ns.Members, func(m *metamcpv1.NamespaceMember) bool {
			if bad[m.GetServer()] != nil {
				left[ns.GetName()] = append(left[ns.GetName()], m)
				return true
			}
			return false
		})
	}
	trimmed, warnings2, err2 := Compile(&metamcpv1.Snapshot{Revision: snap.GetRevision(), Config: cfg, StoreId: snap.GetStoreId()})
	if err2 != nil {
		return nil, warnings, err
	}
	trimmed.Hash = snap.GetHash()
	trimmed.Refused = make(map[string]string, len(bad))
	for name, problems := range bad {
		trimmed.Refused[name] = "this data plane cannot validate it (a newer control plane's setting?): " + strings.Join(problems, "; ")
	}
	// The members left out stay in their endpoints, without a server, so a
	// call to their tools is told why.
	for _, ep := range trimmed.Endpoints {
		for _, m := range left[ep.Namespace.GetName()] {
			ep.Members = append(ep.Members, &Member{Prefix: EffectivePrefix(m), Spec: m, Refused: trimmed.Refused[m.GetServer()]})
		}
	}
	return trimmed, warnings2, nil
}

// LeaveOut removes the servers named in refused (name -> reason) from c: the
// upstream pool never runs them, lists skip them, and their members keep
// the reason (Member.Refused) for the error a call to their tools gets. It
// must be called before c is published; servers c does not have are ignored.
func (c *Compiled) LeaveOut(refused map[string]string) {
	if len(refused) == 0 {
		return
	}
	if c.Refused == nil {
		c.Refused = make(map[string]string, len(refused))
	}
	for name, reason := range refused {
		if _, ok := c.Servers[name]; !ok {
			continue
		}
		delete(c.Servers, name)
		c.Refused[name] = reason
	}
	for _, ep := range c.Endpoints {
		for _, m := range ep.Members {
			if reason, ok := c.Refused[m.Spec.GetServer()]; ok {
				m.Server = nil
				m.Refused = reason
			}
		}
	}
}

// RefusedServers returns the servers c leaves out, sorted by name.
func (c *Compiled) RefusedServers() []*metamcpv1.RefusedServer {
	if len(c.Refused) == 0 {
		return nil
	}
	out := make([]*metamcpv1.RefusedServer, 0, len(c.Refused))
	for name, reason := range c.Refused {
		out = append(out, &metamcpv1.RefusedServer{Server: name, Reason: reason})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].GetServer() < out[j].GetServer() })
	return out
}

// RefusedMember returns the member of ep, left out on this data plane, whose
// prefix starts the exposed tool or prompt name, or nil. It tells a caller of
// such a tool why it is not there instead of "unknown tool".
func (ep *Endpoint) RefusedMember(exposed string) *Member {
	var best *Member
	bestLen := -1
	for _, m := range ep.Members {
		if m.Refused == "" {
			continue
		}
		l := 0
		if m.Prefix != "" {
			l = len(m.Prefix) + len(ep.Separator)
			if len(exposed) <= l || !strings.HasPrefix(exposed, m.Prefix) || !strings.HasPrefix(exposed[len(m.Prefix):], ep.Separator) {
				continue
			}
		}
		if l > bestLen {
			best, bestLen = m, l
		}
	}
	return best
}

// Credentials is the part of a snapshot that a data plane applies even when
// it refuses the rest: its API keys (new ones, and by their absence the
// revoked and expired ones) and the session-sealing keys.
type Credentials struct {
	Revision    int64
	APIKeys     []*metamcpv1.ApiKeyEntry
	SessionKeys *metamcpv1.SessionKeys
}

// CompileCredentials returns the credentials of snap after checking that the
// snapshot is whole (its hash matches) and that the keys are well formed. It
// does not check the rest of the config: it is for a snapshot that Compile
// refused.
func CompileCredentials(snap *metamcpv1.Snapshot) (*Credentials, error) {
	cfg := snap.GetConfig()
	if cfg == nil {
		return nil, fmt.Errorf("snapshot %d has no config", snap.GetRevision())
	}
	hash, err := ConfigHash(cfg)
	if err != nil {
		return nil, fmt.Errorf("snapshot %d: %w", snap.GetRevision(), err)
	}
	if snap.GetHash() != "" && hash != snap.GetHash() {
		return nil, fmt.Errorf("snapshot %d: config hash %s does not match the announced %s (corrupted in transit?)", snap.GetRevision(), hash[:12], snap.GetHash())
	}
	c := &checker{}
	seen := map[string]string{}
	hashes := map[string]string{}
	for i, k := range cfg.GetApiKeys() {
		c.unique(KindApiKey, k.GetName(), fmt.Sprintf("apiKeys[%d]", i), seen)
		c.apiKeyEntry(k, hashes)
	}
	if sk := cfg.GetSessionKeys(); sk != nil {
		c.sessionKeys(sk)
	}
	if len(c.violations) > 0 {
		return nil, fmt.Errorf("snapshot %d: %w", snap.GetRevision(), &Error{Violations: c.violations})
	}
	return &Credentials{Revision: snap.GetRevision(), APIKeys: cfg.GetApiKeys(), SessionKeys: cfg.GetSessionKeys()}, nil
}

// WithCredentials returns a copy of c that serves the API keys and session
// keys of k and everything else of c. The copy keeps c's Revision and Hash
// (the config it serves is c's) and records k's revision in KeysRevision.
func (c *Compiled) WithCredentials(k *Credentials) *Compiled {
	out := *c
	cfg := proto.CloneOf(c.Config)
	cfg.ApiKeys = k.APIKeys
	cfg.SessionKeys = k.SessionKeys
	out.Config = cfg
	out.APIKeys = make(map[[sha256.Size]byte]*metamcpv1.ApiKeyEntry, len(k.APIKeys))
	for _, key := range k.APIKeys {
		var h [sha256.Size]byte
		copy(h[:], key.GetKeyHash())
		out.APIKeys[h] = key
	}
	out.KeysRevision = k.Revision
	return &out
}
