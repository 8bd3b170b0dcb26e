package main

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"google.golang.org/protobuf/proto"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
)

// kind describes one resource type as the CLI sees it: its names and the
// admin calls that read, delete and revoke it.
type kind struct {
	// name is the singular, used in messages (`server "x" deleted`).
	name string
	// plural is the canonical name in `mmctl get`.
	plural string
	// aliases are the other accepted spellings.
	aliases []string
	// apiKind is the kind in YAML and in Apply's changes ("Server").
	apiKind string
	// config marks kinds that apply and export handle.
	config bool

	// list returns the list response (for -o json/yaml) and its items.
	list func(ctx context.Context, c metamcpv1.AdminServiceClient) (proto.Message, []proto.Message, error)
	// get reads one item; nil when the API has no Get (the list is filtered).
	get func(ctx context.Context, c metamcpv1.AdminServiceClient, name string) (proto.Message, error)
	// del deletes one item and returns the new revision; nil when the kind
	// cannot be deleted.
	del func(ctx context.Context, c metamcpv1.AdminServiceClient, name string) (int64, error)
	// revoke revokes one item; nil when the kind cannot be revoked.
	revoke func(ctx context.Context, c metamcpv1.AdminServiceClient, name string) (proto.Message, error)
	// nameOf returns an item's name.
	nameOf func(m proto.Message) string
	// noDelete explains why the kind cannot be deleted.
	noDelete string
}

// names lists every accepted spelling of the kind.
func (k *kind) names() []string {
	return append([]string{k.name, k.plural}, k.aliases...)
}

// kinds is every kind, in the order help and completion list them.
var kinds = []*kind{
	{
		name: "server", plural: "servers", aliases: []string{"srv"}, apiKind: "Server", config: true,
		list: func(ctx context.Context, c metamcpv1.AdminServiceClient) (proto.Message, []proto.Message, error) {
			r, err := c.ListServers(ctx, &metamcpv1.ListServersRequest{})
			if err != nil {
				return nil, nil, err
			}
			return r, messages(r.GetServers()), nil
		},
		get: func(ctx context.Context, c metamcpv1.AdminServiceClient, name string) (proto.Message, error) {
			return c.GetServer(ctx, &metamcpv1.GetServerRequest{Name: name})
		},
		del: func(ctx context.Context, c metamcpv1.AdminServiceClient, name string) (int64, error) {
			r, err := c.DeleteServer(ctx, &metamcpv1.DeleteServerRequest{Name: name})
			return r.GetRevision(), err
		},
		nameOf: func(m proto.Message) string { return m.(*metamcpv1.Server).GetName() },
	},
	{
		name: "namespace", plural: "namespaces", aliases: []string{"ns"}, apiKind: "Namespace", config: true,
		list: func(ctx context.Context, c metamcpv1.AdminServiceClient) (proto.Message, []proto.Message, error) {
			r, err := c.ListNamespaces(ctx, &metamcpv1.ListNamespacesRequest{})
			if err != nil {
				return nil, nil, err
			}
			return r, messages(r.GetNamespaces()), nil
		},
		get: func(ctx context.Context, c metamcpv1.AdminServiceClient, name string) (proto.Message, error) {
			return c.GetNamespace(ctx, &metamcpv1.GetNamespaceRequest{Name: name})
		},
		del: func(ctx context.Context, c metamcpv1.AdminServiceClient, name string) (int64, error) {
			r, err := c.DeleteNamespace(ctx, &metamcpv1.DeleteNamespaceRequest{Name: name})
			return r.GetRevision(), err
		},
		nameOf: func(m proto.Message) string { return m.(*metamcpv1.Namespace).GetName() },
	},
	{
		name: "endpoint", plural: "endpoints", aliases: []string{"ep"}, apiKind: "Endpoint", config: true,
		list: func(ctx context.Context, c metamcpv1.AdminServiceClient) (proto.Message, []proto.Message, error) {
			r, err := c.ListEndpoints(ctx, &metamcpv1.ListEndpointsRequest{})
			if err != nil {
				return nil, nil, err
			}
			return r, messages(r.GetEndpoints()), nil
		},
		get: func(ctx context.Context, c metamcpv1.AdminServiceClient, name string) (proto.Message, error) {
			return c.GetEndpoint(ctx, &metamcpv1.GetEndpointRequest{Name: name})
		},
		del: func(ctx context.Context, c metamcpv1.AdminServiceClient, name string) (int64, error) {
			r, err := c.DeleteEndpoint(ctx, &metamcpv1.DeleteEndpointRequest{Name: name})
			return r.GetRevision(), err
		},
		nameOf: func(m proto.Message) string { return m.(*metamcpv1.Endpoint).GetName() },
	},
	{
		name: "ratelimit", plural: "ratelimits", aliases: []string{"ratelimitpolicy", "ratelimitpolicies", "rl"}, apiKind: "RateLimitPolicy", config: true,
		list: func(ctx context.Context, c metamcpv1.AdminServiceClient) (proto.Message, []proto.Message, error) {
			r, err := c.ListRateLimitPolicies(ctx, &metamcpv1.ListRateLimitPoliciesRequest{})
			if err != nil {
				return nil, nil, err
			}
			return r, messages(r.GetRateLimitPolicies()), nil
		},
		get: func(ctx context.Context, c metamcpv1.AdminServiceClient, name string) (proto.Message, error) {
			return c.GetRateLimitPolicy(ctx, &metamcpv1.GetRateLimitPolicyRequest{Name: name})
		},
		del: func(ctx context.Context, c metamcpv1.AdminServiceClient, name string) (int64, error) {
			r, err := c.DeleteRateLimitPolicy(ctx, &metamcpv1.DeleteRateLimitPolicyRequest{Name: name})
			return r.GetRevision(), err
		},
		nameOf: func(m proto.Message) string { return m.(*metamcpv1.RateLimitPolicy).GetName() },
	},
	{
		name: "apikey", plural: "apikeys", aliases: []string{"key", "keys"}, apiKind: "ApiKey",
		list: func(ctx context.Context, c metamcpv1.AdminServiceClient) (proto.Message, []proto.Message, error) {
			r, err := c.ListApiKeys(ctx, &metamcpv1.ListApiKeysRequest{})
			if err != nil {
				return nil, nil, err
			}
			return r, messages(r.GetApiKeys()), nil
		},
		get: func(ctx context.Context, c metamcpv1.AdminServiceClient, name string) (proto.Message, error) {
			return c.GetApiKey(ctx, &metamcpv1.GetApiKeyRequest{Name: name})
		},
		del: func(ctx context.Context, c metamcpv1.AdminServiceClient, name string) (int64, error) {
			r, err := c.DeleteApiKey(ctx, &metamcpv1.DeleteApiKeyRequest{Name: name})
			return r.GetRevision(), err
		},
		revoke: func(ctx context.Context, c metamcpv1.AdminServiceClient, name string) (proto.Message, error) {
			return c.RevokeApiKey(ctx, &metamcpv1.RevokeApiKeyRequest{Name: name})
		},
		nameOf: func(m proto.Message) string { return m.(*metamcpv1.ApiKey).GetName() },
	},
	{
		name: "token", plural: "tokens", apiKind: "Token",
		list: func(ctx context.Context, c metamcpv1.AdminServiceClient) (proto.Message, []proto.Message, error) {
			r, err := c.ListTokens(ctx, &metamcpv1.ListTokensRequest{})
			if err != nil {
				return nil, nil, err
			}
			return r, messages(r.GetTokens()), nil
		},
		revoke: func(ctx context.Context, c metamcpv1.AdminServiceClient, name string) (proto.Message, error) {
			return c.RevokeToken(ctx, &metamcpv1.RevokeTokenRequest{Name: name})
		},
		nameOf:   func(m proto.Message) string { return m.(*metamcpv1.Token).GetName() },
		noDelete: "tokens are revoked, not deleted: run mmctl revoke token NAME",
	},
	{
		name: "dataplane", plural: "dataplanes", aliases: []string{"dp"}, apiKind: "DataPlane",
		list: func(ctx context.Context, c metamcpv1.AdminServiceClient) (proto.Message, []proto.Message, error) {
			r, err := c.ListDataPlanes(ctx, &metamcpv1.ListDataPlanesRequest{})
			if err != nil {
				return nil, nil, err
			}
			return r, messages(r.GetDataPlanes()), nil
		},
		nameOf:   func(m proto.Message) string { return m.(*metamcpv1.DataPlane).GetNodeId() },
		noDelete: "data planes are not deleted: a data plane that stops connecting shows as not connected",
	},
}

// messages converts a slice of generated messages to []proto.Message.
func messages[M proto.Message](items []M) []proto.Message {
	out := make([]proto.Message, len(items))
	for i, m := range items {
		out[i] = m
	}
	return out
}

// lookupKind resolves any accepted spelling of a kind (case-insensitive).
func lookupKind(s string) (*kind, error) {
	l := strings.ToLower(strings.TrimSpace(s))
	for _, k := range kinds {
		for _, n := range k.names() {
			if l == n || l == strings.ToLower(k.apiKind) {
				return k, nil
			}
		}
	}
	return nil, usageErrorf("unknown kind %q: use one of %s", s, kindList(nil))
}

// kindByAPIKind finds a kind by its API name ("RateLimitPolicy").
func kindByAPIKind(apiKind string) *kind {
	for _, k := range kinds {
		if k.apiKind == apiKind {
			return k
		}
	}
	return nil
}

// kindList lists the plural names of the kinds that pass keep (all when nil).
func kindList(keep func(*kind) bool) string {
	var names []string
	for _, k := range kinds {
		if keep == nil || keep(k) {
			names = append(names, k.plural)
		}
	}
	return strings.Join(names, ", ")
}

// getOne reads one item of kind k by name, filtering the list for kinds the
// API has no Get for.
func (k *kind) getOne(ctx context.Context, c metamcpv1.AdminServiceClient, name string) (proto.Message, proto.Message, error) {
	if k.get != nil {
		m, err := k.get(ctx, c, name)
		return m, nil, err
	}
	resp, items, err := k.list(ctx, c)
	if err != nil {
		return nil, nil, err
	}
	for _, m := range items {
		if k.nameOf(m) == name {
			return m, resp, nil
		}
	}
	return nil, nil, runtimeError{fmt.Errorf("%s %q not found", k.name, name)}
}

// sortedNames returns the items' names, sorted.
func (k *kind) sortedNames(items []proto.Message) []string {
	names := make([]string, 0, len(items))
	for _, m := range items {
		names = append(names, k.nameOf(m))
	}
	sort.Strings(names)
	return names
}
