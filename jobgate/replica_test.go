package jobgate_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/attested-runner/attested-runner/attest/attesttest"
	"github.com/attested-runner/attested-runner/internal/fakeclock"
	"github.com/attested-runner/attested-runner/internal/pgtest"
	"github.com/attested-runner/attested-runner/jobgate"
	"github.com/attested-runner/attested-runner/jobgate/gateapi"
)

// TestDeadGatesPendingAdmissionReleased: a gate died mid-admission, after
// it spent the nonce and reserved the key and GitHub minted the runner,
// before it recorded the admission. Another replica (PostgreSQL), or the
// same gate restarted (bbolt), refuses the key while the reservation is
// young; once it is older than the pending TTL, its reconcile removes the
// orphan runner from GitHub, releases the reservation and audits both, and
// the environment may then be admitted (once).
func TestDeadGatesPendingAdmissionReleased(t *testing.T) {
	for _, kind := range []string{"bbolt", "postgres"} {
		t.Run(kind, func(t *testing.T) {
			ctx := context.Background()
			var dead, survivor jobgate.Store
			switch kind {
			case "bbolt":
				s, err := jobgate.OpenBoltStore(filepath.Join(t.TempDir(), "gate.db"))
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { s.Close() })
				dead, survivor = s, s // the gate restarted on its file
			case "postgres":
				dsn := pgtest.DB(t)
				for _, s := range []*jobgate.Store{&dead, &survivor} {
					ps, err := jobgate.OpenPostgresStore(ctx, jobgate.PostgresOptions{DSN: dsn, Timeout: 10 * time.Second})
					if err != nil {
						t.Fatal(err)
					}
					t.Cleanup(func() { ps.Close() })
					*s = ps
				}
			}
			gh, reg := fakeGitHub(t)
			m := attesttest.SimulatedMachine(t)
			clock := fakeclock.New(time.Now())
			signer, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			g, err := jobgate.New(jobgate.Options{
				Config: &jobgate.Config{GateID: "https://gate.test", BuilderID: "https://gate.test/builder/v1",
					GitHub: jobgate.GitHubConfig{Org: "octo-org", Labels: []string{"self-hosted"}}},
				Store: survivor, Registry: reg, Policy: m.Policy, PolicyDigest: "test", Signer: signer, Now: clock.Now,
			})
			if err != nil {
				t.Fatal(err)
			}
			srv := httptest.NewServer(g.Handler())
			t.Cleanup(srv.Close)
			client := &gateapi.Client{BaseURL: srv.URL}
			request := func() *gateapi.AdmitRequest {
				ch, err := client.Challenge(ctx)
				if err != nil {
					t.Fatal(err)
				}
				ev, err := m.Collector.Collect(attest.AdmissionChallenge(ch.Nonce))
				if err != nil {
					t.Fatal(err)
				}
				b, _ := ev.Encode()
				return &gateapi.AdmitRequest{Nonce: ch.Nonce, Evidence: b}
			}

			// What the dead gate left: the nonce spent and the key
			// reserved in one transaction, then the runner minted.
			key := attest.KeyDigest(m.Collector.EnvKey())
			name := "attested-" + key[:24]
			req := request()
			now := clock.Now()
			if err := dead.Reserve(ctx, req.Nonce, now, &jobgate.Runner{Name: name, KeyDigest: key, EnvKey: m.Collector.EnvKey(),
				Labels: []string{"self-hosted"}, AdmittedAt: now, ExpiresAt: now.Add(time.Hour)}, nil); err != nil {
				t.Fatal(err)
			}
			if _, _, err := reg.Mint(ctx, name, []string{"self-hosted"}, ""); err != nil {
				t.Fatal(err)
			}

			if _, err := client.Admit(ctx, req); rejectedCode(err) != "nonce_used" {
				t.Fatalf("the dead gate's request replayed: %v", err)
			}
			if _, err := client.Admit(ctx, request()); rejectedCode(err) != "key_already_admitted" {
				t.Fatalf("the dead gate's key with a fresh nonce: %v", err)
			}
			if rep, err := g.Reconcile(ctx); err != nil || rep.Removed != 0 || rep.Released != 0 {
				t.Fatalf("a young reservation reconciled away: %+v %v", rep, err)
			}
			clock.Add(6 * time.Minute) // past the pending TTL (5m)
			rep, err := g.Reconcile(ctx)
			if err != nil || rep.Removed != 1 || rep.Released != 1 {
				t.Fatalf("reconcile of the dead gate's admission: %+v %v", rep, err)
			}
			if _, ok := gh.Runner(name); ok {
				t.Fatal("the dead gate's runner is still on GitHub")
			}
			var released []jobgate.AuditRecord
			survivor.AuditLog(ctx, func(r jobgate.AuditRecord) error {
				if r.Action == "reconcile" && r.KeyDigest == key {
					released = append(released, r)
				}
				return nil
			})
			if len(released) != 1 || released[0].Result != "removed" || released[0].RunnerName != name {
				t.Fatalf("reconcile audit records of the key: %+v", released)
			}
			if _, err := client.Admit(ctx, request()); err != nil {
				t.Fatalf("admission after the release: %v", err)
			}
			if _, err := client.Admit(ctx, request()); rejectedCode(err) != "key_already_admitted" {
				t.Fatalf("second admission after the release: %v", err)
			}
			if n, _, err := jobgate.VerifyAudit(ctx, survivor); err != nil || n == 0 {
				t.Fatalf("audit chain: %d %v", n, err)
			}
		})
	}
}
