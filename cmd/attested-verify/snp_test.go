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
	evFile, akFile, rvFile, rootsFile := snpEvidenceFiles(t, c, p, host, nonce)

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

// snpEvidenceFiles boots c as the agent does, collects its evidence for
// nonce and writes what `evidence` reads: the evidence, p's trusted AK and
// reference values, and host's test-only chain in AMD's KDS format.
func snpEvidenceFiles(t *testing.T, c *attest.TPMCollector, p *attest.Policy, host *attesttest.SNPHost, nonce []byte) (evFile, akFile, rvFile, rootsFile string) {
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
	chain := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: host.Signer.Ask.Raw}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: host.Signer.Ark.Raw})...)
	must(t, os.WriteFile(rootsFile, chain, 0o644))
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
	evFile, akFile, rvFile, rootsFile := snpEvidenceFiles(t, c, p, host, bytes.Repeat([]byte{9}, 32))
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
