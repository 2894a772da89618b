package main

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/attested-runner/attested-runner/attest/attesttest"
)

// TestEvidenceSEVSNP: `evidence` on TPM evidence carrying an SEV-SNP
// report (a simulated vTPM; the report signed under go-sev-guest's
// test-only AMD chain, given as --trusted-snp-roots in AMD's KDS format)
// prints the report's measurement, guest policy, TCB and VCEK, and level 3
// from sev-snp. Each SEV-SNP flag is honoured: a minimum TCB above the
// reported one, and AMD's built-in roots, make it NOT VERIFIED; without a
// nonce the report is skipped and earns nothing.
func TestEvidenceSEVSNP(t *testing.T) {
	host := attesttest.NewSNPHost(t)
	c, p := attesttest.SimulatedSNPTPM(t, host)
	nonce := bytes.Repeat([]byte{9}, 32)
	evFile, akFile, rvFile, rootsFile := teeEvidenceFiles(t, c, p, snpChainPEM(host), nonce)

	args := []string{"evidence", evFile, "--trusted-ak", akFile, "--reference-values", rvFile, "--nonce", hexOf(nonce)}
	out, code := runCLI(t, append(args, "--trusted-snp-roots", rootsFile)...)
	for _, want := range []string{"sev-snp      MEASUREMENT " + strings.Repeat("a5", 48), "guest policy 0x20000: SMT not allowed, debug not allowed, migration agent not allowed",
		"reported TCB bootloader 0, TEE 0, SNP 0, microcode 0", "binding report-data: REPORT_DATA binds this challenge", "and keys; MEASUREMENT a5a5a5a5a5a5a5a5…, TCB", "level        3 (sev-snp)", "Result: VERIFIED"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Fatalf("exit %d, want %q:\n%s", code, want, out)
		}
	}
	for _, tc := range []struct {
		name  string
		extra []string
		code  int
		want  string
	}{
		{"TCB below --snp-min-tcb", []string{"--trusted-snp-roots", rootsFile, "--snp-min-tcb", "0,0,1,0"}, 1, "reported TCB below the minimum"},
		{"AMD's roots", nil, 1, "SEV-SNP report verification failed"},
		{"malformed --snp-min-tcb", []string{"--snp-min-tcb", "1,2,3"}, 2, "four numbers"},
		{"roots file not AMD's format", []string{"--trusted-snp-roots", akFile}, 1, "not an AMD ASK and ARK"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, code := runCLI(t, append(slices.Clone(args), tc.extra...)...)
			if code != tc.code || !strings.Contains(out, tc.want) {
				t.Fatalf("exit %d, want %d with %q:\n%s", code, tc.code, tc.want, out)
			}
		})
	}
	out, code = runCLI(t, "evidence", evFile, "--trusted-ak", akFile, "--reference-values", rvFile, "--trusted-snp-roots", rootsFile)
	if code != 0 || !strings.Contains(out, "REPORT_DATA cannot be checked") || !strings.Contains(out, "level        2 (tpm)") {
		t.Fatalf("without a nonce: exit %d:\n%s", code, out)
	}
}

// snpChainPEM is host's test-only chain in AMD's KDS format.
func snpChainPEM(host *attesttest.SNPHost) []byte {
	return append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: host.Signer.Ask.Raw}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: host.Signer.Ark.Raw})...)
}

// teeEvidenceFiles boots c as the agent does, collects its evidence for
// nonce and writes what `evidence` reads: the evidence, p's trusted AK and
// reference values, and the TEE's test roots.
func teeEvidenceFiles(t *testing.T, c *attest.TPMCollector, p *attest.Policy, roots, nonce []byte) (evFile, akFile, rvFile, rootsFile string) {
	t.Helper()
	must(t, attesttest.BootAgent(c))
	ev, err := c.Collect(attest.AdmissionChallenge(nonce))
	must(t, err)
	dir := t.TempDir()
	evFile, akFile, rvFile, rootsFile = filepath.Join(dir, "ev.json"), filepath.Join(dir, "ak.pem"), filepath.Join(dir, "rv.json"), filepath.Join(dir, "cert_chain.pem")
	b, err := ev.Encode()
	must(t, err)
	must(t, os.WriteFile(evFile, b, 0o644))
	spki, err := x509.MarshalPKIXPublicKey(p.TrustedAKs[0])
	must(t, err)
	must(t, os.WriteFile(akFile, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: spki}), 0o644))
	rv, err := json.Marshal(p.Reference)
	must(t, err)
	must(t, os.WriteFile(rvFile, rv, 0o644))
	must(t, os.WriteFile(rootsFile, roots, 0o644))
	return evFile, akFile, rvFile, rootsFile
}

// TestEvidenceAzureCVM: `evidence` on an Azure confidential VM's TPM
// evidence (a simulated vTPM with a synthetic HCL report signed under
// go-sev-guest's test-only chain) prints the report's facts and its
// azure-hcl binding, and level 3 from sev-snp, with --snp-allow-smt (Azure
// runs guests with SMT); without it, and under AMD's roots, it is NOT
// VERIFIED; without --reference-values the HCL report earns nothing.
func TestEvidenceAzureCVM(t *testing.T) {
	host := attesttest.NewSNPHost(t)
	host.GuestPolicy |= attesttest.SNPPolicySMT
	c, p, err := attesttest.AzureCVM(t, host, nil)
	must(t, err)
	evFile, akFile, rvFile, rootsFile := teeEvidenceFiles(t, c, p, snpChainPEM(host), bytes.Repeat([]byte{9}, 32))
	args := []string{"evidence", evFile, "--trusted-ak", akFile, "--reference-values", rvFile, "--trusted-snp-roots", rootsFile}
	out, code := runCLI(t, append(args, "--snp-allow-smt")...)
	for _, want := range []string{"sev-snp      MEASUREMENT " + strings.Repeat("a5", 48), "guest policy 0x30000: SMT allowed",
		"binding azure-hcl: REPORT_DATA is the SHA-256 of the HCL runtime data", "names this quote's AK; MEASUREMENT a5a5a5a5a5a5a5a5…, TCB", "level        3 (sev-snp)", "Result: VERIFIED"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Fatalf("exit %d, want %q:\n%s", code, want, out)
		}
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"SMT not accepted", args, "SMT"},
		{"AMD's roots", []string{"evidence", evFile, "--trusted-ak", akFile, "--reference-values", rvFile, "--snp-allow-smt"}, "SEV-SNP report verification failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, code := runCLI(t, tc.args...)
			if code != 1 || !strings.Contains(out, tc.want) || !strings.Contains(out, "azure-hcl") {
				t.Fatalf("exit %d, want 1 with %q:\n%s", code, tc.want, out)
			}
		})
	}
	out, code = runCLI(t, "evidence", evFile, "--trusted-ak", akFile)
	if code != 0 || !strings.Contains(out, "the HCL report is not judged") || strings.Contains(out, "level        3") {
		t.Fatalf("without reference values: exit %d:\n%s", code, out)
	}
}

// TestEvidenceTDXVTPM: `evidence` on TPM evidence carrying a TDX quote (a
// simulated vTPM; the quote is go-tdx-guest's real COS quote re-signed
// under a test chain, given as --trusted-tdx-root) prints the TD's MRTD,
// quoting enclave and TCB verdict, and level 3 from tdx with
// --tdx-collateral; without collateral the TCB is skipped and the level is
// the TPM's 2; under Intel's root, and without the nonce, the quote is
// refused or earns nothing.
func TestEvidenceTDXVTPM(t *testing.T) {
	quote, err := os.ReadFile("../../attest/testdata/tdx/cos-113-tdx-quote.dat")
	must(t, err)
	s, err := attesttest.NewTDXSigner(quote)
	must(t, err)
	c, p := attesttest.SimulatedTDXVTPM(t, s, nil)
	nonce := bytes.Repeat([]byte{9}, 32)
	evFile, akFile, rvFile, rootFile := teeEvidenceFiles(t, c, p, s.RootPEM(), nonce)
	coll, err := json.Marshal(p.TDXCollateral)
	must(t, err)
	collFile := filepath.Join(t.TempDir(), "collateral.json")
	must(t, os.WriteFile(collFile, coll, 0o644))
	args := []string{"evidence", evFile, "--trusted-ak", akFile, "--reference-values", rvFile, "--nonce", hexOf(nonce), "--trusted-tdx-root", rootFile}
	out, code := runCLI(t, append(slices.Clone(args), "--tdx-collateral", collFile)...)
	for _, want := range []string{"tdx quote         signature and PCK chain valid offline, not debuggable, REPORTDATA binds this quote's AK and keys",
		"tdx tcb           platform UpToDate", "tdx firmware      MRTD", "MRTD         " + hexOf(s.Template().GetMrTd()), "TDX QE       MRSIGNER",
		"level        3 (tdx)", "Result: VERIFIED"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Fatalf("exit %d, want %q:\n%s", code, want, out)
		}
	}
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no collateral: level 2", args, 0, "level        2 (tpm)"},
		{"Intel's root", []string{"evidence", evFile, "--trusted-ak", akFile, "--reference-values", rvFile, "--nonce", hexOf(nonce), "--tdx-collateral", collFile}, 1, "TDX quote verification failed"},
		{"no nonce: the quote earns nothing", []string{"evidence", evFile, "--trusted-ak", akFile, "--reference-values", rvFile, "--trusted-tdx-root", rootFile, "--tdx-collateral", collFile}, 0, "REPORTDATA cannot be checked"},
		{"root file not PEM", append(slices.Clone(args[:len(args)-1]), evFile), 1, "--trusted-tdx-root"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, code := runCLI(t, tc.args...)
			if code != tc.code || !strings.Contains(out, tc.want) {
				t.Fatalf("exit %d, want %d with %q:\n%s", code, tc.code, tc.want, out)
			}
		})
	}
}
