package runner_test

import (
	"context"
	"crypto/x509"
	"strings"
	"testing"
	"time"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/attested-runner/attested-runner/attest/attesttest"
	"github.com/attested-runner/attested-runner/internal/ekca"
	"github.com/attested-runner/attested-runner/jobgate"
	"github.com/attested-runner/attested-runner/runner"
)

// ekWorld is a world whose gate trusts no AK, only an EK CA, and whose
// agent's TPM that CA manufactured; ekActivation sets the agent's flag.
func ekWorld(t *testing.T, ekActivation bool) *world {
	t.Helper()
	sim := attesttest.Simulator(t)
	policy, err := attesttest.Policy(sim)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := ekca.New("fleet EK CA")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ekca.Provision(sim, ca, ekca.RSA); err != nil {
		t.Fatal(err)
	}
	policy.TrustedAKs, policy.TrustedEKs = nil, &attest.EKTrust{Roots: []*x509.Certificate{ca.Cert}}
	c, err := attest.NewTPMCollector(sim, attest.TPMOptions{EventLog: func() ([]byte, error) { return attesttest.BootLog(), nil }, SoftwareTPM: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	w := newWorldB(t, policy)
	w.cfg.Collector, w.cfg.EKActivation = c, ekActivation
	w.cfg.IdleTTL = 2 * time.Second
	return w
}

// TestEKActivationAdmission: the agent with EKActivation proves its AK
// through the EK certificate in its TPM's NV, in the challenge's round
// trip, and is admitted by a gate that trusts only the EK CA; without it,
// the same agent is refused (activation_required) and never launches.
func TestEKActivationAdmission(t *testing.T) {
	t.Run("activation", func(t *testing.T) {
		w := ekWorld(t, true)
		a, err := runner.New(w.cfg)
		if err != nil {
			t.Fatal(err)
		}
		out := a.Run(context.Background())
		if !out.Admitted || !strings.HasPrefix(out.Reason, "idle") {
			t.Fatalf("outcome %+v", out)
		}
		var detail string
		w.store.AuditLog(context.Background(), func(r jobgate.AuditRecord) error {
			if r.Action == "admit" && r.Result == "accepted" {
				detail = r.Detail
			}
			return nil
		})
		if !strings.Contains(detail, "fleet EK CA") {
			t.Fatalf("admission audit %q does not name the EK", detail)
		}
	})
	t.Run("no activation", func(t *testing.T) {
		w := ekWorld(t, false)
		w.cfg.AdmissionDeadline = 2 * time.Second
		a, err := runner.New(w.cfg)
		if err != nil {
			t.Fatal(err)
		}
		if out := a.Run(context.Background()); out.Admitted || out.Err == nil || !strings.Contains(out.Err.Error(), "activation_required") {
			t.Fatalf("outcome %+v", out)
		}
		if w.gh.JITMints() != 0 {
			t.Fatal("a runner was minted")
		}
	})
}
