package jobgate

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// PostgresStore is the Store of a replicated gate: every replica opens the
// same database. Each method is one transaction, and every rule replicas
// rely on is enforced by the database itself (pgschema/0001_init.sql):
//
//   - a nonce is spent, and a key reserved, in one statement: the nonce's
//     primary key makes it single use, the runner's primary key makes a
//     key admitted at most once; a reservation that loses either race
//     rolls back whole (its nonce stays unspent);
//   - runner, VM and job states only move forward, and an admitted key is
//     never deleted (triggers, SQLSTATE JG001/JG002), whoever writes;
//   - the audit log is one hash chain: a record is inserted only as the
//     successor of the chain head, checked and advanced by a trigger under
//     the head row's lock, so concurrent appends from any number of gates
//     serialize and cannot fork it (JG005); records are never updated or
//     deleted (JG004). The gate computes the hashes exactly as for bbolt,
//     so VerifyAudit works on either store;
//   - the nonce key is inserted once (ON CONFLICT DO NOTHING) and every
//     replica reads the winner;
//   - a lease is taken by one conditional upsert: only its holder renews
//     it, anyone takes it over once it expired (by the caller's clock).
//
// Commits are synchronous (the store refuses a session with
// synchronous_commit=off or a server with fsync off). Every operation is
// bounded by Timeout on the client (pool acquire, queries) and on the server
// (statement_timeout, lock_timeout, idle_in_transaction_session_timeout, so a
// partitioned gate cannot hold the chain head's lock). A write whose commit
// outcome is unknown (the connection broke during COMMIT) is not retried: the
// caller sees an error, the state is the database's.
type PostgresStore struct {
	pool     *pgxpool.Pool
	nonceKey []byte
	timeout  time.Duration
	redact   func(error) error
}

// PostgresOptions configure OpenPostgresStore.
type PostgresOptions struct {
	// DSN is a libpq connection string (URL or key=value).
	DSN string
	// MaxConns bounds the pool (default 10).
	MaxConns int32
	// Timeout bounds every operation, connection and lock wait (default
	// 10s).
	Timeout time.Duration
	// noNonceKey opens without creating the nonce key (store migrate
	// copies the source's).
	noNonceKey bool
}

// ErrStoreUnavailable: the database could not be reached, or did not
// answer within the store's timeout. Nothing is known to have changed (a
// write whose COMMIT got no answer may have happened: the caller cannot
// tell, and must not assume either way).
var ErrStoreUnavailable = errors.New("store unavailable")

// ErrSchemaNewer: the database was migrated by a newer jobgate.
var ErrSchemaNewer = errors.New("the database schema is newer than this jobgate")

const defaultPGTimeout = 10 * time.Second

// OpenPostgresStore connects, applies the schema migrations (under an
// advisory lock: replicas starting together are safe) and loads or creates
// the shared nonce key.
func OpenPostgresStore(ctx context.Context, o PostgresOptions) (*PostgresStore, error) {
	redact := dsnRedactor(o.DSN)
	cfg, err := pgxpool.ParseConfig(o.DSN)
	if err != nil {
		return nil, redact(fmt.Errorf("postgres store: %w", err))
	}
	if v, ok := cfg.ConnConfig.RuntimeParams["synchronous_commit"]; ok && v == "off" {
		return nil, errors.New("postgres store: synchronous_commit=off would lose committed admissions at a crash")
	}
	timeout := o.Timeout
	if timeout <= 0 {
		timeout = defaultPGTimeout
	}
	cfg.MaxConns = 10
	if o.MaxConns > 0 {
		cfg.MaxConns = o.MaxConns
	}
	if cfg.ConnConfig.ConnectTimeout == 0 || cfg.ConnConfig.ConnectTimeout > timeout {
		cfg.ConnConfig.ConnectTimeout = timeout
	}
	ms := strconv.FormatInt(timeout.Milliseconds(), 10)
	rp := cfg.ConnConfig.RuntimeParams
	for k, v := range map[string]string{
		"statement_timeout":                   ms,
		"lock_timeout":                        ms,
		"idle_in_transaction_session_timeout": ms,
		// A peer gone without a FIN (a partition) is noticed in ~30s on
		// TCP (ignored on unix sockets).
		"tcp_keepalives_idle":     "10",
		"tcp_keepalives_interval": "5",
		"tcp_keepalives_count":    "4",
	} {
		if _, set := rp[k]; !set {
			rp[k] = v
		}
	}
	if rp["application_name"] == "" {
		rp["application_name"] = "jobgate"
	}
	octx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	pool, err := pgxpool.NewWithConfig(octx, cfg)
	if err != nil {
		return nil, redact(fmt.Errorf("postgres store: %w", err))
	}
	s := &PostgresStore{pool: pool, timeout: timeout, redact: redact}
	if err := s.open(octx, o); err != nil {
		pool.Close()
		return nil, redact(err)
	}
	return s, nil
}

func (s *PostgresStore) open(ctx context.Context, o PostgresOptions) error {
	var fsync, syncCommit string
	if err := s.pool.QueryRow(ctx, "SELECT current_setting('fsync'), current_setting('synchronous_commit')").Scan(&fsync, &syncCommit); err != nil {
		return fmt.Errorf("postgres store: %w", err)
	}
	if fsync != "on" || syncCommit == "off" {
		return fmt.Errorf("postgres store: the server runs with fsync=%s, synchronous_commit=%s: committed admissions would not survive a crash", fsync, syncCommit)
	}
	if err := migrate(ctx, s.pool); err != nil {
		return err
	}
	if o.noNonceKey {
		return nil
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return err
	}
	if _, err := s.pool.Exec(ctx, "INSERT INTO meta (key, value) VALUES ('nonceKey', $1) ON CONFLICT (key) DO NOTHING", key); err != nil {
		return fmt.Errorf("postgres store: creating the nonce key: %w", err)
	}
	if err := s.pool.QueryRow(ctx, "SELECT value FROM meta WHERE key = 'nonceKey'").Scan(&s.nonceKey); err != nil {
		return fmt.Errorf("postgres store: reading the nonce key: %w", err)
	}
	if len(s.nonceKey) != 32 {
		return errors.New("postgres store: the stored nonce key is not 32 bytes")
	}
	return nil
}

// Close implements Store.
func (s *PostgresStore) Close() error {
	s.pool.Close()
	return nil
}

// op bounds one operation.
func (s *PostgresStore) op(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.timeout)
}

// Custom SQLSTATEs raised by the schema's triggers.
const (
	sqlStateBackward  = "JG001"
	sqlKeyForgotten   = "JG002"
	sqlRunnerIdentity = "JG003"
	sqlAuditEdit      = "JG004"
	sqlAuditFork      = "JG005"
	sqlUnfinished     = "JG006"
	sqlUniqueViolated = "23505"
)

// fail maps the database's refusals to the Store's errors and names the
// operation in everything else (with the DSN's password redacted).
func (s *PostgresStore) fail(op string, err error) error {
	if err == nil {
		return nil
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code {
		case sqlStateBackward:
			return fmt.Errorf("%w: %s", ErrStateBackward, pe.Message)
		case sqlAuditFork, sqlAuditEdit:
			return fmt.Errorf("%w: %s", ErrAuditChain, pe.Message)
		case sqlKeyForgotten, sqlRunnerIdentity, sqlUnfinished:
			return fmt.Errorf("postgres store: %s: refused by the database: %s", op, pe.Message)
		}
	}
	if isStoreSentinel(err) || errors.Is(err, pgx.ErrNoRows) {
		return err
	}
	if unavailable(err) {
		return s.redact(fmt.Errorf("postgres store: %s: %w: %w", op, ErrStoreUnavailable, err))
	}
	return s.redact(fmt.Errorf("postgres store: %s: %w", op, err))
}

// unavailable tells a database that could not be reached or did not answer
// in time (no answer at all; a connection exception, the server shutting
// down or out of resources; a statement, lock or idle timeout) from the
// database's answer to what was asked.
func unavailable(err error) bool {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return true
	}
	if len(pe.Code) < 2 {
		return false
	}
	switch pe.Code[:2] {
	case "08", "53", "57":
		return true
	}
	return pe.Code == "25P03" || pe.Code == "55P03"
}

// tx runs fn and, when it succeeds, appends the audit record, in one
// transaction. Every write goes through here, so that a broken pooled
// connection (the database restarted, the network reset it) shows at
// BEGIN, which changes nothing: then the pool is emptied and the
// transaction tried once more on a fresh connection. A failure after BEGIN
// is not retried (at COMMIT its outcome is unknown).
func (s *PostgresStore) tx(ctx context.Context, op string, audit *AuditRecord, fn func(pgx.Tx) error) error {
	ctx, cancel := s.op(ctx)
	defer cancel()
	var tx pgx.Tx
	var err error
	for attempt := 0; ; attempt++ {
		if tx, err = s.pool.Begin(ctx); err == nil {
			break
		}
		if attempt > 0 || ctx.Err() != nil {
			return s.fail(op, err)
		}
		s.pool.Reset()
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if fn != nil {
		if err := fn(tx); err != nil {
			return s.fail(op, err)
		}
	}
	var appended AuditRecord
	if audit != nil {
		if appended, err = appendAuditPG(ctx, tx, *audit); err != nil {
			return s.fail(op, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return s.fail(op, err)
	}
	if audit != nil {
		*audit = appended
	}
	return nil
}

// read runs a read-only fn, once more on a fresh pool if the first try
// failed on the connection (reads are safe to repeat).
func (s *PostgresStore) read(ctx context.Context, op string, fn func(context.Context) error) error {
	ctx, cancel := s.op(ctx)
	defer cancel()
	err := fn(ctx)
	var pe *pgconn.PgError
	if err != nil && !errors.As(err, &pe) && !errors.Is(err, pgx.ErrNoRows) && !errors.Is(err, errUndecodable) && ctx.Err() == nil && !isStoreSentinel(err) {
		s.pool.Reset()
		err = fn(ctx)
	}
	return s.fail(op, err)
}

func isStoreSentinel(err error) bool {
	for _, sentinel := range []error{ErrNonceUnknown, ErrNonceExpired, ErrNonceUsed, ErrKeyAdmitted, ErrNoRunner,
		ErrNoVM, ErrStateBackward, ErrLeaseHeld, ErrAuditChain} {
		if errors.Is(err, sentinel) {
			return true
		}
	}
	return false
}

// appendAuditPG links r to the chain head (locked until commit) and
// inserts it; the insert trigger checks the link and advances the head.
func appendAuditPG(ctx context.Context, tx pgx.Tx, r AuditRecord) (AuditRecord, error) {
	var seq int64
	var head string
	if err := tx.QueryRow(ctx, "SELECT seq, hash FROM audit_head FOR UPDATE").Scan(&seq, &head); err != nil {
		return r, err
	}
	r.Seq, r.Prev = uint64(seq)+1, head
	h, err := r.chainHash()
	if err != nil {
		return r, err
	}
	r.Hash = h
	v, err := json.Marshal(r)
	if err != nil {
		return r, err
	}
	_, err = tx.Exec(ctx, "INSERT INTO audit_log (seq, prev, hash, record) VALUES ($1, $2, $3, $4::json)", int64(r.Seq), r.Prev, r.Hash, string(v))
	return r, err
}

// NewNonce implements Store: nothing is written.
func (s *PostgresStore) NewNonce(_ context.Context, expires time.Time) ([]byte, error) {
	return makeNonce(s.nonceKey, expires)
}

// NonceSecret implements Store: under the nonce key every replica shares.
func (s *PostgresStore) NonceSecret(_ context.Context, nonce, info []byte) ([]byte, error) {
	return issuedNonceSecret(s.nonceKey, nonce, info)
}

// CheckNonce implements Store.
func (s *PostgresStore) CheckNonce(ctx context.Context, nonce []byte, now time.Time) error {
	exp, err := parseNonce(s.nonceKey, nonce)
	if err != nil {
		return err
	}
	used, err := s.nonceUsed(ctx, nonce)
	if err != nil {
		return err
	}
	if used {
		return ErrNonceUsed
	}
	if !now.Before(exp) {
		return ErrNonceExpired
	}
	return nil
}

func (s *PostgresStore) nonceUsed(ctx context.Context, nonce []byte) (bool, error) {
	var used bool
	err := s.read(ctx, "checking a nonce", func(ctx context.Context) error {
		return s.pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM used_nonces WHERE nonce = $1)", nonce).Scan(&used)
	})
	return used, err
}

// Reserve implements Store: one statement spends the nonce and inserts the
// pending runner, or does neither.
func (s *PostgresStore) Reserve(ctx context.Context, nonce []byte, now time.Time, r *Runner, audit *AuditRecord) error {
	exp, err := parseNonce(s.nonceKey, nonce)
	if err != nil {
		return err
	}
	if !now.Before(exp) {
		// As bbolt: a used nonce is "used" even once expired.
		if used, err := s.nonceUsed(ctx, nonce); err != nil || used {
			if err == nil {
				err = ErrNonceUsed
			}
			return err
		}
		return ErrNonceExpired
	}
	rec := *r
	rec.State, rec.UpdatedAt = StatePending, now
	v, err := json.Marshal(&rec)
	if err != nil {
		return err
	}
	err = s.tx(ctx, "reserve", audit, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `WITH spent AS (
				INSERT INTO used_nonces (nonce, expires_ns) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING 1)
			INSERT INTO runners (key_digest, name, state, record) SELECT $3, $4, 'pending', $5::jsonb FROM spent`,
			nonce, exp.UnixNano(), rec.KeyDigest, rec.Name, string(v))
		if err != nil {
			var pe *pgconn.PgError
			if errors.As(err, &pe) && pe.Code == sqlUniqueViolated {
				if pe.ConstraintName == "runners_pkey" {
					return ErrKeyAdmitted
				}
				return fmt.Errorf("runner name %s is taken by another key", rec.Name)
			}
			return err
		}
		if tag.RowsAffected() == 0 {
			return ErrNonceUsed
		}
		return nil
	})
	return err
}

// runnerNotPending explains why a pending-only change found nothing to
// change.
func runnerNotPending(ctx context.Context, tx pgx.Tx, keyDigest string) error {
	var name, state string
	err := tx.QueryRow(ctx, "SELECT name, state FROM runners WHERE key_digest = $1", keyDigest).Scan(&name, &state)
	if errors.Is(err, pgx.ErrNoRows) {
		return ErrNoRunner
	}
	if err != nil {
		return err
	}
	return fmt.Errorf("%w: runner %s is %s, not pending", ErrStateBackward, name, state)
}

// Release implements Store.
func (s *PostgresStore) Release(ctx context.Context, keyDigest string, audit *AuditRecord) error {
	return s.tx(ctx, "release", audit, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, "DELETE FROM runners WHERE key_digest = $1 AND state = 'pending'", keyDigest)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return runnerNotPending(ctx, tx, keyDigest)
		}
		return nil
	})
}

// Activate implements Store.
func (s *PostgresStore) Activate(ctx context.Context, r *Runner, audit *AuditRecord) error {
	rec := *r
	rec.State = StateLive
	v, err := json.Marshal(&rec)
	if err != nil {
		return err
	}
	return s.tx(ctx, "activate", audit, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, "UPDATE runners SET state = 'live', name = $2, record = $3::jsonb WHERE key_digest = $1 AND state = 'pending'",
			rec.KeyDigest, rec.Name, string(v))
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return runnerNotPending(ctx, tx, rec.KeyDigest)
		}
		return nil
	})
}

// SetState implements Store.
func (s *PostgresStore) SetState(ctx context.Context, name string, state RunnerState, now time.Time, audit *AuditRecord) error {
	if _, ok := runnerStateOrder[state]; !ok {
		return fmt.Errorf("%w: unknown runner state %q", ErrStateBackward, state)
	}
	at, err := json.Marshal(now)
	if err != nil {
		return err
	}
	return s.tx(ctx, "set runner state", audit, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE runners SET state = $2,
				record = record || jsonb_build_object('state', $2::text, 'updatedAt', $3::jsonb)
			WHERE name = $1`, name, string(state), string(at))
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return ErrNoRunner
		}
		return nil
	})
}

// Runner implements Store.
func (s *PostgresStore) Runner(ctx context.Context, name string) (*Runner, error) {
	var raw []byte
	err := s.read(ctx, "reading a runner", func(ctx context.Context) error {
		return s.pool.QueryRow(ctx, "SELECT record FROM runners WHERE name = $1", name).Scan(&raw)
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNoRunner
	}
	if err != nil {
		return nil, err
	}
	var r Runner
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// Runners implements Store.
func (s *PostgresStore) Runners(ctx context.Context) ([]Runner, error) {
	return pgList[Runner](ctx, s, "listing runners", "SELECT record FROM runners ORDER BY name")
}

// pgList decodes the JSON records a query returns.
func pgList[T any](ctx context.Context, s *PostgresStore, op, query string, args ...any) ([]T, error) {
	var out []T
	err := s.read(ctx, op, func(ctx context.Context) error {
		out = nil
		rows, err := s.pool.Query(ctx, query, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var raw []byte
			if err := rows.Scan(&raw); err != nil {
				return err
			}
			var v T
			if err := json.Unmarshal(raw, &v); err != nil {
				return fmt.Errorf("%w: undecodable record: %v", errUndecodable, err)
			}
			out = append(out, v)
		}
		return rows.Err()
	})
	return out, err
}

// errUndecodable: a stored record is not the JSON the gate wrote.
var errUndecodable = errors.New("undecodable record")

// Audit implements Store.
func (s *PostgresStore) Audit(ctx context.Context, rec *AuditRecord) error {
	return s.tx(ctx, "audit", rec, nil)
}

// auditPage is how many records AuditLog reads per query.
const auditPage = 1000

// AuditLog implements Store. It reads in pages (each bounded by the
// timeout), so a long log or a slow fn holds no query open; the log is
// append-only, so the pages are one consistent prefix.
func (s *PostgresStore) AuditLog(ctx context.Context, fn func(AuditRecord) error) error {
	var after int64
	for {
		page, err := s.auditPage(ctx, after)
		if err != nil {
			return err
		}
		for _, raw := range page {
			var r AuditRecord
			if err := json.Unmarshal(raw, &r); err != nil {
				return fmt.Errorf("%w: undecodable record after %d: %v", ErrAuditChain, after, err)
			}
			after = int64(r.Seq)
			if err := fn(r); err != nil {
				return err
			}
		}
		if len(page) < auditPage {
			return nil
		}
	}
}

func (s *PostgresStore) auditPage(ctx context.Context, after int64) ([][]byte, error) {
	var out [][]byte
	err := s.read(ctx, "reading the audit log", func(ctx context.Context) error {
		out = nil
		rows, err := s.pool.Query(ctx, "SELECT record::text FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2", after, auditPage)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var raw string
			if err := rows.Scan(&raw); err != nil {
				return err
			}
			out = append(out, []byte(raw))
		}
		return rows.Err()
	})
	return out, err
}

// PruneNonces implements Store.
func (s *PostgresStore) PruneNonces(ctx context.Context, now time.Time) (int, error) {
	n := 0
	err := s.tx(ctx, "pruning nonces", nil, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, "DELETE FROM used_nonces WHERE expires_ns < $1", now.UnixNano())
		n = int(tag.RowsAffected())
		return err
	})
	return n, err
}

// PutVM implements Store.
func (s *PostgresStore) PutVM(ctx context.Context, vm *VM, audit *AuditRecord) error {
	v, err := json.Marshal(vm)
	if err != nil {
		return err
	}
	return s.tx(ctx, "putting a VM", audit, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO vms (name, state, updated_at, record) VALUES ($1, $2, $3, $4::jsonb)
			ON CONFLICT (name) DO UPDATE SET state = EXCLUDED.state, updated_at = EXCLUDED.updated_at, record = EXCLUDED.record`,
			vm.Name, string(vm.State), vm.UpdatedAt, string(v))
		return err
	})
}

// VM implements Store.
func (s *PostgresStore) VM(ctx context.Context, name string) (*VM, error) {
	var raw []byte
	err := s.read(ctx, "reading a VM", func(ctx context.Context) error {
		return s.pool.QueryRow(ctx, "SELECT record FROM vms WHERE name = $1", name).Scan(&raw)
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNoVM
	}
	if err != nil {
		return nil, err
	}
	var vm VM
	if err := json.Unmarshal(raw, &vm); err != nil {
		return nil, err
	}
	return &vm, nil
}

// VMs implements Store.
func (s *PostgresStore) VMs(ctx context.Context) ([]VM, error) {
	return pgList[VM](ctx, s, "listing VMs", "SELECT record FROM vms ORDER BY name")
}

// PutJob implements Store.
func (s *PostgresStore) PutJob(ctx context.Context, j *QueuedJob) error {
	v, err := json.Marshal(j)
	if err != nil {
		return err
	}
	return s.tx(ctx, "putting a job", nil, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO jobs (id, state, updated_at, record) VALUES ($1, $2, $3, $4::jsonb)
			ON CONFLICT (id) DO UPDATE SET state = EXCLUDED.state, updated_at = EXCLUDED.updated_at, record = EXCLUDED.record`,
			j.ID, string(j.State), j.UpdatedAt, string(v))
		return err
	})
}

// Jobs implements Store.
func (s *PostgresStore) Jobs(ctx context.Context) ([]QueuedJob, error) {
	return pgList[QueuedJob](ctx, s, "listing jobs", "SELECT record FROM jobs ORDER BY id")
}

// FirstDelivery implements Store.
func (s *PostgresStore) FirstDelivery(ctx context.Context, id string, now time.Time) (bool, error) {
	first := false
	err := s.tx(ctx, "recording a delivery", nil, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, "INSERT INTO deliveries (id, seen_at) VALUES ($1, $2) ON CONFLICT DO NOTHING", id, now)
		first = tag.RowsAffected() == 1
		return err
	})
	return first, err
}

// DeliverySeen implements Store.
func (s *PostgresStore) DeliverySeen(ctx context.Context, id string) (bool, error) {
	var seen bool
	err := s.read(ctx, "looking up a delivery", func(ctx context.Context) error {
		return s.pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM deliveries WHERE id = $1)", id).Scan(&seen)
	})
	return seen, err
}

// Lease implements Store: one upsert decides under the lease row's lock.
func (s *PostgresStore) Lease(ctx context.Context, name, holder string, now, until time.Time) error {
	var other string
	var otherUntil time.Time
	err := s.tx(ctx, "taking a lease", nil, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `INSERT INTO leases AS l (name, holder, until) VALUES ($1, $2, $4)
			ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, until = EXCLUDED.until
			WHERE l.holder = EXCLUDED.holder OR l.until <= $3`, name, holder, now, until)
		if err != nil || tag.RowsAffected() == 1 {
			return err
		}
		// Held: the row stays locked by the upsert until we end, so this
		// is the holder that refused us.
		if err := tx.QueryRow(ctx, "SELECT holder, until FROM leases WHERE name = $1", name).Scan(&other, &otherUntil); err != nil {
			return err
		}
		return ErrLeaseHeld
	})
	if errors.Is(err, ErrLeaseHeld) {
		return fmt.Errorf("%w: %s holds %s until %s", ErrLeaseHeld, other, name, otherUntil.UTC().Format(time.RFC3339))
	}
	return err
}

// PruneFleet implements Store.
func (s *PostgresStore) PruneFleet(ctx context.Context, before time.Time) (int, error) {
	n := 0
	err := s.tx(ctx, "pruning fleet state", nil, func(tx pgx.Tx) error {
		n = 0
		for _, q := range []string{
			"DELETE FROM vms WHERE state = 'destroyed' AND updated_at < $1",
			"DELETE FROM jobs WHERE state = 'completed' AND updated_at < $1",
			"DELETE FROM deliveries WHERE seen_at < $1",
		} {
			tag, err := tx.Exec(ctx, q, before)
			if err != nil {
				return err
			}
			n += int(tag.RowsAffected())
		}
		return nil
	})
	return n, err
}
