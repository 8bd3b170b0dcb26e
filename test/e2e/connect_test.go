package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestTLS reaches a control plane that serves TLS: with the CA it works;
// without TLS, or without trusting the certificate, the error says what to
// check.
func TestTLS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writeSelfSignedCert(t, certFile, keyFile)
	cp := startControlPlane(t, "--tls-cert", certFile, "--tls-key", keyFile)

	env := []string{"METAMCP_ADDR=" + cp.addr, "METAMCP_TOKEN=" + cp.token}
	r := runMmctl(t, env, "", "--tls-ca", certFile, "revision")
	if r.code != 0 || r.stdout != "0\n" {
		t.Errorf("--tls-ca:\n%s", r)
	}
	r = runMmctl(t, append(env, "METAMCP_TLS_CA="+certFile), "", "create", "server", "x", "--stdio", "npx x")
	if r.code != 0 {
		t.Errorf("METAMCP_TLS_CA:\n%s", r)
	}

	r = runMmctl(t, env, "", "revision")
	checkFailure(t, r, 1, []string{"cannot reach the control plane at " + cp.addr, "--tls"})
	r = runMmctl(t, env, "", "--tls", "revision")
	checkFailure(t, r, 1, []string{"cannot reach the control plane at " + cp.addr, "--tls-ca"})
	r = runMmctl(t, env, "", "--tls-ca", filepath.Join(dir, "missing.pem"), "revision")
	checkFailure(t, r, 1, []string{"missing.pem"})
	r = runMmctl(t, env, "", "--tls-ca", keyFile, "revision")
	checkFailure(t, r, 1, []string{"no PEM certificate"})
}

// writeSelfSignedCert writes a self-signed certificate for 127.0.0.1 (its own
// CA) and its key.
func writeSelfSignedCert(t *testing.T, certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "metamcp e2e"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := writeFile(certFile, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))); err != nil {
		t.Fatal(err)
	}
	if err := writeFile(keyFile, string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}))); err != nil {
		t.Fatal(err)
	}
}

// TestConfigFileAndCompletion reads connection settings from the config file
// and completes kinds and resource names the way a shell asks cobra.
func TestConfigFileAndCompletion(t *testing.T) {
	t.Parallel()
	cp := startControlPlane(t)
	cp.ok(t, "create", "server", "github", "--stdio", "npx x")
	cp.ok(t, "create", "server", "gitlab", "--stdio", "npx y")
	cp.ok(t, "create", "server", "sentry", "--stdio", "npx z")

	// $XDG_CONFIG_HOME/metamcp/mmctl.yaml, no environment.
	xdg := t.TempDir()
	if err := mkdirAll(filepath.Join(xdg, "metamcp")); err != nil {
		t.Fatal(err)
	}
	if err := writeFile(filepath.Join(xdg, "metamcp", "mmctl.yaml"), "addr: "+cp.addr+"\ntoken: "+cp.token+"\n"); err != nil {
		t.Fatal(err)
	}
	r := runMmctl(t, []string{"XDG_CONFIG_HOME=" + xdg}, "", "get", "servers")
	if r.code != 0 || len(lines(r.stdout)) != 4 {
		t.Errorf("settings from the config file:\n%s", r)
	}
	// The environment beats the file.
	r = runMmctl(t, []string{"XDG_CONFIG_HOME=" + xdg, "METAMCP_TOKEN=wrong"}, "", "get", "servers")
	checkFailure(t, r, 1, []string{"refused the token"})

	// Completion scripts, and dynamic completion of names.
	for _, shell := range []string{"bash", "zsh", "fish", "powershell"} {
		if r := runMmctl(t, nil, "", "completion", shell); r.code != 0 || len(r.stdout) < 100 {
			t.Errorf("completion %s:\n%s", shell, r)
		}
	}
	env := []string{"METAMCP_ADDR=" + cp.addr, "METAMCP_TOKEN=" + cp.token}
	r = runMmctl(t, env, "", "__complete", "get", "")
	if !strings.Contains(r.stdout, "servers\n") || !strings.Contains(r.stdout, "dataplanes\n") {
		t.Errorf("completion of kinds:\n%s", r)
	}
	r = runMmctl(t, env, "", "__complete", "describe", "srv", "git")
	if got := lines(r.stdout); len(got) != 3 || got[0] != "github" || got[1] != "gitlab" || !strings.HasPrefix(got[2], ":") {
		t.Errorf("completion of server names:\n%s", r)
	}
	r = runMmctl(t, []string{"XDG_CONFIG_HOME=" + xdg}, "", "__complete", "delete", "server", "")
	if got := lines(r.stdout); len(got) != 4 || got[2] != "sentry" {
		t.Errorf("completion of names with the config file's settings:\n%s", r)
	}
}
