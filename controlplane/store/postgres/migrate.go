package postgres

import (
	"context"
	"embed"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/metamcp/metamcp/controlplane/store/internal/migration"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// advisoryLockKey is the pg_advisory_lock key held while migrating, so that
// control planes starting at once apply each migration exactly once. The value
// is arbitrary but fixed: "metamcp" in ASCII followed by 0x01.
const advisoryLockKey int64 = 0x6d6574616d637001

// Migrate brings the database at dsn to the newest schema and returns how many
// migrations it applied (0 when the schema was already current). It is safe to
// run from several processes at once: they take turns under an advisory lock.
// A nil logger discards log output.
func Migrate(ctx context.Context, dsn string, logger *slog.Logger) (applied int, err error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return 0, fmt.Errorf("parse postgres connection string: %w", err)
	}
	conn, err := connect(ctx, cfg)
	if err != nil {
		return 0, err
	}
	defer closeConn(conn)
	return migrate(ctx, conn, logger)
}

// migrate applies the pending migrations over conn, each in its own
// transaction together with its schema_migrations row.
func migrate(ctx context.Context, conn *pgx.Conn, logger *slog.Logger) (applied int, err error) {
	migrations, err := migration.Load(migrationFiles, "migrations")
	if err != nil {
		return 0, err
	}

	// A session-level lock: if this process dies, Postgres releases it with
	// the connection.
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", advisoryLockKey); err != nil {
		return 0, fmt.Errorf("migrate: take advisory lock: %w", err)
	}
	defer func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if _, uerr := conn.Exec(uctx, "SELECT pg_advisory_unlock($1)", advisoryLockKey); uerr != nil && err == nil {
			err = fmt.Errorf("migrate: release advisory lock: %w", uerr)
		}
	}()

	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    integer PRIMARY KEY,
		name       text NOT NULL,
		applied_at timestamptz NOT NULL DEFAULT now()
	)`); err != nil {
		return 0, fmt.Errorf("migrate: create schema_migrations: %w", err)
	}

	rows, err := conn.Query(ctx, "SELECT version FROM schema_migrations")
	if err != nil {
		return 0, fmt.Errorf("migrate: read schema_migrations: %w", err)
	}
	done, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		return 0, fmt.Errorf("migrate: read schema_migrations: %w", err)
	}
	have := make(map[int]bool, len(done))
	for _, v := range done {
		have[int(v)] = true
	}

	for _, m := range migrations {
		if have[m.Version] {
			delete(have, m.Version)
			continue
		}
		if err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, m.SQL); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", m.Version, m.Name)
			return err
		}); err != nil {
			return applied, fmt.Errorf("apply migration %s: %w", m.Name, err)
		}
		applied++
		logger.InfoContext(ctx, "applied database migration", "version", m.Version, "name", m.Name)
	}
	for v := range have {
		// A newer binary migrated this database. Keep going: migrations are
		// written to be compatible with the previous release.
		logger.WarnContext(ctx, "database has a migration this binary does not know; is a newer metamcp running?", "version", v)
	}
	return applied, nil
}
