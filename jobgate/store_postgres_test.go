package jobgate

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/attested-runner/attested-runner/internal/pgtest"
	"github.com/jackc/pgx/v5/pgconn"
)

// TestRedactDSN: the password never reaches a log line or an error,
// whatever the DSN's form.
func TestRedactDSN(t *testing.T) {
	for _, tc := range []struct{ dsn, want string }{
		{"postgres://gate:s3cr%21t@db.example.com:5432/jobgate?sslmode=verify-full", "postgres://gate:xxxxx@db.example.com:5432/jobgate?sslmode=verify-full"},
		{"postgresql://gate@db/jobgate?password=s3cr%21t", "postgresql://gate@db/jobgate?password=xxxxx"},
		{"host=db user=gate password=s3cr!t dbname=jobgate", "host=db user=gate password=xxxxx dbname=jobgate"},
		{"host=db password = 's3 cr!t' dbname=jobgate", "host=db password = xxxxx dbname=jobgate"},
		{"host=db user=gate dbname=jobgate", "host=db user=gate dbname=jobgate"},
	} {
		if got := RedactDSN(tc.dsn); got != tc.want {
			t.Errorf("RedactDSN(%q) = %q, want %q", tc.dsn, got, tc.want)
		}
		if DSNHasPassword(tc.dsn) != strings.Contains(tc.want, Redacted) {
			t.Errorf("DSNHasPassword(%q) = %v", tc.dsn, DSNHasPassword(tc.dsn))
		}
	}
	// Errors out of the store, from a DSN that cannot be parsed or a
	// server that cannot be reached, carry no password.
	for _, dsn := range []string{
		"postgres://gate:s3cr%21t@127.0.0.1:1/jobgate?connect_timeout=1",
		"host=127.0.0.1 port=1 user=gate password=s3cr!t dbname=jobgate connect_timeout=1",
		"host=127.0.0.1 port=notaport password=s3cr!t",
		"postgres://gate:s3cr%21t@127.0.0.1:1/jobgate?sslmode=bogus",
	} {
		_, err := OpenPostgresStore(context.Background(), PostgresOptions{DSN: dsn, Timeout: time.Second})
		if err == nil {
			t.Fatalf("%s: opened", RedactDSN(dsn))
		}
		if msg := err.Error(); strings.Contains(msg, "s3cr") {
			t.Errorf("the password is in the error: %s", msg)
		}
	}
}

// TestStoreConfig: the store section selects bbolt (default) or
// PostgreSQL, a DSN with a password belongs in a mode-0600 dsnFile, and a
// gate opens its store from the configuration.
func TestStoreConfig(t *testing.T) {
	dir := t.TempDir()
	base := Config{Listen: "127.0.0.1:0", GateID: "g", BuilderID: "b", DataDir: dir, SigningKey: "k",
		GitHub: GitHubConfig{AppID: 1, InstallationID: 1, PrivateKey: "p", Org: "o", Labels: []string{"self-hosted"}},
		Policy: PolicyConfig{ReferenceValues: []string{"rv"}, TrustedAKs: []string{"ak"}}}
	for _, tc := range []struct {
		name  string
		store *StoreConfig
		want  string
	}{
		{"empty section", &StoreConfig{}, "name a store"},
		{"neither dsn nor file", &StoreConfig{Postgres: &PostgresConfig{}}, "exactly one of dsn and dsnFile"},
		{"both", &StoreConfig{Postgres: &PostgresConfig{DSN: "host=db", DSNFile: "f"}}, "exactly one of dsn and dsnFile"},
		{"password inline", &StoreConfig{Postgres: &PostgresConfig{DSN: "host=db password=hunter2"}}, "dsnFile (mode 0600)"},
		{"password in a URL", &StoreConfig{Postgres: &PostgresConfig{DSN: "postgres://u:hunter2@db/x"}}, "dsnFile (mode 0600)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := base
			c.Store = tc.store
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one saying %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Fatalf("the password is in the error: %v", err)
			}
		})
	}
	ctx := context.Background()
	c := base
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	s, err := OpenStore(ctx, &c)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := s.(*BoltStore); !ok || c.StoreDescription() != "bbolt "+filepath.Join(dir, "gate.db") {
		t.Fatalf("default store %T (%s)", s, c.StoreDescription())
	}
	s.Close()

	dsnFile := filepath.Join(dir, "pg-dsn")
	os.WriteFile(dsnFile, []byte("host=db password=hunter2\n"), 0o644)
	c.Store = &StoreConfig{Postgres: &PostgresConfig{DSNFile: dsnFile}}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenStore(ctx, &c); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("a world-readable dsnFile: %v", err)
	}
	if strings.Contains(c.StoreDescription(), "hunter2") {
		t.Fatal(c.StoreDescription())
	}
	if _, err := pgtest.BinDir(); errors.Is(err, pgtest.ErrNoBinaries) && os.Getenv("PGTEST_REQUIRE") == "" {
		t.Skip(err)
	}
	os.WriteFile(dsnFile, []byte(pgtest.DB(t)+"\n"), 0o600)
	os.Chmod(dsnFile, 0o600)
	c.Store.Postgres.Timeout = Duration(2 * time.Second)
	s, err = OpenStore(ctx, &c)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, ok := s.(*PostgresStore); !ok {
		t.Fatalf("store %T", s)
	}
}

// TestStoreUnavailableOnlyWhenTheDatabaseDidNotAnswer: connection
// failures, shutdowns and timeouts are ErrStoreUnavailable (the gate
// answers store_unavailable, the agent retries); the database's refusals
// keep their own errors and are never taken for an outage.
func TestStoreUnavailableOnlyWhenTheDatabaseDidNotAnswer(t *testing.T) {
	s := &PostgresStore{redact: dsnRedactor("host=db password=hunter2")}
	for _, tc := range []struct {
		name string
		err  error
		want error
	}{
		{"no answer", fmt.Errorf("dial tcp: connection refused (password=hunter2)"), ErrStoreUnavailable},
		{"deadline", context.DeadlineExceeded, ErrStoreUnavailable},
		{"connection exception", &pgconn.PgError{Code: "08006"}, ErrStoreUnavailable},
		{"admin shutdown", &pgconn.PgError{Code: "57P01"}, ErrStoreUnavailable},
		{"statement timeout", &pgconn.PgError{Code: "57014"}, ErrStoreUnavailable},
		{"lock timeout", &pgconn.PgError{Code: "55P03"}, ErrStoreUnavailable},
		{"idle in transaction timeout", &pgconn.PgError{Code: "25P03"}, ErrStoreUnavailable},
		{"state backward", &pgconn.PgError{Code: sqlStateBackward}, ErrStateBackward},
		{"audit fork", &pgconn.PgError{Code: sqlAuditFork}, ErrAuditChain},
		{"nonce used", fmt.Errorf("x: %w", ErrNonceUsed), ErrNonceUsed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := s.fail("op", tc.err)
			if !errors.Is(err, tc.want) {
				t.Fatalf("fail(%v) = %v, want %v", tc.err, err, tc.want)
			}
			if tc.want != ErrStoreUnavailable && errors.Is(err, ErrStoreUnavailable) {
				t.Fatalf("a refusal taken for an outage: %v", err)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Fatalf("the password is in the error: %v", err)
			}
		})
	}
	// A unique violation the store does not map is the database's answer.
	if err := s.fail("op", &pgconn.PgError{Code: sqlUniqueViolated}); errors.Is(err, ErrStoreUnavailable) {
		t.Fatalf("unique violation taken for an outage: %v", err)
	}
}
