package jobgate

import (
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// The PostgreSQL schema ships in the binary: pgschema/NNNN_name.sql,
// applied in order, each once. A released migration is never edited (its
// digest is recorded and checked); a change is a new file.
//
//go:embed pgschema/*.sql
var pgSchemaFS embed.FS

type pgMigration struct {
	Version int
	Name    string
	SQL     string
	Digest  string
}

func pgMigrations() ([]pgMigration, error) {
	files, err := fs.Glob(pgSchemaFS, "pgschema/*.sql")
	if err != nil {
		return nil, err
	}
	sort.Strings(files)
	var out []pgMigration
	for i, f := range files {
		base := strings.TrimSuffix(f[len("pgschema/"):], ".sql")
		num, name, ok := strings.Cut(base, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v != i+1 {
			return nil, fmt.Errorf("schema migration %s: want %04d_<name>.sql", f, i+1)
		}
		b, err := pgSchemaFS.ReadFile(f)
		if err != nil {
			return nil, err
		}
		d := sha256.Sum256(b)
		out = append(out, pgMigration{Version: v, Name: name, SQL: string(b), Digest: hex.EncodeToString(d[:])})
	}
	return out, nil
}

// pgMigrationLock is the advisory lock (per database) under which a gate
// migrates: replicas starting at once take turns.
const pgMigrationLock int64 = 0x6a6f626761746531 // "jobgate1"

// migrate applies the migrations this binary has and the database lacks,
// in one transaction under the advisory lock. A database migrated further
// than this binary knows, or whose applied migrations differ from this
// binary's, is refused.
func migrate(ctx context.Context, pool *pgxpool.Pool) error {
	ms, err := pgMigrations()
	if err != nil {
		return err
	}
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		// Migrations may take longer than an ordinary operation; the
		// caller's context still bounds them.
		if _, err := tx.Exec(ctx, "SET LOCAL statement_timeout = '5min'; SET LOCAL lock_timeout = '2min'"); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", pgMigrationLock); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version    int PRIMARY KEY,
			name       text NOT NULL,
			digest     text NOT NULL,
			applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, "SELECT version, digest FROM schema_migrations ORDER BY version")
		if err != nil {
			return err
		}
		applied := map[int]string{}
		maxV := 0
		for rows.Next() {
			var v int
			var d string
			if err := rows.Scan(&v, &d); err != nil {
				rows.Close()
				return err
			}
			applied[v] = d
			maxV = max(maxV, v)
		}
		if err := rows.Err(); err != nil {
			return err
		}
		if maxV > len(ms) {
			return fmt.Errorf("%w: it is at version %d, this jobgate knows versions up to %d: upgrade jobgate (never run an older gate against a migrated database)",
				ErrSchemaNewer, maxV, len(ms))
		}
		for _, m := range ms {
			d, ok := applied[m.Version]
			if ok && d != m.Digest {
				return fmt.Errorf("schema migration %04d_%s applied to the database differs from this jobgate's (digest %.12s, want %.12s)", m.Version, m.Name, d, m.Digest)
			}
			if ok {
				continue
			}
			if _, err := tx.Exec(ctx, m.SQL); err != nil {
				return fmt.Errorf("schema migration %04d_%s: %w", m.Version, m.Name, err)
			}
			if _, err := tx.Exec(ctx, "INSERT INTO schema_migrations (version, name, digest) VALUES ($1, $2, $3)", m.Version, m.Name, m.Digest); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("postgres store: migrating the schema: %w", err)
	}
	return nil
}

// Redacted stands in for a password in errors and logs.
const Redacted = "xxxxx"

var dsnPasswordKV = regexp.MustCompile(`(?i)(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)`)

// RedactDSN returns dsn with its password, if any, replaced by Redacted,
// for logs and messages. It handles both DSN forms (URL and key=value).
func RedactDSN(dsn string) string {
	if u, err := url.Parse(dsn); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		if u.User != nil {
			if _, has := u.User.Password(); has {
				u.User = url.UserPassword(u.User.Username(), Redacted)
			}
		}
		q := u.Query()
		if q.Has("password") {
			q.Set("password", Redacted)
			u.RawQuery = q.Encode()
		}
		return u.String()
	}
	return dsnPasswordKV.ReplaceAllString(dsn, "${1}"+Redacted)
}

// DSNHasPassword reports whether a DSN carries a password itself.
func DSNHasPassword(dsn string) bool { return RedactDSN(dsn) != dsn }

// dsnRedactor returns a function that rewrites an error so that neither
// the DSN's password nor the DSN itself appears in its text (errors.Is and
// errors.As still see the original).
func dsnRedactor(dsn string) func(error) error {
	var repl []string // old, new pairs, applied in order
	if red := RedactDSN(dsn); red != dsn {
		repl = append(repl, dsn, red)
	}
	if cfg, err := pgconn.ParseConfig(dsn); err == nil && cfg.Password != "" {
		repl = append(repl, cfg.Password, Redacted)
	}
	// The password as it appears in the DSN text, too (quoted or escaped).
	for _, m := range dsnPasswordKV.FindAllStringSubmatch(dsn, -1) {
		repl = append(repl, m[2], Redacted)
	}
	if u, err := url.Parse(dsn); err == nil && u.User != nil {
		if p, ok := u.User.Password(); ok && p != "" {
			repl = append(repl, p, Redacted, url.PathEscape(p), Redacted, url.QueryEscape(p), Redacted)
		}
	}
	return func(err error) error {
		if err == nil || len(repl) == 0 {
			return err
		}
		return &redactedError{err: err, repl: repl}
	}
}

type redactedError struct {
	err  error
	repl []string
}

func (e *redactedError) Error() string {
	s := e.err.Error()
	for i := 0; i+1 < len(e.repl); i += 2 {
		if e.repl[i] != "" {
			s = strings.ReplaceAll(s, e.repl[i], e.repl[i+1])
		}
	}
	return s
}

func (e *redactedError) Unwrap() error { return e.err }
