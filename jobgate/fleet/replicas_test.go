package fleet

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/attested-runner/attested-runner/internal/pgtest"
	"github.com/attested-runner/attested-runner/jobgate"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// replica is another gate with its fleet on store (the same database as
// w's), the same GitHub, provider, configuration and clock: a second
// replica behind the load balancer.
func (w *world) replica(t *testing.T, store jobgate.Store) *Fleet {
	t.Helper()
	signer, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	g, err := jobgate.New(jobgate.Options{
		Config: &jobgate.Config{GateID: "https://gate.test", BuilderID: "https://gate.test/builder/v1",
			GitHub: jobgate.GitHubConfig{Org: testOrg, Labels: []string{"self-hosted"}}, Fleet: json.RawMessage(`{}`)},
		Store: store, Registry: w.reg, Policy: &attest.Policy{Reference: w.img.rv, AllowSoftwareTPMUnsafe: true},
		PolicyDigest: "test", Signer: signer, Now: w.clock.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	f, err := New(Options{Config: w.cfg, Gate: g, WebhookSecret: testSecret, ImageSigners: []crypto.PublicKey{w.img.signer},
		Providers: map[string]Provider{"linux": w.prov}, Deliveries: w.reg, Budget: w.reg, Requests: w.reg.Requests, Now: w.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// TestReplicasOnPostgresReconcileAPoolOneAtATime: two replicas' fleets on
// one PostgreSQL database see the same queued jobs (a webhook reached one
// of them). Scheduling at the same moment, exactly one launches (the pool's
// lease is a row in the database); while its lease lives, the other
// launches nothing; once the holder stops renewing (it died), the other
// takes the pool over and serves the demand.
func TestReplicasOnPostgresReconcileAPoolOneAtATime(t *testing.T) {
	dsn := pgtest.DB(t) // skips, saying why, without PostgreSQL
	open := func(t *testing.T) jobgate.Store {
		s, err := jobgate.OpenPostgresStore(context.Background(), jobgate.PostgresOptions{DSN: dsn, Timeout: 10 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	w := newWorld(t, worldOpts{noRecovery: true, store: open, pool: func(p *PoolConfig) {
		p.AdmissionDeadline = jobgate.Duration(time.Hour)
		p.LaunchesPerMinute = 60
	}})
	other := w.replica(t, open(t))
	launches := func() int { n, _, _ := w.prov.counts(); return n }

	w.queue(poolLabels...)
	// Each replica schedules from one goroutine (Fleet.Run); the two
	// replicas at once.
	var wg sync.WaitGroup
	for _, f := range []*Fleet{w.fleet, other} {
		wg.Add(1)
		go func() { defer wg.Done(); f.Schedule(w.ctx) }()
	}
	wg.Wait()
	if n := launches(); n != 1 {
		t.Fatalf("%d launches for one queued job by two replicas", n)
	}

	// The first replica dies (stops renewing); past the lease's TTL (3
	// reconcile intervals) the other takes the pool.
	w.clock.Add(2 * time.Minute)
	w.queue(poolLabels...)
	other.Schedule(w.ctx)
	if n := launches(); n != 2 {
		t.Fatalf("%d launches after the surviving replica took over, want 2", n)
	}
	// While the survivor's lease lives, the first (back, or a third)
	// launches nothing, though there is demand.
	w.queue(poolLabels...)
	w.fleet.Schedule(w.ctx)
	w.fleet.Reconcile(w.ctx)
	if n, d, _ := w.prov.counts(); n != 2 || d != 0 {
		t.Fatalf("%d launches, %d destroyed by a replica without the pool's lease", n, d)
	}
	other.Schedule(w.ctx)
	if n := launches(); n != 3 {
		t.Fatalf("%d launches by the lease holder, want 3", n)
	}
	vms, err := w.store.VMs(w.ctx)
	if err != nil || len(vms) != 3 {
		t.Fatalf("VM records in the shared store: %d %v", len(vms), err)
	}
}
