package provenance_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"testing"

	"github.com/attested-runner/attested-runner/provenance"
	"github.com/attested-runner/attested-runner/provenance/provenancetest"
)

func signDispatch(t *testing.T, e *provenancetest.Env, job provenance.Job) []byte {
	t.Helper()
	enc, err := e.Admission.Encode()
	if err != nil {
		t.Fatal(err)
	}
	d := sha256.Sum256(enc)
	disp, err := provenance.SignDispatch(context.Background(), &provenance.Dispatch{Job: job, AdmissionEvidenceSH: d[:], EnvCert: e.EnvCert},
		e.Machine.Collector.Signer(), e.Machine.Collector)
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
