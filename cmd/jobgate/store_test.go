package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/attested-runner/attested-runner/internal/pgtest"
	"github.com/attested-runner/attested-runner/jobgate"
	"github.com/google/go-cmp/cmp"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// TestStoreMigrate: `jobgate store migrate` moves a gate's embedded store
// into PostgreSQL without forgetting anything: a nonce issued before the
// move is good after it (the nonce key moved), a used one stays used, an
// admitted key stays admitted, the runners, fleet state and the audit
// chain (same records, same head) are the source's. `jobgate audit verify`
// then reads the chain from the database. A non-empty target is refused.
func TestStoreMigrate(t *testing.T) {
	dsn := pgtest.DB(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "gate.db")
	ctx := context.Background()
	src, err := jobgate.OpenBoltStore(path)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	issued, _ := src.NewNonce(ctx, now.Add(time.Hour))
	for i, name := range []string{"attested-live", "attested-gone", "attested-pending"} {
		n, _ := src.NewNonce(ctx, now.Add(time.Hour))
		r := &jobgate.Runner{Name: name, KeyDigest: "key-" + name, EnvKey: []byte{byte(i)}, Labels: []string{"self-hosted"}, AdmittedAt: now}
		if err := src.Reserve(ctx, n, now, r, nil); err != nil {
			t.Fatal(err)
		}
		if i < 2 {
			r.ID = int64(100 + i)
			if err := src.Activate(ctx, r, &jobgate.AuditRecord{Time: now, Action: "admit", Result: "accepted", RunnerName: name, KeyDigest: r.KeyDigest}); err != nil {
				t.Fatal(err)
			}
		}
	}
	src.SetState(ctx, "attested-gone", jobgate.StateDeregistered, now, &jobgate.AuditRecord{Time: now, Action: "deregister", Result: "removed"})
	src.Audit(ctx, &jobgate.AuditRecord{Time: now, Action: "admit", Result: "rejected", Reason: "nonce_used", Attestation: []byte("bundle")})
	src.PutVM(ctx, &jobgate.VM{Name: "vm-1", Pool: "linux", State: jobgate.VMBusy, AK: []byte("ak"), LaunchedAt: now, UpdatedAt: now}, &jobgate.AuditRecord{Time: now, Action: "launch", Result: "verified"})
	src.PutJob(ctx, &jobgate.QueuedJob{ID: 9, RunID: 3, Labels: []string{"attested"}, State: jobgate.JobInProgress, QueuedAt: now, UpdatedAt: now})
	src.FirstDelivery(ctx, "delivery-1", now)
	src.Lease(ctx, "fleet/linux", "gate-1", now, now.Add(time.Hour))
	used, _ := src.NewNonce(ctx, now.Add(time.Hour))
	src.Reserve(ctx, used, now, &jobgate.Runner{Name: "attested-used", KeyDigest: "key-used"}, nil)
	src.Release(ctx, "key-used", &jobgate.AuditRecord{Time: now, Action: "admit", Result: "failed", Reason: "github_unavailable"})
	wantRunners, _ := src.Runners(ctx)
	wantVMs, _ := src.VMs(ctx)
	wantJobs, _ := src.Jobs(ctx)
	var wantAudit []jobgate.AuditRecord
	src.AuditLog(ctx, func(r jobgate.AuditRecord) error { wantAudit = append(wantAudit, r); return nil })
	wantN, wantHead, err := jobgate.VerifyAudit(ctx, src)
	if err != nil || wantN != 6 {
		t.Fatalf("source chain %d %v", wantN, err)
	}

	dsnFile := filepath.Join(dir, "pg-dsn")
	os.WriteFile(dsnFile, []byte(dsn+"\n"), 0o644)
	if out, code := runArgs("store", "migrate", "--from", "bbolt:"+path, "--to", "postgres:@"+dsnFile); code != 1 || !strings.Contains(out, "chmod 600") {
		t.Fatalf("a readable DSN file: exit %d: %s", code, out)
	}
	os.Chmod(dsnFile, 0o600)
	if out, code := runArgs("store", "migrate", "--from", "bbolt:"+path, "--to", "postgres:@"+dsnFile); code != 1 || !strings.Contains(out, "still running") {
		t.Fatalf("source in use: exit %d: %s", code, out)
	}
	src.Close()
	for _, args := range [][]string{{"store"}, {"store", "copy"}, {"store", "migrate", "--from", path, "--to", "postgres:" + dsn}, {"store", "migrate", "--from", "bbolt:" + path, "--to", dsn}} {
		if out, code := runArgs(args...); code != 2 {
			t.Errorf("%q: exit %d, want 2: %s", args, code, out)
		}
	}
	out, code := runArgs("store", "migrate", "--from", "bbolt:"+path, "--to", "postgres:@"+dsnFile)
	if code != 0 || !strings.Contains(out, "3 runners, 6 audit records, 1 VMs, 1 jobs, 1 delivery ids, 1 leases") ||
		!strings.Contains(out, "audit log OK on the target: 6 records, head "+wantHead) {
		t.Fatalf("migrate: exit %d: %s", code, out)
	}

	pg, err := jobgate.OpenPostgresStore(ctx, jobgate.PostgresOptions{DSN: dsn})
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close()
	if err := pg.CheckNonce(ctx, issued, now); err != nil {
		t.Fatalf("a nonce issued before the move: %v", err)
	}
	if err := pg.CheckNonce(ctx, used, now); !errors.Is(err, jobgate.ErrNonceUsed) {
		t.Fatalf("a nonce used before the move: %v", err)
	}
	if err := pg.Reserve(ctx, issued, now, &jobgate.Runner{Name: "attested-gone", KeyDigest: "key-attested-gone"}, nil); !errors.Is(err, jobgate.ErrKeyAdmitted) {
		t.Fatalf("a key admitted before the move: %v", err)
	}
	gotRunners, _ := pg.Runners(ctx)
	gotVMs, _ := pg.VMs(ctx)
	gotJobs, _ := pg.Jobs(ctx)
	var gotAudit []jobgate.AuditRecord
	pg.AuditLog(ctx, func(r jobgate.AuditRecord) error { gotAudit = append(gotAudit, r); return nil })
	for what, d := range map[string]string{
		"runners": cmp.Diff(wantRunners, gotRunners), "VMs": cmp.Diff(wantVMs, gotVMs),
		"jobs": cmp.Diff(wantJobs, gotJobs), "audit": cmp.Diff(wantAudit, gotAudit),
	} {
		if d != "" {
			t.Errorf("%s differ after the move (-bbolt +postgres):\n%s", what, d)
		}
	}
	if seen, _ := pg.DeliverySeen(ctx, "delivery-1"); !seen {
		t.Error("a delivery id seen before the move is forgotten")
	}
	if err := pg.Lease(ctx, "fleet/linux", "gate-2", now.Add(time.Minute), now.Add(2*time.Hour)); !errors.Is(err, jobgate.ErrLeaseHeld) {
		t.Errorf("the lease after the move: %v", err)
	}

	// The gate's audit commands read the database.
	cfg := filepath.Join(dir, "gate.json")
	os.WriteFile(cfg, []byte(`{"listen":"127.0.0.1:0","gateId":"g","builderId":"b","dataDir":".","signingKey":"k",
"store":{"postgres":{"dsnFile":"pg-dsn","timeout":"5s"}},
"github":{"appId":1,"installationId":2,"privateKey":"p","org":"o","labels":["self-hosted"]},
"policy":{"referenceValues":["rv.json"],"trustedAKs":["ak.pem"]}}`), 0o600)
	if out, code := runArgs("audit", "verify", "--config", cfg); code != 0 || !strings.Contains(out, "audit log OK: 6 records, head "+wantHead) {
		t.Fatalf("audit verify: exit %d: %s", code, out)
	}
	if out, code := runArgs("audit", "show", "--config", cfg); code != 0 || strings.Count(out, "\n") != 6 {
		t.Fatalf("audit show: exit %d: %s", code, out)
	}

	if out, code := runArgs("store", "migrate", "--from", "bbolt:"+path, "--to", "postgres:@"+dsnFile); code != 1 || !strings.Contains(out, "not empty") {
		t.Fatalf("a second migration into the same database: exit %d: %s", code, out)
	}
}
