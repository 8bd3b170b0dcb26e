package admin

import (
	"context"
	"fmt"

	"google.golang.org/protobuf/proto"

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
// is unchanged. Apply never deletes: resources missing from the bundle stay
// (pruning them is future work).
func (s *Service) Apply(ctx context.Context, req *metamcpv1.ApplyRequest) (*metamcpv1.ApplyResponse, error) {
	const op = "apply"
	bundle, err := checkBundle(req.GetResources())
	if err != nil {
		return nil, s.rpcError(ctx, op, err)
	}
	var changes []*metamcpv1.Change
	res, err := s.write(ctx, writeOptions{validate: true, dryRun: req.GetDryRun()},
		func(ctx context.Context, c *config, _ store.ReadTx) ([]ref, error) {
			changes = make([]*metamcpv1.Change, 0, len(bundle)) // fn may run again
			var v []snapshot.Violation
			for _, e := range bundle {
				m := proto.Clone(e.msg).(resource)
				if srv, ok := m.(*metamcpv1.Server); ok {
					prev, _ := c.get(store.KindServer, srv.GetName()).(*metamcpv1.Server)
					if sv := resolveSecrets(prev, srv); len(sv) > 0 {
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
