package jobgate

import (
	"context"
	"encoding/binary"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func openTestStore(t *testing.T) (*BoltStore, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "gate.db")
	s, err := OpenBoltStore(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

var t0 = time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)

func TestNonceLifecycle(t *testing.T) {
	s, _ := openTestStore(t)
	ctx := context.Background()
	if err := s.CheckNonce(ctx, []byte("0123456789abcdef0123456789abcdef01234567"), t0); !errors.Is(err, ErrNonceUnknown) {
		t.Fatalf("forged nonce: %v", err)
	}
	other, _ := openTestStore(t)
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
	r := &Runner{Name: "attested-a", KeyDigest: "aa"}
	if err := s.Reserve(ctx, n, t0, r, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Reserve(ctx, n, t0, &Runner{Name: "attested-b", KeyDigest: "bb"}, nil); !errors.Is(err, ErrNonceUsed) {
		t.Fatalf("reused nonce: %v", err)
	}
	if got, err := s.PruneNonces(ctx, t0.Add(2*time.Minute)); err != nil || got != 1 {
		t.Fatalf("prune: %d %v", got, err)
	}
}

// TestReserveIsAtomic: concurrent reservations of one key with distinct
// nonces: exactly one wins; the losers' nonces are NOT spent.
func TestReserveIsAtomic(t *testing.T) {
	s, _ := openTestStore(t)
	ctx := context.Background()
	const n = 16
	nonces := make([][]byte, n)
	for i := range nonces {
		var err error
		if nonces[i], err = s.NewNonce(ctx, t0.Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.Reserve(ctx, nonces[i], t0, &Runner{Name: "attested-k", KeyDigest: "key"}, nil)
		}()
	}
	wg.Wait()
	wins := 0
	for i, err := range errs {
		switch {
		case err == nil:
			wins++
		case errors.Is(err, ErrKeyAdmitted):
			if cerr := s.CheckNonce(ctx, nonces[i], t0); cerr != nil {
				t.Errorf("a losing reservation spent its nonce: %v", cerr)
			}
		default:
			t.Errorf("reservation %d: %v", i, err)
		}
	}
	if wins != 1 {
		t.Fatalf("%d reservations won, want exactly 1", wins)
	}
}

func TestRunnerStatesAndRestart(t *testing.T) {
	s, path := openTestStore(t)
	ctx := context.Background()
	n, _ := s.NewNonce(ctx, t0.Add(time.Minute))
	r := &Runner{Name: "attested-x", KeyDigest: "kx", EnvKey: []byte{1}, AdmittedAt: t0}
	if err := s.Reserve(ctx, n, t0, r, nil); err != nil {
		t.Fatal(err)
	}
	r.ID = 42
	if err := s.Activate(ctx, r, &AuditRecord{Time: t0, Action: "admit", Result: "accepted"}); err != nil {
		t.Fatal(err)
	}
	got, err := s.Runner(ctx, "attested-x")
	if err != nil || got.State != StateLive || got.ID != 42 {
		t.Fatalf("runner %+v %v", got, err)
	}
	// Restart: nothing forgotten.
	s.Close()
	s2, err := OpenBoltStore(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if err := s2.Reserve(ctx, n, t0, r, nil); !errors.Is(err, ErrNonceUsed) {
		t.Fatalf("after restart, the used nonce: %v", err)
	}
	n2, _ := s2.NewNonce(ctx, t0.Add(time.Minute))
	if err := s2.Reserve(ctx, n2, t0, r, nil); !errors.Is(err, ErrKeyAdmitted) {
		t.Fatalf("after restart, the admitted key: %v", err)
	}
	if err := s2.SetState(ctx, "attested-x", StateDeregistered, t0, &AuditRecord{Time: t0, Action: "deregister", Result: "removed"}); err != nil {
		t.Fatal(err)
	}
	if err := s2.Reserve(ctx, n2, t0, r, nil); !errors.Is(err, ErrKeyAdmitted) {
		t.Fatalf("a deregistered key is still never admitted again: %v", err)
	}
	if cnt, head, err := VerifyAudit(ctx, s2); err != nil || cnt != 2 || head == "" {
		t.Fatalf("audit: %d %q %v", cnt, head, err)
	}
}

func TestAuditChainDetectsTampering(t *testing.T) {
	ctx := context.Background()
	build := func(t *testing.T) (*BoltStore, string) {
		s, path := openTestStore(t)
		for i := range 5 {
			if err := s.Audit(ctx, &AuditRecord{Time: t0.Add(time.Duration(i) * time.Second), Action: "admit", Result: "rejected", Reason: "nonce_used"}); err != nil {
				t.Fatal(err)
			}
		}
		if n, _, err := VerifyAudit(ctx, s); err != nil || n != 5 {
			t.Fatalf("intact chain: %d %v", n, err)
		}
		return s, path
	}
	tamper := map[string]func(b *bolt.Bucket){
		"record edited": func(b *bolt.Bucket) {
			k, v := seqKey(3), b.Get(seqKey(3))
			b.Put(k, []byte(strings.Replace(string(v), `"rejected"`, `"accepted"`, 1)))
		},
		"record deleted": func(b *bolt.Bucket) { b.Delete(seqKey(2)) },
		"records swapped": func(b *bolt.Bucket) {
			v2, v4 := append([]byte(nil), b.Get(seqKey(2))...), append([]byte(nil), b.Get(seqKey(4))...)
			b.Put(seqKey(2), v4)
			b.Put(seqKey(4), v2)
		},
	}
	for name, f := range tamper {
		t.Run(name, func(t *testing.T) {
			s, _ := build(t)
			s.db.Update(func(tx *bolt.Tx) error { f(tx.Bucket(bucketAudit)); return nil })
			if _, _, err := VerifyAudit(ctx, s); !errors.Is(err, ErrAuditChain) {
				t.Fatalf("got %v, want ErrAuditChain", err)
			}
		})
	}
}

func seqKey(n uint64) []byte { return binary.BigEndian.AppendUint64(nil, n) }

// TestFleetState: VM and job states only move forward, a webhook delivery
// id is new once, a lease has one holder until it lapses, and pruning
// forgets only what is finished.
func TestFleetState(t *testing.T) {
	s, err := OpenBoltStore(filepath.Join(t.TempDir(), "gate.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	now := time.Now()
	vm := &VM{Name: "pool-a-1", Pool: "a", State: VMLaunching, LaunchedAt: now, UpdatedAt: now}
	if err := s.PutVM(ctx, vm, nil); err != nil {
		t.Fatal(err)
	}
	vm.State = VMBusy
	if err := s.PutVM(ctx, vm, &AuditRecord{Action: "fleet", Result: "busy"}); err != nil {
		t.Fatal(err)
	}
	vm.State = VMAdmitted
	if err := s.PutVM(ctx, vm, nil); !errors.Is(err, ErrStateBackward) {
		t.Fatalf("VM state moved backward: %v", err)
	}
	if got, err := s.VM(ctx, "pool-a-1"); err != nil || got.State != VMBusy {
		t.Fatalf("VM %+v %v", got, err)
	}
	if _, err := s.VM(ctx, "nope"); !errors.Is(err, ErrNoVM) {
		t.Fatalf("unknown VM: %v", err)
	}
	j := &QueuedJob{ID: 7, State: JobInProgress, UpdatedAt: now}
	if err := s.PutJob(ctx, j); err != nil {
		t.Fatal(err)
	}
	j.State = JobQueued
	if err := s.PutJob(ctx, j); !errors.Is(err, ErrStateBackward) {
		t.Fatalf("a late queued webhook moved the job back: %v", err)
	}
	for i, want := range []bool{true, false, false} {
		if first, err := s.FirstDelivery(ctx, "delivery-1", now); err != nil || first != want {
			t.Fatalf("delivery seen %d: first=%v err=%v", i, first, err)
		}
	}
	if err := s.Lease(ctx, "reconcile/a", "gate-1", now, now.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := s.Lease(ctx, "reconcile/a", "gate-2", now.Add(time.Second), now.Add(time.Minute)); !errors.Is(err, ErrLeaseHeld) {
		t.Fatalf("second holder: %v", err)
	}
	if err := s.Lease(ctx, "reconcile/a", "gate-1", now.Add(time.Second), now.Add(2*time.Minute)); err != nil {
		t.Fatalf("renewal: %v", err)
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
	if first, _ := s.FirstDelivery(ctx, "delivery-1", now); !first {
		t.Fatal("a pruned delivery id is still remembered")
	}
}
