package admin_test

import (
	"fmt"
	"slices"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
)

func res(m proto.Message) *metamcpv1.Resource {
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
	panic(fmt.Sprintf("%T", m))
}

// bundle lists resources in an order where references come before what they
// refer to, to show Apply does not care.
func bundle() []*metamcpv1.Resource {
	return []*metamcpv1.Resource{
		res(endpoint("team", "dev", "slow")),
		res(namespace("dev", "fs", "github")),
		res(policy("slow", 2)),
		res(stdioServer("github", map[string]*metamcpv1.Value{"GITHUB_TOKEN": secretValue("ghp_1")})),
		res(stdioServer("fs", nil)),
	}
}

type change struct {
	kind, name string
	action     metamcpv1.ChangeAction
	fields     string
}

func changes(r *metamcpv1.ApplyResponse) []change {
	var out []change
	for _, c := range r.GetChanges() {
		out = append(out, change{c.GetKind(), c.GetName(), c.GetAction(), fmt.Sprint(c.GetFields())})
	}
	return out
}

func allActions(t *testing.T, r *metamcpv1.ApplyResponse, want metamcpv1.ChangeAction) {
	t.Helper()
	if len(r.GetChanges()) == 0 {
		t.Fatal("no changes reported")
	}
	for _, c := range r.GetChanges() {
		if c.GetAction() != want {
			t.Errorf("%s %q: action %v, want %v", c.GetKind(), c.GetName(), c.GetAction(), want)
		}
	}
}

func TestApply(t *testing.T) {
	forEachStore(t, func(t *testing.T, e *env) {
		c := ctx(t)

		// Dry run commits nothing.
		dry, err := e.client.Apply(c, &metamcpv1.ApplyRequest{Resources: bundle(), DryRun: true})
		if err != nil {
			t.Fatalf("dry run: %v", err)
		}
		if !dry.GetDryRun() || dry.GetRevision() != 0 {
			t.Errorf("dry run response = %v", dry)
		}
		allActions(t, dry, metamcpv1.ChangeAction_CHANGE_ACTION_CREATED)
		if got := revision(t, e); got != 0 {
			t.Fatalf("dry run moved the revision to %d", got)
		}
		if l, _ := e.client.ListServers(c, &metamcpv1.ListServersRequest{}); len(l.GetServers()) != 0 {
			t.Fatal("dry run created servers")
		}

		// One revision for the whole bundle.
		first, err := e.client.Apply(c, &metamcpv1.ApplyRequest{Resources: bundle()})
		if err != nil {
			t.Fatalf("apply: %v", err)
		}
		if first.GetRevision() != 1 || revision(t, e) != 1 {
			t.Errorf("apply revision = %d (store %d), want 1", first.GetRevision(), revision(t, e))
		}
		allActions(t, first, metamcpv1.ChangeAction_CHANGE_ACTION_CREATED)
		if len(first.GetChanges()) != 5 {
			t.Errorf("changes = %v", first.GetChanges())
		}

		// Idempotent: the same bundle again changes nothing.
		second, err := e.client.Apply(c, &metamcpv1.ApplyRequest{Resources: bundle()})
		if err != nil {
			t.Fatalf("second apply: %v", err)
		}
		allActions(t, second, metamcpv1.ChangeAction_CHANGE_ACTION_UNCHANGED)
		if second.GetRevision() != 1 || revision(t, e) != 1 {
			t.Errorf("second apply revision = %d (store %d), want 1", second.GetRevision(), revision(t, e))
		}

		// Export -> Apply is a no-op (secrets come back as placeholders).
		exp, err := e.client.Export(c, &metamcpv1.ExportRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if exp.GetRevision() != 1 || len(exp.GetResources()) != 5 {
			t.Fatalf("export = %v", exp)
		}
		var order []string
		for _, r := range exp.GetResources() {
			switch k := r.GetKind().(type) {
			case *metamcpv1.Resource_Server:
				order = append(order, "Server/"+k.Server.GetName())
				if k.Server.GetRevision() != 0 || k.Server.GetCreateTime() != nil {
					t.Errorf("export kept output-only fields: %v", k.Server)
				}
			case *metamcpv1.Resource_Namespace:
				order = append(order, "Namespace/"+k.Namespace.GetName())
			case *metamcpv1.Resource_Endpoint:
				order = append(order, "Endpoint/"+k.Endpoint.GetName())
			case *metamcpv1.Resource_RateLimit:
				order = append(order, "RateLimitPolicy/"+k.RateLimit.GetName())
			}
		}
		wantOrder := []string{"Server/fs", "Server/github", "Namespace/dev", "Endpoint/team", "RateLimitPolicy/slow"}
		if !slices.Equal(order, wantOrder) {
			t.Errorf("export order = %v, want %v", order, wantOrder)
		}
		back, err := e.client.Apply(c, &metamcpv1.ApplyRequest{Resources: exp.GetResources()})
		if err != nil {
			t.Fatalf("apply export: %v", err)
		}
		allActions(t, back, metamcpv1.ChangeAction_CHANGE_ACTION_UNCHANGED)
		if revision(t, e) != 1 {
			t.Errorf("export -> apply moved the revision to %d", revision(t, e))
		}

		// Changes report the top-level fields; a secret sent again with the
		// stored value is unchanged, a new one is a change.
		b := bundle()
		b[1].GetNamespace().Description = "changed"
		b[1].GetNamespace().Separator = "."
		b[4].GetServer().SessionMode = metamcpv1.SessionMode_SESSION_MODE_PER_CLIENT
		b = append(b, res(policy("fast", 100)))
		upd, err := e.client.Apply(c, &metamcpv1.ApplyRequest{Resources: b})
		if err != nil {
			t.Fatal(err)
		}
		want := []change{
			{"Endpoint", "team", metamcpv1.ChangeAction_CHANGE_ACTION_UNCHANGED, "[]"},
			{"Namespace", "dev", metamcpv1.ChangeAction_CHANGE_ACTION_UPDATED, "[description separator]"},
			{"RateLimitPolicy", "slow", metamcpv1.ChangeAction_CHANGE_ACTION_UNCHANGED, "[]"},
			{"Server", "github", metamcpv1.ChangeAction_CHANGE_ACTION_UNCHANGED, "[]"},
			{"Server", "fs", metamcpv1.ChangeAction_CHANGE_ACTION_UPDATED, "[sessionMode]"},
			{"RateLimitPolicy", "fast", metamcpv1.ChangeAction_CHANGE_ACTION_CREATED, "[]"},
		}
		if got := changes(upd); !slices.Equal(got, want) {
			t.Errorf("changes =\n%v\nwant\n%v", got, want)
		}
		if upd.GetRevision() != 2 || revision(t, e) != 2 {
			t.Errorf("revision after update apply = %d", revision(t, e))
		}
		b = bundle()
		b[3].GetServer().GetStdio().GetEnv()["GITHUB_TOKEN"] = secretValue("ghp_2")
		rot, err := e.client.Apply(c, &metamcpv1.ApplyRequest{Resources: b, DryRun: true})
		if err != nil {
			t.Fatal(err)
		}
		if got := changes(rot)[3]; got.action != metamcpv1.ChangeAction_CHANGE_ACTION_UPDATED || got.fields != "[stdio]" {
			t.Errorf("rotated secret change = %v", got)
		}
		if secretOf(t, e, "github", "GITHUB_TOKEN") != "ghp_1" {
			t.Error("dry run changed a secret")
		}
	})
}

func TestApplyRejects(t *testing.T) {
	forEachStore(t, func(t *testing.T, e *env) {
		c := ctx(t)
		for _, tc := range []struct {
			name  string
			res   []*metamcpv1.Resource
			field string
		}{
			{"duplicate", []*metamcpv1.Resource{res(stdioServer("fs", nil)), res(stdioServer("fs", nil))}, "Server/fs"},
			{"empty resource", []*metamcpv1.Resource{{}}, "resources[0]"},
			{"bad name", []*metamcpv1.Resource{res(policy("Bad", 1))}, "RateLimitPolicy/Bad: name"},
			{"dangling reference", []*metamcpv1.Resource{res(namespace("dev", "fs"))}, "Namespace/dev: members[0].server"},
			{"secret placeholder for a new server", []*metamcpv1.Resource{
				res(stdioServer("gh", map[string]*metamcpv1.Value{"T": {Secret: true, Set: true}})),
			}, `Server/gh: stdio.env["T"]`},
		} {
			t.Run(tc.name, func(t *testing.T) {
				for _, dry := range []bool{true, false} {
					_, err := e.client.Apply(c, &metamcpv1.ApplyRequest{Resources: tc.res, DryRun: dry})
					wantInvalid(t, err, tc.field)
				}
			})
		}
		// All or nothing: one bad resource fails the whole bundle.
		b := append(bundle(), res(policy("bad", 0)))
		_, err := e.client.Apply(c, &metamcpv1.ApplyRequest{Resources: b})
		wantInvalid(t, err, "RateLimitPolicy/bad: rate")
		if got := revision(t, e); got != 0 {
			t.Errorf("a failed apply moved the revision to %d", got)
		}
		if l, _ := e.client.ListServers(c, &metamcpv1.ListServersRequest{}); len(l.GetServers()) != 0 {
			t.Error("a failed apply created servers")
		}
	})
}

// TestConcurrentWrites has 16 clients make 20 writes each through the gRPC
// API, half creating servers and half replacing one shared namespace's
// description, and checks that each committed write got its own revision,
// with no gap, and that no write was lost.
func TestConcurrentWrites(t *testing.T) {
	e := newEnv(t, openPostgres(t))
	c := ctx(t)
	mustCreateServer(t, e, stdioServer("base", nil))
	mustCreateNamespace(t, e, namespace("shared", "base"))
	start := revision(t, e)

	const workers, writes = 16, 20
	type result struct {
		rev         int64
		description string // set for namespace updates
	}
	results := make([][]result, workers)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range writes {
				if i%2 == 0 {
					s, err := e.client.CreateServer(c, &metamcpv1.CreateServerRequest{Server: stdioServer(fmt.Sprintf("s-%d-%d", w, i), nil)})
					if err != nil {
						errs[w] = err
						return
					}
					results[w] = append(results[w], result{rev: s.GetRevision()})
					continue
				}
				ns := namespace("shared", "base")
				ns.Description = fmt.Sprintf("writer %d write %d", w, i)
				got, err := e.client.UpdateNamespace(c, &metamcpv1.UpdateNamespaceRequest{Namespace: ns})
				if err != nil {
					errs[w] = err
					return
				}
				results[w] = append(results[w], result{rev: got.GetRevision(), description: ns.Description})
			}
		}()
	}
	wg.Wait()
	for w, err := range errs {
		if err != nil {
			t.Fatalf("worker %d: %v", w, err)
		}
	}

	var revs []int64
	var last result
	for w := range workers {
		prev := int64(0)
		for _, r := range results[w] {
			if r.rev <= prev {
				t.Errorf("worker %d: revision %d after %d: not increasing", w, r.rev, prev)
			}
			prev = r.rev
			revs = append(revs, r.rev)
			if r.description != "" && r.rev > last.rev {
				last = r
			}
		}
	}
	slices.Sort(revs)
	if len(revs) != workers*writes {
		t.Fatalf("%d writes reported, want %d", len(revs), workers*writes)
	}
	for i, r := range revs {
		if want := start + int64(i) + 1; r != want {
			t.Fatalf("revisions are not distinct and gap-free: sorted[%d] = %d, want %d", i, r, want)
		}
	}
	if got := revision(t, e); got != start+workers*writes {
		t.Errorf("final revision = %d, want %d", got, start+workers*writes)
	}
	servers, err := e.client.ListServers(c, &metamcpv1.ListServersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(servers.GetServers()); n != 1+workers*writes/2 {
		t.Errorf("%d servers, want %d: lost creates", n, 1+workers*writes/2)
	}
	ns, err := e.client.GetNamespace(c, &metamcpv1.GetNamespaceRequest{Name: "shared"})
	if err != nil {
		t.Fatal(err)
	}
	if ns.GetDescription() != last.description || ns.GetRevision() != last.rev {
		t.Errorf("namespace = %q at revision %d, want the last committed update %q at %d",
			ns.GetDescription(), ns.GetRevision(), last.description, last.rev)
	}
	_, err = e.client.GetNamespace(c, &metamcpv1.GetNamespaceRequest{Name: "nope"})
	wantCode(t, err, codes.NotFound)
}

// TestApplyDefaultsAreNoChange: a resource written with its defaults and one
// that leaves them out are one config; neither bumps the revision.
func TestApplyDefaultsAreNoChange(t *testing.T) {
	forEachStore(t, func(t *testing.T, e *env) {
		c := ctx(t)
		srv := stdioServer("fs", nil)
		srv.SessionMode = metamcpv1.SessionMode_SESSION_MODE_SHARED
		ns := namespace("dev", "fs")
		ns.Separator = "__"
		p := policy("slow", 2)
		p.Key = metamcpv1.RateLimitKey_RATE_LIMIT_KEY_PRINCIPAL
		mustCreateServer(t, e, srv)
		mustCreateNamespace(t, e, ns)
		mustCreatePolicy(t, e, p)
		rev := revision(t, e)
		r, err := e.client.Apply(c, &metamcpv1.ApplyRequest{Resources: []*metamcpv1.Resource{
			res(stdioServer("fs", nil)), res(namespace("dev", "fs")), res(policy("slow", 2)),
		}})
		if err != nil {
			t.Fatal(err)
		}
		allActions(t, r, metamcpv1.ChangeAction_CHANGE_ACTION_UNCHANGED)
		if got := revision(t, e); got != rev {
			t.Errorf("revision %d -> %d", rev, got)
		}
		got, err := e.client.GetServer(c, &metamcpv1.GetServerRequest{Name: "fs"})
		if err != nil || got.GetSessionMode() != 0 {
			t.Errorf("stored session mode = %v, %v; want unset", got.GetSessionMode(), err)
		}
	})
}

// TestApplyPruneAndDelete: prune deletes only what the same source manages
// and the bundle leaves out, refuses while a kept resource refers to it;
// delete removes a bundle all or nothing.
func TestApplyPruneAndDelete(t *testing.T) {
	forEachStore(t, func(t *testing.T, e *env) {
		c := ctx(t)
		mustCreateServer(t, e, stdioServer("by-hand", nil))
		apply := func(req *metamcpv1.ApplyRequest) (*metamcpv1.ApplyResponse, error) {
			return e.client.Apply(c, req)
		}
		if _, err := apply(&metamcpv1.ApplyRequest{ManagedBy: "git", Resources: []*metamcpv1.Resource{
			res(stdioServer("a", nil)), res(stdioServer("b", nil)), res(stdioServer("c", nil)), res(namespace("ns", "a", "b")),
		}}); err != nil {
			t.Fatal(err)
		}
		if s, _ := e.client.GetServer(c, &metamcpv1.GetServerRequest{Name: "a"}); s.GetManagedBy() != "git" {
			t.Errorf("managedBy = %q", s.GetManagedBy())
		}
		// b is dropped but ns still uses it: refused, nothing deleted.
		rev := revision(t, e)
		_, err := apply(&metamcpv1.ApplyRequest{ManagedBy: "git", Prune: true, Resources: []*metamcpv1.Resource{
			res(stdioServer("a", nil)), res(namespace("ns", "a", "b")),
		}})
		wantInvalid(t, err, "Server/b")
		if got := revision(t, e); got != rev {
			t.Fatalf("a refused prune committed")
		}
		// ns drops b: b and c go, by-hand (no managedBy) stays.
		r, err := apply(&metamcpv1.ApplyRequest{ManagedBy: "git", Prune: true, DryRun: true, Resources: []*metamcpv1.Resource{
			res(stdioServer("a", nil)), res(namespace("ns", "a")),
		}})
		if err != nil {
			t.Fatal(err)
		}
		want := []change{
			{"Server", "a", metamcpv1.ChangeAction_CHANGE_ACTION_UNCHANGED, "[]"},
			{"Namespace", "ns", metamcpv1.ChangeAction_CHANGE_ACTION_UPDATED, "[members]"},
			{"Server", "b", metamcpv1.ChangeAction_CHANGE_ACTION_DELETED, "[]"},
			{"Server", "c", metamcpv1.ChangeAction_CHANGE_ACTION_DELETED, "[]"},
		}
		if got := changes(r); !slices.Equal(got, want) {
			t.Errorf("prune changes = %v\nwant %v", got, want)
		}
		if _, err := e.client.GetServer(c, &metamcpv1.GetServerRequest{Name: "b"}); err != nil {
			t.Errorf("a dry run pruned: %v", err)
		}
		if _, err := apply(&metamcpv1.ApplyRequest{ManagedBy: "git", Prune: true, Resources: []*metamcpv1.Resource{
			res(stdioServer("a", nil)), res(namespace("ns", "a")),
		}}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.client.GetServer(c, &metamcpv1.GetServerRequest{Name: "by-hand"}); err != nil {
			t.Errorf("prune removed a server made by hand: %v", err)
		}
		_, err = e.client.GetServer(c, &metamcpv1.GetServerRequest{Name: "c"})
		wantCode(t, err, codes.NotFound)

		// Prune needs a source; delete is all or nothing.
		_, err = apply(&metamcpv1.ApplyRequest{Prune: true, Resources: []*metamcpv1.Resource{res(stdioServer("a", nil))}})
		wantInvalid(t, err, "managedBy")
		_, err = apply(&metamcpv1.ApplyRequest{Delete: true, Resources: []*metamcpv1.Resource{res(stdioServer("a", nil))}})
		wantInvalid(t, err, "Server/a")
		r, err = apply(&metamcpv1.ApplyRequest{Delete: true, Resources: []*metamcpv1.Resource{res(stdioServer("a", nil)), res(namespace("ns"))}})
		if err != nil || len(r.GetChanges()) != 2 {
			t.Fatalf("delete = %v, %v", r, err)
		}

		// A reference to the client's environment never reaches the store.
		unresolved := stdioServer("env", map[string]*metamcpv1.Value{"TOKEN": {Secret: true, FromEnv: "TOKEN"}})
		_, err = apply(&metamcpv1.ApplyRequest{Resources: []*metamcpv1.Resource{res(unresolved)}})
		wantInvalid(t, err, `Server/env: stdio.env["TOKEN"]`)
	})
}
