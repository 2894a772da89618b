package provenance_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/attested-runner/attested-runner/provenance"
	"github.com/attested-runner/attested-runner/provenance/provenancetest"
)

// signDispatch is the dispatch attestation e's agent signs for job.
func signDispatch(t testing.TB, e *provenancetest.Env, job provenance.Job) []byte {
	t.Helper()
	enc, err := e.Admission.Encode()
	if err != nil {
		t.Fatal(err)
	}
	d := sha256.Sum256(enc)
	disp, err := provenance.SignDispatch(context.Background(), &provenance.Dispatch{Job: job, AdmissionEvidenceSH: d[:], EnvCert: e.EnvCert},
		e.Collector.Signer(), e.Collector)
	if err != nil {
		t.Fatal(err)
	}
	return disp
}

// TestDispatchInBundle: the dispatch attestation rides in the provenance
// (BuildEnv L2.agent-dispatch) and the consumer checks it: it verifies
// against the gate, names this build and comes from this environment.
// Each break is refused with ErrDispatch.
func TestDispatchInBundle(t *testing.T) {
	e := provenancetest.NewEnv(t)
	good := signDispatch(t, e, e.Job)
	otherJob := e.Job
	otherJob.RunID = "9002"
	forOtherJob := signDispatch(t, e, otherJob)
	sign := func(disp []byte) []byte {
		b := e.Build(map[string][]byte{"app.tar.gz": artifact})
		b.Dispatch = disp
		return e.Sign(t, b)
	}
	opts := e.Options()
	for _, tc := range []struct {
		name string
		disp []byte
		want error
	}{
		{"this build's", good, nil},
		{"another job's", forOtherJob, provenance.ErrDispatch},
		{"certified by another gate", signDispatchCert(t, e, e.Job, e.Reissue(t, func(*provenance.EnvCertificate) {}), true), provenance.ErrDispatch},
		{"not a bundle", []byte(`{"mediaType":"x"}`), provenance.ErrDispatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := provenance.Verify(sign(tc.disp), digest(artifact), opts)
			if !errors.Is(err, tc.want) || (tc.want == nil && err != nil) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if tc.want == nil {
				found := false
				for _, c := range res.Checks {
					found = found || (c.Name == "dispatch" && c.OK)
				}
				if !found {
					t.Errorf("no passed dispatch check: %+v", res.Checks)
				}
			}
		})
	}

	// A digest that is not the dispatch's is refused at signing.
	b := e.Build(map[string][]byte{"app.tar.gz": artifact})
	b.Dispatch, b.DispatchDigest = good, make([]byte, 32)
	if _, err := provenance.Sign(context.Background(), b, e.Machine.Collector.Signer(), e.Machine.Collector); !errors.Is(err, provenance.ErrNoExpectation) {
		t.Errorf("mismatched dispatch digest: %v", err)
	}
}

// signDispatchCert signs a dispatch carrying cert; with otherGate, cert is
// re-signed by a gate key nobody trusts.
func signDispatchCert(t *testing.T, e *provenancetest.Env, job provenance.Job, cert []byte, otherGate bool) []byte {
	t.Helper()
	if otherGate {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		c := *e.Cert
		if cert, err = provenance.IssueEnvCert(context.Background(), k, &c); err != nil {
			t.Fatal(err)
		}
	}
	enc, _ := e.Admission.Encode()
	d := sha256.Sum256(enc)
	disp, err := provenance.SignDispatch(context.Background(), &provenance.Dispatch{Job: job, AdmissionEvidenceSH: d[:], EnvCert: cert},
		e.Machine.Collector.Signer(), e.Machine.Collector)
	if err != nil {
		t.Fatal(err)
	}
	return disp
}

// TestDispatchInBundleEvidenceMode: in evidence mode, trusting no gate,
// the consumer still checks the dispatch attestation itself (BuildEnv
// L2.agent-dispatch): signed by the key the hardware certified, its own
// quote verified against the reference values, for this build. Each break
// is refused with ErrDispatch, and the gate certificate it carries counts
// for nothing.
func TestDispatchInBundleEvidenceMode(t *testing.T) {
	e := provenancetest.NewEnv(t)
	otherJob := e.Job
	otherJob.RunID = "9003"
	otherKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	enc, _ := e.Admission.Encode()
	ad := sha256.Sum256(enc)
	signWith := func(key crypto.Signer, q provenance.Quoter) []byte {
		t.Helper()
		disp, err := provenance.SignDispatch(context.Background(), &provenance.Dispatch{Job: e.Job, AdmissionEvidenceSH: ad[:], EnvCert: e.EnvCert}, key, q)
		if err != nil {
			t.Fatal(err)
		}
		return disp
	}
	sign := func(disp []byte) []byte {
		b := e.Build(map[string][]byte{"app.tar.gz": artifact})
		b.Dispatch = disp
		return e.Sign(t, b)
	}
	opts := provenance.VerifyOptions{ExpectedRepository: e.Job.Repository, ReferenceValues: e.Machine.Policy, AllowSoftwareTPMInsecure: true}
	for _, tc := range []struct {
		name string
		disp []byte
		want error
	}{
		{"this build's", signDispatch(t, e, e.Job), nil},
		{"this build's, carrying a certificate of a gate nobody trusts", signDispatchCert(t, e, e.Job, e.EnvCert, true), nil},
		{"another job's", signDispatch(t, e, otherJob), provenance.ErrBuildMismatch},
		{"signed by another key", signWith(otherKey, e.Machine.Collector), provenance.ErrSignature},
		{"its quote over another statement", signWith(e.Machine.Collector.Signer(), staleQuoter{e.Machine.Collector}), attest.ErrNonceMismatch},
		{"not a bundle", []byte(`{"mediaType":"x"}`), provenance.ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := provenance.Verify(sign(tc.disp), digest(artifact), opts)
			if tc.want != nil {
				if !errors.Is(err, tc.want) || !errors.Is(err, provenance.ErrDispatch) || len(res.Checks) == 0 || res.Checks[len(res.Checks)-1].Name != "dispatch" {
					t.Fatalf("got %v (checks %+v), want ErrDispatch and %v at the dispatch check", err, res.Checks, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatalf("got %v", err)
			}
			found := false
			for _, c := range res.Checks {
				found = found || (c.Name == "dispatch" && c.OK && strings.Contains(c.Detail, "hardware-certified"))
			}
			if !found {
				t.Errorf("no passed evidence-mode dispatch check: %+v", res.Checks)
			}
		})
	}
}

// TestVerifyMalformedByproducts: a statement signed by the environment key
// whose byproducts are malformed is refused at the check that reads them,
// in gate mode and in evidence mode: response evidence that does not
// decode, no environment certificate. (A dispatch whose recorded digest is
// not its content's changes the statement the response quote covers, so
// it fails at the evidence check; the agent refuses to sign one:
// TestDispatchInBundle.)
func TestVerifyMalformedByproducts(t *testing.T) {
	e := provenancetest.NewEnv(t)
	b := e.Build(map[string][]byte{"app.tar.gz": artifact})
	b.Dispatch = signDispatch(t, e, e.Job)
	good := e.Sign(t, b)
	evidenceMode := provenance.VerifyOptions{ExpectedRepository: e.Job.Repository, ReferenceValues: e.Machine.Policy, AllowSoftwareTPMInsecure: true}
	for _, tc := range []struct {
		name  string
		edit  func(map[string]any)
		opts  provenance.VerifyOptions
		check string
		want  error
		msg   string
	}{
		{"response evidence that does not decode (evidence mode)", func(st map[string]any) {
			byproduct(t, st, provenance.ResponseQuoteProduct)["content"] = base64.StdEncoding.EncodeToString([]byte(`{"format":"x"}`))
		}, evidenceMode, "evidence", provenance.ErrEvidence, ""},
		{"no environment certificate", func(st map[string]any) {
			bps := byproducts(st)
			var kept []any
			for _, bp := range bps {
				if bp.(map[string]any)["name"] != provenance.EnvCertByproduct {
					kept = append(kept, bp)
				}
			}
			st["predicate"].(map[string]any)["runDetails"].(map[string]any)["byproducts"] = kept
		}, e.Options(), "environment", provenance.ErrUntrustedEnvironment, "no " + provenance.EnvCertByproduct},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := provenance.Verify(resign(t, e, good, tc.edit), digest(artifact), tc.opts)
			if !errors.Is(err, tc.want) || len(r.Checks) == 0 || r.Checks[len(r.Checks)-1].Name != tc.check || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("got %v (%+v), want %v at the %s check", err, r.Checks, tc.want, tc.check)
			}
		})
	}
}
