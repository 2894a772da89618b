package provenance_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/attested-runner/attested-runner/provenance"
	"github.com/attested-runner/attested-runner/provenance/provenancetest"
)

// TestEnvCertCacheKeyFraming: the verification cache is keyed by the
// certificate's bytes and the trusted keys. Without length framing,
// (cert, [gate, other]) and (cert || SPKI(gate), [other]) hash the same
// bytes, so once the first verified, the second (not a bundle at all, and
// trusting only a key that never signed it) was served from the cache.
func TestEnvCertCacheKeyFraming(t *testing.T) {
	e := provenancetest.NewEnv(t)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if _, err := provenance.VerifyEnvCert(e.EnvCert, []crypto.PublicKey{e.GateKey.Public(), other.Public()}); err != nil {
		t.Fatal(err)
	}
	gateSPKI, err := x509.MarshalPKIXPublicKey(e.GateKey.Public())
	if err != nil {
		t.Fatal(err)
	}
	// The shifted bytes: the key as is (no framing at all), or with a
	// length prefix (keys framed, certificate not).
	framed := binary.BigEndian.AppendUint64(nil, uint64(len(gateSPKI)))
	for _, shift := range [][]byte{gateSPKI, append(framed, gateSPKI...)} {
		shifted := append(append([]byte(nil), e.EnvCert...), shift...)
		if c, err := provenance.VerifyEnvCert(shifted, []crypto.PublicKey{other.Public()}); !errors.Is(err, provenance.ErrUntrustedEnvironment) {
			t.Fatalf("bytes shifted from the keys into the certificate: got %+v, %v; want %v", c, err, provenance.ErrUntrustedEnvironment)
		}
	}
	// The genuine pair is still verified (and cached) as before.
	if _, err := provenance.VerifyEnvCert(e.EnvCert, []crypto.PublicKey{e.GateKey.Public(), other.Public()}); err != nil {
		t.Fatal(err)
	}
}
