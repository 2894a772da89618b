package runner_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/attested-runner/attested-runner/attest/attesttest"
	"github.com/attested-runner/attested-runner/jobgate"
	"github.com/attested-runner/attested-runner/provenance"
	"github.com/attested-runner/attested-runner/runner"
	tdxpb "github.com/google/go-tdx-guest/proto/tdx"
)

// teeMachine is a confidential VM shape the agent runs on: a simulated
// vTPM whose TEE is simulated under a test-only chain. open builds one,
// its TEE marking the guest debuggable if debug; roots are what a consumer
// must trust in place of the vendor's roots.
type teeMachine struct {
	name, hardware string
	// vendorErr is the refusal under the vendor's real roots, debugReason
	// the gate's reason code for a debuggable guest.
	vendorErr   error
	debugReason string
	open        func(t *testing.T, debug bool) (attest.Collector, *attest.Policy, provenance.VerifyOptions)
}

// teeMachines: a vTPM whose every quote carries an SEV-SNP report binding
// it (--sev-snp), an Azure CVM whose HCL report names the vTPM's AK
// (--azure-cvm), both with attesttest.SNPHost (go-sev-guest's test-only
// chain) as the AMD secure processor; and a vTPM whose every quote carries
// a TDX quote binding it (--tdx-vtpm, Compute Engine's TDX shape), with
// go-tdx-guest's real COS quote re-signed under a test chain.
var teeMachines = []teeMachine{
	{"vTPM with SEV-SNP reports", attest.HardwareSEVSNP, attest.ErrSNPReport, "snp_debug", func(t *testing.T, debug bool) (attest.Collector, *attest.Policy, provenance.VerifyOptions) {
		h := snpHost(t, debug)
		c, p := attesttest.SimulatedSNPTPM(t, h)
		return c, p, provenance.VerifyOptions{TrustedSNPRoots: h.Roots}
	}},
	{"Azure confidential VM", attest.HardwareSEVSNP, attest.ErrSNPReport, "snp_debug", func(t *testing.T, debug bool) (attest.Collector, *attest.Policy, provenance.VerifyOptions) {
		h := snpHost(t, debug)
		c, p, err := attesttest.AzureCVM(t, h, nil)
		if err != nil {
			t.Fatal(err)
		}
		return c, p, provenance.VerifyOptions{TrustedSNPRoots: h.Roots}
	}},
	{"vTPM with TDX quotes", attest.HardwareTDX, attest.ErrTDXQuote, "tdx_debug", func(t *testing.T, debug bool) (attest.Collector, *attest.Policy, provenance.VerifyOptions) {
		quote, err := os.ReadFile("../attest/testdata/tdx/cos-113-tdx-quote.dat")
		if err != nil {
			t.Fatal(err)
		}
		s, err := attesttest.NewTDXSigner(quote)
		if err != nil {
			t.Fatal(err)
		}
		var edit func(*tdxpb.TDQuoteBody)
		if debug {
			edit = func(b *tdxpb.TDQuoteBody) { b.TdAttributes[0] |= 1 }
		}
		c, p := attesttest.SimulatedTDXVTPM(t, s, edit)
		return c, p, provenance.VerifyOptions{TrustedTDXRoots: s.Roots}
	}},
}

// tdxMachine is a TD attesting with TDX evidence (--tdx): go-tdx-guest's
// real COS boot (quote, CCEL) with quotes re-signed under a test chain.
var tdxMachine = teeMachine{"TDX trust domain", attest.HardwareTDX, attest.ErrTDXQuote, "", func(t *testing.T, _ bool) (attest.Collector, *attest.Policy, provenance.VerifyOptions) {
	m := attesttest.NewUnbootedTDXMachine(t, "../attest/testdata/tdx")
	// The gate wants a TPM trust root even when it admits TDX only.
	ak, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	m.Policy.TrustedAKs = []crypto.PublicKey{ak.Public()}
	return m.Collector, m.Policy, provenance.VerifyOptions{TrustedTDXRoots: m.Signer.Roots}
}}

func snpHost(t *testing.T, debug bool) *attesttest.SNPHost {
	h := attesttest.NewSNPHost(t)
	if debug {
		h.GuestPolicy |= attesttest.SNPPolicyDebug
	}
	return h
}

// TestTEELevel3: the agent on each confidential VM (the vTPM shapes and a
// TD with TDX evidence) is admitted at level 3 from its TEE, runs a job,
// and the bundle verifies at level 3 both in gate mode (the response-time
// and dispatch reports re-judged under the certificate, which carries the
// TEE's verdict and, for TDX, the collateral it was judged with) and in
// evidence mode. Under the vendor's real roots the same bundle's
// response-time report is refused: the re-check is made.
func TestTEELevel3(t *testing.T) {
	for _, m := range append(slices.Clone(teeMachines), tdxMachine) {
		t.Run(m.name, func(t *testing.T) {
			collector, policy, roots := m.open(t, false)
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
			opts := roots
			opts.ExpectedRepository, opts.ExpectedRef, opts.ExpectedWorkflow = "octo-org/app", "refs/heads/main", ".github/workflows/release.yml"
			opts.TrustedGateRoots, opts.MinLevel = []crypto.PublicKey{w.gateKey.Public()}, 3
			r, err := provenance.Verify(bundle, d[:], opts)
			if err != nil {
				t.Fatalf("gate mode: %v\n%+v", err, r.Checks)
			}
			if r.Level != 3 || r.Hardware != m.hardware || r.EnvCert.Hardware != m.hardware {
				t.Fatalf("gate mode: level %d from %q, certificate %+v", r.Level, r.Hardware, r.EnvCert)
			}
			switch m.hardware {
			case attest.HardwareSEVSNP:
				if r.EnvCert.SEVSNP == nil || r.EnvCert.SEVSNP.Binding == "" {
					t.Errorf("certificate without the SEV-SNP verdict: %+v", r.EnvCert)
				}
			case attest.HardwareTDX:
				if r.EnvCert.TDXCollateral == nil || r.EnvCert.TDXTCB == nil || (len(r.EnvCert.Image.TDXMRTDs) == 0 && len(r.EnvCert.Image.MRTD) == 0) {
					t.Errorf("certificate without the TDX verdict: %+v", r.EnvCert)
				}
			}
			if !strings.Contains(checkDetail(r, "dispatch"), "signed at job start") {
				t.Errorf("the dispatch attestation was not checked: %+v", r.Checks)
			}

			evidenceMode := opts
			evidenceMode.TrustedGateRoots, evidenceMode.TrustedSNPRoots, evidenceMode.TrustedTDXRoots = nil, nil, nil
			evidenceMode.ReferenceValues = policy
			if r, err := provenance.Verify(bundle, d[:], evidenceMode); err != nil || r.Level != 3 || r.Hardware != m.hardware {
				t.Fatalf("evidence mode: level %d from %q: %v", r.Level, r.Hardware, err)
			}

			vendor := opts
			vendor.TrustedSNPRoots, vendor.TrustedTDXRoots = nil, nil
			if _, err := provenance.Verify(bundle, d[:], vendor); !errors.Is(err, provenance.ErrEvidence) || !errors.Is(err, m.vendorErr) {
				t.Fatalf("under the vendor's roots: got %v, want %v", err, m.vendorErr)
			}
		})
	}
}

// TestTEEDebugGuestRefused: on each confidential VM, a guest its TEE
// reports debuggable is refused at admission (snp_debug, tdx_debug),
// audited, and never registered.
func TestTEEDebugGuestRefused(t *testing.T) {
	for _, m := range teeMachines {
		t.Run(m.name, func(t *testing.T) {
			collector, policy, _ := m.open(t, true)
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
			if !strings.Contains(strings.Join(reasons, " "), m.debugReason) {
				t.Errorf("audit reasons %v, want %s", reasons, m.debugReason)
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
