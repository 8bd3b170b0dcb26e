// Package auth verifies the credentials callers present to an endpoint. This
// part verifies OAuth 2.1 / OIDC access tokens (JWTs): it keeps the signing
// keys of each identity provider an endpoint trusts, fetched in the
// background, and checks a token's signature and claims against an
// endpoint's settings (metamcpv1.JWTAuth).
//
// JOSE itself (JWS parsing, JWK decoding, signature verification) is done by
// github.com/go-jose/go-jose/v4; this package adds what a gateway needs
// around it: issuer discovery, key sets that follow the issuer's cache
// lifetime and refetch on an unknown key id under a rate limit, a token
// cache, and errors that map onto RFC 6750 responses.
package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/pkg/identity"
	"github.com/metamcp/metamcp/pkg/snapshot"
)

// DefaultAlgorithms are the signature algorithms an endpoint accepts when its
// settings name none. All are asymmetric: HMAC and `none` are never accepted,
// whatever the settings say.
// Snapshot validation refuses any other name.
var DefaultAlgorithms = snapshot.JWTAlgorithms

// Clock skew bounds: the default when an endpoint sets none, and the most it
// may set.
const (
	DefaultClockSkew = 60 * time.Second
	MaxClockSkew     = snapshot.MaxJWTClockSkew
)

// MaxTokenSize is the longest token looked at; longer ones are refused
// before any decoding.
const MaxTokenSize = 16 << 10

// Options tune a Verifiers registry. The zero value works.
type Options struct {
	// HTTPClient fetches discovery documents and key sets;
	// http.DefaultClient when nil.
	HTTPClient *http.Client
	// Logger receives fetch failures and key changes; slog.Default() when nil.
	Logger *slog.Logger
	// MinRefresh and MaxRefresh bound how long fetched keys are used before
	// they are fetched again, whatever lifetime the issuer's Cache-Control
	// (or Expires) header gives: 1 minute and 24 hours by default.
	MinRefresh, MaxRefresh time.Duration
	// DefaultRefresh is the refresh interval when the issuer sends no
	// lifetime: 1 hour by default (bounded by MinRefresh and MaxRefresh).
	DefaultRefresh time.Duration
	// UnknownKIDInterval is the least time between two refetches of one
	// issuer's keys caused by tokens naming a key it does not have (or sent
	// before the first keys were loaded): 10 seconds by default.
	UnknownKIDInterval time.Duration
	// UnknownKIDWait is how long a request with an unknown key id waits for
	// the refetch it caused (nothing else on the request path waits for the
	// network): 1 second by default; negative means do not wait.
	UnknownKIDWait time.Duration
	// FetchTimeout bounds one HTTP request to the issuer: 10 seconds by default.
	FetchTimeout time.Duration
	// MaxBackoff bounds the wait between retries after failed fetches:
	// 5 minutes by default (retries start at 1 second and double).
	MaxBackoff time.Duration
	// CacheSize is how many verified tokens are remembered: 10,000 by default.
	CacheSize int
}

func (o Options) withDefaults() Options {
	if o.HTTPClient == nil {
		o.HTTPClient = http.DefaultClient
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.MinRefresh <= 0 {
		o.MinRefresh = time.Minute
	}
	if o.MaxRefresh <= 0 {
		o.MaxRefresh = 24 * time.Hour
	}
	if o.MaxRefresh < o.MinRefresh {
		o.MaxRefresh = o.MinRefresh
	}
	if o.DefaultRefresh <= 0 {
		o.DefaultRefresh = time.Hour
	}
	o.DefaultRefresh = min(max(o.DefaultRefresh, o.MinRefresh), o.MaxRefresh)
	if o.UnknownKIDInterval <= 0 {
		o.UnknownKIDInterval = 10 * time.Second
	}
	if o.UnknownKIDWait == 0 {
		o.UnknownKIDWait = time.Second
	}
	if o.FetchTimeout <= 0 {
		o.FetchTimeout = 10 * time.Second
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 5 * time.Minute
	}
	if o.CacheSize <= 0 {
		o.CacheSize = 10_000
	}
	return o
}

// Verifiers is the registry of the identity providers a data plane trusts:
// one key set per (issuer, JWKS URL), shared by every endpoint that names it
// and kept from one snapshot to the next, so that applying a snapshot does
// not refetch keys it already has. Each key set has a goroutine that fetches
// its keys; Update starts and stops them and Close stops them all.
//
// Verified tokens are remembered (by a hash of the token, until their `exp`)
// so that a token seen before costs a lookup, not a signature check. A token
// is answered from the cache only while the key that verified it is still in
// its issuer's key set: when the issuer removes a key (say, a compromised
// one), the tokens it signed are refused from the next fetch of the key set
// on, which is at most the refresh interval later (the issuer's cache
// lifetime, bounded by Options.MaxRefresh). Until then they stay valid, as
// they would with any cache of keys.
type Verifiers struct {
	opts  Options
	cache *tokenCache
	// verifications counts signature checks (cache misses that got that far).
	verifications atomic.Int64

	mu     sync.Mutex
	sets   map[keySetID]*keySet
	closed bool

	// byConfig finds the Verifier of a snapshot's JWTAuth message by its
	// address, for Verify; replaced whole (copy on write) under mu. A nil
	// value is a config Update refused.
	byConfig atomic.Pointer[map[*metamcpv1.JWTAuth]*Verifier]
}

type keySetID struct{ issuer, jwksURL string }

// NewVerifiers returns an empty registry; Update gives it its endpoints.
func NewVerifiers(opts Options) *Verifiers {
	opts = opts.withDefaults()
	return &Verifiers{
		opts:  opts,
		cache: newTokenCache(opts.CacheSize),
		sets:  make(map[keySetID]*keySet),
	}
}

// Update is called on every snapshot apply with the JWT settings of each
// endpoint that accepts tokens, by endpoint name. It returns a Verifier for
// each endpoint whose settings are valid, starts fetching the keys of
// issuers it did not know and stops fetching those no endpoint names any
// more. Key sets and remembered tokens of issuers still in use are kept.
// The error names the endpoints whose settings are invalid (they get no
// Verifier); the others are in force all the same.
func (v *Verifiers) Update(cfgs map[string]*metamcpv1.JWTAuth) (map[string]*Verifier, error) {
	out := make(map[string]*Verifier, len(cfgs))
	var errs []error
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.closed {
		return nil, errors.New("jwt verifiers: closed")
	}
	used := make(map[keySetID]bool, len(cfgs))
	names := make([]string, 0, len(cfgs))
	for name := range cfgs {
		names = append(names, name)
	}
	slices.Sort(names)
	byConfig := make(map[*metamcpv1.JWTAuth]*Verifier, len(cfgs))
	for _, name := range names {
		c, err := v.register(cfgs[name])
		byConfig[cfgs[name]] = c
		if err != nil {
			errs = append(errs, fmt.Errorf("endpoint %s: auth.jwt: %w", name, err))
			continue
		}
		used[keySetID{issuer: c.issuer, jwksURL: c.jwksURL}] = true
		out[name] = c
	}
	v.byConfig.Store(&byConfig)
	var stop []*keySet
	for id, ks := range v.sets {
		if !used[id] {
			delete(v.sets, id)
			stop = append(stop, ks)
		}
	}
	for _, ks := range stop {
		ks.stop()
		v.cache.dropKeySet(ks)
	}
	return out, errors.Join(errs...)
}

// register compiles cfg and attaches it to the key set of its issuer,
// starting that key set if it is new. v.mu is held.
func (v *Verifiers) register(cfg *metamcpv1.JWTAuth) (*Verifier, error) {
	c, err := compile(cfg)
	if err != nil {
		return nil, err
	}
	id := keySetID{issuer: c.issuer, jwksURL: c.jwksURL}
	ks := v.sets[id]
	if ks == nil {
		ks = newKeySet(id.issuer, id.jwksURL, v.opts)
		v.sets[id] = ks
		ks.start()
	}
	c.reg, c.keys = v, ks
	return c, nil
}

// Verify checks token for the endpoint whose settings are cfg (the
// snapshot's own message: it is found by address), accepting as `aud` any of
// audiences or of cfg's audiences, at the current time. It is the shape the
// gateway uses; see Verifier.Verify for the rest.
//
// Settings the last Update did not include (a snapshot served before Update
// saw it) are compiled and their issuer's keys fetched on first use; the
// next Update stops what it no longer names.
func (v *Verifiers) Verify(ctx context.Context, token string, cfg *metamcpv1.JWTAuth, audiences []string) (*identity.Principal, error) {
	c, err := v.verifier(cfg)
	if err != nil {
		return nil, err
	}
	return c.Verify(ctx, token, audiences, time.Now())
}

// verifier returns the Verifier of cfg (see Verify), nil with an *Error
// when the settings are invalid.
func (v *Verifiers) verifier(cfg *metamcpv1.JWTAuth) (*Verifier, error) {
	if m := v.byConfig.Load(); m != nil {
		if c, ok := (*m)[cfg]; ok {
			if c == nil {
				return nil, errBadConfig
			}
			return c, nil
		}
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	old := v.byConfig.Load()
	if old != nil {
		if c, ok := (*old)[cfg]; ok { // registered while we waited for mu
			if c == nil {
				return nil, errBadConfig
			}
			return c, nil
		}
	}
	if v.closed {
		return nil, invalid("configuration", "the data plane is shutting down")
	}
	c, err := v.register(cfg)
	next := make(map[*metamcpv1.JWTAuth]*Verifier)
	if old != nil {
		maps.Copy(next, *old)
	}
	next[cfg] = c
	v.byConfig.Store(&next)
	if err != nil {
		v.opts.Logger.Warn("jwt: an endpoint's JWT settings are not valid; its tokens are refused", "error", err)
		return nil, errBadConfig
	}
	return c, nil
}

var errBadConfig = &Error{
	Status: http.StatusUnauthorized, Code: CodeInvalidToken, Reason: "configuration",
	Description: "this endpoint's JWT settings are not valid: no token can be accepted until they are fixed",
}

// Close stops every fetcher and waits for them. Verifiers keep answering
// from the keys they had, but nothing is fetched any more.
func (v *Verifiers) Close() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.closed = true
	for id, ks := range v.sets {
		ks.stop()
		delete(v.sets, id)
	}
}

// IssuerState is what /readyz and operators see of one key set.
type IssuerState struct {
	Issuer string
	// JWKSURL is the configured key set URL, or the one discovery found
	// (empty until discovery succeeds).
	JWKSURL string
	// Loaded: keys were fetched at least once and are in force, even when
	// later refreshes fail.
	Loaded bool
	Keys   int
	// LastRefresh is when keys were last fetched successfully (zero: never).
	LastRefresh time.Time
	// LastError is the error of the last fetch when it failed; empty after
	// a success.
	LastError string
	// Fetches counts HTTP fetches of the key set (not of discovery).
	Fetches int
}

// State reports each key set in use, ordered by issuer.
func (v *Verifiers) State() []IssuerState {
	v.mu.Lock()
	sets := make([]*keySet, 0, len(v.sets))
	for _, ks := range v.sets {
		sets = append(sets, ks)
	}
	v.mu.Unlock()
	out := make([]IssuerState, 0, len(sets))
	for _, ks := range sets {
		out = append(out, ks.state())
	}
	slices.SortFunc(out, func(a, b IssuerState) int {
		if c := strings.Compare(a.Issuer, b.Issuer); c != 0 {
			return c
		}
		return strings.Compare(a.JWKSURL, b.JWKSURL)
	})
	return out
}

// Ready reports whether every key set in use has keys loaded. An issuer that
// became unreachable after its keys were loaded leaves them in force and
// does not make the registry unready (State shows its LastError).
func (v *Verifiers) Ready() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, ks := range v.sets {
		if ks.keys.Load() == nil {
			return false
		}
	}
	return true
}

// The OAuth error codes of RFC 6750 an Error carries.
const (
	CodeInvalidToken      = "invalid_token"
	CodeInsufficientScope = "insufficient_scope"
)

// Error is why a token was refused. The gateway answers with Status and a
// `WWW-Authenticate: Bearer error="<Code>", error_description="<Description>"`
// header (plus `scope="<Scopes>"` for insufficient_scope). Description is
// written for the person holding the token and never contains token material.
type Error struct {
	// Status is 401 (invalid_token) or 403 (insufficient_scope).
	Status int
	// Code is CodeInvalidToken or CodeInsufficientScope.
	Code string
	// Reason is a short stable word for logs, metrics and the audit trail:
	// malformed, algorithm, keys_not_loaded, unknown_key, signature, issuer,
	// audience, expired, not_yet_valid, issued_in_future, principal,
	// configuration, scope.
	Reason string
	// Description says what is wrong, for error_description and the body.
	Description string
	// Scopes are the scopes the endpoint requires (insufficient_scope only).
	Scopes []string
}

func (e *Error) Error() string { return e.Description }

func invalid(reason, format string, args ...any) *Error {
	return &Error{Status: http.StatusUnauthorized, Code: CodeInvalidToken, Reason: reason, Description: fmt.Sprintf(format, args...)}
}

// errKeysNotLoaded is returned while an issuer's keys have never been fetched.
var errKeysNotLoaded = &Error{
	Status: http.StatusUnauthorized, Code: CodeInvalidToken, Reason: "keys_not_loaded",
	Description: "the identity provider's keys are not loaded yet: try again in a moment",
}

// Verifier checks tokens for one endpoint. It is immutable and safe for
// concurrent use; a new snapshot gives new Verifiers that share the key sets
// and the token cache of the old ones.
type Verifier struct {
	reg  *Verifiers
	keys *keySet

	issuer         string
	jwksURL        string
	audiences      []string
	principalClaim string
	groupsClaim    string
	scopes         []string
	algs           []jose.SignatureAlgorithm
	algMask        uint16
	skew           time.Duration
}

// Issuer is the issuer the endpoint trusts.
func (c *Verifier) Issuer() string { return c.issuer }

// RequiredScopes are the scopes a token needs for the endpoint.
func (c *Verifier) RequiredScopes() []string { return slices.Clone(c.scopes) }

// Ready reports whether the keys of the endpoint's issuer are loaded.
func (c *Verifier) Ready() bool { return c.keys.keys.Load() != nil }

// algorithms are the names a JWTAuth may list; their index is their bit in
// algMask.
var algorithms = []jose.SignatureAlgorithm{
	jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512,
	jose.ES256, jose.ES384, jose.ES512, jose.EdDSA,
}

func algBit(a jose.SignatureAlgorithm) uint16 {
	for i, x := range algorithms {
		if x == a {
			return 1 << i
		}
	}
	return 0
}

// CheckConfig reports what is wrong with an endpoint's JWT settings, for
// snapshot validation; nil when a Verifier can be built from them.
func CheckConfig(cfg *metamcpv1.JWTAuth) error {
	_, err := compile(cfg)
	return err
}

func compile(cfg *metamcpv1.JWTAuth) (*Verifier, error) {
	if cfg == nil {
		return nil, errors.New("no JWT settings")
	}
	c := &Verifier{
		issuer:         cfg.GetIssuer(),
		jwksURL:        cfg.GetJwksUrl(),
		audiences:      slices.Clone(cfg.GetAudiences()),
		principalClaim: cfg.GetPrincipalClaim(),
		groupsClaim:    cfg.GetGroupsClaim(),
		scopes:         slices.Clone(cfg.GetRequiredScopes()),
		skew:           DefaultClockSkew,
	}
	if c.issuer == "" {
		return nil, errors.New("issuer is required")
	}
	if c.principalClaim == "" {
		c.principalClaim = "sub"
	}
	names := cfg.GetAlgorithms()
	if len(names) == 0 {
		names = DefaultAlgorithms
	}
	for _, n := range names {
		a := jose.SignatureAlgorithm(n)
		bit := algBit(a)
		if bit == 0 {
			return nil, fmt.Errorf("algorithm %q is not accepted: use some of %s (HMAC and none are never accepted)", n, strings.Join(DefaultAlgorithms, ", "))
		}
		if c.algMask&bit == 0 {
			c.algMask |= bit
			c.algs = append(c.algs, a)
		}
	}
	if d := cfg.GetClockSkew(); d != nil {
		if err := d.CheckValid(); err != nil {
			return nil, fmt.Errorf("clockSkew: %w", err)
		}
		s := d.AsDuration()
		if s < 0 || s > MaxClockSkew {
			return nil, fmt.Errorf("clockSkew %s is out of range: between 0 and %s", s, MaxClockSkew)
		}
		c.skew = s
	}
	for _, s := range c.scopes {
		if s == "" || strings.ContainsAny(s, " \t") {
			return nil, fmt.Errorf("required scope %q must be one non-empty scope without spaces", s)
		}
	}
	return c, nil
}

// Verify checks a bearer token for the endpoint at time now and returns the
// principal it establishes. The token's `aud` must contain one of the
// endpoint's configured audiences or of resources (the gateway passes the
// endpoint's canonical resource URLs, RFC 8707).
//
// A token seen before is answered from the cache: its signature is not
// checked again, but its times, audience and scopes are, against this
// endpoint's settings. A token naming a key the issuer does not publish
// causes a rate-limited refetch of the issuer's keys, which this call waits
// for briefly (Options.UnknownKIDWait, or until ctx ends); nothing else
// waits for the network.
//
// The error is an *Error. The returned principal is shared: do not modify it.
// A nil Verifier (an endpoint whose settings Update refused) refuses every
// token.
func (c *Verifier) Verify(ctx context.Context, token string, resources []string, now time.Time) (*identity.Principal, error) {
	if c == nil {
		return nil, errBadConfig
	}
	if len(token) > MaxTokenSize {
		return nil, invalid("malformed", "the token is too large (over %d bytes)", MaxTokenSize)
	}
	key := hashToken(token)
	if e := c.reg.cache.get(key); e != nil && e.keys == c.keys && c.keys.keys.Load().has(e.key) {
		return c.accept(e, resources, now)
	}
	e, err := c.verifyNew(ctx, token, resources, now)
	if err != nil {
		return nil, err
	}
	c.reg.cache.put(key, e)
	return c.accept(e, resources, now)
}

// accept applies the checks that depend on the endpoint and the time to a
// token whose signature is known to be good, and builds its principal.
func (c *Verifier) accept(e *verifiedToken, resources []string, now time.Time) (*identity.Principal, error) {
	if c.algMask&e.algBit == 0 {
		return nil, invalid("algorithm", "the token's signature algorithm %s is not accepted by this endpoint", e.alg)
	}
	if e.issuer != c.issuer {
		return nil, invalid("issuer", "the token was issued by another identity provider than the one this endpoint trusts (%s)", c.issuer)
	}
	if err := c.checkTimes(e.exp, e.nbf, e.iat, now); err != nil {
		return nil, err
	}
	if err := c.checkAudience(e.aud, resources); err != nil {
		return nil, err
	}
	if missing := e.missingScopes(c.scopes); len(missing) > 0 {
		return nil, &Error{
			Status: http.StatusForbidden, Code: CodeInsufficientScope, Reason: "scope",
			Description: fmt.Sprintf("the token lacks the scope %s that this endpoint requires", strings.Join(missing, " ")),
			Scopes:      slices.Clone(c.scopes),
		}
	}
	return e.principal(c.principalClaim, c.groupsClaim)
}

// checkTimes checks exp, nbf and iat (unix nanoseconds; 0 when absent,
// except exp which is required) with the endpoint's clock skew.
func (c *Verifier) checkTimes(exp, nbf, iat int64, now time.Time) error {
	n := now.UnixNano()
	skew := int64(c.skew)
	if n >= exp+skew {
		return invalid("expired", "the token has expired: get a new one from the identity provider")
	}
	if nbf != 0 && n+skew < nbf {
		return invalid("not_yet_valid", "the token is not valid yet (nbf is in the future): check the clocks")
	}
	if iat != 0 && n+skew < iat {
		return invalid("issued_in_future", "the token was issued in the future (iat): check the clocks")
	}
	return nil
}

func (c *Verifier) checkAudience(aud, resources []string) error {
	if len(c.audiences) == 0 && len(resources) == 0 {
		return invalid("configuration", "this endpoint accepts no token audience: its JWT settings need an audience")
	}
	for _, a := range aud {
		if slices.Contains(c.audiences, a) || slices.Contains(resources, a) {
			return nil
		}
	}
	want := c.audiences
	if len(resources) > 0 {
		want = resources[:1]
	}
	return invalid("audience", "the token is not meant for this endpoint: its aud must contain %s", strings.Join(want, " or "))
}
