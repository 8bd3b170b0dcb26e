package auth_test

import (
	"bytes"
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/controlplane/auth"
	"github.com/metamcp/metamcp/controlplane/store"
	"github.com/metamcp/metamcp/controlplane/store/sqlite"
)

const (
	adminMethod  = "/metamcp.v1.AdminService/ListServers"
	syncMethod   = "/metamcp.v1.SyncService/Sync"
	healthMethod = "/grpc.health.v1.Health/Check"
	otherMethod  = "/other.v1.Other/Call"

	bootstrap = "bootstrap-secret-token"
)

// putToken writes a Token record the way the admin service does.
func putToken(t *testing.T, st store.Store, tok *metamcpv1.Token) {
	t.Helper()
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(tok)
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = st.Update(context.Background(), func(ctx context.Context, tx store.Tx) error {
		return tx.Put(ctx, store.Record{Kind: store.KindToken, Name: tok.GetName(), Data: data})
	})
	if err != nil {
		t.Fatal(err)
	}
}

func token(name string, scope metamcpv1.TokenScope, secret string) *metamcpv1.Token {
	return &metamcpv1.Token{Name: name, Scope: scope, TokenHash: auth.HashToken(secret)}
}

func withToken(header string) context.Context {
	ctx := context.Background()
	if header != "" {
		ctx = metadata.NewIncomingContext(ctx, metadata.Pairs("authorization", header))
	}
	return ctx
}

func newAuthenticator(t *testing.T) (*auth.Authenticator, store.Store, *bytes.Buffer) {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "auth.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	admin, sync := metamcpv1.TokenScope_TOKEN_SCOPE_ADMIN, metamcpv1.TokenScope_TOKEN_SCOPE_SYNC
	putToken(t, st, token("ops", admin, "mmt_ops"))
	putToken(t, st, token("dp", sync, "mmt_dp"))
	revoked := token("old", admin, "mmt_old")
	revoked.RevokeTime = timestamppb.New(time.Now().Add(-time.Minute))
	putToken(t, st, revoked)
	expired := token("expired", sync, "mmt_expired")
	expired.ExpireTime = timestamppb.New(time.Now().Add(-time.Minute))
	putToken(t, st, expired)
	later := token("later", admin, "mmt_later")
	later.ExpireTime = timestamppb.New(time.Now().Add(time.Hour))
	putToken(t, st, later)

	var logs bytes.Buffer
	a := auth.New(st, auth.HashToken(bootstrap), slog.New(slog.NewTextHandler(&logs, nil)))
	return a, st, &logs
}

func TestAuthenticate(t *testing.T) {
	a, _, logs := newAuthenticator(t)
	for _, tc := range []struct {
		name, method, header string
		code                 codes.Code
		principal            string
		msg                  string
	}{
		{"no token", adminMethod, "", codes.Unauthenticated, "", "pass --token or set METAMCP_TOKEN"},
		{"not bearer", adminMethod, "Basic " + bootstrap, codes.Unauthenticated, "", "missing or invalid token"},
		{"empty bearer", adminMethod, "Bearer ", codes.Unauthenticated, "", "missing or invalid token"},
		{"wrong token", adminMethod, "Bearer mmt_wrong", codes.Unauthenticated, "", "missing or invalid token"},
		{"api key", adminMethod, "Bearer mm_abc", codes.Unauthenticated, "", "API key"},
		{"bootstrap admin", adminMethod, "Bearer " + bootstrap, codes.OK, auth.BootstrapName, ""},
		{"lowercase scheme", adminMethod, "bearer " + bootstrap, codes.OK, auth.BootstrapName, ""},
		{"store admin token", adminMethod, "Bearer mmt_ops", codes.OK, "ops", ""},
		{"admin token not expired yet", adminMethod, "Bearer mmt_later", codes.OK, "later", ""},
		{"sync token on admin", adminMethod, "Bearer mmt_dp", codes.PermissionDenied, "", `token "dp" has scope sync; the admin API needs an admin token`},
		{"admin token on sync", syncMethod, "Bearer mmt_ops", codes.PermissionDenied, "", "the sync API needs a sync token"},
		{"bootstrap on sync", syncMethod, "Bearer " + bootstrap, codes.PermissionDenied, "", "the sync API needs a sync token"},
		{"sync token", syncMethod, "Bearer mmt_dp", codes.OK, "dp", ""},
		{"revoked token", adminMethod, "Bearer mmt_old", codes.Unauthenticated, "", "revoked"},
		{"expired token", syncMethod, "Bearer mmt_expired", codes.Unauthenticated, "", "expired"},
		{"health without token", healthMethod, "", codes.OK, "", ""},
		{"unknown service", otherMethod, "Bearer " + bootstrap, codes.PermissionDenied, "", "open to no token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := a.Authenticate(withToken(tc.header), tc.method)
			if got := status.Code(err); got != tc.code {
				t.Fatalf("code = %v (%v), want %v", got, err, tc.code)
			}
			if err != nil && !strings.Contains(status.Convert(err).Message(), tc.msg) {
				t.Errorf("message %q does not contain %q", status.Convert(err).Message(), tc.msg)
			}
			if err == nil && p.Name != tc.principal {
				t.Errorf("principal = %q, want %q", p.Name, tc.principal)
			}
		})
	}
	for _, secret := range []string{bootstrap, "mmt_ops", "mmt_dp", "mmt_wrong"} {
		if strings.Contains(logs.String(), secret) {
			t.Errorf("a token reached the log: %s", logs.String())
		}
	}
}

func TestNoBootstrapToken(t *testing.T) {
	_, st, _ := newAuthenticator(t)
	a := auth.New(st, nil, nil)
	if _, err := a.Authenticate(withToken("Bearer "+bootstrap), adminMethod); status.Code(err) != codes.Unauthenticated {
		t.Errorf("without a bootstrap hash: %v, want Unauthenticated", err)
	}
	if _, err := a.Authenticate(withToken("Bearer mmt_ops"), adminMethod); err != nil {
		t.Errorf("store token without a bootstrap hash: %v", err)
	}
}

func TestReauthorize(t *testing.T) {
	a, st, _ := newAuthenticator(t)
	ctx := withToken("Bearer mmt_dp")
	p, err := a.Authenticate(ctx, syncMethod)
	if err != nil {
		t.Fatal(err)
	}
	ctx = auth.NewContext(ctx, p)
	if err := a.Reauthorize(ctx); err != nil {
		t.Fatalf("Reauthorize of a live token: %v", err)
	}
	revoked := token("dp", metamcpv1.TokenScope_TOKEN_SCOPE_SYNC, "mmt_dp")
	revoked.RevokeTime = timestamppb.Now()
	putToken(t, st, revoked)
	if err := a.Reauthorize(ctx); status.Code(err) != codes.Unauthenticated {
		t.Errorf("Reauthorize after revocation: %v, want Unauthenticated", err)
	}
	if err := a.Reauthorize(context.Background()); status.Code(err) != codes.Unauthenticated {
		t.Errorf("Reauthorize without a principal: %v, want Unauthenticated", err)
	}
}

func TestStoreUnavailable(t *testing.T) {
	a, st, _ := newAuthenticator(t)
	st.Close()
	_, err := a.Authenticate(withToken("Bearer mmt_ops"), adminMethod)
	if status.Code(err) != codes.Unavailable {
		t.Errorf("closed store: %v, want Unavailable", err)
	}
	// The bootstrap token needs no store.
	if _, err := a.Authenticate(withToken("Bearer "+bootstrap), adminMethod); err != nil {
		t.Errorf("bootstrap token with a closed store: %v", err)
	}
}

func TestRequiredScope(t *testing.T) {
	for _, tc := range []struct {
		method string
		scope  metamcpv1.TokenScope
		public bool
	}{
		{adminMethod, metamcpv1.TokenScope_TOKEN_SCOPE_ADMIN, false},
		{syncMethod, metamcpv1.TokenScope_TOKEN_SCOPE_SYNC, false},
		{healthMethod, metamcpv1.TokenScope_TOKEN_SCOPE_UNSPECIFIED, true},
		{otherMethod, metamcpv1.TokenScope_TOKEN_SCOPE_UNSPECIFIED, false},
		{"/metamcp.v1.AdminServiceX/Get", metamcpv1.TokenScope_TOKEN_SCOPE_UNSPECIFIED, false},
	} {
		scope, public := auth.RequiredScope(tc.method)
		if scope != tc.scope || public != tc.public {
			t.Errorf("RequiredScope(%s) = %v, %v; want %v, %v", tc.method, scope, public, tc.scope, tc.public)
		}
	}
}
