package jobgate

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Buckets of the embedded store.
var (
	bucketNonces = []byte("nonces") // used nonce -> expiry (Unix nanoseconds)
	bucketKeys   = []byte("keys")   // key digest -> Runner
	bucketNames  = []byte("names")  // runner name -> key digest
	bucketAudit  = []byte("audit")  // seq (uint64 BE) -> AuditRecord
	bucketMeta   = []byte("meta")   // "auditHead" -> hash, "auditSeq" -> uint64, "nonceKey"
)

// BoltStore is the embedded Store: one bbolt file next to the gate.
// Writes go through bbolt's Batch, which coalesces concurrent admissions
// into one durable commit.
type BoltStore struct {
	db       *bolt.DB
	nonceKey []byte
}

// OpenBoltStore opens (creating if needed) the store at path, readable only
// by its owner.
func OpenBoltStore(path string) (*BoltStore, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("opening store %s: %w", path, err)
	}
	// Group commit: concurrent admissions share one durable commit. The
	// delay bounds how long a lone write waits for company.
	db.MaxBatchDelay = time.Millisecond
	s := &BoltStore{db: db}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketNonces, bucketKeys, bucketNames, bucketAudit, bucketMeta,
			bucketVMs, bucketJobs, bucketDeliveries, bucketLeases} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bucketMeta)
		if k := meta.Get([]byte("nonceKey")); len(k) == 32 {
			s.nonceKey = append([]byte(nil), k...)
			return nil
		}
		s.nonceKey = make([]byte, 32)
		if _, err := rand.Read(s.nonceKey); err != nil {
			return err
		}
		return meta.Put([]byte("nonceKey"), s.nonceKey)
	})
	if err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// Close implements Store.
func (s *BoltStore) Close() error { return s.db.Close() }

// NewNonce implements Store: nothing is written.
func (s *BoltStore) NewNonce(_ context.Context, expires time.Time) ([]byte, error) {
	return makeNonce(s.nonceKey, expires)
}

// NonceSecret implements Store.
func (s *BoltStore) NonceSecret(_ context.Context, nonce, info []byte) ([]byte, error) {
	return issuedNonceSecret(s.nonceKey, nonce, info)
}

func (s *BoltStore) checkNonce(tx *bolt.Tx, nonce []byte, now time.Time) (time.Time, error) {
	exp, err := parseNonce(s.nonceKey, nonce)
	if err != nil {
		return exp, err
	}
	if tx.Bucket(bucketNonces).Get(nonce) != nil {
		return exp, ErrNonceUsed
	}
	if !now.Before(exp) {
		return exp, ErrNonceExpired
	}
	return exp, nil
}

// CheckNonce implements Store.
func (s *BoltStore) CheckNonce(_ context.Context, nonce []byte, now time.Time) error {
	return s.db.View(func(tx *bolt.Tx) error {
		_, err := s.checkNonce(tx, nonce, now)
		return err
	})
}

// Reserve implements Store.
func (s *BoltStore) Reserve(_ context.Context, nonce []byte, now time.Time, r *Runner, audit *AuditRecord) error {
	return s.batch(audit, func(tx *bolt.Tx) error {
		exp, err := s.checkNonce(tx, nonce, now)
		if err != nil {
			return err
		}
		if err := tx.Bucket(bucketNonces).Put(nonce, binary.BigEndian.AppendUint64(nil, uint64(exp.UnixNano()))); err != nil {
			return err
		}
		if tx.Bucket(bucketKeys).Get([]byte(r.KeyDigest)) != nil {
			return ErrKeyAdmitted
		}
		rec := *r
		rec.State, rec.UpdatedAt = StatePending, now
		return putRunner(tx, &rec)
	})
}

// Release implements Store.
func (s *BoltStore) Release(_ context.Context, keyDigest string, audit *AuditRecord) error {
	return s.batch(audit, func(tx *bolt.Tx) error {
		r, err := getRunnerByKey(tx, keyDigest)
		if err != nil {
			return err
		}
		if r.State != StatePending {
			return fmt.Errorf("%w: runner %s is %s, not pending", ErrStateBackward, r.Name, r.State)
		}
		if err := tx.Bucket(bucketNames).Delete([]byte(r.Name)); err != nil {
			return err
		}
		return tx.Bucket(bucketKeys).Delete([]byte(keyDigest))
	})
}

// Activate implements Store.
func (s *BoltStore) Activate(_ context.Context, r *Runner, audit *AuditRecord) error {
	return s.batch(audit, func(tx *bolt.Tx) error {
		cur, err := getRunnerByKey(tx, r.KeyDigest)
		if err != nil {
			return err
		}
		if cur.State != StatePending {
			return fmt.Errorf("%w: runner %s is %s, not pending", ErrStateBackward, cur.Name, cur.State)
		}
		rec := *r
		rec.State = StateLive
		return putRunner(tx, &rec)
	})
}

// SetState implements Store.
func (s *BoltStore) SetState(_ context.Context, name string, state RunnerState, now time.Time, audit *AuditRecord) error {
	return s.batch(audit, func(tx *bolt.Tx) error {
		digest := tx.Bucket(bucketNames).Get([]byte(name))
		if digest == nil {
			return ErrNoRunner
		}
		r, err := getRunnerByKey(tx, string(digest))
		if err != nil {
			return err
		}
		if !r.State.Forward(state) {
			return fmt.Errorf("%w: runner %s is %s, not %s", ErrStateBackward, name, r.State, state)
		}
		r.State, r.UpdatedAt = state, now
		return putRunner(tx, r)
	})
}

// Runner implements Store.
func (s *BoltStore) Runner(_ context.Context, name string) (*Runner, error) {
	var r *Runner
	err := s.db.View(func(tx *bolt.Tx) error {
		digest := tx.Bucket(bucketNames).Get([]byte(name))
		if digest == nil {
			return ErrNoRunner
		}
		var err error
		r, err = getRunnerByKey(tx, string(digest))
		return err
	})
	return r, err
}

// Runners implements Store.
func (s *BoltStore) Runners(_ context.Context) ([]Runner, error) {
	var out []Runner
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketNames).ForEach(func(_, digest []byte) error {
			r, err := getRunnerByKey(tx, string(digest))
			if err != nil {
				return err
			}
			out = append(out, *r)
			return nil
		})
	})
	return out, err
}

// Audit implements Store.
func (s *BoltStore) Audit(_ context.Context, rec *AuditRecord) error {
	return s.batch(rec, func(*bolt.Tx) error { return nil })
}

// AuditLog implements Store.
func (s *BoltStore) AuditLog(_ context.Context, fn func(AuditRecord) error) error {
	return s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketAudit).ForEach(func(_, v []byte) error {
			var r AuditRecord
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("%w: undecodable record: %v", ErrAuditChain, err)
			}
			return fn(r)
		})
	})
}

// PruneNonces implements Store.
func (s *BoltStore) PruneNonces(_ context.Context, now time.Time) (int, error) {
	n := 0
	err := s.db.Update(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketNonces).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if len(v) == 8 && now.UnixNano() > int64(binary.BigEndian.Uint64(v)) {
				if err := c.Delete(); err != nil {
					return err
				}
				n++
			}
		}
		return nil
	})
	return n, err
}

// batch runs fn and, when it succeeds, appends the audit record, in one
// transaction coalesced with concurrent ones. bbolt may run fn more than
// once; fn only touches the transaction.
func (s *BoltStore) batch(audit *AuditRecord, fn func(*bolt.Tx) error) error {
	var appended AuditRecord
	err := s.db.Batch(func(tx *bolt.Tx) error {
		if err := fn(tx); err != nil {
			return err
		}
		if audit == nil {
			return nil
		}
		var err error
		appended, err = appendAudit(tx, *audit)
		return err
	})
	if err == nil && audit != nil {
		*audit = appended
	}
	return err
}

func appendAudit(tx *bolt.Tx, r AuditRecord) (AuditRecord, error) {
	meta := tx.Bucket(bucketMeta)
	var seq uint64
	if b := meta.Get([]byte("auditSeq")); len(b) == 8 {
		seq = binary.BigEndian.Uint64(b)
	}
	seq++
	r.Seq = seq
	r.Prev = string(meta.Get([]byte("auditHead")))
	h, err := r.chainHash()
	if err != nil {
		return r, err
	}
	r.Hash = h
	v, err := json.Marshal(r)
	if err != nil {
		return r, err
	}
	var key [8]byte
	binary.BigEndian.PutUint64(key[:], seq)
	if err := tx.Bucket(bucketAudit).Put(key[:], v); err != nil {
		return r, err
	}
	if err := meta.Put([]byte("auditSeq"), key[:]); err != nil {
		return r, err
	}
	return r, meta.Put([]byte("auditHead"), []byte(h))
}

func getRunnerByKey(tx *bolt.Tx, digest string) (*Runner, error) {
	raw := tx.Bucket(bucketKeys).Get([]byte(digest))
	if raw == nil {
		return nil, ErrNoRunner
	}
	var r Runner
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

func putRunner(tx *bolt.Tx, r *Runner) error {
	v, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if existing := tx.Bucket(bucketNames).Get([]byte(r.Name)); existing != nil && !bytes.Equal(existing, []byte(r.KeyDigest)) {
		return fmt.Errorf("runner name %s is taken by another key", r.Name)
	}
	if err := tx.Bucket(bucketKeys).Put([]byte(r.KeyDigest), v); err != nil {
		return err
	}
	return tx.Bucket(bucketNames).Put([]byte(r.Name), []byte(r.KeyDigest))
}

// Fleet buckets.
var (
	bucketVMs        = []byte("vms")        // VM name -> VM
	bucketJobs       = []byte("jobs")       // job id (uint64 BE) -> QueuedJob
	bucketDeliveries = []byte("deliveries") // webhook delivery id -> first seen (Unix nanoseconds)
	bucketLeases     = []byte("leases")     // lease name -> lease
)

type lease struct {
	Holder string    `json:"holder"`
	Until  time.Time `json:"until"`
}

// PutVM implements Store.
func (s *BoltStore) PutVM(_ context.Context, vm *VM, audit *AuditRecord) error {
	return s.batch(audit, func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketVMs)
		if raw := b.Get([]byte(vm.Name)); raw != nil {
			var cur VM
			if err := json.Unmarshal(raw, &cur); err != nil {
				return err
			}
			if !cur.State.Forward(vm.State) {
				return fmt.Errorf("%w: VM %s is %s, not %s", ErrStateBackward, vm.Name, cur.State, vm.State)
			}
		}
		v, err := json.Marshal(vm)
		if err != nil {
			return err
		}
		return b.Put([]byte(vm.Name), v)
	})
}

// VM implements Store.
func (s *BoltStore) VM(_ context.Context, name string) (*VM, error) {
	var vm *VM
	err := s.db.View(func(tx *bolt.Tx) error {
		raw := tx.Bucket(bucketVMs).Get([]byte(name))
		if raw == nil {
			return ErrNoVM
		}
		vm = &VM{}
		return json.Unmarshal(raw, vm)
	})
	return vm, err
}

// VMs implements Store.
func (s *BoltStore) VMs(_ context.Context) ([]VM, error) {
	var out []VM
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketVMs).ForEach(func(_, v []byte) error {
			var vm VM
			if err := json.Unmarshal(v, &vm); err != nil {
				return err
			}
			out = append(out, vm)
			return nil
		})
	})
	return out, err
}

// PutJob implements Store.
func (s *BoltStore) PutJob(_ context.Context, j *QueuedJob) error {
	return s.batch(nil, func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketJobs)
		key := binary.BigEndian.AppendUint64(nil, uint64(j.ID))
		if raw := b.Get(key); raw != nil {
			var cur QueuedJob
			if err := json.Unmarshal(raw, &cur); err != nil {
				return err
			}
			if jobStateOrder[j.State] < jobStateOrder[cur.State] {
				return fmt.Errorf("%w: job %d is %s, not %s", ErrStateBackward, j.ID, cur.State, j.State)
			}
		}
		v, err := json.Marshal(j)
		if err != nil {
			return err
		}
		return b.Put(key, v)
	})
}

// Jobs implements Store.
func (s *BoltStore) Jobs(_ context.Context) ([]QueuedJob, error) {
	var out []QueuedJob
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketJobs).ForEach(func(_, v []byte) error {
			var j QueuedJob
			if err := json.Unmarshal(v, &j); err != nil {
				return err
			}
			out = append(out, j)
			return nil
		})
	})
	return out, err
}

// FirstDelivery implements Store.
func (s *BoltStore) FirstDelivery(_ context.Context, id string, now time.Time) (bool, error) {
	first := false
	err := s.batch(nil, func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketDeliveries)
		first = b.Get([]byte(id)) == nil
		if !first {
			return nil
		}
		return b.Put([]byte(id), binary.BigEndian.AppendUint64(nil, uint64(now.UnixNano())))
	})
	return first, err
}

// Lease implements Store.
func (s *BoltStore) Lease(_ context.Context, name, holder string, now, until time.Time) error {
	return s.batch(nil, func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketLeases)
		if raw := b.Get([]byte(name)); raw != nil {
			var l lease
			if err := json.Unmarshal(raw, &l); err != nil {
				return err
			}
			if l.Holder != holder && now.Before(l.Until) {
				return fmt.Errorf("%w: %s holds %s until %s", ErrLeaseHeld, l.Holder, name, l.Until.Format(time.RFC3339))
			}
		}
		v, err := json.Marshal(lease{Holder: holder, Until: until})
		if err != nil {
			return err
		}
		return b.Put([]byte(name), v)
	})
}

// PruneFleet implements Store.
func (s *BoltStore) PruneFleet(_ context.Context, before time.Time) (int, error) {
	n := 0
	err := s.db.Update(func(tx *bolt.Tx) error {
		prune := func(bucket []byte, old func(v []byte) bool) error {
			c := tx.Bucket(bucket).Cursor()
			for k, v := c.First(); k != nil; k, v = c.Next() {
				if old(v) {
					if err := c.Delete(); err != nil {
						return err
					}
					n++
				}
			}
			return nil
		}
		if err := prune(bucketVMs, func(v []byte) bool {
			var vm VM
			return json.Unmarshal(v, &vm) == nil && vm.State == VMDestroyed && vm.UpdatedAt.Before(before)
		}); err != nil {
			return err
		}
		if err := prune(bucketJobs, func(v []byte) bool {
			var j QueuedJob
			return json.Unmarshal(v, &j) == nil && j.State == JobCompleted && j.UpdatedAt.Before(before)
		}); err != nil {
			return err
		}
		return prune(bucketDeliveries, func(v []byte) bool {
			return len(v) == 8 && int64(binary.BigEndian.Uint64(v)) < before.UnixNano()
		})
	})
	return n, err
}

// DeliverySeen implements Store.
func (s *BoltStore) DeliverySeen(_ context.Context, id string) (bool, error) {
	seen := false
	err := s.db.View(func(tx *bolt.Tx) error {
		seen = tx.Bucket(bucketDeliveries).Get([]byte(id)) != nil
		return nil
	})
	return seen, err
}
