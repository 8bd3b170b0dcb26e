package secret

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func testKey(t *testing.T) []byte {
	t.Helper()
	key, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func TestSealOpen(t *testing.T) {
	key := testKey(t)
	s, err := New(key)
	if err != nil {
		t.Fatal(err)
	}
	aad := []byte("Server/github/stdio.env/GITHUB_TOKEN")
	plain := []byte("ghp_very_secret")

	sealed, err := s.Seal(plain, aad)
	if err != nil {
		t.Fatal(err)
	}
	if sealed[0] != version1 {
		t.Errorf("version byte = %d, want %d", sealed[0], version1)
	}
	if bytes.Contains(sealed, plain) {
		t.Error("sealed value contains the plaintext")
	}
	again, err := s.Seal(plain, aad)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(sealed, again) {
		t.Error("two seals of one value are equal: nonce not random")
	}
	got, err := s.Open(sealed, aad)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, plain) {
		t.Errorf("Open = %q, want %q", got, plain)
	}

	other, err := New(testKey(t))
	if err != nil {
		t.Fatal(err)
	}
	tampered := bytes.Clone(sealed)
	tampered[len(tampered)-1] ^= 1
	for _, tc := range []struct {
		name   string
		sealer *Sealer
		sealed []byte
		aad    []byte
		want   string
	}{
		{"wrong key", other, sealed, aad, "wrong METAMCP_SECRET_KEY"},
		{"moved to another field", s, sealed, []byte("Server/github/stdio.env/OTHER"), "wrong METAMCP_SECRET_KEY"},
		{"tampered", s, tampered, aad, "wrong METAMCP_SECRET_KEY"},
		{"empty", s, nil, aad, "empty"},
		{"truncated", s, sealed[:10], aad, "truncated"},
		{"unknown version", s, append([]byte{9}, sealed[1:]...), aad, "version 9"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.sealer.Open(tc.sealed, tc.aad)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Open error = %v, want one containing %q", err, tc.want)
			}
		})
	}
	if _, err := other.Open(sealed, aad); !errors.Is(err, ErrDecrypt) {
		t.Errorf("wrong key: error %v is not ErrDecrypt", err)
	}
}

func TestNewRejectsShortKey(t *testing.T) {
	if _, err := New(make([]byte, 16)); err == nil {
		t.Fatal("New accepted a 16-byte key")
	}
}

func TestParseKey(t *testing.T) {
	key := testKey(t)
	for _, tc := range []struct {
		name    string
		in      string
		wantErr string
	}{
		{"hex", hex.EncodeToString(key), ""},
		{"hex upper", strings.ToUpper(hex.EncodeToString(key)), ""},
		{"base64 std", base64.StdEncoding.EncodeToString(key), ""},
		{"base64 raw std", base64.RawStdEncoding.EncodeToString(key), ""},
		{"base64 url", base64.URLEncoding.EncodeToString(key), ""},
		{"base64 raw url", base64.RawURLEncoding.EncodeToString(key), ""},
		{"surrounding space", "  " + base64.StdEncoding.EncodeToString(key) + "\n", ""},
		{"empty", "", "empty"},
		{"too short", base64.StdEncoding.EncodeToString(key[:16]), "16 bytes"},
		{"garbage", "not a key!", "neither base64"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseKey(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ParseKey error = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, key) {
				t.Errorf("ParseKey = %x, want %x", got, key)
			}
		})
	}
}

func TestLoadKey(t *testing.T) {
	key := testKey(t)
	enc := base64.StdEncoding.EncodeToString(key)
	dir := t.TempDir()
	file := filepath.Join(dir, "key")
	if err := os.WriteFile(file, []byte(hex.EncodeToString(key)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, env, file, wantErr string
	}{
		{name: "env", env: enc},
		{name: "file", file: file},
		{name: "both", env: enc, file: file, wantErr: "use one"},
		{name: "neither", wantErr: "no secret key"},
		{name: "missing file", file: filepath.Join(dir, "nope"), wantErr: "read secret key"},
		{name: "bad env", env: "xyz", wantErr: "METAMCP_SECRET_KEY"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := LoadKey(tc.env, tc.file)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("LoadKey error = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, key) {
				t.Errorf("LoadKey = %x, want %x", got, key)
			}
		})
	}
}

func TestLoadOrCreateKeyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "secret.key")

	// Concurrent first runs agree on one key.
	const n = 8
	keys := make([][]byte, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			keys[i], errs[i] = LoadOrCreateKeyFile(path)
		}()
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("LoadOrCreateKeyFile: %v", errs[i])
		}
		if !bytes.Equal(keys[i], keys[0]) {
			t.Fatalf("concurrent creators got different keys")
		}
	}
	if len(keys[0]) != KeySize {
		t.Fatalf("key is %d bytes", len(keys[0]))
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if mode := fi.Mode().Perm(); mode != 0o600 {
		t.Errorf("key file mode = %o, want 600", mode)
	}
	again, err := LoadOrCreateKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again, keys[0]) {
		t.Error("second load returned a different key")
	}
	entries, err := os.ReadDir(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries, want only the key file (temporary files left behind?)", len(entries))
	}

	bad := filepath.Join(t.TempDir(), "bad.key")
	if err := os.WriteFile(bad, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateKeyFile(bad); err == nil {
		t.Error("LoadOrCreateKeyFile accepted a file holding garbage")
	}
}
