// Package auth authenticates callers of the control plane's gRPC API with
// bearer tokens: the bootstrap admin token (METAMCP_ADMIN_TOKEN, kept only as
// its hash) and the Token records in the store. The admin API needs a token of
// scope admin, the sync API one of scope sync; neither opens the other.
package auth

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/controlplane/store"
)

// BootstrapName is the principal of calls made with the bootstrap admin token.
const BootstrapName = "bootstrap-admin"

// Method prefixes of the services this package guards.
var (
	adminPrefix  = "/" + metamcpv1.AdminService_ServiceDesc.ServiceName + "/"
	syncPrefix   = "/" + metamcpv1.SyncService_ServiceDesc.ServiceName + "/"
	healthPrefix = "/grpc.health.v1.Health/"
)

// MsgMissingToken is the message of every call refused for a missing or
// unknown token. It does not say which, so it reveals nothing to a guesser.
const MsgMissingToken = "missing or invalid token: pass --token or set METAMCP_TOKEN"

// HashToken returns the SHA-256 of a token or key: the only form in which
// tokens are stored or kept in memory.
func HashToken(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:]
}

// Principal is the authenticated caller of one call.
type Principal struct {
	// Name is the token's name, or BootstrapName.
	Name  string
	Scope metamcpv1.TokenScope

	hash []byte // of the presented token, for Reauthorize
}

type principalKey struct{}

// NewContext returns ctx carrying p.
func NewContext(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// FromContext returns the principal of the call ctx belongs to.
func FromContext(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	return p, ok
}

// RequiredScope returns the token scope a method needs. public is true for
// methods anyone may call (gRPC health checks); for methods of no known
// service scope is TOKEN_SCOPE_UNSPECIFIED and public false: nobody may call
// them.
func RequiredScope(fullMethod string) (scope metamcpv1.TokenScope, public bool) {
	switch {
	case strings.HasPrefix(fullMethod, adminPrefix):
		return metamcpv1.TokenScope_TOKEN_SCOPE_ADMIN, false
	case strings.HasPrefix(fullMethod, syncPrefix):
		return metamcpv1.TokenScope_TOKEN_SCOPE_SYNC, false
	case strings.HasPrefix(fullMethod, healthPrefix):
		return metamcpv1.TokenScope_TOKEN_SCOPE_UNSPECIFIED, true
	}
	return metamcpv1.TokenScope_TOKEN_SCOPE_UNSPECIFIED, false
}

// Authenticator checks the bearer token of every call.
type Authenticator struct {
	st        store.Store
	adminHash []byte
	syncHash  []byte // the bootstrap sync token's (SetSyncTokenHash)
	log       *slog.Logger
	now       func() time.Time

	// cache holds the token records read at one revision, for ReauthorizeAt:
	// after a config change every sync stream re-checks its token, and one
	// read serves them all.
	cacheMu sync.Mutex
	cache   *tokenCache
}

type tokenCache struct {
	revision int64
	tokens   []*metamcpv1.Token
}

// New returns an Authenticator accepting the token whose SHA-256 is
// adminTokenHash as an admin token (none when empty) and the live Token
// records of st. Store tokens are read on every call: admin calls are rare,
// sync streams authenticate once, and a revocation takes effect at once.
func New(st store.Store, adminTokenHash []byte, logger *slog.Logger) *Authenticator {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Authenticator{st: st, adminHash: bytesClone(adminTokenHash), log: logger, now: time.Now}
}

// SetSyncTokenHash makes the token whose SHA-256 is hash a sync token
// (BootstrapSyncName), beside those in the store, so that data planes can
// connect to a control plane that has just been deployed. Call it before
// serving.
func (a *Authenticator) SetSyncTokenHash(hash []byte) { a.syncHash = bytesClone(hash) }

// BootstrapSyncName names the bootstrap sync token's principal.
const BootstrapSyncName = "bootstrap-sync"

// bootstrap returns the principal of a bootstrap token with hash.
func (a *Authenticator) bootstrap(hash []byte) (Principal, bool) {
	if len(a.adminHash) > 0 && subtle.ConstantTimeCompare(hash, a.adminHash) == 1 {
		return Principal{Name: BootstrapName, Scope: metamcpv1.TokenScope_TOKEN_SCOPE_ADMIN, hash: hash}, true
	}
	if len(a.syncHash) > 0 && subtle.ConstantTimeCompare(hash, a.syncHash) == 1 {
		return Principal{Name: BootstrapSyncName, Scope: metamcpv1.TokenScope_TOKEN_SCOPE_SYNC, hash: hash}, true
	}
	return Principal{}, false
}

func bytesClone(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return append([]byte(nil), b...)
}

// UnaryInterceptor authenticates unary calls and puts the Principal into the
// handler's context.
func (a *Authenticator) UnaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		ctx, err := a.authenticate(ctx, info.FullMethod)
		if err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// StreamInterceptor authenticates streams and puts the Principal into the
// stream's context.
func (a *Authenticator) StreamInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx, err := a.authenticate(ss.Context(), info.FullMethod)
		if err != nil {
			return err
		}
		return handler(srv, &principalStream{ServerStream: ss, ctx: ctx})
	}
}

type principalStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *principalStream) Context() context.Context { return s.ctx }

func (a *Authenticator) authenticate(ctx context.Context, method string) (context.Context, error) {
	p, err := a.Authenticate(ctx, method)
	if err != nil {
		attrs := []any{"method", method, "code", status.Code(err).String(), "reason", status.Convert(err).Message()}
		if pr, ok := peer.FromContext(ctx); ok && pr.Addr != nil {
			attrs = append(attrs, "peer", pr.Addr.String())
		}
		a.log.WarnContext(ctx, "call refused", attrs...)
		return ctx, err
	}
	return NewContext(ctx, p), nil
}

// Authenticate checks the call's `authorization: Bearer <token>` metadata
// against the scope method needs. Its errors are gRPC statuses
// (Unauthenticated, PermissionDenied, Unavailable) with messages for the
// caller; they never contain the token.
func (a *Authenticator) Authenticate(ctx context.Context, method string) (Principal, error) {
	want, public := RequiredScope(method)
	if public {
		return Principal{}, nil
	}
	if want == metamcpv1.TokenScope_TOKEN_SCOPE_UNSPECIFIED {
		return Principal{}, status.Errorf(codes.PermissionDenied, "method %s is open to no token", method)
	}
	token, err := bearerToken(ctx)
	if err != nil {
		return Principal{}, err
	}
	p, err := a.lookup(ctx, HashToken(token))
	if err != nil {
		return Principal{}, err
	}
	if p.Scope != want {
		return Principal{}, scopeError(p, want)
	}
	return p, nil
}

// Reauthorize checks again that the token of the call ctx belongs to (a
// context made by the interceptors) is still valid: a long-lived sync stream
// calls it after config changes so that revoking its token ends it.
func (a *Authenticator) Reauthorize(ctx context.Context) error {
	return a.ReauthorizeAt(ctx, 0)
}

// ReauthorizeAt is Reauthorize against the tokens as of at least revision rev:
// calls for the same revision share one read of the store.
func (a *Authenticator) ReauthorizeAt(ctx context.Context, rev int64) error {
	p, ok := FromContext(ctx)
	if !ok || p.hash == nil {
		return status.Error(codes.Unauthenticated, MsgMissingToken)
	}
	var (
		got Principal
		err error
	)
	if rev > 0 {
		got, err = a.lookupAt(ctx, p.hash, rev)
	} else {
		got, err = a.lookup(ctx, p.hash)
	}
	if err != nil {
		return err
	}
	if got.Scope != p.Scope || got.Name != p.Name {
		return status.Error(codes.Unauthenticated, MsgMissingToken)
	}
	return nil
}

// lookupAt is lookup with the token records cached per revision.
func (a *Authenticator) lookupAt(ctx context.Context, hash []byte, rev int64) (Principal, error) {
	if p, ok := a.bootstrap(hash); ok {
		return p, nil
	}
	a.cacheMu.Lock()
	defer a.cacheMu.Unlock()
	if a.cache == nil || a.cache.revision < rev {
		var c tokenCache
		err := a.st.View(ctx, func(ctx context.Context, tx store.ReadTx) error {
			tokens, err := readTokens(ctx, tx)
			c = tokenCache{revision: tx.Revision(), tokens: tokens}
			return err
		})
		if err != nil {
			return Principal{}, a.storeError(ctx, err)
		}
		a.cache = &c
	}
	return a.match(hash, a.cache.tokens)
}

func readTokens(ctx context.Context, tx store.ReadTx) ([]*metamcpv1.Token, error) {
	recs, err := tx.List(ctx, store.KindToken)
	if err != nil {
		return nil, err
	}
	out := make([]*metamcpv1.Token, 0, len(recs))
	for _, r := range recs {
		t := new(metamcpv1.Token)
		if err := proto.Unmarshal(r.Data, t); err != nil {
			return nil, fmt.Errorf("decode token %q: %w", r.Name, err)
		}
		out = append(out, t)
	}
	return out, nil
}

func (a *Authenticator) storeError(ctx context.Context, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return status.FromContextError(err).Err()
	}
	a.log.ErrorContext(ctx, "cannot read tokens", "err", err)
	return status.Error(codes.Unavailable, "cannot check the token: the control plane's store is unavailable; retry")
}

func scopeError(p Principal, want metamcpv1.TokenScope) error {
	if want == metamcpv1.TokenScope_TOKEN_SCOPE_ADMIN {
		return status.Errorf(codes.PermissionDenied,
			"token %q has scope %s; the admin API needs an admin token", p.Name, ScopeName(p.Scope))
	}
	return status.Errorf(codes.PermissionDenied,
		"token %q has scope %s; the sync API needs a sync token (mmctl create token NAME --scope sync)", p.Name, ScopeName(p.Scope))
}

// ScopeName returns the short lowercase name of a scope ("admin", "sync").
func ScopeName(s metamcpv1.TokenScope) string {
	switch s {
	case metamcpv1.TokenScope_TOKEN_SCOPE_ADMIN:
		return "admin"
	case metamcpv1.TokenScope_TOKEN_SCOPE_SYNC:
		return "sync"
	}
	return "unspecified"
}

func bearerToken(ctx context.Context) (string, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("authorization")
	if len(vals) != 1 {
		return "", status.Error(codes.Unauthenticated, MsgMissingToken)
	}
	scheme, token, ok := strings.Cut(strings.TrimSpace(vals[0]), " ")
	token = strings.TrimSpace(token)
	if !ok || !strings.EqualFold(scheme, "bearer") || token == "" {
		return "", status.Error(codes.Unauthenticated, MsgMissingToken)
	}
	if strings.HasPrefix(token, "mm_") {
		return "", status.Error(codes.Unauthenticated,
			"missing or invalid token: that is an API key for MCP endpoints; the control plane needs a token (mmt_...): pass --token or set METAMCP_TOKEN")
	}
	return token, nil
}

// lookup finds the principal whose token hashes to hash. Every candidate is
// compared in constant time.
func (a *Authenticator) lookup(ctx context.Context, hash []byte) (Principal, error) {
	if p, ok := a.bootstrap(hash); ok {
		return p, nil
	}
	var tokens []*metamcpv1.Token
	err := a.st.View(ctx, func(ctx context.Context, tx store.ReadTx) error {
		var err error
		tokens, err = readTokens(ctx, tx)
		return err
	})
	if err != nil {
		return Principal{}, a.storeError(ctx, err)
	}
	return a.match(hash, tokens)
}

// match finds the live token whose hash is hash. Every candidate is compared
// in constant time.
func (a *Authenticator) match(hash []byte, tokens []*metamcpv1.Token) (Principal, error) {
	var found *metamcpv1.Token
	for _, t := range tokens {
		if subtle.ConstantTimeCompare(hash, t.GetTokenHash()) == 1 {
			found = t
		}
	}
	if found == nil {
		return Principal{}, status.Error(codes.Unauthenticated, MsgMissingToken)
	}
	if found.GetRevokeTime() != nil {
		return Principal{}, status.Errorf(codes.Unauthenticated, "token %q was revoked: use another token", found.GetName())
	}
	if exp := found.GetExpireTime(); exp != nil && !a.now().Before(exp.AsTime()) {
		return Principal{}, status.Errorf(codes.Unauthenticated, "token %q expired at %s: use another token",
			found.GetName(), exp.AsTime().UTC().Format(time.RFC3339))
	}
	return Principal{Name: found.GetName(), Scope: found.GetScope(), hash: hash}, nil
}
