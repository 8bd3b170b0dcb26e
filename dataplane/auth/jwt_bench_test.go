package auth

import (
	"context"
	"fmt"
	"testing"
	"time"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/test/fixtures/oidcissuer"
)

// benchEndpoint is an endpoint of a running issuer with its keys loaded.
func benchEndpoint(b *testing.B, cacheSize int) (*oidcissuer.Issuer, *Verifier) {
	b.Helper()
	iss := oidcissuer.Start(b, oidcissuer.Options{})
	opts := testOptions()
	opts.CacheSize = cacheSize
	v := NewVerifiers(opts)
	b.Cleanup(v.Close)
	m, err := v.Update(map[string]*metamcpv1.JWTAuth{"ep": {
		Issuer: iss.URL(), Audiences: []string{testAudience}, JwksUrl: iss.JWKSURL(),
		RequiredScopes: []string{"mcp:tools"}, GroupsClaim: "groups",
	}})
	if err != nil {
		b.Fatal(err)
	}
	c := m["ep"]
	deadline := time.Now().Add(10 * time.Second)
	for !c.Ready() {
		if time.Now().After(deadline) {
			b.Fatal("keys not loaded")
		}
		time.Sleep(5 * time.Millisecond)
	}
	return iss, c
}

// cpuPerOp reports the process's CPU time per operation (cpu-ns/op):
// on a shared machine wall time per op says little, CPU time more.
func cpuPerOp(b *testing.B) func() {
	start, ok := processCPU()
	return func() {
		if end, ok2 := processCPU(); ok && ok2 && b.N > 0 {
			b.ReportMetric(float64(end-start)/float64(b.N), "cpu-ns/op")
		}
	}
}

func benchClaims(iss *oidcissuer.Issuer, sub string) map[string]any {
	cl := iss.Claims(sub, testAudience, time.Hour)
	cl["scope"] = "openid mcp:tools"
	cl["groups"] = []string{"eng", "ops"}
	cl["email"] = sub + "@example.com"
	return cl
}

// BenchmarkVerifyCached is a token seen before: a hash, a map lookup and
// the per-request checks.
func BenchmarkVerifyCached(b *testing.B) {
	iss, c := benchEndpoint(b, 10_000)
	tok := iss.Mint(benchClaims(iss, "alice"))
	ctx := context.Background()
	res := []string{testResource}
	if _, err := c.Verify(ctx, tok, res, time.Now()); err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	b.ReportAllocs()
	defer cpuPerOp(b)()
	for b.Loop() {
		if _, err := c.Verify(ctx, tok, res, now); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifiersVerifyCached is the gateway's path: the Verifier found
// by the settings' address, then a cached token.
func BenchmarkVerifiersVerifyCached(b *testing.B) {
	iss, c := benchEndpoint(b, 10_000)
	v := c.reg
	var cfg *metamcpv1.JWTAuth
	for k, x := range *v.byConfig.Load() {
		if x == c {
			cfg = k
		}
	}
	tok := iss.Mint(benchClaims(iss, "alice"))
	res := []string{testResource}
	if _, err := v.Verify(context.Background(), tok, cfg, res); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	defer cpuPerOp(b)()
	for b.Loop() {
		if _, err := v.Verify(context.Background(), tok, cfg, res); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyCachedParallel is the same from every core at once.
func BenchmarkVerifyCachedParallel(b *testing.B) {
	iss, c := benchEndpoint(b, 10_000)
	toks := make([]string, 64)
	for i := range toks {
		toks[i] = iss.Mint(benchClaims(iss, fmt.Sprint("user", i)), oidcissuer.WithKey(iss.ECKey()))
		if _, err := c.Verify(context.Background(), toks[i], nil, time.Now()); err != nil {
			b.Fatal(err)
		}
	}
	now := time.Now()
	b.ReportAllocs()
	b.ResetTimer()
	defer cpuPerOp(b)()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, err := c.Verify(context.Background(), toks[i%len(toks)], nil, now); err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
}

// BenchmarkVerifyFirstSight is a token never seen: parse, claims, signature.
// The cache holds one token per shard and the tokens cycle, so every call
// misses.
func BenchmarkVerifyFirstSight(b *testing.B) {
	for _, alg := range []string{"RS256", "ES256"} {
		b.Run(alg, func(b *testing.B) {
			iss, c := benchEndpoint(b, cacheShards)
			key := iss.SigningKey()
			if alg == "ES256" {
				key = iss.ECKey()
			}
			toks := make([]string, 128)
			for i := range toks {
				toks[i] = iss.Mint(benchClaims(iss, fmt.Sprint("user", i)), oidcissuer.WithKey(key))
			}
			ctx := context.Background()
			now := time.Now()
			before := c.reg.verifications.Load()
			b.ReportAllocs()
			done := cpuPerOp(b)
			i := 0
			for b.Loop() {
				if _, err := c.Verify(ctx, toks[i%len(toks)], nil, now); err != nil {
					b.Fatal(err)
				}
				i++
			}
			done()
			if got := c.reg.verifications.Load() - before; got < int64(i)*9/10 {
				b.Fatalf("%d signature checks for %d calls: the cache answered", got, i)
			}
		})
	}
}
