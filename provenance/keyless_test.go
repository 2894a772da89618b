//go:build cgo

package provenance_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/attested-runner/attested-runner/internal/fakesigstore"
	"github.com/attested-runner/attested-runner/provenance"
	"github.com/attested-runner/attested-runner/provenance/provenancetest"
	"github.com/sigstore/sigstore-go/pkg/bundle"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/verify"
)

// workflowOf is the token GitHub would mint for the job.
func workflowOf(j provenance.Job) fakesigstore.Workflow {
	return fakesigstore.Workflow{
		ServerURL: j.ServerURL, Repository: j.Repository, RepositoryID: j.RepositoryID, RepositoryOwnerID: "77",
		Ref: j.Ref, SHA: j.SHA, WorkflowRef: j.WorkflowRef, WorkflowSHA: j.WorkflowSHA,
		RunID: j.RunID, RunAttempt: j.RunAttempt, EventName: j.EventName, RunnerEnvironment: provenance.RunnerEnvironmentSelfHosted,
	}
}

type keylessFixture struct {
	env *provenancetest.Env
	ss  *fakesigstore.Sigstore
	tr  *root.TrustedRoot
}

func newKeyless(t *testing.T) *keylessFixture {
	t.Helper()
	ss := fakesigstore.New(t)
	return &keylessFixture{env: provenancetest.NewEnv(t), ss: ss, tr: ss.TrustedRoot(t)}
}

func (f *keylessFixture) keyless(token string) *provenance.Keyless {
	return &provenance.Keyless{FulcioURL: f.ss.Fulcio.URL, RekorURL: f.ss.Rekor.URL, ExpectedIssuer: f.ss.Issuer.URL, IDToken: token}
}

func (f *keylessFixture) sign(t *testing.T, w fakesigstore.Workflow) ([]byte, error) {
	t.Helper()
	tok := f.ss.Issuer.WorkflowToken(t, w)
	c := f.env.Machine.Collector
	return provenance.SignKeyless(context.Background(), f.env.Build(map[string][]byte{"app.tar.gz": artifact}), c.Signer(), c, f.keyless(tok))
}

func (f *keylessFixture) options() provenance.VerifyOptions {
	o := f.env.Options()
	o.TrustedSigstore = f.tr
	o.ExpectedCertIssuer = f.ss.Issuer.URL
	return o
}

func TestKeylessSignVerify(t *testing.T) {
	f := newKeyless(t)
	raw, err := f.sign(t, workflowOf(f.env.Job))
	if err != nil {
		t.Fatal(err)
	}
	var b bundle.Bundle
	if err := b.UnmarshalJSON(raw); err != nil {
		t.Fatal(err)
	}
	vc, err := b.VerificationContent()
	if err != nil || vc.Certificate() == nil {
		t.Fatalf("no certificate in the keyless bundle (%v)", err)
	}
	if n := len(b.GetVerificationMaterial().GetTlogEntries()); n != 1 || f.ss.Rekor.Size() != 1 {
		t.Fatalf("%d tlog entries in the bundle, %d in the log", n, f.ss.Rekor.Size())
	}

	// Our verifier: the Sigstore checks and the hardware checks.
	r, err := provenance.Verify(raw, digest(artifact), f.options())
	if err != nil {
		t.Fatalf("Verify: %v\nchecks: %+v", err, r.Checks)
	}
	for _, c := range r.Checks {
		if c.Name == "signature" && !strings.Contains(c.Detail, "certified by Fulcio") {
			t.Errorf("signature check: %s", c.Detail)
		}
	}
	if !hasCheck(r, "evidence") || !hasCheck(r, "environment") {
		t.Errorf("hardware checks missing from a keyless result: %+v", r.Checks)
	}

	// sigstore-go alone, against the trusted_root.json a consumer would
	// be given (written and read back), with a gh-style identity.
	path := fakesigstore.WriteTrustedRoot(t, f.tr, t.TempDir())
	tr, err := root.NewTrustedRootFromPath(path)
	if err != nil {
		t.Fatal(err)
	}
	v, err := verify.NewVerifier(tr, verify.WithTransparencyLog(1), verify.WithObserverTimestamps(1))
	if err != nil {
		t.Fatal(err)
	}
	id, err := verify.NewShortCertificateIdentity(f.ss.Issuer.URL, "", "", "^"+regexp.QuoteMeta("https://github.com/"+f.env.Job.WorkflowRef)+"$")
	if err != nil {
		t.Fatal(err)
	}
	vr, err := v.Verify(&b, verify.NewPolicy(verify.WithArtifactDigest("sha256", digest(artifact)), verify.WithCertificateIdentity(id)))
	if err != nil {
		t.Fatalf("sigstore-go rejects the keyless bundle: %v", err)
	}
	if got := vr.Signature.Certificate.SourceRepositoryDigest; got != f.env.Job.SHA {
		t.Errorf("certificate commit %q", got)
	}

	// Without a Sigstore root the bundle still verifies, by the gate's
	// and the hardware's word, and the report says what was not checked.
	o := f.env.Options()
	r, err = provenance.Verify(raw, digest(artifact), o)
	if err != nil {
		t.Fatal(err)
	}
	if d := checkDetail(r, "signature"); !strings.Contains(d, "not checked") {
		t.Errorf("signature check without a Sigstore root: %s", d)
	}
}

func hasCheck(r *provenance.Result, name string) bool {
	for _, c := range r.Checks {
		if c.Name == name && c.OK {
			return true
		}
	}
	return false
}

func checkDetail(r *provenance.Result, name string) string {
	for _, c := range r.Checks {
		if c.Name == name {
			return c.Detail
		}
	}
	return ""
}

// The token comes from the job, which is hostile: a certificate that names
// anything but the recorded job is refused before anything is signed.
func TestKeylessRefusesOtherIdentity(t *testing.T) {
	f := newKeyless(t)
	for _, tc := range []struct {
		name   string
		mutate func(*fakesigstore.Workflow)
	}{
		{"repository", func(w *fakesigstore.Workflow) { w.Repository = "octo-org/other" }},
		{"repository id", func(w *fakesigstore.Workflow) { w.RepositoryID = "4343" }},
		{"commit", func(w *fakesigstore.Workflow) { w.SHA = strings.Repeat("f", 40) }},
		{"ref", func(w *fakesigstore.Workflow) { w.Ref = "refs/heads/feature" }},
		{"workflow ref", func(w *fakesigstore.Workflow) {
			w.WorkflowRef = "octo-org/app/.github/workflows/other.yml@refs/heads/main"
		}},
		{"run id", func(w *fakesigstore.Workflow) { w.RunID = "9002" }},
		{"run attempt", func(w *fakesigstore.Workflow) { w.RunAttempt = "2" }},
		{"runner environment", func(w *fakesigstore.Workflow) { w.RunnerEnvironment = "github-hosted" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := workflowOf(f.env.Job)
			tc.mutate(&w)
			before := f.ss.Rekor.Size()
			_, err := f.sign(t, w)
			if !errors.Is(err, provenance.ErrCertificateIdentity) {
				t.Fatalf("got %v, want ErrCertificateIdentity", err)
			}
			if f.ss.Rekor.Size() != before {
				t.Error("an entry reached the log for a refused identity")
			}
		})
	}
	t.Run("issuer", func(t *testing.T) {
		c := f.env.Machine.Collector
		k := f.keyless(f.ss.Issuer.WorkflowToken(t, workflowOf(f.env.Job)))
		k.ExpectedIssuer = provenance.ActionsIssuer
		_, err := provenance.SignKeyless(context.Background(), f.env.Build(map[string][]byte{"a": artifact}), c.Signer(), c, k)
		if !errors.Is(err, provenance.ErrCertificateIdentity) {
			t.Fatalf("got %v, want ErrCertificateIdentity", err)
		}
	})
}

func TestKeylessBadToken(t *testing.T) {
	f := newKeyless(t)
	other := fakesigstore.NewIssuer(t)
	w := workflowOf(f.env.Job)
	forged := other.Token(t, w.Claims(f.ss.Issuer.URL, time.Now())) // claims the right issuer, signed by another key
	expired := w.Claims(f.ss.Issuer.URL, time.Now().Add(-10*time.Minute))
	for _, tc := range []struct {
		name  string
		token string
		want  error
		sent  bool // reaches Fulcio
	}{
		{"none", "", provenance.ErrIDToken, false},
		{"not a JWT", "not-a-token", provenance.ErrIDToken, false},
		{"oversized", strings.Repeat("a", provenance.MaxIDTokenSize) + ".b.c", provenance.ErrIDToken, false},
		{"forged signature", forged, provenance.ErrKeyless, true},
		{"expired", f.ss.Issuer.Token(t, expired), provenance.ErrKeyless, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := f.ss.Fulcio.Requests
			c := f.env.Machine.Collector
			_, err := provenance.SignKeyless(context.Background(), f.env.Build(map[string][]byte{"a": artifact}), c.Signer(), c, f.keyless(tc.token))
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if tc.token != "" && strings.Contains(err.Error(), tc.token) {
				t.Error("the error carries the token")
			}
			if sent := f.ss.Fulcio.Requests > before; sent != tc.sent {
				t.Errorf("sent to Fulcio: %v, want %v", sent, tc.sent)
			}
			if f.ss.Rekor.Size() != 0 {
				t.Error("an entry reached the log")
			}
		})
	}
}

// A Fulcio that certifies another key than the environment key (a
// confused or compromised CA, a swapped answer) is not signed with.
func TestKeylessRefusesCertificateForOtherKey(t *testing.T) {
	f := newKeyless(t)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	f.ss.Fulcio.CertifyKey = &other.PublicKey
	_, err := f.sign(t, workflowOf(f.env.Job))
	if !errors.Is(err, provenance.ErrCertificateKey) {
		t.Fatalf("got %v, want ErrCertificateKey", err)
	}
	if f.ss.Rekor.Size() != 0 {
		t.Error("an entry reached the log")
	}
}

func TestKeylessRekorDown(t *testing.T) {
	f := newKeyless(t)
	f.ss.Rekor.Refuse = true
	if _, err := f.sign(t, workflowOf(f.env.Job)); !errors.Is(err, provenance.ErrKeyless) {
		t.Fatalf("got %v, want ErrKeyless", err)
	}
}

// The verifier's side: each Sigstore element and the hardware still count.
func TestVerifyKeylessRejects(t *testing.T) {
	f := newKeyless(t)
	raw, err := f.sign(t, workflowOf(f.env.Job))
	if err != nil {
		t.Fatal(err)
	}

	t.Run("missing tlog entry", func(t *testing.T) {
		var doc map[string]any
		json.Unmarshal(raw, &doc)
		delete(doc["verificationMaterial"].(map[string]any), "tlogEntries")
		stripped, _ := json.Marshal(doc)
		_, err := provenance.Verify(stripped, digest(artifact), f.options())
		if !errors.Is(err, provenance.ErrSigstore) || !errors.Is(err, provenance.ErrSignature) {
			t.Fatalf("got %v, want ErrSigstore", err)
		}
	})
	t.Run("another sigstore", func(t *testing.T) {
		o := f.options()
		o.TrustedSigstore = fakesigstore.New(t).TrustedRoot(t)
		if _, err := provenance.Verify(raw, digest(artifact), o); !errors.Is(err, provenance.ErrSigstore) {
			t.Fatalf("got %v, want ErrSigstore", err)
		}
	})
	t.Run("another issuer expected", func(t *testing.T) {
		o := f.options()
		o.ExpectedCertIssuer = provenance.ActionsIssuer
		if _, err := provenance.Verify(raw, digest(artifact), o); !errors.Is(err, provenance.ErrSigstore) {
			t.Fatalf("got %v, want ErrSigstore", err)
		}
	})
	t.Run("gate not trusted", func(t *testing.T) {
		o := f.options()
		other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		o.TrustedGateRoots[0] = other.Public()
		if _, err := provenance.Verify(raw, digest(artifact), o); !errors.Is(err, provenance.ErrUntrustedEnvironment) {
			t.Fatalf("got %v, want ErrUntrustedEnvironment", err)
		}
	})
	t.Run("certificate for a key the gate never certified", func(t *testing.T) {
		// A valid Fulcio certificate and tlog entry, for the right job,
		// but the key is not the attested environment key.
		rogue, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tok := f.ss.Issuer.WorkflowToken(t, workflowOf(f.env.Job))
		raw, err := provenance.SignKeyless(context.Background(), f.env.Build(map[string][]byte{"app.tar.gz": artifact}), rogue, f.env.Machine.Collector, f.keyless(tok))
		if err != nil {
			t.Fatal(err)
		}
		_, err = provenance.Verify(raw, digest(artifact), f.options())
		if !errors.Is(err, provenance.ErrCertificateKey) || !errors.Is(err, provenance.ErrSignature) {
			t.Fatalf("got %v, want ErrCertificateKey", err)
		}
	})
	// An agent subverted into signing under a token of another job: the
	// verifier compares the certificate with the recorded job itself.
	for name, mutate := range map[string]func(*fakesigstore.Workflow){
		"certificate for another ref":        func(w *fakesigstore.Workflow) { w.Ref = "refs/heads/feature" },
		"certificate for another run":        func(w *fakesigstore.Workflow) { w.RunID = "1" },
		"certificate for another repository": func(w *fakesigstore.Workflow) { w.Repository = "octo-org/other" },
		"certificate for another commit":     func(w *fakesigstore.Workflow) { w.SHA = strings.Repeat("e", 40) },
		"certificate for another workflow": func(w *fakesigstore.Workflow) {
			w.WorkflowRef = "octo-org/app/.github/workflows/other.yml@refs/heads/main"
		},
	} {
		t.Run(name, func(t *testing.T) {
			w := workflowOf(f.env.Job)
			mutate(&w)
			k := f.keyless(f.ss.Issuer.WorkflowToken(t, w))
			provenance.SkipIdentityCheckForTest(k)
			c := f.env.Machine.Collector
			raw, err := provenance.SignKeyless(context.Background(), f.env.Build(map[string][]byte{"app.tar.gz": artifact}), c.Signer(), c, k)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := provenance.Verify(raw, digest(artifact), f.options()); !errors.Is(err, provenance.ErrCertificateIdentity) {
				t.Fatalf("got %v, want ErrCertificateIdentity", err)
			}
		})
	}
	t.Run("quote over another statement", func(t *testing.T) {
		// Fulcio and Rekor vouch for the signature; the hardware does not
		// vouch for the statement: still refused.
		tok := f.ss.Issuer.WorkflowToken(t, workflowOf(f.env.Job))
		c := f.env.Machine.Collector
		raw, err := provenance.SignKeyless(context.Background(), f.env.Build(map[string][]byte{"app.tar.gz": artifact}), c.Signer(), staleQuoter{c}, f.keyless(tok))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := provenance.Verify(raw, digest(artifact), f.options()); !errors.Is(err, provenance.ErrEvidence) {
			t.Fatalf("got %v, want ErrEvidence", err)
		}
	})
}

// staleQuoter answers every challenge with a quote over another statement.
type staleQuoter struct{ q provenance.Quoter }

func (s staleQuoter) Collect(attest.Challenge) (*attest.Evidence, error) {
	return s.q.Collect(attest.StatementChallenge(make([]byte, 32)))
}
