package e2e

import (
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/attested-runner/attested-runner/e2e/fakegithub"
	"github.com/attested-runner/attested-runner/e2e/harness"
	"github.com/attested-runner/attested-runner/internal/ekca"
)

// TestFreshTPMsAdmittedByEKActivation: a gate that trusts no AK, only a
// fleet's EK CA. Two machines, each a fresh swtpm that CA manufactured and
// no admin ever enrolled, are admitted by EK credential activation and run
// their jobs; a swtpm whose EK certificate comes from another CA of the
// same name is refused (ek_untrusted, audited) and never gets a runner.
func TestFreshTPMsAdmittedByEKActivation(t *testing.T) {
	e, _ := newEnv(t, envOptions{noGate: true}) // m1: only for the reference values
	ca, err := ekca.New("e2e fleet EK CA")
	if err != nil {
		t.Fatal(err)
	}
	impostor, err := ekca.New("e2e fleet EK CA")
	if err != nil {
		t.Fatal(err)
	}
	caPath := filepath.Join(e.Dir, "ek-ca.pem")
	if err := os.WriteFile(caPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	rv := filepath.Join(e.Dir, "reference-values.json")
	if err := e.WriteReferenceValues(e.M, harness.ImageID, rv); err != nil {
		t.Fatal(err)
	}
	if _, err := e.StartGate(e.ctx, harness.GateOptions{ReferenceValues: []string{rv}, TrustedEKRoots: []string{caPath}}); err != nil {
		t.Fatal(err)
	}

	// First the impostor: refused before anything is minted.
	rogue, err := e.NewMachine(e.ctx, "rogue", harness.MachineOptions{EKCA: impostor})
	if err != nil {
		t.Fatal(err)
	}
	requireNotAdmitted(e, e.wait(e.startAgent(harness.AgentOptions{Machine: rogue, EKActivation: true})))

	var runners []string
	for i := range 2 {
		m, err := e.NewMachine(e.ctx, fmt.Sprintf("fresh-%d", i+1), harness.MachineOptions{EKCA: ca})
		if err != nil {
			t.Fatal(err)
		}
		runID := int64(301 + i)
		e.queue(runID, echoJob()...)
		a := e.startAgent(harness.AgentOptions{Machine: m, EKActivation: true})
		x := e.wait(a)
		if x.Code != 0 || !strings.Contains(x.Summary, "job completed (admitted true, job true, deregistered true)") {
			t.Fatalf("fresh machine %s: agent exit %+v", m.Name, x)
		}
		if res, _ := e.GitHub.JobResult(runID); res.Result != fakegithub.ResultSucceeded || res.RunnerName != a.RunnerName() {
			t.Fatalf("job %d: %+v", runID, res)
		}
		runners = append(runners, a.RunnerName())
	}

	if n := e.GitHub.JITMints(); n != 2 {
		t.Fatalf("%d runners minted, want 2 (the fresh machines')", n)
	}

	recs := e.audit()
	admitted := harness.AuditFilter(recs, "admit", "accepted")
	if len(admitted) != 2 || admitted[0].RunnerName != runners[0] || admitted[1].RunnerName != runners[1] {
		t.Fatalf("admissions:\n%s", auditText(recs))
	}
	for _, r := range admitted {
		if !strings.Contains(r.Detail, "e2e fleet EK CA") {
			t.Errorf("admission of %s does not name the EK CA: %q", r.RunnerName, r.Detail)
		}
	}
	e.requireAudit(recs, "admit", "rejected", "ek_untrusted")
}
