//go:build cgo

package interop

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/attested-runner/attested-runner/internal/fakesigstore"
	"github.com/attested-runner/attested-runner/provenance"
	"github.com/attested-runner/attested-runner/provenance/provenancetest"
)

// buildVerifier builds cmd/attested-verify.
func buildVerifier(t *testing.T) string {
	t.Helper()
	_, self, _, _ := runtime.Caller(0)
	bin := filepath.Join(t.TempDir(), "attested-verify")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/attested-verify")
	cmd.Dir = filepath.Join(filepath.Dir(self), "..", "..")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building attested-verify: %v\n%s", err, out)
	}
	return bin
}

// staleQuoter answers every challenge with a quote over another statement.
type staleQuoter struct{ q provenance.Quoter }

func (s staleQuoter) Collect(attest.Challenge) (*attest.Evidence, error) {
	return s.q.Collect(attest.StatementChallenge(make([]byte, 32)))
}

// TestAttestedVerifyKeyless: the consumer CLI accepts a keyless bundle
// with the instance's trusted_root.json, checks the certificate's issuer,
// and still checks the hardware: a keyless bundle whose quote is over
// another statement fails even though Fulcio and Rekor vouch for it.
func TestAttestedVerifyKeyless(t *testing.T) {
	bin := buildVerifier(t)
	ss := fakesigstore.New(t)
	e := provenancetest.NewEnv(t)
	c := e.Machine.Collector
	sign := func(q provenance.Quoter) []byte {
		k := &provenance.Keyless{FulcioURL: ss.Fulcio.URL, RekorURL: ss.Rekor.URL, ExpectedIssuer: ss.Issuer.URL, IDToken: ss.Issuer.WorkflowToken(t, workflowOf(e.Job))}
		raw, err := provenance.SignKeyless(context.Background(), e.Build(map[string][]byte{"app.tar.gz": artifact}), c.Signer(), q, k)
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
	dir := t.TempDir()
	art := filepath.Join(dir, "app.tar.gz")
	os.WriteFile(art, artifact, 0o644)
	spki, _ := x509.MarshalPKIXPublicKey(e.GateKey.Public())
	gatePEM := filepath.Join(dir, "gate.pem")
	os.WriteFile(gatePEM, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: spki}), 0o644)
	trPath := fakesigstore.WriteTrustedRoot(t, ss.TrustedRoot(t), dir)
	run := func(bundle []byte, issuer string) ([]byte, int) {
		bp := filepath.Join(dir, "b.sigstore.json")
		os.WriteFile(bp, bundle, 0o644)
		cmd := exec.Command(bin, "artifact", art, "--bundle", bp, "--repo", e.Job.Repository, "--gate-key", gatePEM,
			"--trusted-root", trPath, "--cert-oidc-issuer", issuer, "--insecure-allow-software-tpm", "--format", "json")
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return out, ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return out, 0
	}

	out, code := run(sign(c), ss.Issuer.URL)
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	var report []map[string]any
	if err := json.Unmarshal(out, &report); err != nil || len(report) != 1 {
		t.Fatalf("json report: %v\n%s", err, out)
	}
	if _, ok := report[0]["verificationResult"]; !ok {
		t.Errorf("no sigstore verificationResult in the report:\n%s", out)
	}
	var checks struct {
		AttestedRunner struct {
			Checks []provenance.Check `json:"checks"`
		} `json:"attestedRunner"`
	}
	b, _ := json.Marshal(report[0])
	json.Unmarshal(b, &checks)
	hw := false
	for _, c := range checks.AttestedRunner.Checks {
		hw = hw || (c.Name == "evidence" && c.OK)
	}
	if !hw {
		t.Errorf("the hardware evidence was not checked: %+v", checks.AttestedRunner.Checks)
	}
	if out, code := run(sign(c), provenance.ActionsIssuer); code != 1 || !failedAt(out, "signature") {
		t.Errorf("another issuer expected: exit %d\n%s", code, out)
	}
	if out, code := run(sign(staleQuoter{c}), ss.Issuer.URL); code != 1 || !failedAt(out, "evidence") {
		t.Errorf("quote over another statement: exit %d\n%s", code, out)
	}
}

// failedAt reports whether a JSON report's failed check is the named one.
func failedAt(out []byte, check string) bool {
	var report []struct {
		Verified       bool `json:"verified"`
		AttestedRunner struct {
			Checks []provenance.Check `json:"checks"`
		} `json:"attestedRunner"`
	}
	if json.Unmarshal(out, &report) != nil || len(report) != 1 || report[0].Verified {
		return false
	}
	checks := report[0].AttestedRunner.Checks
	return len(checks) > 0 && checks[len(checks)-1].Name == check && !checks[len(checks)-1].OK
}
