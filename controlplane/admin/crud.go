package admin

import (
	"context"
	"errors"

	"google.golang.org/protobuf/proto"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/controlplane/store"
	"github.com/metamcp/metamcp/pkg/canonical"
	"github.com/metamcp/metamcp/pkg/snapshot"
)

// The generic halves of the CRUD calls of Server, Namespace, Endpoint and
// RateLimitPolicy; the typed methods below only unwrap requests.

// opName is how log lines and error messages name a call, e.g. "create Server".
func opName(verb string, kind store.Kind) string { return verb + " " + string(kind) }

// sanitizeInput clears what a client may not set: output-only fields, and a
// server's sealed values and `set` flags; and fields holding their default.
func sanitizeInput(m resource) {
	clearOutputOnly(m)
	if srv, ok := m.(*metamcpv1.Server); ok {
		sanitizeServerInput(srv)
	}
	// A field written with its default is kept unset, as if left out: the
	// two are one config, and neither is a change.
	canonical.Strip(m)
}

// inputResource checks and copies a resource sent by a client.
func inputResource(kind store.Kind, field string, in resource) (resource, error) {
	if !in.ProtoReflect().IsValid() {
		return nil, invalid(kind, "", field, "%s is required", field)
	}
	m := proto.Clone(in).(resource)
	if srv, ok := m.(*metamcpv1.Server); ok {
		if v := unresolvedRefs(srv); len(v) > 0 {
			return nil, &snapshot.Error{Violations: v}
		}
	}
	sanitizeInput(m)
	if err := checkName(kind, m.GetName()); err != nil {
		return nil, err
	}
	return m, nil
}

func (s *Service) getResource(ctx context.Context, kind store.Kind, name string) (resource, error) {
	op := opName("get", kind)
	if err := checkName(kind, name); err != nil {
		return nil, s.rpcError(ctx, op, err)
	}
	var out resource
	err := s.st.View(ctx, func(ctx context.Context, tx store.ReadTx) error {
		rec, err := tx.Get(ctx, kind, name)
		if errors.Is(err, store.ErrNotFound) {
			return notFound(kind, name)
		}
		if err != nil {
			return err
		}
		out, err = present(rec)
		return err
	})
	if err != nil {
		return nil, s.rpcError(ctx, op, err)
	}
	return out, nil
}

func (s *Service) listResources(ctx context.Context, kind store.Kind) ([]resource, error) {
	var out []resource
	err := s.st.View(ctx, func(ctx context.Context, tx store.ReadTx) error {
		recs, err := tx.List(ctx, kind)
		if err != nil {
			return err
		}
		out = make([]resource, 0, len(recs))
		for _, rec := range recs {
			m, err := present(rec)
			if err != nil {
				return err
			}
			out = append(out, m)
		}
		return nil
	})
	if err != nil {
		return nil, s.rpcError(ctx, opName("list", kind), err)
	}
	return out, nil
}

// putResource creates or replaces a config resource; create says whether it must be
// new (Create) or must exist (Update, which replaces it whole).
func (s *Service) putResource(ctx context.Context, kind store.Kind, field string, in resource, create bool) (resource, error) {
	op := opName("update", kind)
	if create {
		op = opName("create", kind)
	}
	msg, err := inputResource(kind, field, in)
	if err != nil {
		return nil, s.rpcError(ctx, op, err)
	}
	name := msg.GetName()
	res, err := s.write(ctx, writeOptions{validate: true}, func(ctx context.Context, c *config, _ store.ReadTx) ([]ref, error) {
		m := proto.Clone(msg).(resource) // fn may run again: leave msg as sent
		prev := c.get(kind, name)
		switch {
		case create && prev != nil:
			return nil, alreadyExists(kind, name)
		case !create && prev == nil:
			return nil, notFound(kind, name)
		case !create && getManagedBy(m) == "":
			setManagedBy(m, getManagedBy(prev)) // a replace keeps who manages it
		}
		if srv, ok := m.(*metamcpv1.Server); ok {
			prevSrv, _ := prev.(*metamcpv1.Server)
			if v := resolveSecrets(prevSrv, srv); len(v) > 0 {
				return nil, &snapshot.Error{Violations: v}
			}
		}
		c.put(kind, m)
		return []ref{{kind, name}}, nil
	})
	if err != nil {
		return nil, s.rpcError(ctx, op, err)
	}
	s.committed(ctx, op, res)
	out, err := present(res.readBack[ref{kind, name}])
	if err != nil {
		return nil, s.rpcError(ctx, op, err)
	}
	return out, nil
}

func (s *Service) deleteResource(ctx context.Context, kind store.Kind, name string) (int64, error) {
	op := opName("delete", kind)
	if err := checkName(kind, name); err != nil {
		return 0, s.rpcError(ctx, op, err)
	}
	res, err := s.write(ctx, writeOptions{validate: true}, func(ctx context.Context, c *config, _ store.ReadTx) ([]ref, error) {
		if c.get(kind, name) == nil {
			return nil, notFound(kind, name)
		}
		if refs := c.referrers(kind, name); len(refs) > 0 {
			return nil, stillReferenced(kind, name, refs)
		}
		c.remove(kind, name)
		return nil, nil
	})
	if err != nil {
		return 0, s.rpcError(ctx, op, err)
	}
	s.committed(ctx, op, res)
	return res.rev, nil
}

// asList converts a []resource of one message type.
func asList[T resource](in []resource) []T {
	out := make([]T, len(in))
	for i, r := range in {
		out[i] = r.(T)
	}
	return out
}

// typed returns r as T, or T's zero value with err.
func typed[T resource](r resource, err error) (T, error) {
	if err != nil {
		var zero T
		return zero, err
	}
	return r.(T), nil
}

// CreateServer creates a Server; ALREADY_EXISTS when one has its name.
func (s *Service) CreateServer(ctx context.Context, req *metamcpv1.CreateServerRequest) (*metamcpv1.Server, error) {
	return typed[*metamcpv1.Server](s.putResource(ctx, store.KindServer, "server", req.GetServer(), true))
}

// GetServer returns one Server.
func (s *Service) GetServer(ctx context.Context, req *metamcpv1.GetServerRequest) (*metamcpv1.Server, error) {
	return typed[*metamcpv1.Server](s.getResource(ctx, store.KindServer, req.GetName()))
}

// ListServers returns every Server, sorted by name.
func (s *Service) ListServers(ctx context.Context, _ *metamcpv1.ListServersRequest) (*metamcpv1.ListServersResponse, error) {
	list, err := s.listResources(ctx, store.KindServer)
	if err != nil {
		return nil, err
	}
	return &metamcpv1.ListServersResponse{Servers: asList[*metamcpv1.Server](list)}, nil
}

// UpdateServer replaces a Server whole; NOT_FOUND when there is none.
func (s *Service) UpdateServer(ctx context.Context, req *metamcpv1.UpdateServerRequest) (*metamcpv1.Server, error) {
	return typed[*metamcpv1.Server](s.putResource(ctx, store.KindServer, "server", req.GetServer(), false))
}

// DeleteServer deletes a Server; FAILED_PRECONDITION while others refer to it.
func (s *Service) DeleteServer(ctx context.Context, req *metamcpv1.DeleteServerRequest) (*metamcpv1.DeleteServerResponse, error) {
	rev, err := s.deleteResource(ctx, store.KindServer, req.GetName())
	if err != nil {
		return nil, err
	}
	return &metamcpv1.DeleteServerResponse{Revision: rev}, nil
}

// CreateNamespace creates a Namespace; ALREADY_EXISTS when one has its name.
func (s *Service) CreateNamespace(ctx context.Context, req *metamcpv1.CreateNamespaceRequest) (*metamcpv1.Namespace, error) {
	return typed[*metamcpv1.Namespace](s.putResource(ctx, store.KindNamespace, "namespace", req.GetNamespace(), true))
}

// GetNamespace returns one Namespace.
func (s *Service) GetNamespace(ctx context.Context, req *metamcpv1.GetNamespaceRequest) (*metamcpv1.Namespace, error) {
	return typed[*metamcpv1.Namespace](s.getResource(ctx, store.KindNamespace, req.GetName()))
}

// ListNamespaces returns every Namespace, sorted by name.
func (s *Service) ListNamespaces(ctx context.Context, _ *metamcpv1.ListNamespacesRequest) (*metamcpv1.ListNamespacesResponse, error) {
	list, err := s.listResources(ctx, store.KindNamespace)
	if err != nil {
		return nil, err
	}
	return &metamcpv1.ListNamespacesResponse{Namespaces: asList[*metamcpv1.Namespace](list)}, nil
}

// UpdateNamespace replaces a Namespace whole; NOT_FOUND when there is none.
func (s *Service) UpdateNamespace(ctx context.Context, req *metamcpv1.UpdateNamespaceRequest) (*metamcpv1.Namespace, error) {
	return typed[*metamcpv1.Namespace](s.putResource(ctx, store.KindNamespace, "namespace", req.GetNamespace(), false))
}

// DeleteNamespace deletes a Namespace; FAILED_PRECONDITION while others refer to it.
func (s *Service) DeleteNamespace(ctx context.Context, req *metamcpv1.DeleteNamespaceRequest) (*metamcpv1.DeleteNamespaceResponse, error) {
	rev, err := s.deleteResource(ctx, store.KindNamespace, req.GetName())
	if err != nil {
		return nil, err
	}
	return &metamcpv1.DeleteNamespaceResponse{Revision: rev}, nil
}

// CreateEndpoint creates a Endpoint; ALREADY_EXISTS when one has its name.
func (s *Service) CreateEndpoint(ctx context.Context, req *metamcpv1.CreateEndpointRequest) (*metamcpv1.Endpoint, error) {
	return typed[*metamcpv1.Endpoint](s.putResource(ctx, store.KindEndpoint, "endpoint", req.GetEndpoint(), true))
}

// GetEndpoint returns one Endpoint.
func (s *Service) GetEndpoint(ctx context.Context, req *metamcpv1.GetEndpointRequest) (*metamcpv1.Endpoint, error) {
	return typed[*metamcpv1.Endpoint](s.getResource(ctx, store.KindEndpoint, req.GetName()))
}

// ListEndpoints returns every Endpoint, sorted by name.
func (s *Service) ListEndpoints(ctx context.Context, _ *metamcpv1.ListEndpointsRequest) (*metamcpv1.ListEndpointsResponse, error) {
	list, err := s.listResources(ctx, store.KindEndpoint)
	if err != nil {
		return nil, err
	}
	return &metamcpv1.ListEndpointsResponse{Endpoints: asList[*metamcpv1.Endpoint](list)}, nil
}

// UpdateEndpoint replaces a Endpoint whole; NOT_FOUND when there is none.
func (s *Service) UpdateEndpoint(ctx context.Context, req *metamcpv1.UpdateEndpointRequest) (*metamcpv1.Endpoint, error) {
	return typed[*metamcpv1.Endpoint](s.putResource(ctx, store.KindEndpoint, "endpoint", req.GetEndpoint(), false))
}

// DeleteEndpoint deletes a Endpoint; FAILED_PRECONDITION while others refer to it.
func (s *Service) DeleteEndpoint(ctx context.Context, req *metamcpv1.DeleteEndpointRequest) (*metamcpv1.DeleteEndpointResponse, error) {
	rev, err := s.deleteResource(ctx, store.KindEndpoint, req.GetName())
	if err != nil {
		return nil, err
	}
	return &metamcpv1.DeleteEndpointResponse{Revision: rev}, nil
}

// CreateRateLimitPolicy creates a RateLimitPolicy; ALREADY_EXISTS when one has its name.
func (s *Service) CreateRateLimitPolicy(ctx context.Context, req *metamcpv1.CreateRateLimitPolicyRequest) (*metamcpv1.RateLimitPolicy, error) {
	return typed[*metamcpv1.RateLimitPolicy](s.putResource(ctx, store.KindRateLimitPolicy, "rateLimitPolicy", req.GetRateLimitPolicy(), true))
}

// GetRateLimitPolicy returns one RateLimitPolicy.
func (s *Service) GetRateLimitPolicy(ctx context.Context, req *metamcpv1.GetRateLimitPolicyRequest) (*metamcpv1.RateLimitPolicy, error) {
	return typed[*metamcpv1.RateLimitPolicy](s.getResource(ctx, store.KindRateLimitPolicy, req.GetName()))
}

// ListRateLimitPolicies returns every RateLimitPolicy, sorted by name.
func (s *Service) ListRateLimitPolicies(ctx context.Context, _ *metamcpv1.ListRateLimitPoliciesRequest) (*metamcpv1.ListRateLimitPoliciesResponse, error) {
	list, err := s.listResources(ctx, store.KindRateLimitPolicy)
	if err != nil {
		return nil, err
	}
	return &metamcpv1.ListRateLimitPoliciesResponse{RateLimitPolicies: asList[*metamcpv1.RateLimitPolicy](list)}, nil
}

// UpdateRateLimitPolicy replaces a RateLimitPolicy whole; NOT_FOUND when there is none.
func (s *Service) UpdateRateLimitPolicy(ctx context.Context, req *metamcpv1.UpdateRateLimitPolicyRequest) (*metamcpv1.RateLimitPolicy, error) {
	return typed[*metamcpv1.RateLimitPolicy](s.putResource(ctx, store.KindRateLimitPolicy, "rateLimitPolicy", req.GetRateLimitPolicy(), false))
}

// DeleteRateLimitPolicy deletes a RateLimitPolicy; FAILED_PRECONDITION while others refer to it.
func (s *Service) DeleteRateLimitPolicy(ctx context.Context, req *metamcpv1.DeleteRateLimitPolicyRequest) (*metamcpv1.DeleteRateLimitPolicyResponse, error) {
	rev, err := s.deleteResource(ctx, store.KindRateLimitPolicy, req.GetName())
	if err != nil {
		return nil, err
	}
	return &metamcpv1.DeleteRateLimitPolicyResponse{Revision: rev}, nil
}
