package auth

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"google.golang.org/protobuf/types/known/durationpb"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/internal/testharness"
	"github.com/metamcp/metamcp/pkg/identity"
	"github.com/metamcp/metamcp/test/fixtures/oidcissuer"
)

const (
	testAudience = "api://metamcp"
	testResource = "https://gw.example/metamcp/dev/mcp"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// testOptions keep waits short; tests that need other values change them.
func testOptions() Options {
	return Options{Logger: quiet, UnknownKIDWait: 2 * time.Second, FetchTimeout: 2 * time.Second}
}

func newVerifiers(t *testing.T, opts Options) *Verifiers {
	t.Helper()
	v := NewVerifiers(opts)
	t.Cleanup(v.Close)
	return v
}

// endpoint builds the Verifier of one endpoint named "ep".
func endpoint(t *testing.T, v *Verifiers, cfg *metamcpv1.JWTAuth) *Verifier {
	t.Helper()
	m, err := v.Update(map[string]*metamcpv1.JWTAuth{"ep": cfg})
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
	return m["ep"]
}

// waitReady polls until the endpoint's keys are loaded.
func waitReady(t *testing.T, c *Verifier) {
	t.Helper()
	waitFor(t, "keys loaded", c.Ready)
}

// waitFor waits (testharness.Eventually, 15 s) until cond holds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testharness.Eventually(t, 15*time.Second, func() error {
		if !cond() {
			return errors.New("timed out waiting for " + what)
		}
		return nil
	})
}

func asError(t *testing.T, err error) *Error {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not an *auth.Error", err, err)
	}
	return e
}

func TestVerify(t *testing.T) {
	iss := oidcissuer.Start(t, oidcissuer.Options{})
	v := newVerifiers(t, testOptions())
	c := endpoint(t, v, &metamcpv1.JWTAuth{
		Issuer:         iss.URL(),
		Audiences:      []string{testAudience},
		JwksUrl:        iss.JWKSURL(),
		RequiredScopes: []string{"mcp:tools"},
		GroupsClaim:    "groups",
	})
	waitReady(t, c)
	emailEP := endpoint2(t, v, iss, func(j *metamcpv1.JWTAuth) { j.PrincipalClaim = "email" })
	esOnly := endpoint2(t, v, iss, func(j *metamcpv1.JWTAuth) { j.Algorithms = []string{"ES256"} })

	now := time.Now()
	claims := func(mod func(map[string]any)) map[string]any {
		m := iss.Claims("alice", testAudience, time.Hour)
		m["scope"] = "openid mcp:tools"
		if mod != nil {
			mod(m)
		}
		return m
	}
	valid := iss.Mint(claims(nil))
	unpublished, err := oidcissuer.NewKey("rsa-1", jose.RS256) // same kid as the real key
	if err != nil {
		t.Fatal(err)
	}
	ed, err := oidcissuer.NewKey("ed-1", jose.EdDSA)
	if err != nil {
		t.Fatal(err)
	}
	iss.Publish(ed)

	type check func(t *testing.T, p *identity.Principal)
	cases := []struct {
		name      string
		ep        *Verifier
		token     string
		resources []string
		status    int    // 0: accepted
		reason    string // Error.Reason when refused
		check     check
	}{
		{name: "valid", token: valid, check: func(t *testing.T, p *identity.Principal) {
			if p.Name != "alice" || p.Kind != identity.KindJWT || p.Subject != "alice" || p.Issuer != iss.URL() {
				t.Errorf("principal = %+v", p)
			}
			if p.Claims["scope"] != "openid mcp:tools" {
				t.Errorf("claims = %v", p.Claims)
			}
		}},
		{name: "ES256 with the EC key", token: iss.Mint(claims(nil), oidcissuer.WithKey(iss.ECKey()))},
		{name: "EdDSA", token: iss.Mint(claims(nil), oidcissuer.WithKey(ed))},
		{name: "no kid: every key that fits is tried", token: iss.Mint(claims(nil), oidcissuer.WithKID(""))},
		{name: "aud is the resource URL", token: iss.Mint(claims(func(m map[string]any) { m["aud"] = testResource })), resources: []string{testResource}},
		{name: "aud list containing the resource", token: iss.Mint(claims(func(m map[string]any) { m["aud"] = []string{"other", testResource} })), resources: []string{testResource}},
		{name: "expired within the clock skew", token: iss.Mint(claims(func(m map[string]any) { m["exp"] = now.Add(-30 * time.Second).Unix() }))},
		{name: "expired", token: iss.Mint(claims(func(m map[string]any) { m["exp"] = now.Add(-2 * time.Minute).Unix() })), status: 401, reason: "expired"},
		{name: "no exp", token: iss.Mint(claims(func(m map[string]any) { delete(m, "exp") })), status: 401, reason: "expired"},
		{name: "not yet valid", token: iss.Mint(claims(func(m map[string]any) { m["nbf"] = now.Add(10 * time.Minute).Unix() })), status: 401, reason: "not_yet_valid"},
		{name: "nbf within the clock skew", token: iss.Mint(claims(func(m map[string]any) { m["nbf"] = now.Add(30 * time.Second).Unix() }))},
		{name: "issued in the future", token: iss.Mint(claims(func(m map[string]any) { m["iat"] = now.Add(10 * time.Minute).Unix() })), status: 401, reason: "issued_in_future"},
		{name: "wrong issuer", token: iss.Mint(claims(func(m map[string]any) { m["iss"] = "https://evil.example" })), status: 401, reason: "issuer"},
		{name: "wrong audience", token: iss.Mint(claims(func(m map[string]any) { m["aud"] = "https://other.example/mcp" })), resources: []string{testResource}, status: 401, reason: "audience"},
		{name: "no audience", token: iss.Mint(claims(func(m map[string]any) { delete(m, "aud") })), status: 401, reason: "audience"},
		{name: "alg none", token: oidcissuer.MintNone(claims(nil)), status: 401, reason: "algorithm"},
		{name: "HS256 signed with the public key", token: iss.MintHS256WithPublicKey(claims(nil)), status: 401, reason: "algorithm"},
		{name: "tampered payload", token: tamper(t, valid, claims(func(m map[string]any) { m["sub"] = "root" })), status: 401, reason: "signature"},
		{name: "signed by a key the issuer does not publish, same kid", token: iss.Mint(claims(nil), oidcissuer.WithKey(unpublished)), status: 401, reason: "signature"},
		{name: "RS256 naming the EC key's kid", token: iss.Mint(claims(nil), oidcissuer.WithKID("ec-1")), status: 401, reason: "algorithm"},
		{name: "algorithm not in the endpoint's list", ep: esOnly, token: valid, status: 401, reason: "algorithm"},
		{name: "ES256 on the ES256-only endpoint", ep: esOnly, token: iss.Mint(claims(nil), oidcissuer.WithKey(iss.ECKey()))},
		{name: "garbage", token: "not a token", status: 401, reason: "malformed"},
		{name: "too large", token: strings.Repeat("a", MaxTokenSize+1), status: 401, reason: "malformed"},
		{name: "missing scope", token: iss.Mint(claims(func(m map[string]any) { m["scope"] = "openid" })), status: 403, reason: "scope"},
		{name: "scp list", token: iss.Mint(claims(func(m map[string]any) { delete(m, "scope"); m["scp"] = []string{"mcp:tools", "x"} }))},
		{name: "scp string", token: iss.Mint(claims(func(m map[string]any) { delete(m, "scope"); m["scp"] = "x mcp:tools" }))},
		{name: "groups list", token: iss.Mint(claims(func(m map[string]any) { m["groups"] = []any{"eng", 7, "ops"} })), check: func(t *testing.T, p *identity.Principal) {
			if !slices.Equal(p.Groups, []string{"eng", "ops"}) {
				t.Errorf("groups = %q", p.Groups)
			}
		}},
		{name: "groups string", token: iss.Mint(claims(func(m map[string]any) { m["groups"] = "eng ops" })), check: func(t *testing.T, p *identity.Principal) {
			if !p.InGroup("ops") || len(p.Groups) != 2 {
				t.Errorf("groups = %q", p.Groups)
			}
		}},
		{name: "principal claim email", ep: emailEP, token: iss.Mint(claims(func(m map[string]any) { m["email"] = "alice@example.com" })), check: func(t *testing.T, p *identity.Principal) {
			if p.Name != "alice@example.com" || p.Subject != "alice" || p.Groups != nil {
				t.Errorf("principal = %+v", p)
			}
		}},
		{name: "principal claim missing", ep: emailEP, token: valid, status: 401, reason: "principal"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ep := tc.ep
			if ep == nil {
				ep = c
			}
			// Twice: the second answer comes from the cache and must agree.
			for round := range 2 {
				p, err := ep.Verify(context.Background(), tc.token, tc.resources, time.Now())
				if tc.status == 0 {
					if err != nil {
						t.Fatalf("round %d: refused: %v", round, err)
					}
					if tc.check != nil {
						tc.check(t, p)
					}
					continue
				}
				if err == nil {
					t.Fatalf("round %d: accepted %+v, want %d %s", round, p, tc.status, tc.reason)
				}
				e := asError(t, err)
				if e.Status != tc.status || e.Reason != tc.reason {
					t.Fatalf("round %d: got %d %s (%v), want %d %s", round, e.Status, e.Reason, e, tc.status, tc.reason)
				}
				wantCode := CodeInvalidToken
				if tc.status == 403 {
					wantCode = CodeInsufficientScope
					if !slices.Equal(e.Scopes, []string{"mcp:tools"}) || !strings.Contains(e.Description, "mcp:tools") {
						t.Errorf("scope error = %+v", e)
					}
				}
				if e.Code != wantCode {
					t.Errorf("code = %s, want %s", e.Code, wantCode)
				}
				// No token material in what the caller and the logs see.
				if parts := strings.Split(tc.token, "."); len(parts) == 3 && (strings.Contains(e.Description, parts[1]) || strings.Contains(e.Description, parts[2]) && parts[2] != "") {
					t.Errorf("description repeats the token: %q", e.Description)
				}
			}
		})
	}
}

// endpoint2 adds an endpoint "ep2" for the same issuer, keeping "ep".
func endpoint2(t *testing.T, v *Verifiers, iss *oidcissuer.Issuer, mod func(*metamcpv1.JWTAuth)) *Verifier {
	t.Helper()
	base := func() *metamcpv1.JWTAuth {
		return &metamcpv1.JWTAuth{Issuer: iss.URL(), Audiences: []string{testAudience}, JwksUrl: iss.JWKSURL(), RequiredScopes: []string{"mcp:tools"}, GroupsClaim: "groups"}
	}
	other := base()
	mod(other)
	m, err := v.Update(map[string]*metamcpv1.JWTAuth{"ep": base(), "ep2": other})
	if err != nil {
		t.Fatal(err)
	}
	return m["ep2"]
}

func tamper(t *testing.T, token string, claims map[string]any) string {
	t.Helper()
	s, err := oidcissuer.Tamper(token, claims)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestUnknownKIDRefetchesOnceAndRotationNeedsNoRestart(t *testing.T) {
	iss := oidcissuer.Start(t, oidcissuer.Options{})
	opts := testOptions()
	opts.UnknownKIDInterval = time.Hour // one refetch in this test, no more
	v := newVerifiers(t, opts)
	c := endpoint(t, v, &metamcpv1.JWTAuth{Issuer: iss.URL(), Audiences: []string{testAudience}, JwksUrl: iss.JWKSURL()})
	waitReady(t, c)
	if n := iss.JWKSFetches(); n != 1 {
		t.Fatalf("fetches after start = %d, want 1", n)
	}
	claims := iss.Claims("alice", testAudience, time.Hour)
	old := iss.Mint(claims)
	if _, err := c.Verify(context.Background(), old, nil, time.Now()); err != nil {
		t.Fatal(err)
	}

	iss.Rotate()
	fresh := iss.Mint(claims)
	p, err := c.Verify(context.Background(), fresh, nil, time.Now())
	if err != nil {
		t.Fatalf("token of the rotated key: %v", err)
	}
	if p.Name != "alice" {
		t.Fatalf("principal = %+v", p)
	}
	if n := iss.JWKSFetches(); n != 2 {
		t.Fatalf("fetches after rotation = %d, want 2", n)
	}
	// The token of the removed key was verified before, but its key is gone
	// from the key set now: the cache no longer answers for it.
	if _, err := c.Verify(context.Background(), old, nil, time.Now()); asError(t, err).Reason != "unknown_key" {
		t.Errorf("cached token of the removed key: %v", err)
	}
	for i := range 5 {
		tok := iss.Mint(iss.Claims(fmt.Sprint("u", i), testAudience, time.Hour), oidcissuer.WithKID(fmt.Sprint("unknown-", i)))
		_, err := c.Verify(context.Background(), tok, nil, time.Now())
		if e := asError(t, err); e.Reason != "unknown_key" || e.Status != 401 {
			t.Fatalf("unknown kid: %+v", e)
		}
	}
	if n := iss.JWKSFetches(); n != 2 {
		t.Fatalf("fetches after unknown kids inside the rate limit = %d, want still 2", n)
	}
}

func TestUnknownKIDCausesOneRefetchPerInterval(t *testing.T) {
	iss := oidcissuer.Start(t, oidcissuer.Options{})
	v := newVerifiers(t, testOptions())
	c := endpoint(t, v, &metamcpv1.JWTAuth{Issuer: iss.URL(), Audiences: []string{testAudience}, JwksUrl: iss.JWKSURL()})
	waitReady(t, c)
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		tok := iss.Mint(iss.Claims("x", testAudience, time.Hour), oidcissuer.WithKID(fmt.Sprint("nope-", i)))
		go func() {
			defer wg.Done()
			_, err := c.Verify(context.Background(), tok, nil, time.Now())
			if e := asError(t, err); e.Reason != "unknown_key" {
				t.Errorf("unknown kid: %+v", e)
			}
		}()
	}
	wg.Wait()
	if n := iss.JWKSFetches(); n != 2 {
		t.Fatalf("JWKS fetches = %d, want 2 (the first and one refetch)", n)
	}
}

func TestIssuerDownKeepsCachedKeys(t *testing.T) {
	iss := oidcissuer.Start(t, oidcissuer.Options{})
	opts := testOptions()
	opts.UnknownKIDInterval = time.Millisecond
	opts.UnknownKIDWait = 3 * time.Second
	v := newVerifiers(t, opts)
	c := endpoint(t, v, &metamcpv1.JWTAuth{Issuer: iss.URL(), Audiences: []string{testAudience}, JwksUrl: iss.JWKSURL()})
	waitReady(t, c)

	iss.Stop()
	// A token never seen, so its signature is checked with the cached keys.
	tok := iss.Mint(iss.Claims("alice", testAudience, time.Hour))
	if _, err := c.Verify(context.Background(), tok, nil, time.Now()); err != nil {
		t.Fatalf("with the issuer down: %v", err)
	}
	// An unknown kid makes a refetch, which fails: the keys stay.
	unknown := iss.Mint(iss.Claims("alice", testAudience, time.Hour), oidcissuer.WithKID("new"))
	if _, err := c.Verify(context.Background(), unknown, nil, time.Now()); asError(t, err).Reason != "unknown_key" {
		t.Fatalf("unknown kid with the issuer down: %v", err)
	}
	st := v.State()
	if len(st) != 1 || !st[0].Loaded || st[0].LastError == "" || st[0].LastRefresh.IsZero() || !v.Ready() {
		t.Fatalf("state with the issuer down = %+v (ready %v)", st, v.Ready())
	}
	if strings.Contains(st[0].LastError, tok) {
		t.Fatal("the error holds the token")
	}
	if _, err := c.Verify(context.Background(), iss.Mint(iss.Claims("carol", testAudience, time.Hour)), nil, time.Now()); err != nil {
		t.Fatalf("after a failed refetch: %v", err)
	}

	// Back up: the next refresh succeeds and clears the error.
	if err := iss.Start(); err != nil {
		t.Fatal(err)
	}
	iss.Rotate()
	rotated := iss.Mint(iss.Claims("dave", testAudience, time.Hour))
	waitFor(t, "the rotated key after the issuer is back", func() bool {
		_, err := c.Verify(context.Background(), rotated, nil, time.Now())
		return err == nil
	})
	if st := v.State(); st[0].LastError != "" {
		t.Fatalf("error after recovery: %q", st[0].LastError)
	}
}

func TestKeysNotLoadedYet(t *testing.T) {
	iss := oidcissuer.Start(t, oidcissuer.Options{})
	iss.Stop()
	opts := testOptions()
	opts.UnknownKIDWait = 100 * time.Millisecond
	v := newVerifiers(t, opts)
	c := endpoint(t, v, &metamcpv1.JWTAuth{Issuer: iss.URL(), Audiences: []string{testAudience}, JwksUrl: iss.JWKSURL()})
	tok := iss.Mint(iss.Claims("alice", testAudience, time.Hour))
	_, err := c.Verify(context.Background(), tok, nil, time.Now())
	if e := asError(t, err); e.Reason != "keys_not_loaded" || e.Status != 401 || !strings.Contains(e.Description, "keys are not loaded yet") {
		t.Fatalf("before the first keys: %+v", e)
	}
	if v.Ready() {
		t.Fatal("ready without keys")
	}
	waitFor(t, "a failed first fetch in the state", func() bool {
		st := v.State()
		return len(st) == 1 && st[0].LastError != "" && !st[0].Loaded
	})
	if err := iss.Start(); err != nil {
		t.Fatal(err)
	}
	waitReady(t, c) // retried with backoff
	if _, err := c.Verify(context.Background(), tok, nil, time.Now()); err != nil {
		t.Fatal(err)
	}
	if !v.Ready() {
		t.Fatal("not ready with keys")
	}
}

func TestDiscovery(t *testing.T) {
	cases := []struct {
		name string
		opts oidcissuer.Options
	}{
		{"openid-configuration", oidcissuer.Options{Discovery: oidcissuer.DiscoveryOpenID}},
		{"openid-configuration with a path", oidcissuer.Options{Discovery: oidcissuer.DiscoveryOpenID, Path: "/realms/dev"}},
		{"oauth-authorization-server", oidcissuer.Options{Discovery: oidcissuer.DiscoveryOAuth}},
		{"oauth-authorization-server with a path", oidcissuer.Options{Discovery: oidcissuer.DiscoveryOAuth, Path: "/tenant/a"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			iss := oidcissuer.Start(t, tc.opts)
			v := newVerifiers(t, testOptions())
			c := endpoint(t, v, &metamcpv1.JWTAuth{Issuer: iss.URL(), Audiences: []string{testAudience}})
			waitReady(t, c)
			if _, err := c.Verify(context.Background(), iss.Mint(iss.Claims("alice", testAudience, time.Hour)), nil, time.Now()); err != nil {
				t.Fatal(err)
			}
			if st := v.State(); st[0].JWKSURL != iss.JWKSURL() {
				t.Fatalf("discovered %q, want %q", st[0].JWKSURL, iss.JWKSURL())
			}
		})
	}
	t.Run("a document naming another issuer is refused", func(t *testing.T) {
		iss := oidcissuer.Start(t, oidcissuer.Options{})
		iss.SetDocumentIssuer("https://evil.example")
		opts := testOptions()
		opts.UnknownKIDWait = 50 * time.Millisecond
		v := newVerifiers(t, opts)
		c := endpoint(t, v, &metamcpv1.JWTAuth{Issuer: iss.URL(), Audiences: []string{testAudience}})
		waitFor(t, "the discovery error", func() bool {
			st := v.State()
			return len(st) == 1 && strings.Contains(st[0].LastError, "is not the configured issuer")
		})
		_, err := c.Verify(context.Background(), iss.Mint(iss.Claims("alice", testAudience, time.Hour)), nil, time.Now())
		if asError(t, err).Reason != "keys_not_loaded" {
			t.Fatalf("got %v", err)
		}
		if iss.JWKSFetches() != 0 {
			t.Fatal("fetched the key set of a document naming another issuer")
		}
	})
}

func TestDiscoveryURLs(t *testing.T) {
	cases := []struct{ issuer, openid, oauth string }{
		{"https://id.example", "https://id.example/.well-known/openid-configuration", "https://id.example/.well-known/oauth-authorization-server"},
		{"https://id.example/", "https://id.example/.well-known/openid-configuration", "https://id.example/.well-known/oauth-authorization-server"},
		{"https://id.example/tenant/a", "https://id.example/tenant/a/.well-known/openid-configuration", "https://id.example/.well-known/oauth-authorization-server/tenant/a"},
	}
	for _, tc := range cases {
		got := discoveryURLs(tc.issuer)
		if !slices.Equal(got, []string{tc.openid, tc.oauth}) {
			t.Errorf("%s: %q", tc.issuer, got)
		}
	}
}

func TestCacheLifetime(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	cases := []struct {
		h    http.Header
		want time.Duration
		ok   bool
	}{
		{http.Header{}, 0, false},
		{http.Header{"Cache-Control": {"public, max-age=600"}}, 10 * time.Minute, true},
		{http.Header{"Cache-Control": {"no-cache"}}, 0, true},
		{http.Header{"Cache-Control": {"max-age=bogus"}}, 0, false},
		{http.Header{"Expires": {now.Add(time.Hour).Format(http.TimeFormat)}, "Date": {now.Format(http.TimeFormat)}}, time.Hour, true},
	}
	for _, tc := range cases {
		d, ok := cacheLifetime(tc.h, now)
		if d != tc.want || ok != tc.ok {
			t.Errorf("%v: %v %v, want %v %v", tc.h, d, ok, tc.want, tc.ok)
		}
	}
	ks := newKeySet("i", "", Options{MinRefresh: time.Minute, MaxRefresh: time.Hour, DefaultRefresh: 30 * time.Minute}.withDefaults())
	for h, want := range map[string]time.Duration{"max-age=5": time.Minute, "max-age=86400": time.Hour, "": 30 * time.Minute, "max-age=600": 10 * time.Minute} {
		hdr := http.Header{}
		if h != "" {
			hdr.Set("Cache-Control", h)
		}
		if got := ks.lifetime(hdr); got != want {
			t.Errorf("lifetime(%q) = %v, want %v", h, got, want)
		}
	}
}

func TestRefreshFollowsMaxAge(t *testing.T) {
	iss := oidcissuer.Start(t, oidcissuer.Options{MaxAge: time.Second})
	opts := testOptions()
	opts.MinRefresh = 100 * time.Millisecond
	v := newVerifiers(t, opts)
	c := endpoint(t, v, &metamcpv1.JWTAuth{Issuer: iss.URL(), Audiences: []string{testAudience}, JwksUrl: iss.JWKSURL()})
	waitReady(t, c)
	start := time.Now()
	tok := iss.Mint(iss.Claims("alice", testAudience, time.Hour))
	if _, err := c.Verify(context.Background(), tok, nil, time.Now()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "two refreshes", func() bool { return iss.JWKSFetches() >= 3 })
	if el := time.Since(start); el < 1500*time.Millisecond {
		t.Fatalf("3 fetches in %v: faster than the issuer's max-age of 1 s", el)
	}
	// The refreshed key set has the same keys: the cached token still
	// needs no signature check.
	if _, err := c.Verify(context.Background(), tok, nil, time.Now()); err != nil {
		t.Fatal(err)
	}
	if n := v.verifications.Load(); n != 1 {
		t.Fatalf("signature checks = %d after refreshes of an unchanged key set, want 1", n)
	}
}

func TestUpdateSharesAndStopsKeySets(t *testing.T) {
	a := oidcissuer.Start(t, oidcissuer.Options{})
	b := oidcissuer.Start(t, oidcissuer.Options{})
	v := NewVerifiers(testOptions())
	cfg := func(iss *oidcissuer.Issuer, aud string) *metamcpv1.JWTAuth {
		return &metamcpv1.JWTAuth{Issuer: iss.URL(), Audiences: []string{aud}, JwksUrl: iss.JWKSURL()}
	}
	m, err := v.Update(map[string]*metamcpv1.JWTAuth{"one": cfg(a, "x"), "two": cfg(a, "y"), "three": cfg(b, "z")})
	if err != nil {
		t.Fatal(err)
	}
	if m["one"].keys != m["two"].keys || m["one"].keys == m["three"].keys {
		t.Fatal("endpoints of one issuer must share its key set, and only they")
	}
	waitReady(t, m["one"])
	waitReady(t, m["three"])
	tok := a.Mint(a.Claims("alice", "x", time.Hour))
	if _, err := m["one"].Verify(context.Background(), tok, nil, time.Now()); err != nil {
		t.Fatal(err)
	}
	checks := v.verifications.Load()

	// The next snapshot: same issuer a, b gone, one endpoint's settings
	// invalid. Nothing is refetched and the cached token stays cached.
	m2, err := v.Update(map[string]*metamcpv1.JWTAuth{"one": cfg(a, "x"), "bad": {Issuer: a.URL(), Algorithms: []string{"HS256"}}})
	if err == nil || !strings.Contains(err.Error(), "endpoint bad") || !strings.Contains(err.Error(), "HS256") {
		t.Fatalf("Update error = %v", err)
	}
	if m2["one"] == nil || m2["bad"] != nil || m2["one"].keys != m["one"].keys {
		t.Fatal("the key set of a kept issuer must be kept")
	}
	if _, err := m2["one"].Verify(context.Background(), tok, nil, time.Now()); err != nil {
		t.Fatal(err)
	}
	if v.verifications.Load() != checks {
		t.Fatal("a new snapshot made a cached token be verified again")
	}
	if a.JWKSFetches() != 1 || b.JWKSFetches() != 1 {
		t.Fatalf("fetches a=%d b=%d, want 1 each", a.JWKSFetches(), b.JWKSFetches())
	}
	st := v.State()
	if len(st) != 1 || st[0].Issuer != a.URL() {
		t.Fatalf("state = %+v", st)
	}
	select {
	case <-m["three"].keys.done:
	default:
		t.Fatal("the fetcher of an issuer no longer used still runs")
	}
	v.Close()
	select {
	case <-m["one"].keys.done:
	default:
		t.Fatal("Close left a fetcher running")
	}
	if _, err := v.Update(nil); err == nil {
		t.Fatal("Update after Close")
	}
}

func TestCacheHitSkipsSignatureAndStaysBounded(t *testing.T) {
	iss := oidcissuer.Start(t, oidcissuer.Options{})
	opts := testOptions()
	opts.CacheSize = 64
	v := newVerifiers(t, opts)
	c := endpoint(t, v, &metamcpv1.JWTAuth{Issuer: iss.URL(), Audiences: []string{testAudience}, JwksUrl: iss.JWKSURL(), RequiredScopes: []string{"a"}})
	waitReady(t, c)
	claims := iss.Claims("alice", testAudience, time.Hour)
	claims["scope"] = "a"
	tok := iss.Mint(claims)
	for range 10 {
		if _, err := c.Verify(context.Background(), tok, nil, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	if n := v.verifications.Load(); n != 1 {
		t.Fatalf("signature checks = %d, want 1", n)
	}
	// A hit still checks time: the same token later than its exp is refused.
	if _, err := c.Verify(context.Background(), tok, nil, time.Now().Add(2*time.Hour)); asError(t, err).Reason != "expired" {
		t.Fatalf("cached token after exp: %v", err)
	}
	// And the endpoint's settings: another endpoint requiring another scope.
	m, _ := v.Update(map[string]*metamcpv1.JWTAuth{"ep": {Issuer: iss.URL(), Audiences: []string{testAudience}, JwksUrl: iss.JWKSURL(), RequiredScopes: []string{"b"}}})
	if _, err := m["ep"].Verify(context.Background(), tok, nil, time.Now()); asError(t, err).Status != 403 {
		t.Fatalf("cached token, endpoint requiring another scope: %v", err)
	}
	if n := v.verifications.Load(); n != 1 {
		t.Fatalf("signature checks = %d, want 1", n)
	}

	for i := range 300 {
		cl := iss.Claims(fmt.Sprint("user", i), testAudience, time.Hour)
		cl["scope"] = "b"
		if _, err := m["ep"].Verify(context.Background(), iss.Mint(cl, oidcissuer.WithKey(iss.ECKey())), nil, time.Now()); err != nil {
			t.Fatal(err)
		}
		if n := v.cache.len(); n > opts.CacheSize {
			t.Fatalf("cache holds %d tokens, bound %d", n, opts.CacheSize)
		}
	}
}

func TestCheckConfig(t *testing.T) {
	cases := []struct {
		cfg  *metamcpv1.JWTAuth
		want string
	}{
		{&metamcpv1.JWTAuth{Issuer: "https://id.example"}, ""},
		{&metamcpv1.JWTAuth{}, "issuer is required"},
		{&metamcpv1.JWTAuth{Issuer: "i", Algorithms: []string{"none"}}, "never accepted"},
		{&metamcpv1.JWTAuth{Issuer: "i", Algorithms: []string{"HS256"}}, "never accepted"},
		{&metamcpv1.JWTAuth{Issuer: "i", Algorithms: []string{"ES256", "EdDSA"}}, ""},
		{&metamcpv1.JWTAuth{Issuer: "i", ClockSkew: durationpb.New(10 * time.Minute)}, "out of range"},
		{&metamcpv1.JWTAuth{Issuer: "i", ClockSkew: durationpb.New(-time.Second)}, "out of range"},
		{&metamcpv1.JWTAuth{Issuer: "i", ClockSkew: durationpb.New(0)}, ""},
		{&metamcpv1.JWTAuth{Issuer: "i", RequiredScopes: []string{"a b"}}, "without spaces"},
	}
	for _, tc := range cases {
		err := CheckConfig(tc.cfg)
		if (tc.want == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want %q", tc.cfg, err, tc.want)
		}
	}
}

func TestClockSkewSetting(t *testing.T) {
	iss := oidcissuer.Start(t, oidcissuer.Options{})
	v := newVerifiers(t, testOptions())
	c := endpoint(t, v, &metamcpv1.JWTAuth{Issuer: iss.URL(), Audiences: []string{testAudience}, JwksUrl: iss.JWKSURL(), ClockSkew: durationpb.New(0)})
	waitReady(t, c)
	cl := iss.Claims("alice", testAudience, time.Hour)
	cl["exp"] = time.Now().Add(-5 * time.Second).Unix()
	if _, err := c.Verify(context.Background(), iss.Mint(cl), nil, time.Now()); asError(t, err).Reason != "expired" {
		t.Fatalf("no skew, expired 5 s ago: %v", err)
	}
}

func TestVerifiersVerifyByConfig(t *testing.T) {
	iss := oidcissuer.Start(t, oidcissuer.Options{})
	v := newVerifiers(t, testOptions())
	cfg := &metamcpv1.JWTAuth{Issuer: iss.URL(), JwksUrl: iss.JWKSURL(), RequiredScopes: []string{"s"}}
	bad := &metamcpv1.JWTAuth{Issuer: iss.URL(), Algorithms: []string{"HS256"}}
	if _, err := v.Update(map[string]*metamcpv1.JWTAuth{"ep": cfg, "bad": bad}); err == nil {
		t.Fatal("Update accepted HS256")
	}
	c, err := v.verifier(cfg)
	if err != nil {
		t.Fatal(err)
	}
	waitReady(t, c)
	cl := iss.Claims("alice", testResource, time.Hour)
	cl["scp"] = []string{"s"}
	p, err := v.Verify(context.Background(), iss.Mint(cl), cfg, []string{testResource})
	if err != nil || p.Name != "alice" {
		t.Fatalf("Verify = %+v, %v", p, err)
	}
	if _, err := v.Verify(context.Background(), iss.Mint(cl), bad, []string{testResource}); asError(t, err).Reason != "configuration" {
		t.Fatalf("invalid settings: %v", err)
	}
	// Settings Update has not seen (an equal message at another address) are
	// compiled on first use and share the key set.
	same := &metamcpv1.JWTAuth{Issuer: iss.URL(), JwksUrl: iss.JWKSURL()}
	if _, err := v.Verify(context.Background(), iss.Mint(cl), same, []string{testResource}); err != nil {
		t.Fatal(err)
	}
	if got, _ := v.verifier(same); got == nil || got.keys != c.keys || iss.JWKSFetches() != 1 {
		t.Fatal("settings seen first by Verify must share the issuer's key set")
	}
	_, err = v.Verify(context.Background(), iss.Mint(iss.Claims("bob", testResource, time.Hour)), cfg, []string{testResource})
	if e := asError(t, err); e.Status != 403 || e.Code != CodeInsufficientScope || !slices.Equal(e.Scopes, []string{"s"}) {
		t.Fatalf("missing scope: %+v", e)
	}
}

func TestConcurrentVerifyUpdateClose(t *testing.T) {
	a := oidcissuer.Start(t, oidcissuer.Options{})
	b := oidcissuer.Start(t, oidcissuer.Options{Discovery: oidcissuer.DiscoveryOAuth})
	opts := testOptions()
	opts.UnknownKIDInterval = time.Millisecond
	opts.UnknownKIDWait = 50 * time.Millisecond
	v := NewVerifiers(opts)
	cfgA := &metamcpv1.JWTAuth{Issuer: a.URL(), Audiences: []string{testAudience}, JwksUrl: a.JWKSURL()}
	cfgB := &metamcpv1.JWTAuth{Issuer: b.URL(), Audiences: []string{testAudience}}
	m, err := v.Update(map[string]*metamcpv1.JWTAuth{"a": cfgA, "b": cfgB})
	if err != nil {
		t.Fatal(err)
	}
	waitReady(t, m["a"])
	waitReady(t, m["b"])
	toks := []string{
		a.Mint(a.Claims("alice", testAudience, time.Hour)),
		a.Mint(a.Claims("bob", testAudience, time.Hour), oidcissuer.WithKey(a.ECKey())),
		a.Mint(a.Claims("carol", testAudience, time.Hour), oidcissuer.WithKID("unknown")),
		b.Mint(b.Claims("dave", testAudience, time.Hour)),
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				cfg := cfgA
				if g%2 == 1 {
					cfg = cfgB
				}
				_, _ = v.Verify(context.Background(), toks[(i+g)%len(toks)], cfg, nil)
				_ = v.State()
				_ = v.Ready()
			}
		}()
	}
	for i := range 30 {
		snap := map[string]*metamcpv1.JWTAuth{"a": cfgA}
		if i%2 == 0 {
			snap["b"] = cfgB
		}
		if _, err := v.Update(snap); err != nil {
			t.Fatal(err)
		}
		if i%15 == 0 {
			a.Rotate()
		}
		time.Sleep(2 * time.Millisecond)
	}
	v.Close()
	close(stop)
	wg.Wait()
}

func FuzzVerify(f *testing.F) {
	iss, err := oidcissuer.New(oidcissuer.Options{})
	if err != nil {
		f.Fatal(err)
	}
	defer iss.Close()
	v := NewVerifiers(Options{Logger: quiet, UnknownKIDWait: -1})
	defer v.Close()
	m, err := v.Update(map[string]*metamcpv1.JWTAuth{"ep": {Issuer: iss.URL(), Audiences: []string{testAudience}, JwksUrl: iss.JWKSURL()}})
	if err != nil {
		f.Fatal(err)
	}
	c := m["ep"]
	for deadline := time.Now().Add(10 * time.Second); !c.Ready() && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	good := iss.Mint(iss.Claims("alice", testAudience, time.Hour))
	f.Add(good)
	f.Add(oidcissuer.MintNone(iss.Claims("alice", testAudience, time.Hour)))
	f.Add(iss.MintHS256WithPublicKey(iss.Claims("alice", testAudience, time.Hour)))
	f.Add("e30.e30.")
	f.Add("eyJhbGciOiJSUzI1NiJ9.eyJleHAiOjFlMzA4fQ.AA")
	f.Add("..")
	f.Fuzz(func(t *testing.T, token string) {
		p, err := c.Verify(context.Background(), token, nil, time.Now())
		if err == nil {
			if token != good && !strings.HasPrefix(token, good) || p == nil {
				// Only the good token (and, in compact form, nothing else)
				// may be accepted.
				t.Fatalf("accepted %q", token)
			}
			return
		}
		var e *Error
		if !errors.As(err, &e) || e.Status == 0 || e.Code == "" || e.Description == "" {
			t.Fatalf("error %#v", err)
		}
	})
}

// fakeIssuer answers HTTP requests without a network.
type fakeIssuer func(*http.Request) *http.Response

func (f fakeIssuer) RoundTrip(r *http.Request) (*http.Response, error) { return f(r), nil }

func TestRedirectToPlainHTTPIsRefused(t *testing.T) {
	opts := testOptions()
	opts.HTTPClient = &http.Client{Transport: fakeIssuer(func(r *http.Request) *http.Response {
		h := http.Header{}
		status := http.StatusOK
		if r.URL.Host == "id.example" {
			h.Set("Location", "http://keys.example/jwks.json")
			status = http.StatusFound
		}
		return &http.Response{StatusCode: status, Header: h, Body: io.NopCloser(strings.NewReader(`{"keys":[]}`)), Request: r}
	})}
	ks := newKeySet("https://id.example", "https://id.example/jwks.json", opts.withDefaults())
	_, _, err := ks.get(context.Background(), "https://id.example/jwks.json")
	if err == nil || !strings.Contains(err.Error(), "redirected to http://keys.example/jwks.json") {
		t.Fatalf("get = %v, want a refused redirect", err)
	}
}
