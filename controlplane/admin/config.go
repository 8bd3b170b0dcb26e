package admin

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"

	"google.golang.org/protobuf/proto"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/controlplane/secret"
	"github.com/metamcp/metamcp/controlplane/store"
	"github.com/metamcp/metamcp/pkg/snapshot"
	"github.com/metamcp/metamcp/pkg/urluser"
)

// item is one resource of a config being read or changed.
type item struct {
	// rec is the stored record; its Kind is empty when the resource is new.
	rec store.Record
	// msg is the resource in clear form: secrets decrypted, output-only
	// fields cleared. Nil once deleted.
	msg resource
	// dirty marks a resource to write (or delete, when msg is nil).
	dirty bool
}

func (it *item) stored() bool { return it.rec.Kind != "" }

// config is the whole config as one transaction sees it, with secrets in
// clear text, plus the changes a write makes to it before they are validated
// and committed.
type config struct {
	items map[store.Kind]map[string]*item
	// touched lists every resource put, changed or not: the warnings of a
	// write are those about these.
	touched []ref
}

// loadConfig reads every record of kinds, decrypting server secrets.
func loadConfig(ctx context.Context, tx store.ReadTx, sealer *secret.Sealer, kinds ...store.Kind) (*config, error) {
	c := &config{items: make(map[store.Kind]map[string]*item, len(kinds))}
	for _, kind := range kinds {
		recs, err := tx.List(ctx, kind)
		if err != nil {
			return nil, fmt.Errorf("list %s records: %w", kind, err)
		}
		m := make(map[string]*item, len(recs))
		for _, rec := range recs {
			msg, err := decode(rec)
			if err != nil {
				return nil, err
			}
			clearOutputOnly(msg)
			if srv, ok := msg.(*metamcpv1.Server); ok {
				if err := unsealServer(sealer, srv); err != nil {
					return nil, err
				}
			}
			m[rec.Name] = &item{rec: rec, msg: msg}
		}
		c.items[kind] = m
	}
	return c, nil
}

// get returns a resource, or nil when there is none.
func (c *config) get(kind store.Kind, name string) resource {
	if it := c.items[kind][name]; it != nil {
		return it.msg
	}
	return nil
}

// list returns the live resources of a kind, sorted by name.
func (c *config) list(kind store.Kind) []resource {
	var out []resource
	for _, it := range c.items[kind] {
		if it.msg != nil {
			out = append(out, it.msg)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].GetName() < out[j].GetName() })
	return out
}

// put creates or replaces a resource (clear form, output-only fields
// cleared). It reports what changed: created, updated (with the changed
// top-level fields) or unchanged, in which case nothing will be written.
func (c *config) put(kind store.Kind, msg resource) (metamcpv1.ChangeAction, []string) {
	m := c.items[kind]
	if m == nil {
		m = map[string]*item{}
		c.items[kind] = m
	}
	c.touched = append(c.touched, ref{kind, msg.GetName()})
	it := m[msg.GetName()]
	switch {
	case it == nil:
		m[msg.GetName()] = &item{msg: msg, dirty: true}
		return metamcpv1.ChangeAction_CHANGE_ACTION_CREATED, nil
	case it.msg == nil:
		it.msg, it.dirty = msg, true
		return metamcpv1.ChangeAction_CHANGE_ACTION_CREATED, nil
	case proto.Equal(it.msg, msg):
		return metamcpv1.ChangeAction_CHANGE_ACTION_UNCHANGED, nil
	}
	fields := changedFields(it.msg, msg)
	it.msg, it.dirty = msg, true
	return metamcpv1.ChangeAction_CHANGE_ACTION_UPDATED, fields
}

// warningsAbout keeps the warnings (snapshot.Violation strings) about the
// resources put.
func (c *config) warningsAbout(warnings []string) []string {
	var out []string
	for _, w := range warnings {
		for _, r := range c.touched {
			if strings.HasPrefix(w, fmt.Sprintf("%s %q: ", r.kind, r.name)) {
				out = append(out, w)
				break
			}
		}
	}
	return out
}

// remove deletes a resource; false when there is none.
func (c *config) remove(kind store.Kind, name string) bool {
	it := c.items[kind][name]
	if it == nil || it.msg == nil {
		return false
	}
	it.msg, it.dirty = nil, true
	return true
}

// commit writes every changed resource, sealing secrets first.
func (c *config) commit(ctx context.Context, tx store.Tx, sealer *secret.Sealer) error {
	kinds := make([]store.Kind, 0, len(c.items))
	for k := range c.items {
		kinds = append(kinds, k)
	}
	slices.Sort(kinds)
	for _, kind := range kinds {
		names := make([]string, 0, len(c.items[kind]))
		for n := range c.items[kind] {
			names = append(names, n)
		}
		slices.Sort(names)
		for _, name := range names {
			it := c.items[kind][name]
			if !it.dirty {
				continue
			}
			if it.msg == nil {
				if it.stored() {
					if err := tx.Delete(ctx, kind, name); err != nil {
						return fmt.Errorf("delete %s %q: %w", kind, name, err)
					}
				}
				continue
			}
			out := proto.Clone(it.msg)
			clearOutputOnly(out)
			if srv, ok := out.(*metamcpv1.Server); ok {
				if err := sealServer(sealer, srv); err != nil {
					return err
				}
			}
			data, err := encode(out)
			if err != nil {
				return fmt.Errorf("encode %s %q: %w", kind, name, err)
			}
			rec := store.Record{Kind: kind, Name: name, Data: data}
			if it.stored() {
				err = tx.Put(ctx, rec)
			} else {
				err = tx.Create(ctx, rec)
			}
			if err != nil {
				return fmt.Errorf("write %s %q: %w", kind, name, err)
			}
		}
	}
	return nil
}

// writes reports whether commit writes anything.
func (c *config) writes() bool {
	for _, m := range c.items {
		for _, it := range m {
			if it.dirty && (it.msg != nil || it.stored()) {
				return true
			}
		}
	}
	return false
}

// snapshotConfig returns the config as data planes get it: secrets in clear
// text, API keys only as hashes and never once revoked. Keys past their expiry
// stay in (data planes refuse them by expire_time): what a snapshot holds must
// depend on the revision alone, so that every control-plane replica builds the
// same one. With meta, the output-only fields (revision, times) are filled
// from the records.
func (c *config) snapshotConfig(meta bool) *metamcpv1.Config {
	clone := func(kind store.Kind, it resource) proto.Message {
		out := proto.Clone(it)
		if meta {
			if rec := c.items[kind][it.GetName()].rec; rec.Kind != "" {
				setOutputOnly(out, rec)
			}
		}
		return out
	}
	cfg := &metamcpv1.Config{}
	for _, r := range c.list(store.KindServer) {
		cfg.Servers = append(cfg.Servers, clone(store.KindServer, r).(*metamcpv1.Server))
	}
	for _, r := range c.list(store.KindNamespace) {
		cfg.Namespaces = append(cfg.Namespaces, clone(store.KindNamespace, r).(*metamcpv1.Namespace))
	}
	for _, r := range c.list(store.KindEndpoint) {
		cfg.Endpoints = append(cfg.Endpoints, clone(store.KindEndpoint, r).(*metamcpv1.Endpoint))
	}
	for _, r := range c.list(store.KindRateLimitPolicy) {
		cfg.RateLimits = append(cfg.RateLimits, clone(store.KindRateLimitPolicy, r).(*metamcpv1.RateLimitPolicy))
	}
	for _, r := range c.list(store.KindApiKey) {
		k := r.(*metamcpv1.ApiKey)
		if k.GetRevokeTime() != nil {
			continue
		}
		cfg.ApiKeys = append(cfg.ApiKeys, &metamcpv1.ApiKeyEntry{
			Name:       k.GetName(),
			Principal:  k.GetPrincipal(),
			KeyHash:    slices.Clone(k.GetKeyHash()),
			Endpoints:  slices.Clone(k.GetEndpoints()),
			ExpireTime: proto.CloneOf(k.GetExpireTime()),
		})
	}
	return cfg
}

// referrers names the resources that refer to one, e.g. `Namespace "dev"`,
// sorted. Revoked API keys refer to nothing: they can never be used again.
func (c *config) referrers(kind store.Kind, name string) []string {
	var out []string
	add := func(k store.Kind, n string) { out = append(out, fmt.Sprintf("%s %q", k, n)) }
	switch kind {
	case store.KindServer:
		for _, r := range c.list(store.KindNamespace) {
			for _, m := range r.(*metamcpv1.Namespace).GetMembers() {
				if m.GetServer() == name {
					add(store.KindNamespace, r.GetName())
					break
				}
			}
		}
		for _, r := range c.list(store.KindRateLimitPolicy) {
			if r.(*metamcpv1.RateLimitPolicy).GetServer() == name {
				add(store.KindRateLimitPolicy, r.GetName())
			}
		}
	case store.KindNamespace:
		for _, r := range c.list(store.KindEndpoint) {
			if r.(*metamcpv1.Endpoint).GetNamespace() == name {
				add(store.KindEndpoint, r.GetName())
			}
		}
	case store.KindRateLimitPolicy:
		for _, r := range c.list(store.KindEndpoint) {
			if slices.Contains(r.(*metamcpv1.Endpoint).GetRateLimits(), name) {
				add(store.KindEndpoint, r.GetName())
			}
		}
	case store.KindEndpoint:
		for _, r := range c.list(store.KindApiKey) {
			k := r.(*metamcpv1.ApiKey)
			if k.GetRevokeTime() == nil && slices.Contains(k.GetEndpoints(), name) {
				add(store.KindApiKey, r.GetName())
			}
		}
	}
	return out
}

// resolveSecrets fills every secret of next sent without a value from the
// stored server prev (nil when new), in place: an empty secret keeps the
// stored value of the same field. It returns a violation for each secret
// that has neither.
func resolveSecrets(prev, next *metamcpv1.Server) []snapshot.Violation {
	var out []snapshot.Violation
	// A URL printed by mmctl has its userinfo hidden: keep the stored one.
	for field, h := range map[string]*metamcpv1.HTTPTransport{"streamableHttp.url": next.GetStreamableHttp(), "sse.url": next.GetSse()} {
		if h == nil {
			continue
		}
		prevURL := prev.GetStreamableHttp().GetUrl()
		if prevURL == "" {
			prevURL = prev.GetSse().GetUrl()
		}
		u, err := urluser.Restore(prevURL, h.GetUrl())
		if err != nil {
			out = append(out, snapshot.Violation{Kind: string(store.KindServer), Name: next.GetName(), Field: field, Description: err.Error()})
			continue
		}
		h.Url = u
	}
	stored := map[string]*metamcpv1.Value{}
	if prev != nil {
		for _, ref := range serverValues(prev) {
			if ref.v.GetSecret() {
				stored[ref.slot] = ref.v
			}
		}
	}
	for _, ref := range serverValues(next) {
		if !ref.v.GetSecret() || ref.v.GetValue() != "" {
			continue
		}
		if old, ok := stored[ref.slot]; ok {
			ref.v.Value = old.GetValue()
			continue
		}
		out = append(out, snapshot.Violation{
			Kind:        string(store.KindServer),
			Name:        next.GetName(),
			Field:       ref.path,
			Description: "secret has no stored value: set value",
		})
	}
	return out
}
