package snapshot

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/pkg/authz"
)

// Compiled is the validated, indexed, immutable form of one snapshot that a
// data plane serves. Nothing in it may be modified after Compile returns:
// requests read it concurrently without locks.
type Compiled struct {
	Revision int64
	Hash     string
	// BuildTime is when the control plane built the snapshot (zero when
	// it did not say): the age of the config served.
	BuildTime time.Time
	// StoreID is the id of the control-plane store the snapshot came from.
	StoreID string
	Config  *metamcpv1.Config

	Servers    map[string]*metamcpv1.Server
	Endpoints  map[string]*Endpoint
	RateLimits map[string]*metamcpv1.RateLimitPolicy
	// APIKeys is keyed by the SHA-256 of the key.
	APIKeys map[[sha256.Size]byte]*metamcpv1.ApiKeyEntry

	// Refused maps the servers of Config this data plane leaves out (see
	// LeaveOut) to why; they are not in Servers.
	Refused map[string]string
	// KeysRevision is the revision of the API keys and session keys in
	// force when a later snapshot was refused whole (see WithCredentials);
	// 0 when they are Revision's.
	KeysRevision int64
}

// Endpoint is one endpoint with everything a request to it needs.
type Endpoint struct {
	Endpoint   *metamcpv1.Endpoint
	Namespace  *metamcpv1.Namespace
	Separator  string
	Members    []*Member
	RateLimits []*metamcpv1.RateLimitPolicy
	// Policy is the endpoint's compiled access rules; nil (allow everything)
	// when it has none.
	Policy *authz.Policy
}

// Member is one server mounted in an endpoint's namespace.
type Member struct {
	Server *metamcpv1.Server
	// Prefix is the effective prefix (the server's name when unset).
	Prefix string
	Spec   *metamcpv1.NamespaceMember
	// Refused says why this data plane leaves the server out; Server is
	// nil then.
	Refused string
}

// ConfigHash returns the hex SHA-256 of the deterministic encoding of cfg, the
// hash a snapshot carries.
func ConfigHash(cfg *metamcpv1.Config) (string, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(cfg)
	if err != nil {
		return "", fmt.Errorf("encode config: %w", err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

// Compile checks that snap is whole (its hash matches its config) and valid,
// and indexes it. Warnings are returned with a nil error; an invalid snapshot
// returns an error and no Compiled.
func Compile(snap *metamcpv1.Snapshot) (*Compiled, []string, error) {
	cfg := snap.GetConfig()
	if cfg == nil {
		return nil, nil, fmt.Errorf("snapshot %d has no config", snap.GetRevision())
	}
	hash, err := ConfigHash(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("snapshot %d: %w", snap.GetRevision(), err)
	}
	if snap.GetHash() != "" && hash != snap.GetHash() {
		return nil, nil, fmt.Errorf("snapshot %d: config hash %s does not match the announced %s (corrupted in transit?)", snap.GetRevision(), hash[:12], snap.GetHash())
	}
	warnings, err := Validate(cfg)
	if err != nil {
		return nil, warnings, fmt.Errorf("snapshot %d: %w", snap.GetRevision(), err)
	}
	c := &Compiled{
		Revision:   snap.GetRevision(),
		Hash:       hash,
		BuildTime:  buildTime(snap),
		StoreID:    snap.GetStoreId(),
		Config:     cfg,
		Servers:    make(map[string]*metamcpv1.Server, len(cfg.GetServers())),
		Endpoints:  make(map[string]*Endpoint, len(cfg.GetEndpoints())),
		RateLimits: make(map[string]*metamcpv1.RateLimitPolicy, len(cfg.GetRateLimits())),
		APIKeys:    make(map[[sha256.Size]byte]*metamcpv1.ApiKeyEntry, len(cfg.GetApiKeys())),
	}
	for _, s := range cfg.GetServers() {
		c.Servers[s.GetName()] = s
	}
	for _, p := range cfg.GetRateLimits() {
		c.RateLimits[p.GetName()] = p
	}
	for _, k := range cfg.GetApiKeys() {
		var h [sha256.Size]byte
		copy(h[:], k.GetKeyHash())
		c.APIKeys[h] = k
	}
	namespaces := make(map[string]*metamcpv1.Namespace, len(cfg.GetNamespaces()))
	for _, ns := range cfg.GetNamespaces() {
		namespaces[ns.GetName()] = ns
	}
	for _, ep := range cfg.GetEndpoints() {
		ns := namespaces[ep.GetNamespace()]
		ce := &Endpoint{Endpoint: ep, Namespace: ns, Separator: Separator(ns)}
		for _, m := range ns.GetMembers() {
			ce.Members = append(ce.Members, &Member{Server: c.Servers[m.GetServer()], Prefix: EffectivePrefix(m), Spec: m})
		}
		for _, name := range ep.GetRateLimits() {
			ce.RateLimits = append(ce.RateLimits, c.RateLimits[name])
		}
		policy, err := authz.Compile(ep.GetAccessRules())
		if err != nil { // Validate compiled the same conditions
			return nil, warnings, fmt.Errorf("snapshot %d: endpoint %q: %w", snap.GetRevision(), ep.GetName(), err)
		}
		ce.Policy = policy
		c.Endpoints[ep.GetName()] = ce
	}
	return c, warnings, nil
}

func buildTime(snap *metamcpv1.Snapshot) time.Time {
	if snap.GetBuildTime() == nil {
		return time.Time{}
	}
	return snap.GetBuildTime().AsTime()
}
