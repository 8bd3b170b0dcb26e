package admin

import (
	"context"
	"slices"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/controlplane/store"
	"github.com/metamcp/metamcp/pkg/gcra"
)

// RateLimits is where the data planes count rate limits, for
// `mmctl ratelimit status` and `reset`: the Redis they share (with their key
// prefix), or `metamcp dev`'s in-process store.
type RateLimits struct {
	Store gcra.Store
	// Prefix is the data planes' Redis prefix (--redis-prefix).
	Prefix string
	// Backend names the store: "redis" or "in-process".
	Backend string
}

// SetRateLimits gives the service access to the rate-limit buckets. Without
// it, GetRateLimitStatus and ResetRateLimit answer FAILED_PRECONDITION.
func (s *Service) SetRateLimits(rl RateLimits) { s.rateLimits = rl }

// GetRateLimitStatus implements AdminService.
func (s *Service) GetRateLimitStatus(ctx context.Context, req *metamcpv1.GetRateLimitStatusRequest) (*metamcpv1.GetRateLimitStatusResponse, error) {
	p, keys, err := s.rateLimitBuckets(ctx, "ratelimit status", req.GetPolicy(), req.GetKey(), req.GetEndpoint())
	if err != nil {
		return nil, err
	}
	limit := gcra.PolicyLimit(p)
	out := &metamcpv1.GetRateLimitStatusResponse{Policy: p, Backend: s.rateLimits.Backend}
	for _, k := range keys {
		r, err := s.rateLimits.Store.Peek(ctx, k.key, limit)
		if err != nil {
			return nil, status.Errorf(codes.Unavailable, "ratelimit status: cannot read the bucket in %s: %v", s.rateLimits.Backend, err)
		}
		out.Buckets = append(out.Buckets, &metamcpv1.RateLimitBucket{
			Endpoint: k.endpoint, Key: k.subject, Remaining: int64(r.Remaining), Burst: int64(limit.Burst),
			RetryAfter: durationpb.New(r.RetryAfter), ResetAfter: durationpb.New(r.ResetAfter),
		})
	}
	return out, nil
}

// ResetRateLimit implements AdminService.
func (s *Service) ResetRateLimit(ctx context.Context, req *metamcpv1.ResetRateLimitRequest) (*metamcpv1.ResetRateLimitResponse, error) {
	_, keys, err := s.rateLimitBuckets(ctx, "ratelimit reset", req.GetPolicy(), req.GetKey(), req.GetEndpoint())
	if err != nil {
		return nil, err
	}
	out := &metamcpv1.ResetRateLimitResponse{}
	for _, k := range keys {
		if err := s.rateLimits.Store.Reset(ctx, k.key); err != nil {
			return nil, status.Errorf(codes.Unavailable, "ratelimit reset: %v", err)
		}
		out.Endpoints = append(out.Endpoints, k.endpoint)
	}
	s.log.InfoContext(ctx, "rate-limit buckets reset", "policy", req.GetPolicy(), "key", req.GetKey(), "endpoints", out.Endpoints)
	return out, nil
}

type bucketKey struct {
	endpoint, subject, key string
}

// rateLimitBuckets finds the policy and the keys of its buckets for key
// (principal, API key name or client address, as the policy counts) at
// endpoint, or at every endpoint that lists the policy.
func (s *Service) rateLimitBuckets(ctx context.Context, op, policy, key, endpoint string) (*metamcpv1.RateLimitPolicy, []bucketKey, error) {
	if s.rateLimits.Store == nil {
		return nil, nil, status.Errorf(codes.FailedPrecondition, "%s: this control plane cannot reach the rate-limit buckets: start it with --redis-url (the data planes' Redis) and --redis-prefix", op)
	}
	if policy == "" {
		return nil, nil, status.Errorf(codes.InvalidArgument, "%s: name the policy", op)
	}
	p, err := typed[*metamcpv1.RateLimitPolicy](s.getResource(ctx, store.KindRateLimitPolicy, policy))
	if err != nil {
		return nil, nil, err
	}
	global := p.GetKey() == metamcpv1.RateLimitKey_RATE_LIMIT_KEY_GLOBAL
	if key == "" && !global {
		what := map[metamcpv1.RateLimitKey]string{
			metamcpv1.RateLimitKey_RATE_LIMIT_KEY_API_KEY:   "the API key's name",
			metamcpv1.RateLimitKey_RATE_LIMIT_KEY_CLIENT_IP: "the client address",
		}[p.GetKey()]
		if what == "" {
			what = "the principal"
		}
		return nil, nil, status.Errorf(codes.InvalidArgument, "%s: policy %q counts per caller: say whose bucket (%s, with --principal)", op, policy, what)
	}
	eps, err := s.listResources(ctx, store.KindEndpoint)
	if err != nil {
		return nil, nil, err
	}
	var subject string
	switch p.GetKey() {
	case metamcpv1.RateLimitKey_RATE_LIMIT_KEY_API_KEY:
		subject = gcra.Subject(p.GetKey(), "", key, "")
	default:
		subject = gcra.Subject(p.GetKey(), key, "", key)
	}
	var out []bucketKey
	for _, r := range eps {
		ep := r.(*metamcpv1.Endpoint)
		if endpoint != "" && ep.GetName() != endpoint || !slices.Contains(ep.GetRateLimits(), policy) {
			continue
		}
		out = append(out, bucketKey{endpoint: ep.GetName(), subject: subject, key: gcra.Key(s.rateLimits.Prefix, ep.GetName(), policy, subject)})
	}
	if len(out) == 0 {
		if endpoint != "" {
			return nil, nil, status.Errorf(codes.NotFound, "%s: endpoint %q does not list policy %q (or does not exist)", op, endpoint, policy)
		}
		return nil, nil, status.Errorf(codes.FailedPrecondition, "%s: no endpoint lists policy %q, so it counts nothing: attach it with mmctl create endpoint --rate-limit", op, policy)
	}
	return p, out, nil
}
