package attest_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"testing"

	"github.com/attested-runner/attested-runner/attest"
)

func ecdsaKey() (*ecdsa.PrivateKey, error) { return ecdsa.GenerateKey(elliptic.P256(), rand.Reader) }

func spki(t testing.TB, pub crypto.PublicKey) []byte {
	t.Helper()
	b, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func ecdsaVerify(c *attest.Claims, digest, sig []byte) bool {
	return ecdsa.VerifyASN1(c.EnvKey, digest, sig)
}

// clonePolicy deep-copies a policy's reference values (trust roots are
// shared: tests replace, never mutate, them).
func clonePolicy(t testing.TB, p *attest.Policy) *attest.Policy {
	t.Helper()
	cp := *p
	b, err := json.Marshal(p.Reference)
	if err != nil {
		t.Fatal(err)
	}
	var rv attest.ReferenceValues
	if err := json.Unmarshal(b, &rv); err != nil {
		t.Fatal(err)
	}
	cp.Reference = &rv
	cp.TrustedAKs = append([]crypto.PublicKey(nil), p.TrustedAKs...)
	return &cp
}
