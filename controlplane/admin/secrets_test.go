package admin_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/controlplane/store"
)

var placeholder = &metamcpv1.Value{Secret: true, Set: true}

func TestSecrets(t *testing.T) {
	forEachStore(t, func(t *testing.T, e *env) {
		c := ctx(t)
		const (
			ghToken = "ghp_clear_text_token_1234"
			bearer  = "bearer_clear_text_5678"
		)
		in := stdioServer("github", map[string]*metamcpv1.Value{
			"GITHUB_TOKEN": secretValue(ghToken),
			"LOG_LEVEL":    plainValue("debug"),
		})
		// sealed and set from a client are ignored.
		in.GetStdio().Env["GITHUB_TOKEN"].Sealed = []byte("forged")
		in.GetStdio().Env["LOG_LEVEL"].Set = true
		created := mustCreateServer(t, e, in)
		env := created.GetStdio().GetEnv()
		if !proto.Equal(env["GITHUB_TOKEN"], placeholder) {
			t.Errorf("created secret = %v, want placeholder", env["GITHUB_TOKEN"])
		}
		if !proto.Equal(env["LOG_LEVEL"], plainValue("debug")) {
			t.Errorf("created plain value = %v", env["LOG_LEVEL"])
		}
		http := mustCreateServer(t, e, httpServer("remote", bearer, map[string]*metamcpv1.Value{"X-Api-Key": secretValue("hdr_secret_9")}))
		if !proto.Equal(http.GetStreamableHttp().GetBearerToken(), placeholder) {
			t.Errorf("bearer token read back as %v, want placeholder (always a secret)", http.GetStreamableHttp().GetBearerToken())
		}

		// Reads never show clear text or sealed bytes.
		got, err := e.client.GetServer(c, &metamcpv1.GetServerRequest{Name: "github"})
		if err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(got.GetStdio().GetEnv()["GITHUB_TOKEN"], placeholder) {
			t.Errorf("get secret = %v", got.GetStdio().GetEnv()["GITHUB_TOKEN"])
		}
		list, err := e.client.ListServers(c, &metamcpv1.ListServersRequest{})
		if err != nil {
			t.Fatal(err)
		}
		exp, err := e.client.Export(c, &metamcpv1.ExportRequest{})
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range []proto.Message{got, list, exp} {
			b, _ := proto.Marshal(m)
			for _, s := range []string{ghToken, bearer, "hdr_secret_9"} {
				if bytes.Contains(b, []byte(s)) {
					t.Errorf("%T carries secret %q", m, s)
				}
			}
		}

		// The store holds only sealed values.
		for _, name := range []string{"github", "remote"} {
			rec := record(t, e, store.KindServer, name)
			for _, s := range []string{ghToken, bearer, "hdr_secret_9"} {
				if bytes.Contains(rec.Data, []byte(s)) {
					t.Errorf("stored record of %s contains the clear text %q", name, s)
				}
			}
			if bytes.Contains(rec.Data, []byte("forged")) {
				t.Errorf("stored record kept a client's sealed bytes")
			}
		}

		// BuildConfig decrypts.
		cfg, rev, err := e.svc.BuildConfig(c)
		if err != nil {
			t.Fatal(err)
		}
		if rev != revision(t, e) {
			t.Errorf("BuildConfig revision = %d, want %d", rev, revision(t, e))
		}
		secrets := map[string]string{}
		for _, s := range cfg.GetServers() {
			for k, v := range s.GetStdio().GetEnv() {
				secrets[k] = v.GetValue()
				if len(v.GetSealed()) > 0 {
					t.Errorf("BuildConfig: %s still sealed", k)
				}
			}
			if h := s.GetStreamableHttp(); h != nil {
				secrets["bearer"] = h.GetBearerToken().GetValue()
				secrets["X-Api-Key"] = h.GetHeaders()["X-Api-Key"].GetValue()
				if !h.GetBearerToken().GetSecret() {
					t.Error("BuildConfig: bearer token not marked secret")
				}
			}
		}
		want := map[string]string{"GITHUB_TOKEN": ghToken, "LOG_LEVEL": "debug", "bearer": bearer, "X-Api-Key": "hdr_secret_9"}
		for k, v := range want {
			if secrets[k] != v {
				t.Errorf("BuildConfig %s = %q, want %q", k, secrets[k], v)
			}
		}

		// An update with the placeholder keeps the stored value; the same
		// value sent again changes nothing.
		before := revision(t, e)
		upd := proto.Clone(got).(*metamcpv1.Server)
		if _, err := e.client.UpdateServer(c, &metamcpv1.UpdateServerRequest{Server: upd}); err != nil {
			t.Fatalf("update with placeholder: %v", err)
		}
		upd.GetStdio().GetEnv()["GITHUB_TOKEN"] = secretValue(ghToken)
		if _, err := e.client.UpdateServer(c, &metamcpv1.UpdateServerRequest{Server: upd}); err != nil {
			t.Fatalf("update with the same value: %v", err)
		}
		if got := revision(t, e); got != before {
			t.Errorf("unchanged secret bumped the revision %d -> %d", before, got)
		}
		// Another field changes while the placeholder keeps the secret.
		upd.GetStdio().GetEnv()["GITHUB_TOKEN"] = &metamcpv1.Value{Secret: true}
		upd.GetStdio().Args = []string{"--new"}
		if _, err := e.client.UpdateServer(c, &metamcpv1.UpdateServerRequest{Server: upd}); err != nil {
			t.Fatal(err)
		}
		if v := secretOf(t, e, "github", "GITHUB_TOKEN"); v != ghToken {
			t.Errorf("after update with placeholder, secret = %q, want %q", v, ghToken)
		}
		// A new value replaces it.
		upd.GetStdio().GetEnv()["GITHUB_TOKEN"] = secretValue("rotated")
		if _, err := e.client.UpdateServer(c, &metamcpv1.UpdateServerRequest{Server: upd}); err != nil {
			t.Fatal(err)
		}
		if v := secretOf(t, e, "github", "GITHUB_TOKEN"); v != "rotated" {
			t.Errorf("after rotation, secret = %q", v)
		}
		// A placeholder for a key with no stored secret fails.
		upd.GetStdio().GetEnv()["NEW_SECRET"] = &metamcpv1.Value{Secret: true, Set: true}
		_, err = e.client.UpdateServer(c, &metamcpv1.UpdateServerRequest{Server: upd})
		wantInvalid(t, err, `stdio.env["NEW_SECRET"]`)
		if err != nil && !strings.Contains(err.Error(), "secret has no stored value: set value") {
			t.Errorf("error %q does not say to set the value", err)
		}
	})
}

// secretOf returns a server's decrypted env value through BuildConfig.
func secretOf(t *testing.T, e *env, server, key string) string {
	t.Helper()
	cfg, _, err := e.svc.BuildConfig(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range cfg.GetServers() {
		if s.GetName() == server {
			return s.GetStdio().GetEnv()[key].GetValue()
		}
	}
	t.Fatalf("no server %q in BuildConfig", server)
	return ""
}

// TestSealedSecretIsBoundToItsField moves a sealed value to another field in
// the store and checks the control plane refuses to decrypt it.
func TestSealedSecretIsBoundToItsField(t *testing.T) {
	e := newEnv(t, openSQLite(t))
	c := ctx(t)
	mustCreateServer(t, e, stdioServer("a", map[string]*metamcpv1.Value{"ONE": secretValue("1"), "TWO": secretValue("2")}))
	rec := record(t, e, store.KindServer, "a")
	var s metamcpv1.Server
	if err := proto.Unmarshal(rec.Data, &s); err != nil {
		t.Fatal(err)
	}
	env := s.GetStdio().GetEnv()
	env["ONE"], env["TWO"] = env["TWO"], env["ONE"]
	data, _ := proto.Marshal(&s)
	if _, _, err := e.st.Update(c, func(ctx context.Context, tx store.Tx) error {
		return tx.Put(ctx, store.Record{Kind: store.KindServer, Name: "a", Data: data})
	}); err != nil {
		t.Fatal(err)
	}
	_, _, err := e.svc.BuildConfig(c)
	if err == nil || !strings.Contains(err.Error(), "wrong METAMCP_SECRET_KEY") {
		t.Fatalf("BuildConfig with swapped sealed values: error %v", err)
	}
}

func TestAPIKeys(t *testing.T) {
	forEachStore(t, func(t *testing.T, e *env) {
		c := ctx(t)
		mustCreateServer(t, e, stdioServer("fs", nil))
		mustCreateNamespace(t, e, namespace("dev", "fs"))
		mustCreateEndpoint(t, e, endpoint("team", "dev"))

		resp, err := e.client.CreateApiKey(c, &metamcpv1.CreateApiKeyRequest{ApiKey: &metamcpv1.ApiKey{
			Name: "alice", Endpoints: []string{"team"}, ExpireTime: timestamp(time.Now().Add(time.Hour)),
			KeyHash: []byte("forged"), KeyPrefix: "forged",
		}})
		if err != nil {
			t.Fatal(err)
		}
		key := resp.GetKey()
		k := resp.GetApiKey()
		if !strings.HasPrefix(key, "mm_") || len(key) != 3+43 {
			t.Errorf("key %q: want mm_ + 43 base62 characters", key)
		}
		if k.GetKeyPrefix() != key[:7] {
			t.Errorf("key_prefix = %q, want %q", k.GetKeyPrefix(), key[:7])
		}
		if k.GetPrincipal() != "alice" {
			t.Errorf("principal = %q, want the name", k.GetPrincipal())
		}
		if len(k.GetKeyHash()) != 0 {
			t.Error("CreateApiKey returned the key hash")
		}
		if k.GetCreateTime() == nil || k.GetRevision() == 0 {
			t.Errorf("output fields unset: %v", k)
		}
		sum := sha256.Sum256([]byte(key))
		var stored metamcpv1.ApiKey
		if err := proto.Unmarshal(record(t, e, store.KindApiKey, "alice").Data, &stored); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(stored.GetKeyHash(), sum[:]) {
			t.Error("stored key_hash is not the SHA-256 of the key")
		}
		if bytes.Contains(record(t, e, store.KindApiKey, "alice").Data, []byte(key)) {
			t.Error("the store holds the key in clear text")
		}

		// A second key differs; "*" is accepted.
		resp2, err := e.client.CreateApiKey(c, &metamcpv1.CreateApiKeyRequest{ApiKey: &metamcpv1.ApiKey{Name: "bot", Principal: "ci-bot", Endpoints: []string{"*"}}})
		if err != nil {
			t.Fatal(err)
		}
		if resp2.GetKey() == key || resp2.GetApiKey().GetPrincipal() != "ci-bot" {
			t.Errorf("second key: %v", resp2)
		}
		_, err = e.client.CreateApiKey(c, &metamcpv1.CreateApiKeyRequest{ApiKey: &metamcpv1.ApiKey{Name: "bot", Endpoints: []string{"*"}}})
		wantCode(t, err, codes.AlreadyExists)

		// BuildConfig carries usable keys as hashes.
		cfg, _, err := e.svc.BuildConfig(c)
		if err != nil {
			t.Fatal(err)
		}
		if len(cfg.GetApiKeys()) != 2 || !bytes.Equal(cfg.GetApiKeys()[0].GetKeyHash(), sum[:]) {
			t.Errorf("BuildConfig api keys = %v", cfg.GetApiKeys())
		}

		// Update keeps the key; reads never show the hash.
		upd, err := e.client.UpdateApiKey(c, &metamcpv1.UpdateApiKeyRequest{ApiKey: &metamcpv1.ApiKey{Name: "alice", Description: "Alice", Endpoints: []string{"team", "*"}}})
		if err != nil {
			t.Fatal(err)
		}
		if upd.GetKeyPrefix() != key[:7] || upd.GetDescription() != "Alice" || upd.GetExpireTime() != nil || len(upd.GetKeyHash()) != 0 {
			t.Errorf("updated key = %v", upd)
		}
		if err := proto.Unmarshal(record(t, e, store.KindApiKey, "alice").Data, &stored); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(stored.GetKeyHash(), sum[:]) {
			t.Error("update lost the key hash")
		}
		_, err = e.client.UpdateApiKey(c, &metamcpv1.UpdateApiKeyRequest{ApiKey: &metamcpv1.ApiKey{Name: "nope", Endpoints: []string{"*"}}})
		wantCode(t, err, codes.NotFound)

		// Revoke: kept, marked, no longer in the data planes' config.
		rev, err := e.client.RevokeApiKey(c, &metamcpv1.RevokeApiKeyRequest{Name: "alice"})
		if err != nil {
			t.Fatal(err)
		}
		if rev.GetRevokeTime() == nil {
			t.Error("revoke_time unset after RevokeApiKey")
		}
		r := revision(t, e)
		again, err := e.client.RevokeApiKey(c, &metamcpv1.RevokeApiKeyRequest{Name: "alice"})
		if err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(again.GetRevokeTime(), rev.GetRevokeTime()) || revision(t, e) != r {
			t.Error("revoking a revoked key changed it")
		}
		cfg, _, err = e.svc.BuildConfig(c)
		if err != nil {
			t.Fatal(err)
		}
		if len(cfg.GetApiKeys()) != 1 || cfg.GetApiKeys()[0].GetName() != "bot" {
			t.Errorf("BuildConfig after revoke: %v", cfg.GetApiKeys())
		}
		list, err := e.client.ListApiKeys(c, &metamcpv1.ListApiKeysRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if len(list.GetApiKeys()) != 2 {
			t.Errorf("ListApiKeys = %v", list)
		}
		for _, k := range list.GetApiKeys() {
			if len(k.GetKeyHash()) != 0 {
				t.Error("ListApiKeys returned a key hash")
			}
		}
		got, err := e.client.GetApiKey(c, &metamcpv1.GetApiKeyRequest{Name: "alice"})
		if err != nil || len(got.GetKeyHash()) != 0 || got.GetRevokeTime() == nil {
			t.Errorf("GetApiKey = %v, %v", got, err)
		}

		if _, err := e.client.DeleteApiKey(c, &metamcpv1.DeleteApiKeyRequest{Name: "alice"}); err != nil {
			t.Fatal(err)
		}
		_, err = e.client.GetApiKey(c, &metamcpv1.GetApiKeyRequest{Name: "alice"})
		wantCode(t, err, codes.NotFound)
		_, err = e.client.RevokeApiKey(c, &metamcpv1.RevokeApiKeyRequest{Name: "alice"})
		wantCode(t, err, codes.NotFound)
	})
}

func TestTokens(t *testing.T) {
	forEachStore(t, func(t *testing.T, e *env) {
		c := ctx(t)
		resp, err := e.client.CreateToken(c, &metamcpv1.CreateTokenRequest{Token: &metamcpv1.Token{
			Name: "dp", Scope: metamcpv1.TokenScope_TOKEN_SCOPE_SYNC, TokenHash: []byte("forged"),
		}})
		if err != nil {
			t.Fatal(err)
		}
		secret := resp.GetSecret()
		if !strings.HasPrefix(secret, "mmt_") || len(secret) != 4+43 {
			t.Errorf("token %q: want mmt_ + 43 base62 characters", secret)
		}
		tok := resp.GetToken()
		if tok.GetTokenPrefix() != secret[:8] || len(tok.GetTokenHash()) != 0 || tok.GetCreateTime() == nil {
			t.Errorf("created token = %v", tok)
		}
		var stored metamcpv1.Token
		if err := proto.Unmarshal(record(t, e, store.KindToken, "dp").Data, &stored); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256([]byte(secret))
		if !bytes.Equal(stored.GetTokenHash(), sum[:]) {
			t.Error("stored token_hash is not the SHA-256 of the token")
		}
		_, err = e.client.CreateToken(c, &metamcpv1.CreateTokenRequest{Token: &metamcpv1.Token{Name: "dp", Scope: metamcpv1.TokenScope_TOKEN_SCOPE_ADMIN}})
		wantCode(t, err, codes.AlreadyExists)

		list, err := e.client.ListTokens(c, &metamcpv1.ListTokensRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if len(list.GetTokens()) != 1 || len(list.GetTokens()[0].GetTokenHash()) != 0 {
			t.Errorf("ListTokens = %v", list)
		}
		revoked, err := e.client.RevokeToken(c, &metamcpv1.RevokeTokenRequest{Name: "dp"})
		if err != nil || revoked.GetRevokeTime() == nil {
			t.Fatalf("RevokeToken = %v, %v", revoked, err)
		}
		_, err = e.client.RevokeToken(c, &metamcpv1.RevokeTokenRequest{Name: "nope"})
		wantCode(t, err, codes.NotFound)
	})
}
