package jobgate

// The store contract: every test here runs against both stores (bbolt and
// PostgreSQL, a real throwaway cluster from internal/pgtest). Tests named
// TestPostgres* are about what only a shared database has: replicas,
// migrations, refusals by the database itself, outages.

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/attested-runner/attested-runner/internal/pgtest"
	"github.com/jackc/pgx/v5"
	bolt "go.etcd.io/bbolt"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

var t0 = time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)

// storeFixture is one store under test and the means to reach its state
// again.
type storeFixture struct {
	kind string
	s    Store
	// restart closes s and opens the same state again (a gate restart).
	restart func(t *testing.T) Store
	// replica opens another store on the same state while s stays open (a
	// second gate); nil for bbolt, whose file one process holds.
	replica func(t *testing.T) Store
	// tamper edits the audit log behind the store's back, as whoever
	// holds the file or the database's superuser could.
	tamper func(t *testing.T, edit auditEdit)
}

// gates is the store as the gates of a test see it: s, and a replica on
// the same state where the kind has one (PostgreSQL).
func (fx *storeFixture) gates(t *testing.T) []Store {
	if fx.replica == nil {
		return []Store{fx.s}
	}
	return []Store{fx.s, fx.replica(t)}
}

// auditEdit is one way to tamper with the stored audit log.
type auditEdit struct {
	// replace rewrites record seq, replacing from by to in its JSON.
	seq      uint64
	from, to string
	// delete removes record seq; swap exchanges records seq and with.
	delete bool
	with   uint64
}

// forEachStore runs f against a fresh store of each kind.
func forEachStore(t *testing.T, f func(t *testing.T, fx *storeFixture)) {
	t.Helper()
	t.Run("bbolt", func(t *testing.T) { f(t, boltFixture(t)) })
	t.Run("postgres", func(t *testing.T) { f(t, pgFixture(t)) })
}

func boltFixture(t *testing.T) *storeFixture {
	path := filepath.Join(t.TempDir(), "gate.db")
	open := func(t *testing.T) *BoltStore {
		s, err := OpenBoltStore(path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	fx := &storeFixture{kind: "bbolt"}
	cur := open(t)
	fx.s = cur
	fx.restart = func(t *testing.T) Store {
		cur.Close()
		cur = open(t)
		fx.s = cur
		return cur
	}
	fx.tamper = func(t *testing.T, e auditEdit) {
		err := cur.db.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucketAudit)
			switch {
			case e.delete:
				return b.Delete(seqKey(e.seq))
			case e.with != 0:
				v1, v2 := append([]byte(nil), b.Get(seqKey(e.seq))...), append([]byte(nil), b.Get(seqKey(e.with))...)
				if err := b.Put(seqKey(e.seq), v2); err != nil {
					return err
				}
				return b.Put(seqKey(e.with), v1)
			default:
				return b.Put(seqKey(e.seq), []byte(strings.Replace(string(b.Get(seqKey(e.seq))), e.from, e.to, 1)))
			}
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return fx
}

func seqKey(n uint64) []byte { return binary.BigEndian.AppendUint64(nil, n) }

// openPG opens a PostgreSQL store on dsn, closed at the test's end.
func openPG(t testing.TB, dsn string) *PostgresStore {
	t.Helper()
	s, err := OpenPostgresStore(context.Background(), PostgresOptions{DSN: dsn, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func pgFixture(t *testing.T) *storeFixture {
	dsn := pgtest.DB(t)
	fx := &storeFixture{kind: "postgres", s: openPG(t, dsn)}
	fx.restart = func(t *testing.T) Store {
		fx.s.Close()
		fx.s = openPG(t, dsn)
		return fx.s
	}
	fx.replica = func(t *testing.T) Store { return openPG(t, dsn) }
	fx.tamper = func(t *testing.T, e auditEdit) {
		// The superuser, bypassing the triggers that refuse this to
		// everyone else (session_replication_role = replica).
		var sql string
		switch {
		case e.delete:
			sql = fmt.Sprintf("DELETE FROM audit_log WHERE seq = %d", e.seq)
		case e.with != 0:
			sql = fmt.Sprintf(`UPDATE audit_log a SET record = b.record FROM audit_log b
				WHERE (a.seq, b.seq) IN ((%d, %d), (%d, %d))`, e.seq, e.with, e.with, e.seq)
		default:
			sql = fmt.Sprintf("UPDATE audit_log SET record = replace(record::text, %s, %s)::json WHERE seq = %d",
				quote(e.from), quote(e.to), e.seq)
		}
		superExec(t, dsn, "SET session_replication_role = replica; "+sql)
	}
	return fx
}

func quote(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// superExec runs SQL on dsn's database as the test cluster's superuser.
func superExec(t testing.TB, dsn, sql string) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func TestNonceLifecycle(t *testing.T) {
	forEachStore(t, func(t *testing.T, fx *storeFixture) {
		s := fx.s
		ctx := context.Background()
		if err := s.CheckNonce(ctx, []byte("0123456789abcdef0123456789abcdef01234567"), t0); !errors.Is(err, ErrNonceUnknown) {
			t.Fatalf("forged nonce: %v", err)
		}
		other, err := OpenBoltStore(filepath.Join(t.TempDir(), "other.db"))
		if err != nil {
			t.Fatal(err)
		}
		defer other.Close()
		foreign, _ := other.NewNonce(ctx, t0.Add(time.Minute))
		if err := s.CheckNonce(ctx, foreign, t0); !errors.Is(err, ErrNonceUnknown) {
			t.Fatalf("another gate's nonce: %v", err)
		}
		n, err := s.NewNonce(ctx, t0.Add(time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		tampered := append([]byte(nil), n...)
		tampered[nonceRandSize] ^= 1 // push the expiry out
		if err := s.CheckNonce(ctx, tampered, t0); !errors.Is(err, ErrNonceUnknown) {
			t.Fatalf("nonce with an edited expiry: %v", err)
		}
		if err := s.CheckNonce(ctx, n, t0); err != nil {
			t.Fatalf("fresh nonce: %v", err)
		}
		if err := s.CheckNonce(ctx, n, t0.Add(time.Minute)); !errors.Is(err, ErrNonceExpired) {
			t.Fatalf("expired nonce: %v", err)
		}
		if err := s.Reserve(ctx, n, t0.Add(time.Minute), &Runner{Name: "attested-late", KeyDigest: "late"}, nil); !errors.Is(err, ErrNonceExpired) {
			t.Fatalf("reservation with an expired nonce: %v", err)
		}
		r := &Runner{Name: "attested-a", KeyDigest: "aa"}
		if err := s.Reserve(ctx, n, t0, r, nil); err != nil {
			t.Fatal(err)
		}
		if err := s.Reserve(ctx, n, t0, &Runner{Name: "attested-b", KeyDigest: "bb"}, nil); !errors.Is(err, ErrNonceUsed) {
			t.Fatalf("reused nonce: %v", err)
		}
		// Used beats expired, as the gate reports it.
		if err := s.Reserve(ctx, n, t0.Add(time.Hour), &Runner{Name: "attested-b", KeyDigest: "bb"}, nil); !errors.Is(err, ErrNonceUsed) {
			t.Fatalf("reused, expired nonce: %v", err)
		}
		if err := s.CheckNonce(ctx, n, t0); !errors.Is(err, ErrNonceUsed) {
			t.Fatalf("check of a used nonce: %v", err)
		}
		if got, err := s.PruneNonces(ctx, t0.Add(time.Minute)); err != nil || got != 0 {
			t.Fatalf("prune at expiry: %d %v", got, err)
		}
		if got, err := s.PruneNonces(ctx, t0.Add(2*time.Minute)); err != nil || got != 1 {
			t.Fatalf("prune: %d %v", got, err)
		}
		if err := s.CheckNonce(ctx, n, t0.Add(2*time.Minute)); !errors.Is(err, ErrNonceExpired) {
			t.Fatalf("a pruned nonce is still refused by its expiry: %v", err)
		}
	})
}

// TestNonceSecret: the EK activation secret is derived only from a nonce
// the store issued, is the same after a restart and at a replica, and
// differs per nonce and per info.
func TestNonceSecret(t *testing.T) {
	forEachStore(t, func(t *testing.T, fx *storeFixture) {
		ctx := context.Background()
		n, err := fx.s.NewNonce(ctx, t0.Add(time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		a, err := fx.s.NonceSecret(ctx, n, []byte("ek|ak"))
		if err != nil || len(a) != 32 {
			t.Fatalf("secret %x, %v", a, err)
		}
		if b, _ := fx.s.NonceSecret(ctx, n, []byte("ek|other-ak")); bytes.Equal(a, b) {
			t.Fatal("the same secret for another AK")
		}
		n2, _ := fx.s.NewNonce(ctx, t0.Add(time.Minute))
		if b, _ := fx.s.NonceSecret(ctx, n2, []byte("ek|ak")); bytes.Equal(a, b) {
			t.Fatal("the same secret for another nonce")
		}
		forged := append([]byte(nil), n...)
		forged[0] ^= 1
		if b, err := fx.s.NonceSecret(ctx, forged, []byte("ek|ak")); !errors.Is(err, ErrNonceUnknown) || b != nil {
			t.Fatalf("secret for a nonce the store never issued: %x, %v", b, err)
		}
		if b, err := fx.s.NonceSecret(ctx, nil, []byte("ek|ak")); err == nil || b != nil {
			t.Fatalf("secret for no nonce: %x, %v", b, err)
		}
		again := fx.restart(t)
		if b, err := again.NonceSecret(ctx, n, []byte("ek|ak")); err != nil || !bytes.Equal(a, b) {
			t.Fatalf("after a restart: %x, %v (want %x)", b, err, a)
		}
		if fx.replica != nil {
			r := fx.replica(t)
			if b, err := r.NonceSecret(ctx, n, []byte("ek|ak")); err != nil || !bytes.Equal(a, b) {
				t.Fatalf("at a replica: %x, %v (want %x)", b, err, a)
			}
		}
	})
}

// TestReserveIsAtomic: concurrent reservations of one key with distinct
// nonces (against two gates where the store is shared): exactly one wins;
// the losers' nonces are NOT spent.
func TestReserveIsAtomic(t *testing.T) {
	forEachStore(t, func(t *testing.T, fx *storeFixture) {
		gates := fx.gates(t)
		ctx := context.Background()
		const n = 16
		nonces := make([][]byte, n)
		for i := range nonces {
			var err error
			if nonces[i], err = gates[i%len(gates)].NewNonce(ctx, t0.Add(time.Minute)); err != nil {
				t.Fatal(err)
			}
		}
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				// A nonce issued by one gate is presented to the other.
				errs[i] = gates[(i+1)%len(gates)].Reserve(ctx, nonces[i], t0, &Runner{Name: "attested-k", KeyDigest: "key"}, nil)
			}()
		}
		wg.Wait()
		wins := 0
		for i, err := range errs {
			switch {
			case err == nil:
				wins++
			case errors.Is(err, ErrKeyAdmitted):
				if cerr := fx.s.CheckNonce(ctx, nonces[i], t0); cerr != nil {
					t.Errorf("a losing reservation spent its nonce: %v", cerr)
				}
			default:
				t.Errorf("reservation %d: %v", i, err)
			}
		}
		if wins != 1 {
			t.Fatalf("%d reservations won, want exactly 1", wins)
		}
	})
}

// TestNonceSpentOnce: one nonce presented for distinct keys at once: one
// reservation, the others refused as a reused nonce, no key taken by them.
func TestNonceSpentOnce(t *testing.T) {
	forEachStore(t, func(t *testing.T, fx *storeFixture) {
		gates := fx.gates(t)
		ctx := context.Background()
		nonce, _ := fx.s.NewNonce(ctx, t0.Add(time.Minute))
		const n = 12
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = gates[i%len(gates)].Reserve(ctx, nonce, t0, &Runner{Name: fmt.Sprintf("attested-%02d", i), KeyDigest: fmt.Sprintf("k%02d", i)}, nil)
			}()
		}
		wg.Wait()
		wins := 0
		for i, err := range errs {
			switch {
			case err == nil:
				wins++
			case errors.Is(err, ErrNonceUsed):
				if _, err := fx.s.Runner(ctx, fmt.Sprintf("attested-%02d", i)); !errors.Is(err, ErrNoRunner) {
					t.Errorf("a refused reservation took its key: %v", err)
				}
			default:
				t.Errorf("reservation %d: %v", i, err)
			}
		}
		if wins != 1 {
			t.Fatalf("%d reservations won one nonce, want exactly 1", wins)
		}
	})
}

func TestRunnerStatesAndRestart(t *testing.T) {
	forEachStore(t, func(t *testing.T, fx *storeFixture) {
		s := fx.s
		ctx := context.Background()
		n, _ := s.NewNonce(ctx, t0.Add(time.Minute))
		r := &Runner{Name: "attested-x", KeyDigest: "kx", EnvKey: []byte{1}, Labels: []string{"self-hosted"}, AdmittedAt: t0, ExpiresAt: t0.Add(time.Hour)}
		if err := s.Reserve(ctx, n, t0, r, nil); err != nil {
			t.Fatal(err)
		}
		r.ID = 42
		audit := &AuditRecord{Time: t0, Action: "admit", Result: "accepted"}
		if err := s.Activate(ctx, r, audit); err != nil {
			t.Fatal(err)
		}
		if audit.Seq != 1 || audit.Hash == "" {
			t.Fatalf("the appended record is not returned: %+v", audit)
		}
		got, err := s.Runner(ctx, "attested-x")
		if err != nil || got.State != StateLive || got.ID != 42 || string(got.EnvKey) != "\x01" || !got.AdmittedAt.Equal(t0) {
			t.Fatalf("runner %+v %v", got, err)
		}
		if err := s.Activate(ctx, r, nil); !errors.Is(err, ErrStateBackward) {
			t.Fatalf("a live runner activated again: %v", err)
		}
		if err := s.Release(ctx, "kx", nil); !errors.Is(err, ErrStateBackward) {
			t.Fatalf("a live runner's key released: %v", err)
		}
		if _, err := s.Runner(ctx, "nope"); !errors.Is(err, ErrNoRunner) {
			t.Fatalf("unknown runner: %v", err)
		}
		if err := s.SetState(ctx, "nope", StateRemoved, t0, nil); !errors.Is(err, ErrNoRunner) {
			t.Fatalf("state of an unknown runner: %v", err)
		}
		if err := s.Release(ctx, "nope", nil); !errors.Is(err, ErrNoRunner) {
			t.Fatalf("release of an unknown key: %v", err)
		}
		// Restart: nothing forgotten.
		s2 := fx.restart(t)
		if err := s2.Reserve(ctx, n, t0, r, nil); !errors.Is(err, ErrNonceUsed) {
			t.Fatalf("after restart, the used nonce: %v", err)
		}
		n2, _ := s2.NewNonce(ctx, t0.Add(time.Minute))
		if err := s2.Reserve(ctx, n2, t0, r, nil); !errors.Is(err, ErrKeyAdmitted) {
			t.Fatalf("after restart, the admitted key: %v", err)
		}
		if err := s2.SetState(ctx, "attested-x", StateDeregistered, t0.Add(time.Second), &AuditRecord{Time: t0, Action: "deregister", Result: "removed"}); err != nil {
			t.Fatal(err)
		}
		if got, err := s2.Runner(ctx, "attested-x"); err != nil || got.State != StateDeregistered || !got.UpdatedAt.Equal(t0.Add(time.Second)) || got.ID != 42 {
			t.Fatalf("deregistered runner %+v %v", got, err)
		}
		if err := s2.Reserve(ctx, n2, t0, r, nil); !errors.Is(err, ErrKeyAdmitted) {
			t.Fatalf("a deregistered key is still never admitted again: %v", err)
		}
		// Forward only: an ended runner never lives again.
		for _, back := range []RunnerState{StateLive, StatePending} {
			if err := s2.SetState(ctx, "attested-x", back, t0, nil); !errors.Is(err, ErrStateBackward) {
				t.Fatalf("deregistered -> %s: %v", back, err)
			}
		}
		// The other end is the same rank (reconcile after a teardown).
		if err := s2.SetState(ctx, "attested-x", StateRemoved, t0, nil); err != nil {
			t.Fatalf("deregistered -> removed: %v", err)
		}
		if cnt, head, err := VerifyAudit(ctx, s2); err != nil || cnt != 2 || head == "" {
			t.Fatalf("audit: %d %q %v", cnt, head, err)
		}
		// A released reservation frees its key for a retry.
		n3, _ := s2.NewNonce(ctx, t0.Add(time.Minute))
		y := &Runner{Name: "attested-y", KeyDigest: "ky"}
		if err := s2.Reserve(ctx, n3, t0, y, nil); err != nil {
			t.Fatal(err)
		}
		if err := s2.Release(ctx, "ky", &AuditRecord{Time: t0, Action: "admit", Result: "failed"}); err != nil {
			t.Fatal(err)
		}
		n4, _ := s2.NewNonce(ctx, t0.Add(time.Minute))
		if err := s2.Reserve(ctx, n4, t0, y, nil); err != nil {
			t.Fatalf("retry after a release: %v", err)
		}
		rs, err := s2.Runners(ctx)
		if err != nil || len(rs) != 2 || rs[0].Name != "attested-x" || rs[1].Name != "attested-y" || rs[1].State != StatePending {
			t.Fatalf("runners %+v %v", rs, err)
		}
	})
}

// TestRunnerStateOrder: both stores accept exactly the moves
// RunnerState.Forward allows, and the same for VMs and jobs.
func TestRunnerStateOrder(t *testing.T) {
	runnerStates := []RunnerState{StatePending, StateLive, StateDeregistered, StateRemoved}
	vmStates := []VMState{VMLaunching, VMAdmitted, VMBusy, VMDone, VMDestroyed}
	jobStates := []JobState{JobQueued, JobAbandoned, JobInProgress, JobCompleted}
	forEachStore(t, func(t *testing.T, fx *storeFixture) {
		s := fx.s
		ctx := context.Background()
		i := 0
		for _, from := range runnerStates[1:] { // runners start pending
			for _, to := range runnerStates {
				i++
				name, key := fmt.Sprintf("attested-%d", i), fmt.Sprintf("key-%d", i)
				n, _ := s.NewNonce(ctx, t0.Add(time.Minute))
				if err := s.Reserve(ctx, n, t0, &Runner{Name: name, KeyDigest: key}, nil); err != nil {
					t.Fatal(err)
				}
				if err := s.Activate(ctx, &Runner{Name: name, KeyDigest: key}, nil); err != nil {
					t.Fatal(err)
				}
				if err := s.SetState(ctx, name, from, t0, nil); err != nil {
					t.Fatal(err)
				}
				err := s.SetState(ctx, name, to, t0, nil)
				if want := from.Forward(to); (err == nil) != want || (err != nil && !errors.Is(err, ErrStateBackward)) {
					t.Errorf("runner %s -> %s: %v (forward %v)", from, to, err, want)
				}
			}
		}
		for _, from := range vmStates {
			for _, to := range vmStates {
				i++
				vm := &VM{Name: fmt.Sprintf("vm-%d", i), State: from, UpdatedAt: t0}
				if err := s.PutVM(ctx, vm, nil); err != nil {
					t.Fatal(err)
				}
				vm.State = to
				err := s.PutVM(ctx, vm, nil)
				if want := from.Forward(to); (err == nil) != want || (err != nil && !errors.Is(err, ErrStateBackward)) {
					t.Errorf("VM %s -> %s: %v (forward %v)", from, to, err, want)
				}
			}
		}
		for _, from := range jobStates {
			for _, to := range jobStates {
				i++
				j := &QueuedJob{ID: int64(i), State: from, UpdatedAt: t0}
				if err := s.PutJob(ctx, j); err != nil {
					t.Fatal(err)
				}
				j.State = to
				err := s.PutJob(ctx, j)
				if want := jobStateOrder[to] >= jobStateOrder[from]; (err == nil) != want || (err != nil && !errors.Is(err, ErrStateBackward)) {
					t.Errorf("job %s -> %s: %v (forward %v)", from, to, err, want)
				}
			}
		}
	})
}

func TestAuditChainDetectsTampering(t *testing.T) {
	ctx := context.Background()
	edits := map[string]auditEdit{
		"record edited":   {seq: 3, from: `"rejected"`, to: `"accepted"`},
		"record deleted":  {seq: 2, delete: true},
		"records swapped": {seq: 2, with: 4},
	}
	forEachStore(t, func(t *testing.T, fx *storeFixture) {
		for name, e := range edits {
			t.Run(name, func(t *testing.T) {
				var f *storeFixture
				if fx.kind == "bbolt" {
					f = boltFixture(t)
				} else {
					f = pgFixture(t)
				}
				for i := range 5 {
					if err := f.s.Audit(ctx, &AuditRecord{Time: t0.Add(time.Duration(i) * time.Second), Action: "admit", Result: "rejected", Reason: "nonce_used"}); err != nil {
						t.Fatal(err)
					}
				}
				if n, _, err := VerifyAudit(ctx, f.s); err != nil || n != 5 {
					t.Fatalf("intact chain: %d %v", n, err)
				}
				f.tamper(t, e)
				if _, _, err := VerifyAudit(ctx, f.s); !errors.Is(err, ErrAuditChain) {
					t.Fatalf("got %v, want ErrAuditChain", err)
				}
			})
		}
	})
}

// TestConcurrentAuditOneChain: many goroutines (on two gates where the
// store is shared) append audit records, alone and with state changes:
// one chain, no record lost, none twice.
func TestConcurrentAuditOneChain(t *testing.T) {
	forEachStore(t, func(t *testing.T, fx *storeFixture) {
		gates := fx.gates(t)
		ctx := context.Background()
		const writers, each = 8, 6
		var wg sync.WaitGroup
		errc := make(chan error, writers*each)
		for w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				s := gates[w%len(gates)]
				for i := range each {
					rec := &AuditRecord{Time: t0, Action: "admit", Result: "rejected", Detail: fmt.Sprintf("w%d-%d", w, i)}
					var err error
					if i%2 == 0 {
						err = s.Audit(ctx, rec)
					} else {
						err = s.PutVM(ctx, &VM{Name: fmt.Sprintf("vm-%d-%d", w, i), State: VMLaunching, UpdatedAt: t0}, rec)
					}
					if err == nil && (rec.Seq == 0 || rec.Hash == "") {
						err = fmt.Errorf("appended record not returned: %+v", rec)
					}
					errc <- err
				}
			}()
		}
		wg.Wait()
		close(errc)
		for err := range errc {
			if err != nil {
				t.Fatal(err)
			}
		}
		n, head, err := VerifyAudit(ctx, fx.s)
		if err != nil || n != writers*each {
			t.Fatalf("chain: %d records (want %d), %v", n, writers*each, err)
		}
		seen := map[string]bool{}
		if err := fx.s.AuditLog(ctx, func(r AuditRecord) error {
			if seen[r.Detail] {
				return fmt.Errorf("record %q twice", r.Detail)
			}
			seen[r.Detail] = true
			return nil
		}); err != nil || len(seen) != writers*each {
			t.Fatalf("%d distinct records: %v", len(seen), err)
		}
		for _, g := range gates[1:] {
			if n2, head2, err := VerifyAudit(ctx, g); err != nil || n2 != n || head2 != head {
				t.Fatalf("the other gate sees %d records, head %s: %v", n2, head2, err)
			}
		}
	})
}

// TestFleetState: VM and job states only move forward, a webhook delivery
// id is new once, a lease has one holder until it lapses, and pruning
// forgets only what is finished.
func TestFleetState(t *testing.T) {
	forEachStore(t, func(t *testing.T, fx *storeFixture) {
		s := fx.s
		ctx := context.Background()
		now := time.Now()
		vm := &VM{Name: "pool-a-1", Pool: "a", State: VMLaunching, AK: []byte("ak"), LaunchedAt: now, UpdatedAt: now}
		if err := s.PutVM(ctx, vm, nil); err != nil {
			t.Fatal(err)
		}
		vm.State = VMBusy
		audit := &AuditRecord{Action: "fleet", Result: "busy"}
		if err := s.PutVM(ctx, vm, audit); err != nil || audit.Seq != 1 {
			t.Fatalf("%v (audit %+v)", err, audit)
		}
		vm.State = VMAdmitted
		if err := s.PutVM(ctx, vm, &AuditRecord{Action: "fleet", Result: "admitted"}); !errors.Is(err, ErrStateBackward) {
			t.Fatalf("VM state moved backward: %v", err)
		}
		if n, _, err := VerifyAudit(ctx, s); err != nil || n != 1 {
			t.Fatalf("a refused change left an audit record: %d %v", n, err)
		}
		if got, err := s.VM(ctx, "pool-a-1"); err != nil || got.State != VMBusy || string(got.AK) != "ak" || !got.LaunchedAt.Equal(now) {
			t.Fatalf("VM %+v %v", got, err)
		}
		if _, err := s.VM(ctx, "nope"); !errors.Is(err, ErrNoVM) {
			t.Fatalf("unknown VM: %v", err)
		}
		j := &QueuedJob{ID: 7, State: JobInProgress, Labels: []string{"self-hosted"}, UpdatedAt: now}
		if err := s.PutJob(ctx, j); err != nil {
			t.Fatal(err)
		}
		j.State = JobQueued
		if err := s.PutJob(ctx, j); !errors.Is(err, ErrStateBackward) {
			t.Fatalf("a late queued webhook moved the job back: %v", err)
		}
		if err := s.PutJob(ctx, &QueuedJob{ID: 3, State: JobQueued, UpdatedAt: now}); err != nil {
			t.Fatal(err)
		}
		if jobs, err := s.Jobs(ctx); err != nil || len(jobs) != 2 || jobs[0].ID != 3 || jobs[1].State != JobInProgress {
			t.Fatalf("jobs %+v %v", jobs, err)
		}
		if seen, err := s.DeliverySeen(ctx, "delivery-1"); err != nil || seen {
			t.Fatalf("unseen delivery: %v %v", seen, err)
		}
		for i, want := range []bool{true, false, false} {
			if first, err := s.FirstDelivery(ctx, "delivery-1", now); err != nil || first != want {
				t.Fatalf("delivery seen %d: first=%v err=%v", i, first, err)
			}
		}
		if seen, err := s.DeliverySeen(ctx, "delivery-1"); err != nil || !seen {
			t.Fatalf("seen delivery: %v %v", seen, err)
		}
		if err := s.Lease(ctx, "reconcile/a", "gate-1", now, now.Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
		if err := s.Lease(ctx, "reconcile/a", "gate-2", now.Add(time.Second), now.Add(time.Minute)); !errors.Is(err, ErrLeaseHeld) || !strings.Contains(err.Error(), "gate-1") {
			t.Fatalf("second holder: %v", err)
		}
		if err := s.Lease(ctx, "reconcile/a", "gate-1", now.Add(time.Second), now.Add(2*time.Minute)); err != nil {
			t.Fatalf("renewal: %v", err)
		}
		if err := s.Lease(ctx, "reconcile/a", "gate-2", now.Add(time.Minute+time.Second), now.Add(3*time.Minute)); !errors.Is(err, ErrLeaseHeld) {
			t.Fatalf("the renewed lease was taken before it lapsed: %v", err)
		}
		if err := s.Lease(ctx, "reconcile/a", "gate-2", now.Add(3*time.Minute), now.Add(4*time.Minute)); err != nil {
			t.Fatalf("lapsed lease not taken over: %v", err)
		}
		vm.State, vm.UpdatedAt = VMDestroyed, now
		if err := s.PutVM(ctx, vm, nil); err != nil {
			t.Fatal(err)
		}
		live := &VM{Name: "pool-a-2", State: VMAdmitted, UpdatedAt: now}
		s.PutVM(ctx, live, nil)
		if n, err := s.PruneFleet(ctx, now.Add(time.Hour)); err != nil || n != 2 { // the destroyed VM, the delivery
			t.Fatalf("pruned %d: %v", n, err)
		}
		if vms, _ := s.VMs(ctx); len(vms) != 1 || vms[0].Name != "pool-a-2" {
			t.Fatalf("after pruning: %+v", vms)
		}
		if jobs, _ := s.Jobs(ctx); len(jobs) != 2 {
			t.Fatalf("unfinished jobs pruned: %+v", jobs)
		}
		if first, _ := s.FirstDelivery(ctx, "delivery-1", now); !first {
			t.Fatal("a pruned delivery id is still remembered")
		}
		j.State, j.UpdatedAt = JobCompleted, now
		if err := s.PutJob(ctx, j); err != nil {
			t.Fatal(err)
		}
		if n, err := s.PruneFleet(ctx, now.Add(time.Hour)); err != nil || n != 2 { // the completed job, the delivery
			t.Fatalf("pruned %d: %v", n, err)
		}
		// Restart: the fleet state is the store's.
		s = fx.restart(t)
		if vms, _ := s.VMs(ctx); len(vms) != 1 || vms[0].State != VMAdmitted {
			t.Fatalf("after restart: %+v", vms)
		}
		if err := s.Lease(ctx, "reconcile/a", "gate-1", now.Add(3*time.Minute), now.Add(5*time.Minute)); !errors.Is(err, ErrLeaseHeld) {
			t.Fatalf("after restart, the lease: %v", err)
		}
	})
}

// TestConcurrentFleetState: racing replicas take one lease, see a
// delivery id first once, and move a VM only forward.
func TestConcurrentFleetState(t *testing.T) {
	forEachStore(t, func(t *testing.T, fx *storeFixture) {
		gates := fx.gates(t)
		ctx := context.Background()
		const n = 10
		var wg sync.WaitGroup
		leaseErrs, firsts := make([]error, n), make([]bool, n)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				s := gates[i%len(gates)]
				leaseErrs[i] = s.Lease(ctx, "fleet/a", fmt.Sprintf("gate-%d", i), t0, t0.Add(time.Minute))
				first, err := s.FirstDelivery(ctx, "d-1", t0)
				if err != nil {
					t.Error(err)
				}
				firsts[i] = first
			}()
		}
		wg.Wait()
		holders, first := 0, 0
		for i := range n {
			if leaseErrs[i] == nil {
				holders++
			} else if !errors.Is(leaseErrs[i], ErrLeaseHeld) {
				t.Errorf("lease %d: %v", i, leaseErrs[i])
			}
			if firsts[i] {
				first++
			}
		}
		if holders != 1 || first != 1 {
			t.Fatalf("%d lease holders, %d first deliveries; want 1 and 1", holders, first)
		}
	})
}

// TestPostgresReplicasShareNonceKeyAndSchema: gates starting at once on an
// empty database migrate it once and agree on one nonce key: a nonce from
// one gate is good at every other.
func TestPostgresReplicasShareNonceKeyAndSchema(t *testing.T) {
	dsn := pgtest.DB(t)
	const n = 4
	stores := make([]*PostgresStore, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stores[i], errs[i] = OpenPostgresStore(context.Background(), PostgresOptions{DSN: dsn, Timeout: 30 * time.Second})
		}()
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("gate %d: %v", i, errs[i])
		}
		defer stores[i].Close()
	}
	ctx := context.Background()
	nonce, _ := stores[0].NewNonce(ctx, t0.Add(time.Minute))
	for i, s := range stores {
		if err := s.CheckNonce(ctx, nonce, t0); err != nil {
			t.Fatalf("gate %d refuses gate 0's nonce: %v", i, err)
		}
	}
	var versions int
	if err := stores[0].pool.QueryRow(ctx, "SELECT count(*) FROM schema_migrations").Scan(&versions); err != nil {
		t.Fatal(err)
	}
	if ms, _ := pgMigrations(); versions != len(ms) {
		t.Fatalf("%d migrations recorded, the binary has %d", versions, len(ms))
	}
}

// TestPostgresSchemaNewerRefused: a database a newer gate migrated, or
// whose migration differs from this binary's, is refused with a clear
// error rather than used.
func TestPostgresSchemaNewerRefused(t *testing.T) {
	dsn := pgtest.DB(t)
	openPG(t, dsn).Close()
	superExec(t, dsn, "INSERT INTO schema_migrations (version, name, digest) VALUES (99, 'from_the_future', 'x')")
	_, err := OpenPostgresStore(context.Background(), PostgresOptions{DSN: dsn})
	if !errors.Is(err, ErrSchemaNewer) || !strings.Contains(err.Error(), "version 99") {
		t.Fatalf("got %v, want ErrSchemaNewer", err)
	}
	superExec(t, dsn, "DELETE FROM schema_migrations WHERE version = 99; UPDATE schema_migrations SET digest = 'edited' WHERE version = 1")
	if _, err := OpenPostgresStore(context.Background(), PostgresOptions{DSN: dsn}); err == nil || !strings.Contains(err.Error(), "differs") {
		t.Fatalf("an edited migration: %v", err)
	}
}

// TestPostgresRefusesWhatTheStoreNeverDoes: the rules hold in the database
// for any session (a buggy or hostile gate writing SQL of its own), not
// only through the Go code: no key forgotten, no state backward, no audit
// record edited, deleted or forked, the nonce key written once.
func TestPostgresRefusesWhatTheStoreNeverDoes(t *testing.T) {
	dsn := pgtest.DB(t)
	s := openPG(t, dsn)
	ctx := context.Background()
	n, _ := s.NewNonce(ctx, t0.Add(time.Minute))
	r := &Runner{Name: "attested-z", KeyDigest: "kz"}
	if err := s.Reserve(ctx, n, t0, r, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Activate(ctx, r, &AuditRecord{Time: t0, Action: "admit", Result: "accepted"}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutVM(ctx, &VM{Name: "vm-1", State: VMBusy, UpdatedAt: t0}, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Audit(ctx, &AuditRecord{Time: t0, Action: "reconcile", Result: "removed"}); err != nil {
		t.Fatal(err)
	}
	for sql, code := range map[string]string{
		"DELETE FROM runners WHERE key_digest = 'kz'":                                                                     sqlKeyForgotten,
		"UPDATE runners SET state = 'pending', record = record || '{\"state\":\"pending\"}' WHERE key_digest = 'kz'":      sqlStateBackward,
		"UPDATE runners SET key_digest = 'other', record = record || '{\"keyDigest\":\"other\"}' WHERE key_digest = 'kz'": sqlRunnerIdentity,
		"UPDATE vms SET state = 'admitted', record = record || '{\"state\":\"admitted\"}'":                                sqlStateBackward,
		"DELETE FROM vms": sqlUnfinished,
		"UPDATE audit_log SET record = '{}' WHERE seq = 1":           sqlAuditEdit,
		"DELETE FROM audit_log WHERE seq = 2":                        sqlAuditEdit,
		"TRUNCATE audit_log":                                         sqlAuditEdit,
		"TRUNCATE runners":                                           sqlAuditEdit,
		"UPDATE audit_head SET seq = seq + 1, hash = 'forged'":       sqlAuditEdit,
		"UPDATE meta SET value = value WHERE key = 'nonceKey'":       "JG007",
		"DELETE FROM meta":                                           "JG007",
		"INSERT INTO audit_log VALUES (2, 'x', 'y', '{}')":           sqlAuditFork, // a second record 2: a fork
		"INSERT INTO audit_log VALUES (4, 'head?', 'z', '{}')":       sqlAuditFork, // a gap
		"INSERT INTO used_nonces SELECT nonce, 0 FROM used_nonces":   sqlUniqueViolated,
		"INSERT INTO runners SELECT * FROM runners":                  sqlUniqueViolated,
		"INSERT INTO leases VALUES ('l', '', now())":                 "23514",
		"INSERT INTO vms VALUES ('vm-2', 'sleeping', now(), '{}')":   "23514",
		"INSERT INTO jobs VALUES (1, 'queued', now(), '{\"id\":2}')": "23514",
	} {
		_, err := s.pool.Exec(ctx, sql)
		if code, got := code, pgCode(err); got != code {
			t.Errorf("%s: got %v (%s), want SQLSTATE %s", sql, err, got, code)
		}
	}
	if n, _, err := VerifyAudit(ctx, s); err != nil || n != 2 {
		t.Fatalf("after the refusals the chain is %d records: %v", n, err)
	}
	if got, err := s.Runner(ctx, "attested-z"); err != nil || got.State != StateLive {
		t.Fatalf("runner %+v %v", got, err)
	}
}

func pgCode(err error) string {
	var pe interface{ SQLState() string }
	if errors.As(err, &pe) {
		return pe.SQLState()
	}
	return fmt.Sprint(err)
}

// TestPostgresOutagesAreBoundedAndForgetNothing: the database's network
// partitioned (nothing passes, nothing closes), its connections reset, the
// server stopped dead and started again. While it is unreachable every
// operation fails within the store's timeout with an error that says so;
// a gate partitioned while holding the audit chain's head does not stall
// the other; afterwards both work again and nothing committed is lost.
func TestPostgresOutagesAreBoundedAndForgetNothing(t *testing.T) {
	c := pgtest.Shared(t)
	dsn := pgtest.DB(t) + " application_name=gate-b"
	proxy, err := c.Proxy()
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	ctx := context.Background()
	const timeout = time.Second
	a := openPG(t, dsn) // gate a: direct
	b, err := OpenPostgresStore(ctx, PostgresOptions{DSN: proxy.DSN(dsn), Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	nonce, _ := b.NewNonce(ctx, t0.Add(time.Hour))
	if err := b.Reserve(ctx, nonce, t0, &Runner{Name: "attested-1", KeyDigest: "k1"}, nil); err != nil {
		t.Fatal(err)
	}
	// Bounded by deadlines, not by measuring: the caller's context allows
	// the store's timeout plus a margin, and the store must answer (with
	// ErrStoreUnavailable) before that context runs out.
	bounded := func(what string, f func(ctx context.Context) error) error {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), timeout+3*time.Second)
		defer cancel()
		err := f(ctx)
		if ctx.Err() != nil {
			t.Errorf("%s: no answer within the store's timeout (%s) plus a margin: %v", what, timeout, err)
		}
		return err
	}

	// 1. Partition gate b while it holds the chain head's lock.
	tx, err := b.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "SELECT seq FROM audit_head FOR UPDATE"); err != nil {
		t.Fatal(err)
	}
	proxy.Blackhole()
	// Gate a appends once the server drops b's idle transaction
	// (idle_in_transaction_session_timeout = b's timeout), not never.
	err = bounded("gate a's append behind partitioned gate b", func(ctx context.Context) error {
		return a.Audit(ctx, &AuditRecord{Time: t0, Action: "admit", Result: "rejected", Detail: "while b is partitioned"})
	})
	if err != nil {
		t.Fatalf("gate a stalled behind partitioned gate b: %v", err)
	}
	n2, _ := b.NewNonce(ctx, t0.Add(time.Hour))
	err = bounded("a reservation", func(ctx context.Context) error {
		return b.Reserve(ctx, n2, t0, &Runner{Name: "attested-2", KeyDigest: "k2"}, nil)
	})
	if !errors.Is(err, ErrStoreUnavailable) {
		t.Fatalf("reservation through a partition: %v", err)
	}
	if err := bounded("a read", func(ctx context.Context) error { _, err := b.Runners(ctx); return err }); !errors.Is(err, ErrStoreUnavailable) {
		t.Fatalf("a read through a partition: %v", err)
	}
	proxy.Restore()
	tx.Rollback(ctx)

	// 2. Connections reset (pg_terminate_backend of all of gate b's).
	if n, err := c.TerminateBackends(ctx, "gate-b"); err != nil || n == 0 {
		t.Fatalf("terminated %d backends: %v", n, err)
	}
	if err := b.Reserve(ctx, n2, t0, &Runner{Name: "attested-2", KeyDigest: "k2"}, nil); err != nil {
		t.Fatalf("after its connections were reset, gate b: %v", err)
	}
	proxy.Cut()
	if _, err := b.Runners(ctx); err != nil {
		t.Fatalf("after its TCP connections were reset, gate b: %v", err)
	}

	// 3. The server stopped dead (pg_ctl stop -m immediate), then started.
	if err := c.StopImmediate(); err != nil {
		t.Fatal(err)
	}
	n3, _ := a.NewNonce(ctx, t0.Add(time.Hour)) // stateless: still served
	for name, s := range map[string]*PostgresStore{"a": a, "b": b} {
		err := bounded("a reservation", func(ctx context.Context) error {
			return s.Reserve(ctx, n3, t0, &Runner{Name: "attested-3", KeyDigest: "k3"}, nil)
		})
		if !errors.Is(err, ErrStoreUnavailable) {
			t.Fatalf("gate %s with the database down: %v", name, err)
		}
		t.Logf("gate %s with the database down: %v", name, err)
	}
	if err := c.StartAgain(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.Reserve(ctx, n3, t0, &Runner{Name: "attested-3", KeyDigest: "k3"}, nil); err != nil {
		t.Fatalf("after the restart, gate a: %v", err)
	}
	for name, s := range map[string]*PostgresStore{"a": a, "b": b} {
		for _, n := range [][]byte{nonce, n2, n3} {
			if err := s.CheckNonce(ctx, n, t0); !errors.Is(err, ErrNonceUsed) {
				t.Fatalf("gate %s forgot a used nonce: %v", name, err)
			}
		}
		if rs, err := s.Runners(ctx); err != nil || len(rs) != 3 {
			t.Fatalf("gate %s: runners %+v %v", name, rs, err)
		}
		if n, _, err := VerifyAudit(ctx, s); err != nil || n != 1 {
			t.Fatalf("gate %s: audit %d %v", name, n, err)
		}
	}
}
