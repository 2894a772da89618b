package main

import (
	"bytes"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	tdxtesting "github.com/google/go-tdx-guest/testing"
	tdxtd "github.com/google/go-tdx-guest/testing/testdata"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/attested-runner/attested-runner/attest/attesttest"
	"github.com/attested-runner/attested-runner/provenance"
	"github.com/attested-runner/attested-runner/provenance/provenancetest"
)

var binary string

// TestMain builds the real binary once; the tests run it as a user would.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "attested-verify-test")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "attested-verify")
	if out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput(); err != nil {
		panic(string(out))
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func runCLI(t testing.TB, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), code
}

// fixture writes an artifact, its bundle and the gate's public key.
type fixture struct {
	dir, artifact, bundle, root string
	env                         *provenancetest.Env
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	return newFixtureSigned(t, (*provenancetest.Env).Sign)
}

// newFixtureSigned is newFixture with the bundle signed by sign.
func newFixtureSigned(t testing.TB, sign func(*provenancetest.Env, testing.TB, *provenance.Build) []byte) *fixture {
	t.Helper()
	return newFixtureEnv(t, provenancetest.NewEnv(t), sign)
}

// newFixtureEnv is newFixtureSigned in environment e.
func newFixtureEnv(t testing.TB, e *provenancetest.Env, sign func(*provenancetest.Env, testing.TB, *provenance.Build) []byte) *fixture {
	t.Helper()
	dir := t.TempDir()
	content := []byte("release tarball\n")
	f := &fixture{dir: dir, artifact: filepath.Join(dir, "app.tar.gz"), env: e}
	f.bundle = f.artifact + ".sigstore.json"
	f.root = filepath.Join(dir, "gate.pem")
	must(t, os.WriteFile(f.artifact, content, 0o644))
	must(t, os.WriteFile(f.bundle, sign(e, t, e.Build(map[string][]byte{"app.tar.gz": content})), 0o644))
	spki, err := x509.MarshalPKIXPublicKey(e.GateKey.Public())
	must(t, err)
	must(t, os.WriteFile(f.root, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: spki}), 0o644))
	return f
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestArtifact(t *testing.T) {
	f := newFixture(t)
	base := []string{"artifact", f.artifact, "--gate-key", f.root, "--repo", "octo-org/app", "--insecure-allow-software-tpm"}

	out, code := runCLI(t, append(base, "--ref", "refs/heads/main", "--workflow", ".github/workflows/release.yml")...)
	if code != 0 || !strings.Contains(out, "VERIFIED sha256:") || strings.Contains(out, "✗") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	for _, want := range []string{"✓ signature", "✓ evidence", "https://github.com/octo-org/app/actions/runs/9001/attempts/1", "actions/checkout@v4"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}

	// VSA and JSON output.
	vsa := filepath.Join(f.dir, "vsa.json")
	out, code = runCLI(t, append(base, "--format", "json", "--vsa-out", vsa)...)
	if code != 0 {
		t.Fatalf("json: exit %d: %s", code, out)
	}
	var rep []struct{ Verified bool }
	must(t, json.Unmarshal([]byte(out), &rep))
	if len(rep) != 1 || !rep[0].Verified {
		t.Errorf("json report %+v", rep)
	}
	var st struct {
		PredicateType string `json:"predicateType"`
		Predicate     struct {
			VerificationResult string   `json:"verificationResult"`
			VerifiedLevels     []string `json:"verifiedLevels"`
		} `json:"predicate"`
	}
	b, err := os.ReadFile(vsa)
	must(t, err)
	must(t, json.Unmarshal(b, &st))
	if st.PredicateType != "https://slsa.dev/verification_summary/v1" || st.Predicate.VerificationResult != "PASSED" {
		t.Errorf("VSA %s", b)
	}

	// Tampered artifact: not verified, exit 1, and says why.
	must(t, os.WriteFile(f.artifact, []byte("tampered\n"), 0o644))
	out, code = runCLI(t, base...)
	if code != 1 || !strings.Contains(out, "NOT VERIFIED") || !strings.Contains(out, "not a subject") {
		t.Fatalf("tampered: exit %d:\n%s", code, out)
	}
}

func TestArtifactRejectsWithoutInsecureFlag(t *testing.T) {
	f := newFixture(t)
	out, code := runCLI(t, "artifact", f.artifact, "--gate-key", f.root, "--repo", "octo-org/app")
	if code != 1 || !strings.Contains(out, "level below the required minimum") || !strings.Contains(out, "software TPM") ||
		!strings.Contains(out, "--insecure-allow-software-tpm") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
}

// TestArtifactSoftwareTPMLabelDropped: the gate certified a software TPM at
// level 0; whoever holds its state dropped the label from the response-time
// evidence and signed with the environment key. The level comes from the
// certificate, not from the label.
func TestArtifactSoftwareTPMLabelDropped(t *testing.T) {
	f := newFixtureSigned(t, (*provenancetest.Env).SignUnlabelled)
	base := []string{"artifact", f.artifact, "--gate-key", f.root, "--repo", "octo-org/app"}
	for _, tc := range []struct {
		name  string
		extra []string
		code  int
		want  []string
	}{
		{"no insecure flag", nil, 1, []string{"NOT VERIFIED", "software TPM", "the gate's certificate says so", "--insecure-allow-software-tpm"}},
		{"explicit --min-level 2", []string{"--insecure-allow-software-tpm", "--min-level", "2"}, 1,
			[]string{"NOT VERIFIED", "software TPM", "not an explicit --min-level"}},
		{"insecure flag", []string{"--insecure-allow-software-tpm"}, 0, []string{"VERIFIED sha256:", "SLSA_BUILDENV_LEVEL_0 (SOFTWARE TPM, insecure mode), hardware tpm"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, code := runCLI(t, append(base, tc.extra...)...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d:\n%s", code, tc.code, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			if strings.Contains(out, "image test-image, SLSA_BUILDENV_LEVEL_2") {
				t.Errorf("verified at level 2:\n%s", out)
			}
		})
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"artifact"},
		{"artifact", "x", "--gate-key", "r.pem"},
		{"artifact", "x", "--repo", "o/r"},
		{"artifact", "x", "--repo", "o/r", "--evidence"},
		{"artifact", "x", "--repo", "o/r", "--gate-key", "r", "--format", "xml"},
		{"artifact", "x", "--repo", "o/r", "--gate-key", "r", "--min-level", "0"},
		{"artifact", "x", "--repo", "o/r", "--gate-key", "r", "--min-level", "4"},
		{"evidence"},
		{"evidence", "a", "b"},
		{"evidence", "a", "--kind", "sev"},
		{"frobnicate"},
	} {
		out, code := runCLI(t, args...)
		if code != 2 {
			t.Errorf("%q: exit %d, want 2:\n%s", args, code, out)
		}
	}
	for _, args := range [][]string{{"--help"}, {"artifact", "--help"}, {"evidence", "--help"}, {"--version"}} {
		out, code := runCLI(t, args...)
		if code != 0 || len(out) < 20 {
			t.Errorf("%q: exit %d:\n%s", args, code, out)
		}
	}
}

func TestEvidenceRealTDXQuote(t *testing.T) {
	td := "../../attest/testdata/tdx/"
	nonce, err := os.ReadFile(td + "nonce.dat")
	must(t, err)
	args := []string{"evidence", td + "cos-113-tdx-quote.dat", "--ccel", td + "ccel_data.dat", "--ccel-table", td + "ccel_table.dat", "--time", "2024-09-01T00:00:00Z"}
	rv := filepath.Join(t.TempDir(), "rv.json")
	out, code := runCLI(t, append(args, "--nonce", hexOf(nonce), "--reference-values-out", rv)...)
	if code != 0 || !strings.Contains(out, "MRTD") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	// The CCEL's facts, the quoting enclave, and the TCB not evaluated.
	for _, want := range []string{"Secure Boot  false", "kernel cmdline /syslinux/vmlinuz.A", "dm_verity.error_behavior=3",
		"TDX QE       MRSIGNER dc9e2a7c6f948f17474e34a7fc43ed030f7c1563f1babddf6340c82e0e54a8c5, ISVPRODID 2",
		"tcb               SKIPPED", "--tdx-collateral"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	// The candidate lacks an agent digest (a bare quote has no lifecycle
	// log), so it is not loadable until an admin adds one.
	b, err := os.ReadFile(rv)
	must(t, err)
	var doc map[string]any
	must(t, json.Unmarshal(b, &doc))
	doc["agentDigests"] = []string{strings.Repeat("ab", 32)}
	b, _ = json.Marshal(doc)
	must(t, os.WriteFile(rv, b, 0o644))
	out, code = runCLI(t, append(args, "--nonce", hexOf(nonce), "--reference-values", rv, "--format", "json")...)
	if code != 0 || !strings.Contains(out, `"matches image`) {
		t.Fatalf("with its reference values: exit %d:\n%s", code, out)
	}
	nonce[0] ^= 1
	out, code = runCLI(t, append(args, "--nonce", hexOf(nonce))...)
	if code != 1 || !strings.Contains(out, "NOT VERIFIED") {
		t.Fatalf("wrong nonce: exit %d:\n%s", code, out)
	}
	out, code = runCLI(t, "evidence", td+"ccel_table.dat")
	if code != 1 {
		t.Fatalf("garbage: exit %d:\n%s", code, out)
	}
}

func hexOf(b []byte) string { return hex.EncodeToString(b) }

func TestEvidenceOwnFormat(t *testing.T) {
	m := attesttest.SimulatedMachine(t)
	nonce := bytes.Repeat([]byte{9}, 32)
	ev, err := m.Collector.Collect(attest.AdmissionChallenge(nonce))
	must(t, err)
	dir := t.TempDir()
	evFile, akFile, rvFile := filepath.Join(dir, "ev.json"), filepath.Join(dir, "ak.pem"), filepath.Join(dir, "rv.json")
	b, err := ev.Encode()
	must(t, err)
	must(t, os.WriteFile(evFile, b, 0o644))
	spki, err := x509.MarshalPKIXPublicKey(m.Policy.TrustedAKs[0])
	must(t, err)
	must(t, os.WriteFile(akFile, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: spki}), 0o644))
	rv, err := json.Marshal(m.Policy.Reference)
	must(t, err)
	must(t, os.WriteFile(rvFile, rv, 0o644))

	args := []string{"evidence", evFile, "--trusted-ak", akFile, "--reference-values", rvFile, "--nonce", hexOf(nonce)}
	out, code := runCLI(t, append(args, "--insecure-allow-software-tpm")...)
	if code != 0 || !strings.Contains(out, "matches image test-image") || !strings.Contains(out, "agent-start") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	out, code = runCLI(t, args...)
	if code != 1 || !strings.Contains(out, "software TPM") {
		t.Fatalf("without the insecure flag: exit %d:\n%s", code, out)
	}
	out, code = runCLI(t, append(args, "--insecure-allow-software-tpm", "--purpose", "statement")...)
	if code != 1 || !strings.Contains(out, "does not bind") {
		t.Fatalf("wrong purpose: exit %d:\n%s", code, out)
	}
}

// TestEvidenceSkippedChecks: a check whose input is missing is shown as
// skipped, never as passed, and a TPM quote whose signer was checked
// against no trust anchor is never VERIFIED.
func TestEvidenceSkippedChecks(t *testing.T) {
	m := attesttest.SimulatedMachine(t)
	nonce := bytes.Repeat([]byte{9}, 32)
	ev, err := m.Collector.Collect(attest.AdmissionChallenge(nonce))
	must(t, err)
	dir := t.TempDir()
	evFile, akFile := filepath.Join(dir, "ev.json"), filepath.Join(dir, "ak.pem")
	b, err := ev.Encode()
	must(t, err)
	must(t, os.WriteFile(evFile, b, 0o644))
	spki, err := x509.MarshalPKIXPublicKey(m.Policy.TrustedAKs[0])
	must(t, err)
	must(t, os.WriteFile(akFile, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: spki}), 0o644))
	td := "../../attest/testdata/tdx/"
	tdxNonce, err := os.ReadFile(td + "nonce.dat")
	must(t, err)
	tdx := []string{"evidence", td + "cos-113-tdx-quote.dat", "--time", "2024-09-01T00:00:00Z"}

	for _, tc := range []struct {
		name    string
		args    []string
		code    int
		want    []string
		notWant []string
	}{
		{"TPM quote, no trust anchor", []string{"evidence", evFile, "--insecure-allow-software-tpm"}, 1,
			[]string{"  - attestation key   SKIPPED: no trusted AK or AK root given", "; give --trusted-ak or --trusted-ak-root",
				"  - nonce             SKIPPED: no nonce given", "; give --nonce", "unverified AK", "Measured:",
				"Result: NOT VERIFIED: policy trusts no attestation key: the TPM quote's signer", "; give --trusted-ak or --trusted-ak-root"},
			[]string{"✓ attestation key", "NOT CHECKED", "Result: VERIFIED"}},
		{"TPM quote, trusted AK, no nonce", []string{"evidence", evFile, "--insecure-allow-software-tpm", "--trusted-ak", akFile}, 0,
			[]string{"  ✓ attestation key   trusted AK", "  - nonce             SKIPPED", "Result: VERIFIED"},
			[]string{"NOT CHECKED", "unverified AK"}},
		{"TDX quote without CCEL", append(tdx, "--nonce", hexOf(tdxNonce)), 0,
			[]string{"  ✓ quote", "  - event log         SKIPPED: no CCEL given", "; give --ccel and --ccel-table", "MRTD", "Result: VERIFIED"},
			[]string{"✓ event log", "✗"}},
		{"TDX quote without nonce", append(tdx, "--ccel", td+"ccel_data.dat", "--ccel-table", td+"ccel_table.dat"), 0,
			[]string{"  - nonce             SKIPPED", "  ✓ event log         CCEL replays", "Result: VERIFIED"},
			[]string{"NOT CHECKED"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, code := runCLI(t, tc.args...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d:\n%s", code, tc.code, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			for _, w := range tc.notWant {
				if strings.Contains(out, w) {
					t.Errorf("output has %q:\n%s", w, out)
				}
			}
		})
	}

	// JSON and --reference-values-out follow the same verdict.
	out, code := runCLI(t, "evidence", evFile, "--insecure-allow-software-tpm", "--format", "json")
	var rep struct {
		Verified        bool
		Error           string
		ReferenceValues any
		Checks          []attest.Check
	}
	must(t, json.Unmarshal([]byte(out), &rep))
	if code != 1 || rep.Verified || rep.ReferenceValues != nil || !strings.Contains(rep.Error, "--trusted-ak") {
		t.Errorf("json without anchor: exit %d, %+v", code, rep)
	}
	for _, c := range rep.Checks {
		if c.Name == "attestation key" && c.Status != attest.StatusSkipped {
			t.Errorf("json: %+v", c)
		}
	}
	rv := filepath.Join(dir, "rv.json")
	if out, code := runCLI(t, "evidence", evFile, "--insecure-allow-software-tpm", "--reference-values-out", rv); code != 1 {
		t.Errorf("--reference-values-out without anchor: exit %d:\n%s", code, out)
	}
	if _, err := os.Stat(rv); err == nil {
		t.Error("candidate reference values written from an unanchored quote")
	}
}

// TestEvidenceTDXCollateral: the real SPR E4 quote judged with the real
// Intel collateral shipped next to it (go-tdx-guest's test data) at
// 2023-07-01: go-tdx-guest's verdict is "no matching TCB level", so NOT
// VERIFIED, and the report shows the verdict and every collateral date.
// Three weeks later the collateral is stale and the report says which item.
func TestEvidenceTDXCollateral(t *testing.T) {
	dir := t.TempDir()
	quote, coll := filepath.Join(dir, "quote.dat"), filepath.Join(dir, "collateral.json")
	must(t, os.WriteFile(quote, tdxtd.RawQuote, 0o644))
	h := func(m map[string][]string) string {
		for _, v := range m {
			return v[0]
		}
		return ""
	}
	b, err := json.Marshal(attest.TDXCollateral{
		TCBInfo:    attest.PCSResponse{IssuerChain: h(tdxtesting.TcbInfoHeader), Body: tdxtd.TcbInfoBody},
		QEIdentity: attest.PCSResponse{IssuerChain: h(tdxtesting.QeIdentityHeader), Body: tdxtd.QeIdentityBody},
		PCKCRL:     attest.PCSResponse{IssuerChain: h(tdxtesting.PckCrlHeader), Body: tdxtd.PckCrlBody},
		RootCACRL:  attest.PCSResponse{Body: tdxtd.RootCrlBody},
	})
	must(t, err)
	must(t, os.WriteFile(coll, b, 0o644))
	out, code := runCLI(t, "evidence", quote, "--tdx-collateral", coll, "--time", "2023-07-01T00:00:00Z")
	for _, want := range []string{"✗ tcb", "TDX TCB is not up to date", "no matching TCB level",
		"TDX TCB      (none) (FMSPC 50806f000000", "quoting enclave UpToDate",
		"collateral   qeIdentity                       issued 2023-06-08T07:24:59Z, next update 2023-07-08T07:24:59Z",
		"collateral   tcbInfo                          issued 2023-06-18T08:42:58Z, next update 2023-07-18T08:42:58Z",
		"NOT VERIFIED"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	out, code = runCLI(t, "evidence", quote, "--tdx-collateral", coll, "--time", "2023-07-10T00:00:00Z")
	if code != 1 || !strings.Contains(out, "TDX collateral expired") || !strings.Contains(out, "qeIdentity expired 2023-07-08T07:24:59Z") {
		t.Errorf("stale: exit %d:\n%s", code, out)
	}
}
