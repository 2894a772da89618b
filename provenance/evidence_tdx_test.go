package provenance_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"testing"
	"time"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/attested-runner/attested-runner/provenance"
	"github.com/attested-runner/attested-runner/provenance/provenancetest"
)

// TestEvidenceModeTDX: a bundle from a TD without a TPM (the response-time
// evidence is a TDX quote, certified by no AK) verifies in evidence mode
// against the TD's reference values (MRTD, RTMR 0-2), Intel-rooted trust
// and collateral, with no --trusted-ak; the dispatch attestation riding in
// it is checked the same way; the level is 3 from the TDX path. Reference
// values of another TD, a quote under another root, and a quote over
// another statement are each refused at the evidence check.
func TestEvidenceModeTDX(t *testing.T) {
	e := provenancetest.NewTDXEnv(t)
	disp := signDispatch(t, e, e.Job)
	b := e.Build(map[string][]byte{"app.tar.gz": artifact})
	b.Dispatch = disp
	raw := e.Sign(t, b)
	if len(e.Policy.TrustedAKs) != 0 || len(e.Policy.TrustedAKRoots) != 0 {
		t.Fatal("the TD's policy trusts an AK")
	}
	opts := provenance.VerifyOptions{ExpectedRepository: e.Job.Repository, ReferenceValues: e.Policy}
	r, err := provenance.Verify(raw, digest(artifact), opts)
	if err != nil {
		t.Fatalf("evidence mode on TDX: %v\n%+v", err, r.Checks)
	}
	if r.Level != 3 || r.SoftwareTPM || r.Claims.Kind != attest.KindTDX || r.ImageID != "cos-113" {
		t.Errorf("level %d software %v kind %s image %q, want L3 from TDX, image cos-113", r.Level, r.SoftwareTPM, r.Claims.Kind, r.ImageID)
	}
	passed := map[string]bool{}
	for _, c := range r.Checks {
		passed[c.Name] = c.OK
	}
	for _, name := range []string{"environment", "signature", "evidence", "dispatch", "level"} {
		if !passed[name] {
			t.Errorf("check %s did not pass: %+v", name, r.Checks)
		}
	}

	other := *e.Policy
	rv := *other.Reference
	im := rv.Images[0]
	im.MRTD = make(attest.Hex, len(im.MRTD))
	rv.Images = []attest.Image{im}
	other.Reference = &rv
	untrusted := *e.Policy
	untrusted.TrustedTDXRoots = x509PoolOfNewCA(t)
	for _, tc := range []struct {
		name   string
		raw    []byte
		policy *attest.Policy
		want   error
	}{
		{"reference values of another TD", raw, &other, attest.ErrReferenceMismatch},
		{"quote under a root nobody trusts", raw, &untrusted, attest.ErrTDXQuote},
		{"quote over another statement", signStale(t, e, b), e.Policy, attest.ErrNonceMismatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := opts
			o.ReferenceValues = tc.policy
			r, err := provenance.Verify(tc.raw, digest(artifact), o)
			if !errors.Is(err, tc.want) || !errors.Is(err, provenance.ErrEvidence) || r.Checks[len(r.Checks)-1].Name != "evidence" {
				t.Fatalf("got %v (%+v), want %v at the evidence check", err, r.Checks, tc.want)
			}
		})
	}
}

// signStale signs b with a response quote over another statement.
func signStale(t *testing.T, e *provenancetest.Env, b *provenance.Build) []byte {
	t.Helper()
	raw, err := provenance.Sign(context.Background(), b, e.Collector.Signer(), staleQuoter{e.Collector})
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// x509PoolOfNewCA is a pool holding one freshly made self-signed CA.
func x509PoolOfNewCA(t *testing.T) *x509.CertPool {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "not Intel"}, IsCA: true, BasicConstraintsValid: true,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(c)
	return pool
}
