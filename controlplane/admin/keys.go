package admin

import (
	"context"
	"crypto/rand"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/controlplane/auth"
	"github.com/metamcp/metamcp/controlplane/store"
	"github.com/metamcp/metamcp/pkg/snapshot"
)

// Prefixes of generated credentials: API keys for MCP endpoints and tokens for
// the control plane's API. They tell a reader (and secret scanners) what a
// leaked string is.
const (
	APIKeyPrefix = "mm_"
	TokenPrefix  = "mmt_"
)

// shownPrefixLen is how many random characters of a credential are kept
// visible (key_prefix, token_prefix) to recognise it.
const shownPrefixLen = 4

// base62Len is the length of 32 random bytes in base62 (62^43 > 2^256).
const base62Len = 43

// newCredential returns prefix + base62 of 32 crypto-random bytes, and the
// visible prefix kept with its hash.
func newCredential(prefix string) (cred, shown string, err error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", "", fmt.Errorf("generate credential: %w", err)
	}
	s := new(big.Int).SetBytes(b).Text(62)
	s = strings.Repeat("0", base62Len-len(s)) + s
	cred = prefix + s
	return cred, cred[:len(prefix)+shownPrefixLen], nil
}

// checkExpiry fails when an expiry is set but not valid or not in the future.
func checkExpiry(kind store.Kind, name string, ts *timestamppb.Timestamp, now time.Time) error {
	if ts == nil {
		return nil
	}
	if err := ts.CheckValid(); err != nil {
		return invalid(kind, name, "expireTime", "invalid time: %v", err)
	}
	if !ts.AsTime().After(now) {
		return invalid(kind, name, "expireTime", "%s is not in the future: pick a later time, or none for no expiry",
			ts.AsTime().UTC().Format(time.RFC3339))
	}
	return nil
}

// checkKeyEndpoints fails unless each endpoint of a key exists (or is "*").
func checkKeyEndpoints(c *config, k *metamcpv1.ApiKey) error {
	var v []snapshot.Violation
	for i, e := range k.GetEndpoints() {
		if e == "*" || c.get(store.KindEndpoint, e) != nil {
			continue
		}
		v = append(v, snapshot.Violation{
			Kind: string(store.KindApiKey), Name: k.GetName(), Field: fmt.Sprintf("endpoints[%d]", i),
			Description: fmt.Sprintf("no endpoint %q: create it first, or use \"*\" for every endpoint", e),
		})
	}
	if len(v) > 0 {
		return &snapshot.Error{Violations: v}
	}
	return nil
}

// inputAPIKey copies the fields a client may set on an API key.
func inputAPIKey(in *metamcpv1.ApiKey) (*metamcpv1.ApiKey, error) {
	if in == nil {
		return nil, invalid(store.KindApiKey, "", "apiKey", "apiKey is required")
	}
	k := &metamcpv1.ApiKey{
		Name:        in.GetName(),
		Description: in.GetDescription(),
		Principal:   in.GetPrincipal(),
		Endpoints:   slices.Clone(in.GetEndpoints()),
		ExpireTime:  proto.CloneOf(in.GetExpireTime()),
	}
	if k.Principal == "" {
		k.Principal = k.Name
	}
	if v := snapshot.ValidateResource(k); len(v) > 0 {
		return nil, &snapshot.Error{Violations: v}
	}
	return k, nil
}

// keyOp runs one write of API keys and returns the key as read back.
func (s *Service) keyOp(ctx context.Context, op, name string, mutate func(c *config) error) (*metamcpv1.ApiKey, *writeResult, error) {
	res, err := s.write(ctx, writeOptions{validate: true}, func(ctx context.Context, c *config, _ store.ReadTx) ([]ref, error) {
		if err := mutate(c); err != nil {
			return nil, err
		}
		return []ref{{store.KindApiKey, name}}, nil
	})
	if err != nil {
		return nil, nil, s.rpcError(ctx, op, err)
	}
	s.committed(ctx, op, res)
	out, err := present(res.readBack[ref{store.KindApiKey, name}])
	if err != nil {
		return nil, nil, s.rpcError(ctx, op, err)
	}
	return out.(*metamcpv1.ApiKey), res, nil
}

// CreateApiKey creates an API key and returns it, once, in clear text; only
// its SHA-256 and first characters are stored.
func (s *Service) CreateApiKey(ctx context.Context, req *metamcpv1.CreateApiKeyRequest) (*metamcpv1.CreateApiKeyResponse, error) {
	const op = "create ApiKey"
	k, err := inputAPIKey(req.GetApiKey())
	if err != nil {
		return nil, s.rpcError(ctx, op, err)
	}
	if err := checkExpiry(store.KindApiKey, k.GetName(), k.GetExpireTime(), s.now()); err != nil {
		return nil, s.rpcError(ctx, op, err)
	}
	key, shown, err := newCredential(APIKeyPrefix)
	if err != nil {
		return nil, s.rpcError(ctx, op, err)
	}
	k.KeyHash, k.KeyPrefix = auth.HashToken(key), shown
	out, _, err := s.keyOp(ctx, op, k.GetName(), func(c *config) error {
		if c.get(store.KindApiKey, k.GetName()) != nil {
			return alreadyExists(store.KindApiKey, k.GetName())
		}
		if err := checkKeyEndpoints(c, k); err != nil {
			return err
		}
		c.put(store.KindApiKey, proto.CloneOf(k))
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &metamcpv1.CreateApiKeyResponse{ApiKey: out, Key: key}, nil
}

// GetApiKey returns one API key, without its hash.
func (s *Service) GetApiKey(ctx context.Context, req *metamcpv1.GetApiKeyRequest) (*metamcpv1.ApiKey, error) {
	return typed[*metamcpv1.ApiKey](s.getResource(ctx, store.KindApiKey, req.GetName()))
}

// ListApiKeys returns every API key (revoked ones too), sorted by name.
func (s *Service) ListApiKeys(ctx context.Context, _ *metamcpv1.ListApiKeysRequest) (*metamcpv1.ListApiKeysResponse, error) {
	list, err := s.listResources(ctx, store.KindApiKey)
	if err != nil {
		return nil, err
	}
	return &metamcpv1.ListApiKeysResponse{ApiKeys: asList[*metamcpv1.ApiKey](list)}, nil
}

// UpdateApiKey replaces an API key's description, principal, endpoints and
// expiry; the key itself and its revocation stay.
func (s *Service) UpdateApiKey(ctx context.Context, req *metamcpv1.UpdateApiKeyRequest) (*metamcpv1.ApiKey, error) {
	const op = "update ApiKey"
	in, err := inputAPIKey(req.GetApiKey())
	if err != nil {
		return nil, s.rpcError(ctx, op, err)
	}
	out, _, err := s.keyOp(ctx, op, in.GetName(), func(c *config) error {
		prev, _ := c.get(store.KindApiKey, in.GetName()).(*metamcpv1.ApiKey)
		if prev == nil {
			return notFound(store.KindApiKey, in.GetName())
		}
		// An expiry already stored may have passed; only a new one must be
		// in the future.
		if !proto.Equal(prev.GetExpireTime(), in.GetExpireTime()) {
			if err := checkExpiry(store.KindApiKey, in.GetName(), in.GetExpireTime(), s.now()); err != nil {
				return err
			}
		}
		if err := checkKeyEndpoints(c, in); err != nil {
			return err
		}
		k := proto.CloneOf(in)
		k.KeyHash, k.KeyPrefix, k.RevokeTime = prev.GetKeyHash(), prev.GetKeyPrefix(), prev.GetRevokeTime()
		c.put(store.KindApiKey, k)
		return nil
	})
	return out, err
}

// DeleteApiKey deletes an API key.
func (s *Service) DeleteApiKey(ctx context.Context, req *metamcpv1.DeleteApiKeyRequest) (*metamcpv1.DeleteApiKeyResponse, error) {
	rev, err := s.deleteResource(ctx, store.KindApiKey, req.GetName())
	if err != nil {
		return nil, err
	}
	return &metamcpv1.DeleteApiKeyResponse{Revision: rev}, nil
}

// RevokeApiKey stops an API key and keeps its record. Revoking a revoked key
// changes nothing.
func (s *Service) RevokeApiKey(ctx context.Context, req *metamcpv1.RevokeApiKeyRequest) (*metamcpv1.ApiKey, error) {
	const op = "revoke ApiKey"
	name := req.GetName()
	if err := checkName(store.KindApiKey, name); err != nil {
		return nil, s.rpcError(ctx, op, err)
	}
	out, _, err := s.keyOp(ctx, op, name, func(c *config) error {
		prev, _ := c.get(store.KindApiKey, name).(*metamcpv1.ApiKey)
		if prev == nil {
			return notFound(store.KindApiKey, name)
		}
		if prev.GetRevokeTime() != nil {
			return nil
		}
		k := proto.CloneOf(prev)
		k.RevokeTime = timestamppb.New(s.now())
		c.put(store.KindApiKey, k)
		return nil
	})
	return out, err
}

// tokenOp runs one write of tokens (which are not part of the config: no
// validation) and returns the token as read back.
func (s *Service) tokenOp(ctx context.Context, op, name string, mutate func(c *config) error) (*metamcpv1.Token, error) {
	res, err := s.write(ctx, writeOptions{kinds: []store.Kind{store.KindToken}}, func(ctx context.Context, c *config, _ store.ReadTx) ([]ref, error) {
		if err := mutate(c); err != nil {
			return nil, err
		}
		return []ref{{store.KindToken, name}}, nil
	})
	if err != nil {
		return nil, s.rpcError(ctx, op, err)
	}
	s.committed(ctx, op, res)
	out, err := present(res.readBack[ref{store.KindToken, name}])
	if err != nil {
		return nil, s.rpcError(ctx, op, err)
	}
	return out.(*metamcpv1.Token), nil
}

// CreateToken creates a control-plane token and returns it, once, in clear
// text; only its SHA-256 and first characters are stored.
func (s *Service) CreateToken(ctx context.Context, req *metamcpv1.CreateTokenRequest) (*metamcpv1.CreateTokenResponse, error) {
	const op = "create Token"
	in := req.GetToken()
	if in == nil {
		return nil, s.rpcError(ctx, op, invalid(store.KindToken, "", "token", "token is required"))
	}
	t := &metamcpv1.Token{
		Name:        in.GetName(),
		Description: in.GetDescription(),
		Scope:       in.GetScope(),
		ExpireTime:  proto.CloneOf(in.GetExpireTime()),
	}
	if v := snapshot.ValidateResource(t); len(v) > 0 {
		return nil, s.rpcError(ctx, op, &snapshot.Error{Violations: v})
	}
	if t.GetName() == auth.BootstrapName {
		return nil, s.rpcError(ctx, op, invalid(store.KindToken, t.GetName(), "name", "%q names the bootstrap admin token: pick another name", auth.BootstrapName))
	}
	if err := checkExpiry(store.KindToken, t.GetName(), t.GetExpireTime(), s.now()); err != nil {
		return nil, s.rpcError(ctx, op, err)
	}
	secret, shown, err := newCredential(TokenPrefix)
	if err != nil {
		return nil, s.rpcError(ctx, op, err)
	}
	t.TokenHash, t.TokenPrefix = auth.HashToken(secret), shown
	out, err := s.tokenOp(ctx, op, t.GetName(), func(c *config) error {
		if c.get(store.KindToken, t.GetName()) != nil {
			return alreadyExists(store.KindToken, t.GetName())
		}
		c.put(store.KindToken, proto.CloneOf(t))
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &metamcpv1.CreateTokenResponse{Token: out, Secret: secret}, nil
}

// ListTokens returns every token (revoked ones too), without hashes.
func (s *Service) ListTokens(ctx context.Context, _ *metamcpv1.ListTokensRequest) (*metamcpv1.ListTokensResponse, error) {
	list, err := s.listResources(ctx, store.KindToken)
	if err != nil {
		return nil, err
	}
	return &metamcpv1.ListTokensResponse{Tokens: asList[*metamcpv1.Token](list)}, nil
}

// RevokeToken stops a token at once and keeps its record. Revoking a revoked
// token changes nothing.
func (s *Service) RevokeToken(ctx context.Context, req *metamcpv1.RevokeTokenRequest) (*metamcpv1.Token, error) {
	const op = "revoke Token"
	name := req.GetName()
	if err := checkName(store.KindToken, name); err != nil {
		return nil, s.rpcError(ctx, op, err)
	}
	return s.tokenOp(ctx, op, name, func(c *config) error {
		prev, _ := c.get(store.KindToken, name).(*metamcpv1.Token)
		if prev == nil {
			return notFound(store.KindToken, name)
		}
		if prev.GetRevokeTime() != nil {
			return nil
		}
		t := proto.CloneOf(prev)
		t.RevokeTime = timestamppb.New(s.now())
		c.put(store.KindToken, t)
		return nil
	})
}
