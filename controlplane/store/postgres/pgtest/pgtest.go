// Package pgtest gives each test its own fresh Postgres database, so tests that
// use the real database run in parallel without seeing each other's data.
//
// The admin connection string comes from METAMCP_TEST_POSTGRES_URL and defaults
// to DefaultAdminURL (a local server with trust authentication).
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// DefaultAdminURL is the admin DSN used when METAMCP_TEST_POSTGRES_URL is unset.
const DefaultAdminURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// EnvAdminURL names the environment variable that overrides DefaultAdminURL.
const EnvAdminURL = "METAMCP_TEST_POSTGRES_URL"

// AdminURL returns the DSN used to create and drop test databases.
func AdminURL() string {
	if v := os.Getenv(EnvAdminURL); v != "" {
		return v
	}
	return DefaultAdminURL
}

// NewDatabase creates a database named metamcp_test_<random hex>, registers a
// cleanup that drops it (WITH (FORCE), so leftover connections do not block
// the drop) and returns a DSN for it. It fails the test, saying how to start
// Postgres, when the server is unreachable; it never skips.
func NewDatabase(t testing.TB) string {
	t.Helper()
	admin := AdminURL()

	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatalf("pgtest: random database name: %v", err)
	}
	name := "metamcp_test_" + hex.EncodeToString(b[:])

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := connect(ctx, admin)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	defer conn.Close(context.Background())
	// The name is generated from hex digits only, so quoting is not needed, but
	// keep it explicit.
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatalf("pgtest: create database %s: %v", name, err)
	}

	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := connect(ctx, admin)
		if err != nil {
			t.Errorf("pgtest: drop database %s: %v", name, err)
			return
		}
		defer conn.Close(context.Background())
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			t.Errorf("pgtest: drop database %s: %v", name, err)
		}
	})

	dsn, err := withDatabase(admin, name)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	return dsn
}

func connect(ctx context.Context, admin string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(admin)
	if err != nil {
		return nil, fmt.Errorf("parse %s %q: %w", EnvAdminURL, redact(admin), err)
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to postgres at %s:%d: %w\n"+
			"Tests need a running Postgres (trust auth, user postgres, database test). Start it with\n"+
			"  pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start\n"+
			"or point %s at another server", cfg.Host, cfg.Port, err, EnvAdminURL)
	}
	return conn, nil
}

// withDatabase returns dsn with its database replaced by name. It accepts
// both URL and keyword/value forms.
func withDatabase(dsn, name string) (string, error) {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return "", fmt.Errorf("parse admin url: %w", err)
		}
		u.Path = "/" + name
		u.RawPath = ""
		return u.String(), nil
	}
	// In keyword/value form a later setting overrides an earlier one.
	return dsn + " dbname=" + name, nil
}

// redact hides a password in a URL-form DSN.
func redact(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil || u.User == nil {
		return dsn
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	return u.String()
}
