//go:build cgo

package interop

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/attested-runner/attested-runner/internal/fakesigstore"
	"github.com/attested-runner/attested-runner/provenance"
	"github.com/attested-runner/attested-runner/provenance/provenancetest"
	"github.com/sigstore/sigstore-go/pkg/root"
)

// cosignVerify runs cosign verify-blob-attestation on a keyless bundle the
// way a consumer would: certificate identity and issuer, the instance's
// trusted_root.json, the SLSA v1 predicate type. There is no CT log in a
// local instance, hence --insecure-ignore-sct.
func cosignVerify(t *testing.T, raw []byte, tr *root.TrustedRoot, identity, issuer string) ([]byte, error) {
	t.Helper()
	bin := tool(t, "cosign")
	dir := t.TempDir()
	art := filepath.Join(dir, "app.tar.gz")
	bundlePath := art + ".sigstore.json"
	if err := os.WriteFile(art, artifact, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bundlePath, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	trPath := fakesigstore.WriteTrustedRoot(t, tr, dir)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "verify-blob-attestation", "--new-bundle-format", "--bundle", bundlePath,
		"--trusted-root", trPath, "--certificate-identity", identity, "--certificate-oidc-issuer", issuer,
		"--type", "https://slsa.dev/provenance/v1", "--insecure-ignore-sct", art)
	cmd.Env = append(os.Environ(), "SIGSTORE_NO_CACHE=1", "TUF_ROOT="+filepath.Join(dir, "tuf"))
	return cmd.CombinedOutput()
}

// TestCosignVerifiesKeyless: cosign accepts a keyless bundle of ours
// signed through the local Fulcio and Rekor, for the job's workflow
// identity, and refuses it for another identity or issuer.
func TestCosignVerifiesKeyless(t *testing.T) {
	tool(t, "cosign")
	ss, e, raw := signedKeyless(t)
	tr := ss.TrustedRoot(t)
	identity := "https://github.com/" + e.Job.WorkflowRef
	out, err := cosignVerify(t, raw, tr, identity, ss.Issuer.URL)
	if err != nil {
		t.Fatalf("cosign refuses the keyless bundle: %v\n%s", err, out)
	}
	t.Logf("cosign: %s", out)
	if out, err := cosignVerify(t, raw, tr, "https://github.com/octo-org/app/.github/workflows/other.yml@refs/heads/main", ss.Issuer.URL); err == nil {
		t.Fatalf("cosign accepts another workflow identity:\n%s", out)
	}
	if out, err := cosignVerify(t, raw, tr, identity, provenance.ActionsIssuer); err == nil {
		t.Fatalf("cosign accepts another issuer:\n%s", out)
	}
	if out, err := cosignVerify(t, raw, fakesigstore.New(t).TrustedRoot(t), identity, ss.Issuer.URL); err == nil {
		t.Fatalf("cosign accepts the bundle under another instance's trusted root:\n%s", out)
	}
}

func cosignSubtest(t *testing.T, raw []byte, tr *root.TrustedRoot, j provenance.Job, issuer string) {
	t.Run("cosign", func(t *testing.T) {
		if out, err := cosignVerify(t, raw, tr, "https://github.com/"+j.WorkflowRef, issuer); err != nil {
			t.Fatalf("cosign refuses the bundle certified by real Fulcio: %v\n%s", err, out)
		}
	})
}

// signedKeyless signs a keyless bundle for artifact through a local
// Sigstore instance (fakesigstore's Fulcio, Rekor and OIDC issuer) with
// the job's workflow token.
func signedKeyless(t *testing.T) (*fakesigstore.Sigstore, *provenancetest.Env, []byte) {
	t.Helper()
	ss := fakesigstore.New(t)
	e := provenancetest.NewEnv(t)
	c := e.Machine.Collector
	k := &provenance.Keyless{FulcioURL: ss.Fulcio.URL, RekorURL: ss.Rekor.URL, ExpectedIssuer: ss.Issuer.URL, IDToken: ss.Issuer.WorkflowToken(t, workflowOf(e.Job))}
	raw, err := provenance.SignKeyless(context.Background(), e.Build(map[string][]byte{"app.tar.gz": artifact}), c.Signer(), c, k)
	if err != nil {
		t.Fatal(err)
	}
	return ss, e, raw
}
