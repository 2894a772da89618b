package jobgate

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	bolt "go.etcd.io/bbolt"
)

// ErrTargetNotEmpty: a store migration found data in its target.
var ErrTargetNotEmpty = errors.New("the target store is not empty")

// MigrateReport says what a store migration copied.
type MigrateReport struct {
	Nonces, Runners, AuditRecords, VMs, Jobs, Deliveries, Leases int
	// AuditHead is the chain's head hash, the same on both sides.
	AuditHead string
}

// MigrateBoltToPostgres copies a (stopped) gate's bbolt store into an
// empty PostgreSQL database: the nonce key (nonces issued before the move
// stay good), the used nonces (they stay used), every runner record (no key
// is forgotten), the audit chain record for record (seq, prev and hash
// unchanged), and the fleet state (VMs, jobs, delivery ids, leases).
//
// The source chain is verified first; the copy is one transaction (all of
// it or nothing) that holds every target table locked, so a gate started
// against the target meanwhile waits and then sees the copied nonce key;
// the chain is verified again on the target, and its length and head must
// match. A target with any row in any table is refused (ErrTargetNotEmpty).
func MigrateBoltToPostgres(ctx context.Context, src *BoltStore, dst PostgresOptions) (*MigrateReport, error) {
	n, head, err := VerifyAudit(ctx, src)
	if err != nil {
		return nil, fmt.Errorf("the source store's audit log: %w", err)
	}
	dst.noNonceKey = true
	if dst.Timeout <= 0 {
		dst.Timeout = defaultPGTimeout
	}
	pg, err := OpenPostgresStore(ctx, dst)
	if err != nil {
		return nil, err
	}
	defer pg.Close()
	rep := &MigrateReport{}
	// The whole copy may take longer than one operation's timeout.
	err = pgx.BeginFunc(ctx, pg.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SET LOCAL statement_timeout = 0; SET LOCAL idle_in_transaction_session_timeout = 0"); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "LOCK TABLE meta, used_nonces, runners, audit_head, audit_log, vms, jobs, deliveries, leases IN EXCLUSIVE MODE"); err != nil {
			return err
		}
		var rows int64
		if err := tx.QueryRow(ctx, `SELECT (SELECT count(*) FROM meta) + (SELECT count(*) FROM used_nonces) + (SELECT count(*) FROM runners)
			+ (SELECT count(*) FROM audit_log) + (SELECT count(*) FROM vms) + (SELECT count(*) FROM jobs)
			+ (SELECT count(*) FROM deliveries) + (SELECT count(*) FROM leases)`).Scan(&rows); err != nil {
			return err
		}
		if rows > 0 {
			return fmt.Errorf("%w: it holds %d rows (a gate already used it?)", ErrTargetNotEmpty, rows)
		}
		return src.db.View(func(btx *bolt.Tx) error { return copyBolt(ctx, btx, tx, rep) })
	})
	if err != nil {
		return nil, pg.fail("migrating", err)
	}
	pg.nonceKey = src.nonceKey
	n2, head2, err := VerifyAudit(ctx, pg)
	if err != nil {
		return nil, fmt.Errorf("the copied audit log: %w", err)
	}
	if n2 != n || head2 != head || rep.AuditRecords != n {
		return nil, fmt.Errorf("%w: the copied audit log has %d records, head %s; the source %d, head %s", ErrAuditChain, n2, head2, n, head)
	}
	rep.AuditHead = head
	return rep, nil
}

// copyBolt copies every bucket of a bbolt transaction into the target.
func copyBolt(ctx context.Context, btx *bolt.Tx, tx pgx.Tx, rep *MigrateReport) error {
	key := btx.Bucket(bucketMeta).Get([]byte("nonceKey"))
	if len(key) != 32 {
		return errors.New("the source store has no nonce key")
	}
	if _, err := tx.Exec(ctx, "INSERT INTO meta (key, value) VALUES ('nonceKey', $1)", key); err != nil {
		return err
	}
	type table struct {
		name    string
		columns []string
		bucket  []byte
		count   *int
		row     func(k, v []byte) ([]any, error)
	}
	for _, t := range []table{
		{"used_nonces", []string{"nonce", "expires_ns"}, bucketNonces, &rep.Nonces, func(k, v []byte) ([]any, error) {
			if len(v) != 8 {
				return nil, fmt.Errorf("used nonce %x: bad expiry", k)
			}
			return []any{k, int64(binary.BigEndian.Uint64(v))}, nil
		}},
		{"runners", []string{"key_digest", "name", "state", "record"}, bucketKeys, &rep.Runners, func(k, v []byte) ([]any, error) {
			var r Runner
			if err := json.Unmarshal(v, &r); err != nil {
				return nil, fmt.Errorf("runner %s: %w", k, err)
			}
			if r.KeyDigest != string(k) {
				return nil, fmt.Errorf("runner %s is filed under key %s", r.Name, k)
			}
			if name := btx.Bucket(bucketNames).Get([]byte(r.Name)); string(name) != string(k) {
				return nil, fmt.Errorf("runner %s: the name index names key %q", r.Name, name)
			}
			return []any{r.KeyDigest, r.Name, string(r.State), string(v)}, nil
		}},
		{"audit_log", []string{"seq", "prev", "hash", "record"}, bucketAudit, &rep.AuditRecords, func(k, v []byte) ([]any, error) {
			var r AuditRecord
			if err := json.Unmarshal(v, &r); err != nil {
				return nil, fmt.Errorf("audit record %x: %w", k, err)
			}
			return []any{int64(r.Seq), r.Prev, r.Hash, string(v)}, nil
		}},
		{"vms", []string{"name", "state", "updated_at", "record"}, bucketVMs, &rep.VMs, func(k, v []byte) ([]any, error) {
			var vm VM
			if err := json.Unmarshal(v, &vm); err != nil {
				return nil, fmt.Errorf("VM %s: %w", k, err)
			}
			return []any{vm.Name, string(vm.State), vm.UpdatedAt, string(v)}, nil
		}},
		{"jobs", []string{"id", "state", "updated_at", "record"}, bucketJobs, &rep.Jobs, func(k, v []byte) ([]any, error) {
			var j QueuedJob
			if err := json.Unmarshal(v, &j); err != nil {
				return nil, fmt.Errorf("job %x: %w", k, err)
			}
			return []any{j.ID, string(j.State), j.UpdatedAt, string(v)}, nil
		}},
		{"deliveries", []string{"id", "seen_at"}, bucketDeliveries, &rep.Deliveries, func(k, v []byte) ([]any, error) {
			if len(v) != 8 {
				return nil, fmt.Errorf("delivery %s: bad time", k)
			}
			return []any{string(k), time.Unix(0, int64(binary.BigEndian.Uint64(v)))}, nil
		}},
		{"leases", []string{"name", "holder", "until"}, bucketLeases, &rep.Leases, func(k, v []byte) ([]any, error) {
			var l lease
			if err := json.Unmarshal(v, &l); err != nil {
				return nil, fmt.Errorf("lease %s: %w", k, err)
			}
			return []any{string(k), l.Holder, l.Until}, nil
		}},
	} {
		src := &boltRows{c: btx.Bucket(t.bucket).Cursor(), row: t.row}
		n, err := tx.CopyFrom(ctx, pgx.Identifier{t.name}, t.columns, src)
		if err != nil {
			return fmt.Errorf("copying %s: %w", t.name, err)
		}
		*t.count = int(n)
	}
	return nil
}

// boltRows feeds a bbolt bucket, in key order, to COPY.
type boltRows struct {
	c       *bolt.Cursor
	row     func(k, v []byte) ([]any, error)
	started bool
	vals    []any
	err     error
}

func (r *boltRows) Next() bool {
	var k, v []byte
	if !r.started {
		k, v = r.c.First()
		r.started = true
	} else {
		k, v = r.c.Next()
	}
	if k == nil || r.err != nil {
		return false
	}
	r.vals, r.err = r.row(k, v)
	return r.err == nil
}

func (r *boltRows) Values() ([]any, error) { return r.vals, r.err }
func (r *boltRows) Err() error             { return r.err }
