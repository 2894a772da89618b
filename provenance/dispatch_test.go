package provenance_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"testing"

	"github.com/attested-runner/attested-runner/provenance"
	"github.com/attested-runner/attested-runner/provenance/provenancetest"
)

// certifiedRogue returns a key the env's gate certified in place of the
// env's own key (same TPM's AK, image and agent), and that certificate:
// statements it signs carry quotes whose evidence names the TPM's key.
func certifiedRogue(t *testing.T, e *provenancetest.Env) (*ecdsa.PrivateKey, []byte) {
	t.Helper()
	rogue, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	spki, err := x509.MarshalPKIXPublicKey(rogue.Public())
	if err != nil {
		t.Fatal(err)
	}
	return rogue, e.Reissue(t, func(c *provenance.EnvCertificate) { c.EnvKey = spki })
}

func TestDispatchEnvKeyMismatch(t *testing.T) {
	e := provenancetest.NewEnv(t)
	rogue, cert := certifiedRogue(t, e)
	enc, _ := e.Admission.Encode()
	d := &provenance.Dispatch{Job: e.Job, AdmissionEvidenceSH: digest(enc), EnvCert: cert}
	raw, err := provenance.SignDispatch(context.Background(), d, rogue, e.Machine.Collector)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := provenance.VerifyDispatch(raw, []crypto.PublicKey{e.GateKey.Public()}); !errors.Is(err, provenance.ErrEnvKeyMismatch) {
		t.Fatalf("dispatch quote for another environment key: got %v, want %v", err, provenance.ErrEnvKeyMismatch)
	}
}

func TestVerifyEnvKeyMismatch(t *testing.T) {
	e := provenancetest.NewEnv(t)
	rogue, cert := certifiedRogue(t, e)
	b := e.Build(map[string][]byte{"app.tar.gz": artifact})
	b.EnvCert = cert
	raw, err := provenance.Sign(context.Background(), b, rogue, e.Machine.Collector)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := provenance.Verify(raw, digest(artifact), e.Options()); !errors.Is(err, provenance.ErrEnvKeyMismatch) || !errors.Is(err, provenance.ErrEvidence) {
		t.Fatalf("response quote for another environment key: got %v, want %v and %v", err, provenance.ErrEnvKeyMismatch, provenance.ErrEvidence)
	}
}
