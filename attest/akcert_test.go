package attest_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/attested-runner/attested-runner/attest/attesttest"
	pb "github.com/google/go-tpm-tools/proto/attest"
)

// testCA issues AK certificates, as a cloud's vTPM CA does.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

var oidSAN = asn1.ObjectIdentifier{2, 5, 29, 17}

// newCA makes a CA certificate signed by parent (nil: self-signed root).
func newCA(t testing.TB, name string, parent *testCA) *testCA {
	t.Helper()
	k, err := ecdsaKey()
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-24 * time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	signer := &testCA{cert: tmpl, key: k}
	if parent != nil {
		signer = parent
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer.cert, &k.PublicKey, signer.key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: c, key: k}
}

// issue returns the DER of an AK certificate for pub, after edit (if not
// nil) has changed the template.
func (ca *testCA) issue(t testing.TB, pub crypto.PublicKey, edit func(*x509.Certificate)) []byte {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "AK"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature,
	}
	if edit != nil {
		edit(tmpl)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// tpmSAN is a critical subjectAltName holding only a directoryName (TPM
// manufacturer, model, version: TCG EK Credential Profile 3.2.9), which Go
// leaves unhandled.
func tpmSAN(t testing.TB) pkix.Extension {
	t.Helper()
	dn, err := asn1.Marshal(pkix.Name{CommonName: "TPM"}.ToRDNSequence())
	if err != nil {
		t.Fatal(err)
	}
	v, err := asn1.Marshal([]asn1.RawValue{{Class: asn1.ClassContextSpecific, Tag: 4, IsCompound: true, Bytes: dn}})
	if err != nil {
		t.Fatal(err)
	}
	return pkix.Extension{Id: oidSAN, Critical: true, Value: v}
}

// TestAKCertificate: an AK not enrolled by key is trusted through a
// certificate chain to a trusted root, valid at Policy.Time, for the AK in
// the attestation and for nothing else.
func TestAKCertificate(t *testing.T) {
	m := attesttest.SimulatedMachine(t)
	ch := attest.AdmissionChallenge(nonce(t))
	good, err := m.Collector.Collect(ch)
	if err != nil {
		t.Fatal(err)
	}
	ak := m.Policy.TrustedAKs[0]
	root := newCA(t, "root", nil)
	inter := newCA(t, "intermediate", root)
	otherRoot := newCA(t, "other root", nil)
	akCert := inter.issue(t, ak, nil)

	tests := []struct {
		name   string
		att    func(*pb.Attestation)
		policy func(*attest.Policy)
		want   error
		msg    string
	}{
		{name: "chain to a trusted root"},
		{name: "intermediate from the policy", att: func(a *pb.Attestation) { a.IntermediateCerts = nil }, policy: func(p *attest.Policy) {
			p.TrustedAKIntermediates = []*x509.Certificate{inter.cert}
		}},
		{name: "critical SAN of the TPM form", att: func(a *pb.Attestation) {
			a.AkCert = inter.issue(t, ak, func(c *x509.Certificate) { c.ExtraExtensions = []pkix.Extension{tpmSAN(t)} })
			if c, err := x509.ParseCertificate(a.AkCert); err != nil || len(c.UnhandledCriticalExtensions) != 1 {
				t.Fatalf("Go handles this SAN itself (%v): the case tests nothing", err)
			}
		}},
		{name: "unknown critical extension", att: func(a *pb.Attestation) {
			a.AkCert = inter.issue(t, ak, func(c *x509.Certificate) {
				c.ExtraExtensions = []pkix.Extension{{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 1}, Critical: true, Value: []byte{5, 0}}}
			})
		}, want: attest.ErrUntrustedAK, msg: "AK certificate:"},
		{name: "expired", att: func(a *pb.Attestation) {
			a.AkCert = inter.issue(t, ak, func(c *x509.Certificate) {
				c.NotBefore, c.NotAfter = time.Now().Add(-3*time.Hour), time.Now().Add(-2*time.Hour)
			})
		}, want: attest.ErrUntrustedAK, msg: "AK certificate:"},
		// Historical evidence is checked as of Policy.Time.
		{name: "expired now, valid at the policy's time", att: func(a *pb.Attestation) {
			a.AkCert = inter.issue(t, ak, func(c *x509.Certificate) {
				c.NotBefore, c.NotAfter = time.Now().Add(-3*time.Hour), time.Now().Add(-2*time.Hour)
			})
		}, policy: func(p *attest.Policy) { p.Time = time.Now().Add(-150 * time.Minute) }},
		{name: "valid now, not at the policy's time", policy: func(p *attest.Policy) { p.Time = time.Now().Add(-2 * time.Hour) }, want: attest.ErrUntrustedAK, msg: "AK certificate:"},
		{name: "chain to another root", att: func(a *pb.Attestation) {
			a.AkCert, a.IntermediateCerts = otherRoot.issue(t, ak, nil), nil
		}, want: attest.ErrUntrustedAK, msg: "AK certificate:"},
		{name: "intermediate missing", att: func(a *pb.Attestation) { a.IntermediateCerts = nil }, want: attest.ErrUntrustedAK, msg: "AK certificate:"},
		{name: "certificate for another key", att: func(a *pb.Attestation) { a.AkCert = inter.issue(t, otherAK(t), nil) }, want: attest.ErrUntrustedAK, msg: "another key"},
		{name: "certificate does not parse", att: func(a *pb.Attestation) { a.AkCert = []byte("not a certificate") }, want: attest.ErrMalformedEvidence, msg: "AK certificate:"},
		{name: "intermediate does not parse", att: func(a *pb.Attestation) {
			a.IntermediateCerts = append(a.IntermediateCerts, []byte("not a certificate"))
		}, want: attest.ErrMalformedEvidence, msg: "AK intermediate certificate"},
		{name: "no certificate", att: func(a *pb.Attestation) { a.AkCert = nil }, want: attest.ErrUntrustedAK, msg: "no certificate under a trusted root"},
		{name: "certificate but no trusted root", policy: func(p *attest.Policy) {
			p.TrustedAKRoots, p.TrustedAKs = nil, []crypto.PublicKey{otherAK(t)}
		}, want: attest.ErrUntrustedAK, msg: "no certificate under a trusted root"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ev := clone(t, good)
			editAttestation(t, ev, func(a *pb.Attestation) {
				a.AkCert, a.IntermediateCerts = akCert, [][]byte{inter.cert.Raw}
				if tc.att != nil {
					tc.att(a)
				}
			})
			p := clonePolicy(t, m.Policy)
			p.TrustedAKs, p.TrustedAKRoots = nil, []*x509.Certificate{root.cert}
			if tc.policy != nil {
				tc.policy(p)
			}
			c, err := attest.Verify(ev, ch, p)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Verify: got %v, want %v", err, tc.want)
			}
			if tc.msg != "" && !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("Verify: got %q, want the %q check", err, tc.msg)
			}
			if err == nil && c.AKDigest != attest.KeyDigest(spki(t, ak)) {
				t.Errorf("AK digest %s", c.AKDigest)
			}
		})
	}
}
