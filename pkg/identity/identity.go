// Package identity defines the Principal: who is calling an endpoint, as
// established by the data plane from an API key or an OAuth/OIDC access token.
// Authorization, rate limits and the audit trail use it; the control plane
// uses it to answer `mmctl auth can-i`.
package identity

// Kind says which credential established a principal.
type Kind uint8

// The kinds of credential.
const (
	// KindAnonymous is the caller of an endpoint that asks for no credential.
	KindAnonymous Kind = iota
	// KindAPIKey is the holder of a MetaMCP API key (mm_...).
	KindAPIKey
	// KindJWT is the subject of an access token from an identity provider.
	KindJWT
)

// String is the kind's name as the audit trail and `mmctl auth can-i` spell it.
func (k Kind) String() string {
	switch k {
	case KindAPIKey:
		return "apikey"
	case KindJWT:
		return "jwt"
	default:
		return "anonymous"
	}
}

// AnonymousName is the principal name of requests to an anonymous endpoint.
const AnonymousName = "anonymous"

// Principal is an authenticated caller. It is immutable once built: the
// gateway shares one value between a request's steps and, for a cached token
// or a key, between requests.
type Principal struct {
	// Name identifies the caller: an API key's principal (its name when
	// unset), the configured claim of a token (`sub` by default), or
	// AnonymousName. Rate limits count by it; sessions are bound to it.
	Name string
	// Kind says which credential established the principal.
	Kind Kind
	// KeyID is the name of the API key used (KindAPIKey only).
	KeyID string
	// Issuer and Subject are the token's `iss` and `sub` (KindJWT only).
	Issuer  string
	Subject string
	// Groups come from the endpoint's groups claim (KindJWT), empty otherwise.
	Groups []string
	// Claims are the token's claims as decoded JSON (KindJWT only); rules
	// may match on them. Never modified after the principal is built.
	Claims map[string]any
}

// Anonymous is the principal of every request to an anonymous endpoint.
var Anonymous = &Principal{Name: AnonymousName, Kind: KindAnonymous}

// InGroup reports whether the principal belongs to group g.
func (p *Principal) InGroup(g string) bool {
	for _, x := range p.Groups {
		if x == g {
			return true
		}
	}
	return false
}
