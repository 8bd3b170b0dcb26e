package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"math"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/metamcp/metamcp/pkg/identity"
)

// verifiedToken is a token whose signature was checked against a key of
// keys, with the claims the per-request checks need. It is immutable except
// for its principal memo.
type verifiedToken struct {
	keys *keySet
	// key verified the signature; the token is good only while the key set
	// still has it.
	key    *jose.JSONWebKey
	alg    jose.SignatureAlgorithm
	algBit uint16
	issuer string
	// exp, nbf, iat: unix nanoseconds; nbf and iat are 0 when absent.
	exp, nbf, iat int64
	aud           []string
	// scopes are the union of the `scope` and `scp` claims.
	scopes []string
	claims map[string]any

	memo atomic.Pointer[principalMemo]
}

// principalMemo is the principal built for one (principal claim, groups
// claim) pair: endpoints that agree on them share it.
type principalMemo struct {
	principalClaim, groupsClaim string
	p                           *identity.Principal
}

func (e *verifiedToken) missingScopes(required []string) []string {
	var missing []string
	for _, s := range required {
		if !slices.Contains(e.scopes, s) {
			missing = append(missing, s)
		}
	}
	return missing
}

func (e *verifiedToken) principal(principalClaim, groupsClaim string) (*identity.Principal, error) {
	if m := e.memo.Load(); m != nil && m.principalClaim == principalClaim && m.groupsClaim == groupsClaim {
		return m.p, nil
	}
	name, _ := e.claims[principalClaim].(string)
	if name == "" {
		return nil, invalid("principal", "the token has no %s claim naming the caller (a non-empty string)", principalClaim)
	}
	sub, _ := e.claims["sub"].(string)
	p := &identity.Principal{
		Name:    name,
		Kind:    identity.KindJWT,
		Issuer:  e.issuer,
		Subject: sub,
		Claims:  e.claims,
	}
	if groupsClaim != "" {
		p.Groups = stringList(e.claims[groupsClaim])
	}
	e.memo.Store(&principalMemo{principalClaim: principalClaim, groupsClaim: groupsClaim, p: p})
	return p, nil
}

// stringList reads a claim that is a list of strings or one space-separated
// string; other values (and non-string elements) give nothing.
func stringList(v any) []string {
	switch v := v.(type) {
	case string:
		return strings.Fields(v)
	case []any:
		out := make([]string, 0, len(v))
		for _, x := range v {
			if s, ok := x.(string); ok && s != "" {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

// verifyNew checks a token not in the cache: its form, its claims (before
// the signature, so an expired or foreign token costs no signature check
// and causes no key fetch), then its signature.
func (c *Verifier) verifyNew(ctx context.Context, token string, resources []string, now time.Time) (*verifiedToken, error) {
	jws, err := jose.ParseSignedCompact(token, c.algs)
	if err != nil {
		return nil, c.parseError(token)
	}
	if len(jws.Signatures) != 1 {
		return nil, invalid("malformed", "the token is not a signed JWT (JWS compact serialization)")
	}
	h := jws.Signatures[0].Header
	alg := jose.SignatureAlgorithm(h.Algorithm)
	e := &verifiedToken{keys: c.keys, alg: alg, algBit: algBit(alg)}
	if err := e.readClaims(jws.UnsafePayloadWithoutVerification()); err != nil {
		return nil, err
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

	set := c.keys.keys.Load()
	if set == nil {
		c.keys.awaitFirst(ctx)
		if set = c.keys.keys.Load(); set == nil {
			return nil, errKeysNotLoaded
		}
	}
	cands := set.candidates(h.KeyID, alg)
	if len(cands) == 0 && h.KeyID != "" && !set.hasKID(h.KeyID) {
		if c.keys.refetch(ctx) {
			set = c.keys.keys.Load()
			cands = set.candidates(h.KeyID, alg)
		}
	}
	if len(cands) == 0 {
		if h.KeyID != "" && set.hasKID(h.KeyID) {
			return nil, invalid("algorithm", "the token's key does not fit its signature algorithm %s", alg)
		}
		return nil, invalid("unknown_key", "the token is signed with a key the identity provider does not publish (unknown kid)")
	}
	// Verify checks the signature over the payload readClaims decoded: the
	// claims checked above are the signed ones.
	c.reg.verifications.Add(1)
	for _, k := range cands {
		if _, err = jws.Verify(k); err == nil {
			e.key = k
			return e, nil
		}
	}
	return nil, invalid("signature", "the token's signature is not valid")
}

// knownAlgs are algorithm names an error may repeat; any other alg header is
// reported without its value.
var knownAlgs = []string{"none", "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA", "ES256K", "Ed25519", "Ed448"}

// parseError explains why go-jose refused a token: most usefully, an
// algorithm the endpoint does not accept.
func (c *Verifier) parseError(token string) *Error {
	head, _, ok := strings.Cut(token, ".")
	if !ok || strings.Count(token, ".") != 2 {
		return invalid("malformed", "the token is not a JWT: expected three base64url parts separated by dots")
	}
	raw, err := base64.RawURLEncoding.DecodeString(head)
	if err != nil {
		return invalid("malformed", "the token's header is not base64url")
	}
	var hdr struct {
		Alg any `json:"alg"`
	}
	if json.Unmarshal(raw, &hdr) != nil {
		return invalid("malformed", "the token's header is not a JSON object")
	}
	alg, _ := hdr.Alg.(string)
	if alg != "" && algBit(jose.SignatureAlgorithm(alg)) != 0 && !slices.Contains(c.algs, jose.SignatureAlgorithm(alg)) {
		return invalid("algorithm", "the token's signature algorithm %s is not accepted by this endpoint", alg)
	}
	if slices.Contains(knownAlgs, alg) && algBit(jose.SignatureAlgorithm(alg)) == 0 {
		return invalid("algorithm", "the token's signature algorithm %s is not accepted: only asymmetric signatures are (never none or HMAC)", alg)
	}
	if alg == "" {
		return invalid("malformed", "the token's header has no alg")
	}
	return invalid("malformed", "the token is not a well-formed signed JWT")
}

// readClaims decodes the claims the checks need; claims is the whole set,
// for the principal.
func (e *verifiedToken) readClaims(payload []byte) error {
	var claims map[string]any
	if err := json.Unmarshal(payload, &claims); err != nil || claims == nil {
		return invalid("malformed", "the token's claims are not a JSON object")
	}
	e.claims = claims
	e.issuer, _ = claims["iss"].(string)
	if e.issuer == "" {
		return invalid("issuer", "the token has no iss claim")
	}
	var ok bool
	if e.exp, ok = numericDate(claims["exp"]); !ok || e.exp == 0 {
		return invalid("expired", "the token has no valid exp claim: tokens without an expiry are refused")
	}
	if v, present := claims["nbf"]; present {
		if e.nbf, ok = numericDate(v); !ok {
			return invalid("malformed", "the token's nbf claim is not a number")
		}
	}
	if v, present := claims["iat"]; present {
		if e.iat, ok = numericDate(v); !ok {
			return invalid("malformed", "the token's iat claim is not a number")
		}
	}
	switch aud := claims["aud"].(type) {
	case string:
		e.aud = []string{aud}
	case []any:
		e.aud = stringList(aud)
	}
	e.scopes = append(strings.Fields(stringOf(claims["scope"])), stringList(claims["scp"])...)
	return nil
}

func stringOf(v any) string {
	s, _ := v.(string)
	return s
}

// numericDate converts a JWT NumericDate (seconds since the epoch, possibly
// fractional) to unix nanoseconds, clamped to what int64 holds.
func numericDate(v any) (int64, bool) {
	f, ok := v.(float64)
	if !ok || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, false
	}
	const maxSec = float64(math.MaxInt64/int64(time.Second)) - 1e3
	switch {
	case f >= maxSec:
		return math.MaxInt64 - int64(MaxClockSkew), true
	case f <= -maxSec:
		return math.MinInt64 + int64(MaxClockSkew), true
	}
	return int64(f * float64(time.Second)), true
}

// fits reports whether key k may verify signatures of algorithm alg: the key
// type must be the algorithm's (an RSA key for RS/PS, the named curve for ES,
// Ed25519 for EdDSA), and the key's own alg, when it has one, must be alg.
func fits(k *jose.JSONWebKey, alg jose.SignatureAlgorithm) bool {
	if k.Algorithm != "" && k.Algorithm != string(alg) {
		return false
	}
	switch pk := k.Key.(type) {
	case *rsa.PublicKey:
		switch alg {
		case jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512:
			return true
		}
	case *ecdsa.PublicKey:
		switch alg {
		case jose.ES256:
			return pk.Curve == elliptic.P256()
		case jose.ES384:
			return pk.Curve == elliptic.P384()
		case jose.ES512:
			return pk.Curve == elliptic.P521()
		}
	case ed25519.PublicKey:
		return alg == jose.EdDSA
	}
	return false
}
