package attest_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"errors"
	"strings"
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

// verifyCollected collects c's evidence for ch, lets edit change it (if
// set), sends it through the wire format as the gate gets it, and verifies
// it under p.
func verifyCollected(t *testing.T, c attest.Collector, ch attest.Challenge, p *attest.Policy, edit func(*attest.Evidence)) (*attest.Claims, error) {
	t.Helper()
	ev, err := c.Collect(ch)
	if err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		edit(ev)
	}
	b, err := ev.Encode()
	if err != nil {
		t.Fatal(err)
	}
	dec, err := attest.DecodeEvidence(b)
	if err != nil {
		t.Fatal(err)
	}
	return attest.Verify(dec, ch, p)
}

// refusedAs checks, for a case that expects the refusal want (nil: none),
// that err is want and says msg; it reports whether the case ends there.
func refusedAs(t *testing.T, err, want error, msg string) bool {
	t.Helper()
	if want == nil {
		if err != nil {
			t.Fatal(err)
		}
		return false
	}
	if !errors.Is(err, want) || !strings.Contains(err.Error(), msg) {
		t.Fatalf("got %v, want %v (%q)", err, want, msg)
	}
	return true
}

// decodeEdited decodes, as the gate does, a copy of ev whose TPM part edit
// changed, and returns the decoding's error.
func decodeEdited(t *testing.T, ev *attest.Evidence, edit func(*attest.TPMEvidence)) error {
	t.Helper()
	b, err := ev.Encode()
	if err != nil {
		t.Fatal(err)
	}
	cp, err := attest.DecodeEvidence(b)
	if err != nil {
		t.Fatal(err)
	}
	edit(cp.TPM)
	if b, err = cp.Encode(); err != nil {
		t.Fatal(err)
	}
	_, err = attest.DecodeEvidence(b)
	return err
}
