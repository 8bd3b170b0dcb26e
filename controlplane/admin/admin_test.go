package admin_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/controlplane/admin"
	"github.com/metamcp/metamcp/controlplane/store"
)

// crudCase drives the five CRUD calls of one kind.
type crudCase struct {
	kind   store.Kind
	setup  func(t *testing.T, e *env) // creates what the resource refers to
	make   func() proto.Message       // a valid resource named "one"
	change func(m proto.Message)      // a valid change of it
	create func(c context.Context, e *env, m proto.Message) (proto.Message, error)
	get    func(c context.Context, e *env, name string) (proto.Message, error)
	list   func(c context.Context, e *env) ([]proto.Message, error)
	update func(c context.Context, e *env, m proto.Message) (proto.Message, error)
	delete func(c context.Context, e *env, name string) (int64, error)
}

func toMessages[T proto.Message](in []T) []proto.Message {
	out := make([]proto.Message, len(in))
	for i, m := range in {
		out[i] = m
	}
	return out
}

func crudCases() []crudCase {
	return []crudCase{
		{
			kind: store.KindServer,
			make: func() proto.Message {
				return stdioServer("one", map[string]*metamcpv1.Value{"LEVEL": plainValue("debug")})
			},
			change: func(m proto.Message) { m.(*metamcpv1.Server).GetStdio().Args = []string{"--changed"} },
			create: func(c context.Context, e *env, m proto.Message) (proto.Message, error) {
				return e.client.CreateServer(c, &metamcpv1.CreateServerRequest{Server: m.(*metamcpv1.Server)})
			},
			get: func(c context.Context, e *env, n string) (proto.Message, error) {
				return e.client.GetServer(c, &metamcpv1.GetServerRequest{Name: n})
			},
			list: func(c context.Context, e *env) ([]proto.Message, error) {
				r, err := e.client.ListServers(c, &metamcpv1.ListServersRequest{})
				return toMessages(r.GetServers()), err
			},
			update: func(c context.Context, e *env, m proto.Message) (proto.Message, error) {
				return e.client.UpdateServer(c, &metamcpv1.UpdateServerRequest{Server: m.(*metamcpv1.Server)})
			},
			delete: func(c context.Context, e *env, n string) (int64, error) {
				r, err := e.client.DeleteServer(c, &metamcpv1.DeleteServerRequest{Name: n})
				return r.GetRevision(), err
			},
		},
		{
			kind:   store.KindNamespace,
			setup:  func(t *testing.T, e *env) { mustCreateServer(t, e, stdioServer("fs", nil)) },
			make:   func() proto.Message { return namespace("one", "fs") },
			change: func(m proto.Message) { m.(*metamcpv1.Namespace).Description = "changed" },
			create: func(c context.Context, e *env, m proto.Message) (proto.Message, error) {
				return e.client.CreateNamespace(c, &metamcpv1.CreateNamespaceRequest{Namespace: m.(*metamcpv1.Namespace)})
			},
			get: func(c context.Context, e *env, n string) (proto.Message, error) {
				return e.client.GetNamespace(c, &metamcpv1.GetNamespaceRequest{Name: n})
			},
			list: func(c context.Context, e *env) ([]proto.Message, error) {
				r, err := e.client.ListNamespaces(c, &metamcpv1.ListNamespacesRequest{})
				return toMessages(r.GetNamespaces()), err
			},
			update: func(c context.Context, e *env, m proto.Message) (proto.Message, error) {
				return e.client.UpdateNamespace(c, &metamcpv1.UpdateNamespaceRequest{Namespace: m.(*metamcpv1.Namespace)})
			},
			delete: func(c context.Context, e *env, n string) (int64, error) {
				r, err := e.client.DeleteNamespace(c, &metamcpv1.DeleteNamespaceRequest{Name: n})
				return r.GetRevision(), err
			},
		},
		{
			kind: store.KindEndpoint,
			setup: func(t *testing.T, e *env) {
				mustCreateServer(t, e, stdioServer("ep-fs", nil))
				mustCreateNamespace(t, e, namespace("ep-dev", "ep-fs"))
			},
			make:   func() proto.Message { return endpoint("one", "ep-dev") },
			change: func(m proto.Message) { m.(*metamcpv1.Endpoint).Auth = &metamcpv1.EndpointAuth{Anonymous: true} },
			create: func(c context.Context, e *env, m proto.Message) (proto.Message, error) {
				return e.client.CreateEndpoint(c, &metamcpv1.CreateEndpointRequest{Endpoint: m.(*metamcpv1.Endpoint)})
			},
			get: func(c context.Context, e *env, n string) (proto.Message, error) {
				return e.client.GetEndpoint(c, &metamcpv1.GetEndpointRequest{Name: n})
			},
			list: func(c context.Context, e *env) ([]proto.Message, error) {
				r, err := e.client.ListEndpoints(c, &metamcpv1.ListEndpointsRequest{})
				return toMessages(r.GetEndpoints()), err
			},
			update: func(c context.Context, e *env, m proto.Message) (proto.Message, error) {
				return e.client.UpdateEndpoint(c, &metamcpv1.UpdateEndpointRequest{Endpoint: m.(*metamcpv1.Endpoint)})
			},
			delete: func(c context.Context, e *env, n string) (int64, error) {
				r, err := e.client.DeleteEndpoint(c, &metamcpv1.DeleteEndpointRequest{Name: n})
				return r.GetRevision(), err
			},
		},
		{
			kind:   store.KindRateLimitPolicy,
			make:   func() proto.Message { return policy("one", 10) },
			change: func(m proto.Message) { m.(*metamcpv1.RateLimitPolicy).Period = durationpb.New(time.Hour) },
			create: func(c context.Context, e *env, m proto.Message) (proto.Message, error) {
				return e.client.CreateRateLimitPolicy(c, &metamcpv1.CreateRateLimitPolicyRequest{RateLimitPolicy: m.(*metamcpv1.RateLimitPolicy)})
			},
			get: func(c context.Context, e *env, n string) (proto.Message, error) {
				return e.client.GetRateLimitPolicy(c, &metamcpv1.GetRateLimitPolicyRequest{Name: n})
			},
			list: func(c context.Context, e *env) ([]proto.Message, error) {
				r, err := e.client.ListRateLimitPolicies(c, &metamcpv1.ListRateLimitPoliciesRequest{})
				return toMessages(r.GetRateLimitPolicies()), err
			},
			update: func(c context.Context, e *env, m proto.Message) (proto.Message, error) {
				return e.client.UpdateRateLimitPolicy(c, &metamcpv1.UpdateRateLimitPolicyRequest{RateLimitPolicy: m.(*metamcpv1.RateLimitPolicy)})
			},
			delete: func(c context.Context, e *env, n string) (int64, error) {
				r, err := e.client.DeleteRateLimitPolicy(c, &metamcpv1.DeleteRateLimitPolicyRequest{Name: n})
				return r.GetRevision(), err
			},
		},
	}
}

// withoutOutput returns a copy of m with revision and times cleared.
func withoutOutput(m proto.Message) proto.Message {
	out := proto.Clone(m)
	r := out.ProtoReflect()
	for _, n := range []string{"revision", "create_time", "update_time"} {
		if fd := r.Descriptor().Fields().ByName(protoName(n)); fd != nil {
			r.Clear(fd)
		}
	}
	return out
}

func outputRevision(m proto.Message) int64 {
	r := m.ProtoReflect()
	return r.Get(r.Descriptor().Fields().ByName("revision")).Int()
}

func TestCRUD(t *testing.T) {
	forEachStore(t, func(t *testing.T, e *env) {
		for _, tc := range crudCases() {
			t.Run(string(tc.kind), func(t *testing.T) {
				c := ctx(t)
				if tc.setup != nil {
					tc.setup(t, e)
				}
				before := revision(t, e)

				created, err := tc.create(c, e, tc.make())
				if err != nil {
					t.Fatalf("create: %v", err)
				}
				if got := outputRevision(created); got != before+1 {
					t.Errorf("created revision = %d, want %d", got, before+1)
				}
				if !proto.Equal(withoutOutput(created), tc.make()) {
					t.Errorf("created = %v, want %v", created, tc.make())
				}
				r := created.ProtoReflect()
				for _, f := range []string{"create_time", "update_time"} {
					if !r.Has(r.Descriptor().Fields().ByName(protoName(f))) {
						t.Errorf("created %s unset", f)
					}
				}

				got, err := tc.get(c, e, "one")
				if err != nil {
					t.Fatalf("get: %v", err)
				}
				if !proto.Equal(got, created) {
					t.Errorf("get = %v, want %v", got, created)
				}
				list, err := tc.list(c, e)
				if err != nil {
					t.Fatalf("list: %v", err)
				}
				if !slices.ContainsFunc(list, func(m proto.Message) bool { return proto.Equal(m, created) }) {
					t.Errorf("list %v does not hold %v", list, created)
				}

				if _, err := tc.create(c, e, tc.make()); err == nil {
					t.Fatal("second create succeeded")
				} else {
					wantCode(t, err, codes.AlreadyExists)
				}

				changed := tc.make()
				tc.change(changed)
				updated, err := tc.update(c, e, changed)
				if err != nil {
					t.Fatalf("update: %v", err)
				}
				if got := outputRevision(updated); got != before+2 {
					t.Errorf("updated revision = %d, want %d", got, before+2)
				}
				if !proto.Equal(withoutOutput(updated), changed) {
					t.Errorf("updated = %v, want %v", updated, changed)
				}
				// The same update again changes nothing and commits nothing.
				again, err := tc.update(c, e, changed)
				if err != nil {
					t.Fatalf("repeat update: %v", err)
				}
				if !proto.Equal(again, updated) || revision(t, e) != before+2 {
					t.Errorf("repeat update changed something: %v (revision %d)", again, revision(t, e))
				}

				missing := tc.make()
				missing.ProtoReflect().Set(missing.ProtoReflect().Descriptor().Fields().ByName("name"), protoString("nope"))
				_, err = tc.update(c, e, missing)
				wantCode(t, err, codes.NotFound)
				_, err = tc.get(c, e, "nope")
				wantCode(t, err, codes.NotFound)
				_, err = tc.delete(c, e, "nope")
				wantCode(t, err, codes.NotFound)
				_, err = tc.get(c, e, "Not_Valid")
				wantInvalid(t, err, "name")
				_, err = tc.delete(c, e, "")
				wantInvalid(t, err, "name")

				rev, err := tc.delete(c, e, "one")
				if err != nil {
					t.Fatalf("delete: %v", err)
				}
				if rev != before+3 {
					t.Errorf("delete revision = %d, want %d", rev, before+3)
				}
				_, err = tc.get(c, e, "one")
				wantCode(t, err, codes.NotFound)
			})
		}
	})
}

func TestInvalidInput(t *testing.T) {
	forEachStore(t, func(t *testing.T, e *env) {
		mustCreateServer(t, e, stdioServer("fs", nil))
		mustCreateNamespace(t, e, namespace("dev", "fs"))
		c := ctx(t)
		before := revision(t, e)
		for _, tc := range []struct {
			name  string
			call  func() error
			field string
		}{
			{"server missing", func() error {
				_, err := e.client.CreateServer(c, &metamcpv1.CreateServerRequest{})
				return err
			}, "server"},
			{"server empty name", func() error {
				_, err := e.client.CreateServer(c, &metamcpv1.CreateServerRequest{Server: stdioServer("", nil)})
				return err
			}, "Server: name"},
			{"server bad name", func() error {
				_, err := e.client.CreateServer(c, &metamcpv1.CreateServerRequest{Server: stdioServer("My_Server", nil)})
				return err
			}, "Server/My_Server: name"},
			{"server no command", func() error {
				s := stdioServer("x", nil)
				s.GetStdio().Command = ""
				_, err := e.client.CreateServer(c, &metamcpv1.CreateServerRequest{Server: s})
				return err
			}, "Server/x: stdio.command"},
			{"server no transport", func() error {
				_, err := e.client.CreateServer(c, &metamcpv1.CreateServerRequest{Server: &metamcpv1.Server{Name: "x"}})
				return err
			}, "Server/x: transport"},
			{"server bad url", func() error {
				s := httpServer("x", "", nil)
				s.GetStreamableHttp().Url = "ftp://example.com"
				_, err := e.client.CreateServer(c, &metamcpv1.CreateServerRequest{Server: s})
				return err
			}, "Server/x: streamableHttp.url"},
			{"secret without value", func() error {
				_, err := e.client.CreateServer(c, &metamcpv1.CreateServerRequest{Server: stdioServer("x", map[string]*metamcpv1.Value{"TOKEN": {Secret: true}})})
				return err
			}, `Server/x: stdio.env["TOKEN"]`},
			{"empty bearer token", func() error {
				s := httpServer("x", "", nil)
				s.GetStreamableHttp().BearerToken = &metamcpv1.Value{}
				_, err := e.client.CreateServer(c, &metamcpv1.CreateServerRequest{Server: s})
				return err
			}, "Server/x: streamableHttp.bearerToken"},
			{"namespace unknown server", func() error {
				_, err := e.client.CreateNamespace(c, &metamcpv1.CreateNamespaceRequest{Namespace: namespace("x", "nope")})
				return err
			}, "Namespace/x: members[0].server"},
			{"namespace update to unknown server", func() error {
				_, err := e.client.UpdateNamespace(c, &metamcpv1.UpdateNamespaceRequest{Namespace: namespace("dev", "fs", "nope")})
				return err
			}, "Namespace/dev: members[1].server"},
			{"endpoint unknown namespace", func() error {
				_, err := e.client.CreateEndpoint(c, &metamcpv1.CreateEndpointRequest{Endpoint: endpoint("x", "nope")})
				return err
			}, "Endpoint/x: namespace"},
			{"endpoint unknown policy", func() error {
				_, err := e.client.CreateEndpoint(c, &metamcpv1.CreateEndpointRequest{Endpoint: endpoint("x", "dev", "nope")})
				return err
			}, "Endpoint/x: rateLimits[0]"},
			{"policy zero rate", func() error {
				_, err := e.client.CreateRateLimitPolicy(c, &metamcpv1.CreateRateLimitPolicyRequest{RateLimitPolicy: policy("x", 0)})
				return err
			}, "RateLimitPolicy/x: rate"},
			{"policy missing", func() error {
				_, err := e.client.UpdateRateLimitPolicy(c, &metamcpv1.UpdateRateLimitPolicyRequest{})
				return err
			}, "rateLimitPolicy"},
			{"api key unknown endpoint", func() error {
				_, err := e.client.CreateApiKey(c, &metamcpv1.CreateApiKeyRequest{ApiKey: &metamcpv1.ApiKey{Name: "k", Endpoints: []string{"nope"}}})
				return err
			}, "ApiKey/k: endpoints[0]"},
			{"api key no endpoints", func() error {
				_, err := e.client.CreateApiKey(c, &metamcpv1.CreateApiKeyRequest{ApiKey: &metamcpv1.ApiKey{Name: "k"}})
				return err
			}, "ApiKey/k: endpoints"},
			{"api key past expiry", func() error {
				_, err := e.client.CreateApiKey(c, &metamcpv1.CreateApiKeyRequest{ApiKey: &metamcpv1.ApiKey{
					Name: "k", Endpoints: []string{"*"}, ExpireTime: timestamp(time.Now().Add(-time.Hour)),
				}})
				return err
			}, "ApiKey/k: expireTime"},
			{"token no scope", func() error {
				_, err := e.client.CreateToken(c, &metamcpv1.CreateTokenRequest{Token: &metamcpv1.Token{Name: "t"}})
				return err
			}, "Token/t: scope"},
			{"token past expiry", func() error {
				_, err := e.client.CreateToken(c, &metamcpv1.CreateTokenRequest{Token: &metamcpv1.Token{
					Name: "t", Scope: metamcpv1.TokenScope_TOKEN_SCOPE_SYNC, ExpireTime: timestamp(time.Now().Add(-time.Second)),
				}})
				return err
			}, "Token/t: expireTime"},
			{"token bad name", func() error {
				_, err := e.client.CreateToken(c, &metamcpv1.CreateTokenRequest{Token: &metamcpv1.Token{Name: "-t", Scope: metamcpv1.TokenScope_TOKEN_SCOPE_SYNC}})
				return err
			}, "Token/-t: name"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				wantInvalid(t, tc.call(), tc.field)
			})
		}
		if got := revision(t, e); got != before {
			t.Errorf("revision moved from %d to %d: a rejected write committed", before, got)
		}
	})
}

func TestInvalidArgumentMessageListsViolations(t *testing.T) {
	e := newEnv(t, openSQLite(t))
	s := stdioServer("x", nil)
	s.GetStdio().Command = ""
	s.Description = strings.Repeat("d", 2000)
	_, err := e.client.CreateServer(ctx(t), &metamcpv1.CreateServerRequest{Server: s})
	st := wantCode(t, err, codes.InvalidArgument)
	for _, want := range []string{"stdio.command", "description"} {
		if !strings.Contains(st.Message(), want) {
			t.Errorf("message %q does not mention %s", st.Message(), want)
		}
	}
	var n int
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			n += len(br.GetFieldViolations())
		}
	}
	if n != 2 {
		t.Errorf("BadRequest holds %d violations, want 2", n)
	}
}

func TestDeleteReferenced(t *testing.T) {
	forEachStore(t, func(t *testing.T, e *env) {
		c := ctx(t)
		mustCreateServer(t, e, stdioServer("fs", nil))
		mustCreateNamespace(t, e, namespace("dev", "fs"))
		mustCreateNamespace(t, e, namespace("prod", "fs"))
		mustCreatePolicy(t, e, policy("slow", 1))
		p := policy("fs-only", 5)
		p.Server = "fs"
		mustCreatePolicy(t, e, p)
		mustCreateEndpoint(t, e, endpoint("team", "dev", "slow"))
		if _, err := e.client.CreateApiKey(c, &metamcpv1.CreateApiKeyRequest{ApiKey: &metamcpv1.ApiKey{Name: "alice", Endpoints: []string{"team"}}}); err != nil {
			t.Fatal(err)
		}
		before := revision(t, e)

		for _, tc := range []struct {
			name  string
			call  func() error
			names []string
		}{
			{"server", func() error {
				_, err := e.client.DeleteServer(c, &metamcpv1.DeleteServerRequest{Name: "fs"})
				return err
			}, []string{`Namespace "dev"`, `Namespace "prod"`, `RateLimitPolicy "fs-only"`}},
			{"namespace", func() error {
				_, err := e.client.DeleteNamespace(c, &metamcpv1.DeleteNamespaceRequest{Name: "dev"})
				return err
			}, []string{`Endpoint "team"`}},
			{"policy", func() error {
				_, err := e.client.DeleteRateLimitPolicy(c, &metamcpv1.DeleteRateLimitPolicyRequest{Name: "slow"})
				return err
			}, []string{`Endpoint "team"`}},
			{"endpoint", func() error {
				_, err := e.client.DeleteEndpoint(c, &metamcpv1.DeleteEndpointRequest{Name: "team"})
				return err
			}, []string{`ApiKey "alice"`}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				st := wantCode(t, tc.call(), codes.FailedPrecondition)
				for _, n := range tc.names {
					if !strings.Contains(st.Message(), n) {
						t.Errorf("message %q does not name %s", st.Message(), n)
					}
				}
				var pf *errdetails.PreconditionFailure
				for _, d := range st.Details() {
					if p, ok := d.(*errdetails.PreconditionFailure); ok {
						pf = p
					}
				}
				if len(pf.GetViolations()) != len(tc.names) {
					t.Errorf("PreconditionFailure = %v, want %d violations", pf, len(tc.names))
				}
			})
		}
		if got := revision(t, e); got != before {
			t.Fatalf("revision moved from %d to %d", before, got)
		}

		// A revoked key no longer holds its endpoint.
		if _, err := e.client.RevokeApiKey(c, &metamcpv1.RevokeApiKeyRequest{Name: "alice"}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.client.DeleteEndpoint(c, &metamcpv1.DeleteEndpointRequest{Name: "team"}); err != nil {
			t.Fatalf("delete endpoint after its key was revoked: %v", err)
		}
		// Delete in dependency order works.
		for _, call := range []func() error{
			func() error {
				_, err := e.client.DeleteRateLimitPolicy(c, &metamcpv1.DeleteRateLimitPolicyRequest{Name: "slow"})
				return err
			},
			func() error {
				_, err := e.client.DeleteRateLimitPolicy(c, &metamcpv1.DeleteRateLimitPolicyRequest{Name: "fs-only"})
				return err
			},
			func() error {
				_, err := e.client.DeleteNamespace(c, &metamcpv1.DeleteNamespaceRequest{Name: "dev"})
				return err
			},
			func() error {
				_, err := e.client.DeleteNamespace(c, &metamcpv1.DeleteNamespaceRequest{Name: "prod"})
				return err
			},
			func() error {
				_, err := e.client.DeleteServer(c, &metamcpv1.DeleteServerRequest{Name: "fs"})
				return err
			},
		} {
			if err := call(); err != nil {
				t.Fatal(err)
			}
		}
	})
}

func TestWarningsInHeader(t *testing.T) {
	e := newEnv(t, openSQLite(t))
	s := httpServer("gh", "tok", map[string]*metamcpv1.Value{"Authorization": plainValue("Basic xyz")})
	var header metadata.MD
	if _, err := e.client.CreateServer(ctx(t), &metamcpv1.CreateServerRequest{Server: s}, grpc.Header(&header)); err != nil {
		t.Fatal(err)
	}
	w := header.Get(admin.WarningHeader)
	if len(w) != 1 || !strings.Contains(w[0], "bearerToken") {
		t.Errorf("warnings header = %q, want one warning about bearerToken", w)
	}

	// Apply lists warnings in its response, not in the header.
	s.Name = "gh2"
	header = nil
	r, err := e.client.Apply(ctx(t), &metamcpv1.ApplyRequest{Resources: []*metamcpv1.Resource{
		{Kind: &metamcpv1.Resource_Server{Server: s}},
	}}, grpc.Header(&header))
	if err != nil {
		t.Fatal(err)
	}
	if len(r.GetWarnings()) != 1 || !strings.HasPrefix(r.GetWarnings()[0], `Server "gh2"`) || len(header.Get(admin.WarningHeader)) != 0 {
		t.Errorf("apply warnings = %q, header %q; want the warning about gh2 in the response only", r.GetWarnings(), header.Get(admin.WarningHeader))
	}

	// A write about something else does not repeat them.
	header = nil
	if _, err := e.client.CreateRateLimitPolicy(ctx(t), &metamcpv1.CreateRateLimitPolicyRequest{RateLimitPolicy: policy("p", 1)}, grpc.Header(&header)); err != nil {
		t.Fatal(err)
	}
	if w := header.Get(admin.WarningHeader); len(w) != 0 {
		t.Errorf("unrelated write got warnings %q", w)
	}
}

func TestGetRevisionAndDataPlanes(t *testing.T) {
	forEachStore(t, func(t *testing.T, e *env) {
		c := ctx(t)
		if got := revision(t, e); got != 0 {
			t.Errorf("revision of an empty store = %d", got)
		}
		mustCreateServer(t, e, stdioServer("fs", nil))
		dp := &metamcpv1.DataPlane{NodeId: "dp-1", Hostname: "host", Version: "v1", AppliedRevision: 1, Connected: true}
		if err := e.st.UpsertDataPlane(c, dp); err != nil {
			t.Fatal(err)
		}
		r, err := e.client.ListDataPlanes(c, &metamcpv1.ListDataPlanesRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if r.GetRevision() != 1 || len(r.GetDataPlanes()) != 1 || r.GetDataPlanes()[0].GetNodeId() != "dp-1" || !r.GetDataPlanes()[0].GetConnected() {
			t.Errorf("ListDataPlanes = %v", r)
		}

		// One whose control plane died without recording the stream's end,
		// unheard since: not connected, whatever the record says.
		silent := &metamcpv1.DataPlane{NodeId: "dp-2", Connected: true,
			LastSeen: timestamppb.New(time.Now().Add(-admin.DataPlaneSilentAfter - time.Minute))}
		if err := e.st.UpsertDataPlane(c, silent); err != nil {
			t.Fatal(err)
		}
		r, err = e.client.ListDataPlanes(c, &metamcpv1.ListDataPlanesRequest{})
		if err != nil {
			t.Fatal(err)
		}
		for _, dp := range r.GetDataPlanes() {
			if want := dp.GetNodeId() == "dp-1"; dp.GetConnected() != want {
				t.Errorf("%s connected = %v, want %v", dp.GetNodeId(), dp.GetConnected(), want)
			}
		}
	})
}
