// Package secret seals secret config values (upstream tokens, headers,
// environment variables) at rest with AES-256-GCM, and loads the key that
// does it.
//
// A sealed value is bound to where it sits by its additional authenticated
// data (for example "Server/github/stdio.env/GITHUB_TOKEN"): a ciphertext
// copied into another field or resource fails to open.
package secret

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// KeySize is the length of a key in bytes (AES-256).
const KeySize = 32

// version1 starts every value sealed by this version of the package: AES-256-GCM
// with a random 96-bit nonce.
const version1 byte = 1

// ErrDecrypt is returned (wrapped) by Open when a sealed value cannot be
// authenticated: the key is not the one that sealed it, the value was moved
// to another field, or it was altered.
var ErrDecrypt = errors.New("cannot decrypt stored secret: wrong METAMCP_SECRET_KEY?")

// Sealer encrypts and decrypts secret values with one key. It is safe for
// concurrent use.
type Sealer struct {
	aead cipher.AEAD
}

// New returns a Sealer for a 32-byte key.
func New(key []byte) (*Sealer, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("secret key is %d bytes, want %d", len(key), KeySize)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("secret key: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("secret key: %w", err)
	}
	return &Sealer{aead: aead}, nil
}

// Seal encrypts plaintext bound to aad. The result is a version byte, the
// random nonce and the ciphertext with its tag.
func (s *Sealer) Seal(plaintext, aad []byte) ([]byte, error) {
	ns := s.aead.NonceSize()
	out := make([]byte, 1+ns, 1+ns+len(plaintext)+s.aead.Overhead())
	out[0] = version1
	if _, err := rand.Read(out[1:]); err != nil {
		return nil, fmt.Errorf("seal secret: read random nonce: %w", err)
	}
	return s.aead.Seal(out, out[1:], plaintext, aad), nil
}

// Open decrypts a value made by Seal with the same aad. It fails with an
// error wrapping ErrDecrypt when the key or aad differ.
func (s *Sealer) Open(sealed, aad []byte) ([]byte, error) {
	ns := s.aead.NonceSize()
	if len(sealed) == 0 {
		return nil, errors.New("cannot decrypt stored secret: it is empty")
	}
	if sealed[0] != version1 {
		return nil, fmt.Errorf("cannot decrypt stored secret: unknown format version %d (written by a newer metamcp?)", sealed[0])
	}
	if len(sealed) < 1+ns+s.aead.Overhead() {
		return nil, errors.New("cannot decrypt stored secret: it is truncated")
	}
	plain, err := s.aead.Open(nil, sealed[1:1+ns], sealed[1+ns:], aad)
	if err != nil {
		return nil, ErrDecrypt
	}
	return plain, nil
}

// GenerateKey returns a fresh random key.
func GenerateKey() ([]byte, error) {
	key := make([]byte, KeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("generate secret key: %w", err)
	}
	return key, nil
}

// ParseKey decodes a key written as 64 hex characters or as base64 (standard
// or URL alphabet, with or without padding). Surrounding space is ignored.
func ParseKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, errors.New("secret key is empty")
	}
	if len(s) == 2*KeySize {
		if key, err := hex.DecodeString(s); err == nil {
			return key, nil
		}
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		key, err := enc.DecodeString(s)
		if err != nil {
			continue
		}
		if len(key) != KeySize {
			return nil, fmt.Errorf("secret key decodes to %d bytes, want %d", len(key), KeySize)
		}
		return key, nil
	}
	return nil, fmt.Errorf("secret key is neither base64 nor %d hex characters", 2*KeySize)
}

// LoadKey returns the key from envValue (the value of METAMCP_SECRET_KEY) or,
// when that is empty, from the file at filePath. Setting both is an error, so
// that it is never unclear which key encrypts the secrets.
func LoadKey(envValue, filePath string) ([]byte, error) {
	switch {
	case envValue != "" && filePath != "":
		return nil, errors.New("both METAMCP_SECRET_KEY and a key file are set: use one")
	case envValue != "":
		key, err := ParseKey(envValue)
		if err != nil {
			return nil, fmt.Errorf("METAMCP_SECRET_KEY: %w", err)
		}
		return key, nil
	case filePath != "":
		b, err := os.ReadFile(filePath)
		if err != nil {
			return nil, fmt.Errorf("read secret key: %w", err)
		}
		key, err := ParseKey(string(b))
		if err != nil {
			return nil, fmt.Errorf("secret key file %s: %w", filePath, err)
		}
		return key, nil
	default:
		return nil, errors.New("no secret key: set METAMCP_SECRET_KEY or pass a key file")
	}
}

// LoadOrCreateKeyFile returns the key in the file at path, creating the file
// (mode 0600, its directory 0700) with a fresh random base64 key when it does
// not exist. `metamcp dev` uses it so a first run needs no setup and later runs
// can read the secrets stored before.
func LoadOrCreateKeyFile(path string) ([]byte, error) {
	key, err := readKeyFile(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return key, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create secret key file: %w", err)
	}
	key, err = GenerateKey()
	if err != nil {
		return nil, err
	}
	// Write to a temporary file and link it into place, so a concurrent reader
	// never sees a half-written key and a concurrent creator loses cleanly.
	tmp, err := os.CreateTemp(filepath.Dir(path), ".secret-key-*")
	if err != nil {
		return nil, fmt.Errorf("create secret key file: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("create secret key file: %w", err)
	}
	if _, err := tmp.WriteString(base64.StdEncoding.EncodeToString(key) + "\n"); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("write secret key file: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("write secret key file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("write secret key file: %w", err)
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return readKeyFile(path) // another process created it first
		}
		return nil, fmt.Errorf("create secret key file: %w", err)
	}
	return key, nil
}

func readKeyFile(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		return nil, fmt.Errorf("read secret key file: %w", err)
	}
	key, err := ParseKey(string(b))
	if err != nil {
		return nil, fmt.Errorf("secret key file %s: %w", path, err)
	}
	return key, nil
}
