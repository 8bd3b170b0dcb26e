package auth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// maxDocument bounds a discovery document or key set read from an issuer.
const maxDocument = 1 << 20

// minRSABits is the smallest RSA key accepted from a key set.
const minRSABits = 2048

// jwks is one fetched key set: the usable signing keys, by kid.
type jwks struct {
	byKID map[string][]*jose.JSONWebKey
	all   []*jose.JSONWebKey
}

// candidates are the keys that may have signed a token with this kid and
// alg: those with the kid (all keys when the token names none) whose type
// fits alg.
func (s *jwks) candidates(kid string, alg jose.SignatureAlgorithm) []*jose.JSONWebKey {
	keys := s.all
	if kid != "" {
		keys = s.byKID[kid]
	}
	n := 0
	for _, k := range keys {
		if fits(k, alg) {
			n++
		}
	}
	if n == len(keys) {
		return keys
	}
	out := make([]*jose.JSONWebKey, 0, n)
	for _, k := range keys {
		if fits(k, alg) {
			out = append(out, k)
		}
	}
	return out
}

func (s *jwks) hasKID(kid string) bool { return len(s.byKID[kid]) > 0 }

// has reports whether key (from this set or an earlier one of the same
// issuer) is still published: keepIdentity makes an unchanged key the same
// pointer from one fetch to the next.
func (s *jwks) has(key *jose.JSONWebKey) bool {
	keys := s.all
	if key.KeyID != "" {
		keys = s.byKID[key.KeyID]
	}
	for _, k := range keys {
		if k == key {
			return true
		}
	}
	return false
}

// keepIdentity replaces each key of s that old also has (same kid, same
// public key) with old's, so that tokens verified with it stay known to be
// signed by a published key (jwks.has).
func (s *jwks) keepIdentity(old *jwks) {
	for i, k := range s.all {
		prev := old.all
		if k.KeyID != "" {
			prev = old.byKID[k.KeyID]
		}
		for _, o := range prev {
			if o.KeyID == k.KeyID && o.Algorithm == k.Algorithm && samePublicKey(o.Key, k.Key) {
				s.all[i] = o
				break
			}
		}
	}
	clear(s.byKID)
	for _, k := range s.all {
		if k.KeyID != "" {
			s.byKID[k.KeyID] = append(s.byKID[k.KeyID], k)
		}
	}
}

func samePublicKey(a, b any) bool {
	x, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && x.Equal(b)
}

// keySet is the signing keys of one identity provider, kept fresh by a
// goroutine it owns (start, stop). Readers load keys without locking.
type keySet struct {
	issuer  string
	jwksURL string // configured; empty: found by discovery
	opts    Options
	log     *slog.Logger

	keys atomic.Pointer[jwks] // nil until the first successful fetch

	kick   chan struct{} // wakes the fetcher for an early fetch
	cancel context.CancelFunc
	done   chan struct{} // closed when the fetcher has returned

	mu sync.Mutex
	// next is closed when the next fetch to start has ended; inflight is
	// the channel of the fetch running now (nil when idle).
	next, inflight chan struct{}
	// kicked is the channel of the fetch the last early-fetch request
	// waits for, and lastKick when that request was made.
	kicked      chan struct{}
	lastKick    time.Time
	discovered  string // jwks_uri found by discovery
	lastRefresh time.Time
	lastErr     string
	fetches     int
}

func newKeySet(issuer, jwksURL string, opts Options) *keySet {
	return &keySet{
		issuer:  issuer,
		jwksURL: jwksURL,
		opts:    opts,
		log:     opts.Logger.With("issuer", issuer),
		kick:    make(chan struct{}, 1),
		done:    make(chan struct{}),
		next:    make(chan struct{}),
	}
}

func (k *keySet) start() {
	ctx, cancel := context.WithCancel(context.Background())
	k.cancel = cancel
	go k.run(ctx)
}

// stop ends the fetcher and waits for it.
func (k *keySet) stop() {
	k.cancel()
	<-k.done
}

func (k *keySet) state() IssuerState {
	k.mu.Lock()
	defer k.mu.Unlock()
	st := IssuerState{
		Issuer:      k.issuer,
		JWKSURL:     k.jwksURL,
		LastRefresh: k.lastRefresh,
		LastError:   k.lastErr,
		Fetches:     k.fetches,
	}
	if st.JWKSURL == "" {
		st.JWKSURL = k.discovered
	}
	if s := k.keys.Load(); s != nil {
		st.Loaded, st.Keys = true, len(s.all)
	}
	return st
}

// run fetches the keys now, then again when the issuer's cache lifetime
// ends, after failures with backoff, and early when asked (kick).
func (k *keySet) run(ctx context.Context) {
	defer close(k.done)
	failures := 0
	for {
		k.mu.Lock()
		ended := k.next
		k.next = make(chan struct{})
		k.inflight = ended
		k.mu.Unlock()

		wait, err := k.refresh(ctx)

		k.mu.Lock()
		k.inflight = nil
		if err != nil {
			k.lastErr = err.Error()
		} else {
			k.lastErr = ""
			k.lastRefresh = time.Now()
		}
		k.mu.Unlock()
		close(ended)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			failures++
			wait = k.backoff(failures)
			k.log.Warn("jwt: fetching the identity provider's keys failed; the keys fetched before stay in force",
				"error", err, "keys_loaded", k.keys.Load() != nil, "retry_in", wait.Round(time.Millisecond))
		} else {
			failures = 0
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		case <-k.kick:
			t.Stop()
		}
	}
}

// backoff is the wait after the n-th failure in a row: 1 s doubling up to
// MaxBackoff, with jitter so that replicas do not retry in step.
func (k *keySet) backoff(n int) time.Duration {
	d := k.opts.MaxBackoff
	if n < 20 {
		d = min(time.Second<<(n-1), k.opts.MaxBackoff)
	}
	return d/2 + rand.N(d/2+1)
}

// awaitFirst waits (bounded by UnknownKIDWait and ctx) for the first keys:
// for the fetch in flight, or for one it asks for within the rate limit.
func (k *keySet) awaitFirst(ctx context.Context) {
	k.mu.Lock()
	ch := k.inflight
	k.mu.Unlock()
	if ch == nil {
		k.refetch(ctx)
		return
	}
	k.wait(ctx, ch)
}

// refetch asks for an early fetch because a token names a key the set does
// not have, and waits for it (bounded by UnknownKIDWait and ctx). Fetches so
// caused are at most one per UnknownKIDInterval; a request inside that
// interval waits for the fetch already asked for if it has not ended. It
// reports whether a fetch ended while it waited.
func (k *keySet) refetch(ctx context.Context) bool {
	now := time.Now()
	k.mu.Lock()
	var ch chan struct{}
	if k.lastKick.IsZero() || now.Sub(k.lastKick) >= k.opts.UnknownKIDInterval {
		k.lastKick = now
		ch = k.next
		k.kicked = ch
		select {
		case k.kick <- struct{}{}:
		default:
		}
	} else {
		ch = k.kicked
	}
	k.mu.Unlock()
	return k.wait(ctx, ch)
}

func (k *keySet) wait(ctx context.Context, ch chan struct{}) bool {
	if ch == nil {
		return false
	}
	select {
	case <-ch:
		return true
	default:
	}
	if k.opts.UnknownKIDWait < 0 {
		return false
	}
	t := time.NewTimer(k.opts.UnknownKIDWait)
	defer t.Stop()
	select {
	case <-ch:
		return true
	case <-t.C:
	case <-ctx.Done():
	case <-k.done:
	}
	return false
}

// refresh fetches the key set once (discovering its URL first when needed)
// and returns how long to use it.
func (k *keySet) refresh(ctx context.Context) (time.Duration, error) {
	u := k.jwksURL
	if u == "" {
		k.mu.Lock()
		u = k.discovered
		k.mu.Unlock()
		if u == "" {
			var err error
			if u, err = k.discover(ctx); err != nil {
				return 0, err
			}
			k.mu.Lock()
			k.discovered = u
			k.mu.Unlock()
		}
	}
	k.mu.Lock()
	k.fetches++
	k.mu.Unlock()
	body, hdr, err := k.get(ctx, u)
	if err != nil {
		if k.jwksURL == "" {
			// The issuer may have moved its keys: discover again next time.
			k.mu.Lock()
			k.discovered = ""
			k.mu.Unlock()
		}
		return 0, fmt.Errorf("fetch JWKS %s: %w", u, err)
	}
	set, skipped, err := parseJWKS(body)
	if err != nil {
		return 0, fmt.Errorf("JWKS %s: %w", u, err)
	}
	old := k.keys.Load()
	if old != nil {
		set.keepIdentity(old)
	}
	k.keys.Store(set)
	if old == nil || !sameKIDs(old, set) {
		k.log.Info("jwt: identity provider keys loaded", "jwks_url", u, "keys", len(set.all), "skipped", skipped)
	}
	return k.lifetime(hdr), nil
}

// lifetime is how long a response may be used, from its Cache-Control
// max-age (or Expires), bounded by MinRefresh and MaxRefresh;
// DefaultRefresh when it says nothing.
func (k *keySet) lifetime(h http.Header) time.Duration {
	d, ok := cacheLifetime(h, time.Now())
	if !ok {
		return k.opts.DefaultRefresh
	}
	return min(max(d, k.opts.MinRefresh), k.opts.MaxRefresh)
}

func cacheLifetime(h http.Header, now time.Time) (time.Duration, bool) {
	for _, v := range h.Values("Cache-Control") {
		for _, dir := range strings.Split(v, ",") {
			name, val, _ := strings.Cut(strings.TrimSpace(dir), "=")
			switch strings.ToLower(name) {
			case "no-store", "no-cache":
				return 0, true
			case "max-age":
				n, err := strconv.ParseInt(strings.Trim(val, `"`), 10, 64)
				if err != nil || n < 0 {
					continue
				}
				return time.Duration(min(n, int64(365*24*3600))) * time.Second, true
			}
		}
	}
	if e := h.Get("Expires"); e != "" {
		t, err := http.ParseTime(e)
		if err != nil {
			return 0, true // RFC 9111: an invalid Expires means already expired
		}
		if d := h.Get("Date"); d != "" {
			if dt, err := http.ParseTime(d); err == nil {
				now = dt
			}
		}
		return max(t.Sub(now), 0), true
	}
	return 0, false
}

func sameKIDs(a, b *jwks) bool {
	if len(a.all) != len(b.all) {
		return false
	}
	for i := range a.all {
		if a.all[i].KeyID != b.all[i].KeyID {
			return false
		}
	}
	return true
}

// parseJWKS decodes a key set, keeping the public signing keys of supported
// types; it reports how many keys it skipped. A set without one usable key
// is an error (the keys in force stay).
func parseJWKS(body []byte) (*jwks, int, error) {
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, 0, fmt.Errorf("not a JSON Web Key Set: %w", err)
	}
	set := &jwks{byKID: make(map[string][]*jose.JSONWebKey)}
	skipped := 0
	for _, raw := range doc.Keys {
		var k jose.JSONWebKey
		if err := k.UnmarshalJSON(raw); err != nil || !usable(&k) {
			skipped++
			continue
		}
		pub := k.Public()
		if !pub.Valid() {
			skipped++
			continue
		}
		set.all = append(set.all, &pub)
		if pub.KeyID != "" {
			set.byKID[pub.KeyID] = append(set.byKID[pub.KeyID], &pub)
		}
	}
	if len(set.all) == 0 {
		return nil, skipped, fmt.Errorf("no usable signing key (RSA of %d bits or more, EC P-256/384/521, Ed25519) among %d keys", minRSABits, len(doc.Keys))
	}
	return set, skipped, nil
}

func usable(k *jose.JSONWebKey) bool {
	if k.Use != "" && k.Use != "sig" {
		return false
	}
	switch key := k.Key.(type) {
	case *rsa.PublicKey:
		return key.N.BitLen() >= minRSABits
	case *rsa.PrivateKey:
		return key.N.BitLen() >= minRSABits
	case *ecdsa.PublicKey, *ecdsa.PrivateKey, ed25519.PublicKey, ed25519.PrivateKey:
		return true
	}
	return false // symmetric and unsupported keys never verify tokens
}

// discover finds the key set URL from the issuer's metadata: OpenID
// Connect Discovery first, then RFC 8414 (path-aware). The document's
// issuer must be the configured one.
func (k *keySet) discover(ctx context.Context) (string, error) {
	var errs []error
	for _, u := range discoveryURLs(k.issuer) {
		body, _, err := k.get(ctx, u)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", u, err))
			continue
		}
		var doc struct {
			Issuer  string `json:"issuer"`
			JWKSURI string `json:"jwks_uri"`
		}
		if err := json.Unmarshal(body, &doc); err != nil {
			errs = append(errs, fmt.Errorf("%s: not a JSON metadata document", u))
			continue
		}
		if doc.Issuer != k.issuer {
			errs = append(errs, fmt.Errorf("%s: the document's issuer %q is not the configured issuer %q", u, doc.Issuer, k.issuer))
			continue
		}
		if err := checkKeysURL(doc.JWKSURI); err != nil {
			errs = append(errs, fmt.Errorf("%s: jwks_uri: %w", u, err))
			continue
		}
		return doc.JWKSURI, nil
	}
	return "", fmt.Errorf("discover the issuer's keys: %w", errors.Join(errs...))
}

// discoveryURLs are where an issuer's metadata may be: OIDC Discovery
// appends to the issuer, RFC 8414 inserts before its path.
func discoveryURLs(issuer string) []string {
	trimmed := strings.TrimSuffix(issuer, "/")
	out := []string{trimmed + "/.well-known/openid-configuration"}
	if u, err := url.Parse(issuer); err == nil && u.Host != "" {
		path := strings.TrimSuffix(u.EscapedPath(), "/")
		u.Path, u.RawPath = "", ""
		u.RawQuery, u.Fragment = "", ""
		out = append(out, u.String()+"/.well-known/oauth-authorization-server"+path)
	}
	return out
}

// checkKeysURL accepts https URLs, and http ones on loopback (tests, local
// identity providers).
func checkKeysURL(s string) error {
	u, err := url.Parse(s)
	switch {
	case s == "":
		return errors.New("missing")
	case err != nil:
		return errors.New("not a URL")
	case u.Scheme == "https" && u.Host != "":
		return nil
	case u.Scheme == "http" && isLoopback(u.Hostname()):
		return nil
	}
	return errors.New("must be an https URL (http only on loopback)")
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// get fetches one JSON document from the issuer.
func (k *keySet) get(ctx context.Context, u string) ([]byte, http.Header, error) {
	ctx, cancel := context.WithTimeout(ctx, k.opts.FetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := k.opts.HTTPClient.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	if resp.Request != nil && resp.Request.URL.String() != u {
		// Redirected: the document must still come from https (or loopback).
		if err := checkKeysURL(resp.Request.URL.String()); err != nil {
			return nil, nil, fmt.Errorf("redirected to %s: %w", resp.Request.URL.Redacted(), err)
		}
	}
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxDocument))
		return nil, nil, fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxDocument+1))
	if err != nil {
		return nil, nil, fmt.Errorf("read: %w", err)
	}
	if len(body) > maxDocument {
		return nil, nil, fmt.Errorf("larger than %d bytes", maxDocument)
	}
	return body, resp.Header, nil
}
