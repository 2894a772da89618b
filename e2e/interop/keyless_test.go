//go:build cgo

package interop

import (
	"context"
	"crypto/sha256"
	"errors"
	"regexp"
	"testing"

	"github.com/attested-runner/attested-runner/internal/fakesigstore"
	"github.com/attested-runner/attested-runner/provenance"
	"github.com/attested-runner/attested-runner/provenance/provenancetest"
	"github.com/sigstore/sigstore-go/pkg/bundle"
	"github.com/sigstore/sigstore-go/pkg/verify"
)

var artifact = []byte("the artifact built by the job\n")

func workflowOf(j provenance.Job) fakesigstore.Workflow {
	return fakesigstore.Workflow{
		ServerURL: j.ServerURL, Repository: j.Repository, RepositoryID: j.RepositoryID, RepositoryOwnerID: "77",
		Ref: j.Ref, SHA: j.SHA, WorkflowRef: j.WorkflowRef, WorkflowSHA: j.WorkflowSHA,
		RunID: j.RunID, RunAttempt: j.RunAttempt, EventName: j.EventName, RunnerEnvironment: provenance.RunnerEnvironmentSelfHosted,
	}
}

// TestKeylessRealFulcio: Sigstore's Fulcio, not our fake, certifies the
// TPM-bound environment key for a GitHub-Actions-shaped token; the local
// Rekor v1 records the entry; sigstore-go and our verifier accept the
// bundle; and the agent still refuses a token for another job.
func TestKeylessRealFulcio(t *testing.T) {
	is := fakesigstore.NewIssuer(t)
	fulcioURL, fulcioRoot := realFulcio(t, is)
	rk := fakesigstore.NewRekor(t)
	tr := fakesigstore.TrustedRoot(t, fulcioRoot, fulcioURL, rk)
	e := provenancetest.NewEnv(t)
	c := e.Machine.Collector
	k := &provenance.Keyless{FulcioURL: fulcioURL, RekorURL: rk.URL, ExpectedIssuer: is.URL, IDToken: is.WorkflowToken(t, workflowOf(e.Job))}
	raw, err := provenance.SignKeyless(context.Background(), e.Build(map[string][]byte{"app.tar.gz": artifact}), c.Signer(), c, k)
	if err != nil {
		t.Fatal(err)
	}
	d := sha256.Sum256(artifact)
	o := e.Options()
	o.TrustedSigstore, o.ExpectedCertIssuer = tr, is.URL
	r, err := provenance.Verify(raw, d[:], o)
	if err != nil {
		t.Fatalf("Verify: %v\nchecks: %+v", err, r.Checks)
	}
	var b bundle.Bundle
	if err := b.UnmarshalJSON(raw); err != nil {
		t.Fatal(err)
	}
	v, err := verify.NewVerifier(tr, verify.WithTransparencyLog(1), verify.WithObserverTimestamps(1))
	if err != nil {
		t.Fatal(err)
	}
	id, _ := verify.NewShortCertificateIdentity(is.URL, "", "", "^"+regexp.QuoteMeta("https://github.com/"+e.Job.WorkflowRef)+"$")
	if _, err := v.Verify(&b, verify.NewPolicy(verify.WithArtifactDigest("sha256", d[:]), verify.WithCertificateIdentity(id))); err != nil {
		t.Fatalf("sigstore-go: %v", err)
	}
	cosignSubtest(t, raw, tr, e.Job, is.URL)
	t.Run("gh", func(t *testing.T) {
		tool(t, "gh")
		if out, err := ghVerify(t, raw, tr, "--owner", "octo-org", "--signer-workflow", "github.com/"+workflowPath(e.Job), "--cert-oidc-issuer", is.URL); err != nil {
			t.Fatalf("gh attestation verify refuses the bundle certified by real Fulcio: %v\n%s", err, out)
		}
	})

	w := workflowOf(e.Job)
	w.Ref = "refs/heads/other"
	k.IDToken = is.WorkflowToken(t, w)
	if _, err := provenance.SignKeyless(context.Background(), e.Build(map[string][]byte{"app.tar.gz": artifact}), c.Signer(), c, k); !errors.Is(err, provenance.ErrCertificateIdentity) {
		t.Fatalf("token for another ref: got %v, want ErrCertificateIdentity", err)
	}
}
