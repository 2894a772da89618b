package runner_test

import (
	"context"
	"crypto"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/attested-runner/attested-runner/attest/attesttest"
	"github.com/attested-runner/attested-runner/jobgate"
	"github.com/attested-runner/attested-runner/provenance"
	"github.com/attested-runner/attested-runner/runner"
)

// snpMachines are the two shapes of SEV-SNP confidential VM the agent
// runs on, each a simulated vTPM whose AMD secure processor is
// attesttest.SNPHost (go-sev-guest's test-only chain): a vTPM whose every
// quote carries a report binding it (--sev-snp), and an Azure CVM whose
// HCL report names the vTPM's AK (--azure-cvm).
var snpMachines = []struct {
	name    string
	binding string
	open    func(*testing.T, *attesttest.SNPHost) (*attest.TPMCollector, *attest.Policy)
}{
	{"vTPM with SEV-SNP reports", attest.SNPBindingReportData, func(t *testing.T, h *attesttest.SNPHost) (*attest.TPMCollector, *attest.Policy) {
		return attesttest.SimulatedSNPTPM(t, h)
	}},
	{"Azure confidential VM", attest.SNPBindingAzureHCL, func(t *testing.T, h *attesttest.SNPHost) (*attest.TPMCollector, *attest.Policy) {
		c, p, err := attesttest.AzureCVM(t, h, nil)
		if err != nil {
			t.Fatal(err)
		}
		return c, p
	}},
}

// TestSEVSNPVTPMLevel3: the agent on each SEV-SNP machine is admitted at
// level 3 from hardware "sev-snp", runs a job, and the bundle verifies at
// level 3 both in gate mode (the response-time and dispatch reports
// re-judged under the certificate, which names the binding) and in
// evidence mode. Under AMD's real roots the same bundle's response-time
// report is refused: the re-check is made.
func TestSEVSNPVTPMLevel3(t *testing.T) {
	for _, m := range snpMachines {
		t.Run(m.name, func(t *testing.T) {
			host := attesttest.NewSNPHost(t)
			collector, policy := m.open(t, host)
			w := newWorldB(t, policy)
			w.cfg.Collector = collector
			if _, err := w.gh.QueueJob(releaseJob(601, buildAndAttest()...)); err != nil {
				t.Fatal(err)
			}
			a, err := runner.New(w.cfg)
			if err != nil {
				t.Fatal(err)
			}
			if out := a.Run(context.Background()); out.Err != nil || !out.Admitted || !out.JobStarted {
				t.Fatalf("outcome %+v", out)
			}
			bundle, d := jobArtifact(t, w.runnerDir)
			opts := provenance.VerifyOptions{
				ExpectedRepository: "octo-org/app", ExpectedRef: "refs/heads/main", ExpectedWorkflow: ".github/workflows/release.yml",
				TrustedGateRoots: []crypto.PublicKey{w.gateKey.Public()}, TrustedSNPRoots: host.Roots, MinLevel: 3,
			}
			r, err := provenance.Verify(bundle, d[:], opts)
			if err != nil {
				t.Fatalf("gate mode: %v\n%+v", err, r.Checks)
			}
			if r.Level != 3 || r.Hardware != attest.HardwareSEVSNP || r.EnvCert.SEVSNP == nil || r.EnvCert.Hardware != attest.HardwareSEVSNP ||
				r.EnvCert.SEVSNP.Binding != m.binding {
				t.Fatalf("gate mode: level %d from %q, certificate %+v", r.Level, r.Hardware, r.EnvCert)
			}
			if !strings.Contains(checkDetail(r, "dispatch"), "signed at job start") {
				t.Errorf("the dispatch attestation was not checked: %+v", r.Checks)
			}

			evidenceMode := opts
			evidenceMode.TrustedGateRoots, evidenceMode.TrustedSNPRoots = nil, nil
			evidenceMode.ReferenceValues = policy
			if r, err := provenance.Verify(bundle, d[:], evidenceMode); err != nil || r.Level != 3 || r.Hardware != attest.HardwareSEVSNP {
				t.Fatalf("evidence mode: level %d from %q: %v", r.Level, r.Hardware, err)
			}

			amd := opts
			amd.TrustedSNPRoots = nil
			if _, err := provenance.Verify(bundle, d[:], amd); !errors.Is(err, provenance.ErrEvidence) || !errors.Is(err, attest.ErrSNPReport) {
				t.Fatalf("under AMD's roots: got %v, want %v", err, attest.ErrSNPReport)
			}
		})
	}
}

// TestSEVSNPDebugGuestRefused: on each SEV-SNP machine, a guest whose
// SEV-SNP report has DEBUG on is refused at admission (snp_debug),
// audited, and never registered.
func TestSEVSNPDebugGuestRefused(t *testing.T) {
	for _, m := range snpMachines {
		t.Run(m.name, func(t *testing.T) {
			host := attesttest.NewSNPHost(t)
			host.GuestPolicy |= attesttest.SNPPolicyDebug
			collector, policy := m.open(t, host)
			w := newWorldB(t, policy)
			w.cfg.Collector = collector
			w.cfg.AdmissionDeadline = 3 * time.Second
			a, err := runner.New(w.cfg)
			if err != nil {
				t.Fatal(err)
			}
			if out := a.Run(context.Background()); out.Admitted {
				t.Fatalf("admitted: %+v", out)
			}
			var reasons []string
			w.store.AuditLog(context.Background(), func(r jobgate.AuditRecord) error {
				reasons = append(reasons, r.Reason)
				return nil
			})
			if !strings.Contains(strings.Join(reasons, " "), "snp_debug") {
				t.Errorf("audit reasons %v, want snp_debug", reasons)
			}
			if n := len(w.gh.Runners()); n != 0 {
				t.Errorf("%d runners registered", n)
			}
		})
	}
}

// checkDetail is the detail of the verification step named name.
func checkDetail(r *provenance.Result, name string) string {
	for _, c := range r.Checks {
		if c.Name == name {
			return c.Detail
		}
	}
	return ""
}
