package admin

import (
	"context"
	"fmt"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/controlplane/store"
	"github.com/metamcp/metamcp/pkg/snapshot"
)

// unwrap returns the kind and message of a Resource, or nil when none is set.
func unwrap(r *metamcpv1.Resource) (store.Kind, resource) {
	switch k := r.GetKind().(type) {
	case *metamcpv1.Resource_Server:
		if k.Server != nil {
			return store.KindServer, k.Server
		}
	case *metamcpv1.Resource_Namespace:
		if k.Namespace != nil {
			return store.KindNamespace, k.Namespace
		}
	case *metamcpv1.Resource_Endpoint:
		if k.Endpoint != nil {
			return store.KindEndpoint, k.Endpoint
		}
	case *metamcpv1.Resource_RateLimit:
		if k.RateLimit != nil {
			return store.KindRateLimitPolicy, k.RateLimit
		}
	}
	return "", nil
}

// wrap returns a Resource holding m.
func wrap(m resource) *metamcpv1.Resource {
	switch r := m.(type) {
	case *metamcpv1.Server:
		return &metamcpv1.Resource{Kind: &metamcpv1.Resource_Server{Server: r}}
	case *metamcpv1.Namespace:
		return &metamcpv1.Resource{Kind: &metamcpv1.Resource_Namespace{Namespace: r}}
	case *metamcpv1.Endpoint:
		return &metamcpv1.Resource{Kind: &metamcpv1.Resource_Endpoint{Endpoint: r}}
	case *metamcpv1.RateLimitPolicy:
		return &metamcpv1.Resource{Kind: &metamcpv1.Resource_RateLimit{RateLimit: r}}
	}
	panic(fmt.Sprintf("admin: %T is no config resource", m))
}

// bundleEntry is one checked resource of an Apply request.
type bundleEntry struct {
	kind store.Kind
	msg  resource
}

// checkBundle copies and checks the resources of an Apply request: each
// names one kind and a valid name, and no kind/name pair comes twice.
func checkBundle(resources []*metamcpv1.Resource) ([]bundleEntry, error) {
	var (
		v    []snapshot.Violation
		out  = make([]bundleEntry, 0, len(resources))
		seen = make(map[ref]int, len(resources))
	)
	for i, r := range resources {
		kind, m := unwrap(r)
		if m == nil {
			v = append(v, snapshot.Violation{Field: fmt.Sprintf("resources[%d]", i),
				Description: "empty resource: set one of server, namespace, endpoint, rateLimit"})
			continue
		}
		m = proto.Clone(m).(resource)
		if srv, ok := m.(*metamcpv1.Server); ok {
			v = append(v, unresolvedRefs(srv)...)
		}
		sanitizeInput(m)
		if err := snapshot.ValidateName(m.GetName()); err != nil {
			v = append(v, snapshot.Violation{Kind: string(kind), Name: m.GetName(),
				Field: "name", Description: fmt.Sprintf("resources[%d]: %v", i, err)})
			continue
		}
		key := ref{kind, m.GetName()}
		if first, dup := seen[key]; dup {
			v = append(v, snapshot.Violation{Kind: string(kind), Name: m.GetName(),
				Description: fmt.Sprintf("resources[%d] repeats resources[%d]: each resource may appear once", i, first)})
			continue
		}
		seen[key] = i
		out = append(out, bundleEntry{kind: kind, msg: m})
	}
	if len(v) > 0 {
		return nil, &snapshot.Error{Violations: v}
	}
	return out, nil
}

// Apply makes the config match a bundle: it creates what is new and updates
// what differs, all in one transaction (one revision, none when nothing
// changed). A secret sent without a value, or with the value already stored,
// is unchanged. With prune it also deletes the resources of the bundle's
// kinds that carry the request's managed_by and that the bundle leaves out;
// with delete it deletes the bundle's resources instead. Nothing is deleted
// that a resource left in place still refers to.
func (s *Service) Apply(ctx context.Context, req *metamcpv1.ApplyRequest) (*metamcpv1.ApplyResponse, error) {
	const op = "apply"
	if err := checkApplyMode(req); err != nil {
		return nil, s.rpcError(ctx, op, err)
	}
	bundle, err := checkBundle(req.GetResources())
	if err != nil {
		return nil, s.rpcError(ctx, op, err)
	}
	var changes []*metamcpv1.Change
	res, err := s.write(ctx, writeOptions{validate: true, dryRun: req.GetDryRun()},
		func(ctx context.Context, c *config, _ store.ReadTx) ([]ref, error) {
			changes = make([]*metamcpv1.Change, 0, len(bundle)) // fn may run again
			if req.GetDelete() {
				var err error
				changes, err = deleteBundle(c, bundle)
				return nil, err
			}
			var v []snapshot.Violation
			for _, e := range bundle {
				m := proto.Clone(e.msg).(resource)
				prev := c.get(e.kind, m.GetName())
				managedBy := req.GetManagedBy()
				if managedBy == "" && prev != nil {
					managedBy = getManagedBy(prev)
				}
				setManagedBy(m, managedBy)
				if srv, ok := m.(*metamcpv1.Server); ok {
					prevSrv, _ := prev.(*metamcpv1.Server)
					if sv := resolveSecrets(prevSrv, srv); len(sv) > 0 {
						v = append(v, sv...)
						continue
					}
				}
				action, fields := c.put(e.kind, m)
				changes = append(changes, &metamcpv1.Change{
					Kind: string(e.kind), Name: m.GetName(), Action: action, Fields: fields,
				})
			}
			if len(v) > 0 {
				return nil, &snapshot.Error{Violations: v}
			}
			if req.GetPrune() {
				pruned, err := prune(c, bundle, req.GetManagedBy())
				if err != nil {
					return nil, err
				}
				changes = append(changes, pruned...)
			}
			return nil, nil
		})
	if err != nil {
		return nil, s.rpcError(ctx, op, err)
	}
	if !req.GetDryRun() {
		s.logWrite(ctx, op, res)
	}
	return &metamcpv1.ApplyResponse{
		Revision: res.rev,
		Changes:  changes,
		Warnings: res.warnings,
		DryRun:   req.GetDryRun(),
	}, nil
}

// checkApplyMode checks the options of an Apply request that go together.
func checkApplyMode(req *metamcpv1.ApplyRequest) error {
	switch {
	case req.GetPrune() && req.GetDelete():
		return invalidRequest("prune", "prune and delete exclude each other")
	case req.GetPrune() && req.GetManagedBy() == "":
		return invalidRequest("managedBy", "prune needs managedBy: only the resources managed by the same source are pruned")
	case req.GetDelete() && req.GetManagedBy() != "":
		return invalidRequest("managedBy", "delete takes no managedBy")
	}
	return nil
}

// invalidRequest is InvalidArgument about a field of the request itself.
func invalidRequest(field, description string) error {
	return &snapshot.Error{Violations: []snapshot.Violation{{Field: field, Description: description}}}
}

// prune deletes the resources of the bundle's kinds managed by managedBy that
// the bundle does not name, and reports them as deleted. It refuses (naming
// each) when a resource that stays refers to one of them.
func prune(c *config, bundle []bundleEntry, managedBy string) ([]*metamcpv1.Change, error) {
	kinds := map[store.Kind]bool{}
	named := map[ref]bool{}
	for _, e := range bundle {
		kinds[e.kind] = true
		named[ref{e.kind, e.msg.GetName()}] = true
	}
	var gone []ref
	for _, kind := range configKinds {
		if !kinds[kind] {
			continue
		}
		for _, r := range c.list(kind) {
			if !named[ref{kind, r.GetName()}] && getManagedBy(r) == managedBy {
				gone = append(gone, ref{kind, r.GetName()})
			}
		}
	}
	return removeAll(c, gone, "pruned")
}

// deleteBundle deletes every resource of the bundle.
func deleteBundle(c *config, bundle []bundleEntry) ([]*metamcpv1.Change, error) {
	var (
		v    []snapshot.Violation
		gone []ref
	)
	for _, e := range bundle {
		if c.get(e.kind, e.msg.GetName()) == nil {
			v = append(v, snapshot.Violation{Kind: string(e.kind), Name: e.msg.GetName(), Description: "not found: nothing to delete"})
			continue
		}
		gone = append(gone, ref{e.kind, e.msg.GetName()})
	}
	if len(v) > 0 {
		return nil, &snapshot.Error{Violations: v}
	}
	return removeAll(c, gone, "deleted")
}

// removeAll removes resources, then refuses (one violation each) if a
// resource that stays still refers to one of them; how says what the
// removal is ("pruned", "deleted").
func removeAll(c *config, gone []ref, how string) ([]*metamcpv1.Change, error) {
	changes := make([]*metamcpv1.Change, 0, len(gone))
	for _, r := range gone {
		c.remove(r.kind, r.name)
		changes = append(changes, &metamcpv1.Change{
			Kind: string(r.kind), Name: r.name, Action: metamcpv1.ChangeAction_CHANGE_ACTION_DELETED,
		})
	}
	var v []snapshot.Violation
	for _, r := range gone {
		if refs := c.referrers(r.kind, r.name); len(refs) > 0 {
			v = append(v, snapshot.Violation{Kind: string(r.kind), Name: r.name,
				Description: fmt.Sprintf("cannot be %s: still used by %s; remove those references first", how, strings.Join(refs, ", "))})
		}
	}
	if len(v) > 0 {
		return nil, &snapshot.Error{Violations: v}
	}
	return changes, nil
}

// getManagedBy returns a config resource's managed_by.
func getManagedBy(m resource) string {
	r := m.ProtoReflect()
	if fd := r.Descriptor().Fields().ByName("managed_by"); fd != nil {
		return r.Get(fd).String()
	}
	return ""
}

// setManagedBy sets a config resource's managed_by.
func setManagedBy(m resource, v string) {
	r := m.ProtoReflect()
	if fd := r.Descriptor().Fields().ByName("managed_by"); fd != nil {
		if v == "" {
			r.Clear(fd)
		} else {
			r.Set(fd, protoreflect.ValueOfString(v))
		}
	}
}

// Export returns every Server, Namespace, Endpoint and RateLimitPolicy
// (never API keys or tokens) in the form Apply takes back: sorted by kind
// then name, output-only fields cleared, secrets as placeholders that keep
// the stored values.
func (s *Service) Export(ctx context.Context, _ *metamcpv1.ExportRequest) (*metamcpv1.ExportResponse, error) {
	out := &metamcpv1.ExportResponse{}
	err := s.st.View(ctx, func(ctx context.Context, tx store.ReadTx) error {
		out.Resources = out.Resources[:0]
		out.Revision = tx.Revision()
		for _, kind := range configKinds {
			recs, err := tx.List(ctx, kind)
			if err != nil {
				return fmt.Errorf("list %s records: %w", kind, err)
			}
			for _, rec := range recs {
				m, err := decode(rec)
				if err != nil {
					return err
				}
				redact(m)
				clearOutputOnly(m)
				out.Resources = append(out.Resources, wrap(m))
			}
		}
		return nil
	})
	if err != nil {
		return nil, s.rpcError(ctx, "export", err)
	}
	return out, nil
}
