package attest_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/attested-runner/attested-runner/internal/ekca"
)

var (
	rsaKeyOnce sync.Once
	rsaKeys    []*rsa.PrivateKey
)

// rsaKey returns the i-th of a few RSA 2048 keys made once per process.
func rsaKey(t testing.TB, i int) *rsa.PrivateKey {
	t.Helper()
	rsaKeyOnce.Do(func() {
		for range 3 {
			k, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				panic(err)
			}
			rsaKeys = append(rsaKeys, k)
		}
	})
	return rsaKeys[i]
}

// tcgSAN is the critical subjectAltName the TCG EK profile puts in EK
// certificates (a directoryName with the TPM's manufacturer).
func tcgSAN(t testing.TB) pkix.Extension {
	t.Helper()
	name, err := asn1.Marshal(pkix.RDNSequence{{{Type: asn1.ObjectIdentifier{2, 23, 133, 2, 1}, Value: "id:00001014"}}})
	if err != nil {
		t.Fatal(err)
	}
	v, err := asn1.Marshal([]asn1.RawValue{{Class: asn1.ClassContextSpecific, Tag: 4, IsCompound: true, Bytes: name}})
	if err != nil {
		t.Fatal(err)
	}
	return pkix.Extension{Id: asn1.ObjectIdentifier{2, 5, 29, 17}, Critical: true, Value: v}
}

func readPEMCert(t testing.TB, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s: no PEM", path)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestVerifyEKCertificate: an EK certificate chained to a configured root
// through an intermediate verifies; each case breaks one thing.
func TestVerifyEKCertificate(t *testing.T) {
	root := newAuthority(t)
	inter := root.intermediate(t, nil)
	other := newAuthority(t)
	now := time.Now()
	ek := &rsaKey(t, 0).PublicKey
	tcg := func(c *x509.Certificate) { c.ExtraExtensions = []pkix.Extension{tcgSAN(t)}; c.Subject = pkix.Name{} }
	good := inter.issue(t, ek, tcg)
	goodCert, _ := x509.ParseCertificate(good)
	trust := &attest.EKTrust{Roots: []*x509.Certificate{root.cert}, Intermediates: []*x509.Certificate{inter.cert}}
	v, err := attest.VerifyEKCertificate(good, trust, now)
	if err != nil {
		t.Fatalf("genuine EK certificate refused: %v", err)
	}
	if !v.PublicKey.(*rsa.PublicKey).Equal(ek) || len(v.Digest) != 64 {
		t.Fatalf("verified EK %+v", v)
	}
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rsa1024, _ := rsa.GenerateKey(rand.Reader, 1024)
	impostor := newAuthority(t) // same name as inter, another key
	impostorInter := impostor.intermediate(t, func(c *x509.Certificate) { c.Subject = inter.cert.Subject })

	for _, tc := range []struct {
		name  string
		der   []byte
		trust *attest.EKTrust
		at    time.Time
		want  error // nil: accepted
	}{
		{name: "ECC P-256 EK directly under a root", der: root.issue(t, p256.Public(), tcg), trust: &attest.EKTrust{Roots: []*x509.Certificate{root.cert}}},
		{name: "CRL of the issuer lists another serial", der: good, trust: withCRLs(trust, inter.crl(t, now.Add(time.Hour), big.NewInt(1)))},
		{name: "CRL of a same-named impostor is not the issuer's", der: good, trust: withCRLs(trust, impostorInter.crl(t, now.Add(time.Hour), goodCert.SerialNumber))},
		{name: "chains to no configured root", der: good, trust: &attest.EKTrust{Roots: []*x509.Certificate{other.cert}, Intermediates: []*x509.Certificate{inter.cert}}, want: attest.ErrEKUntrusted},
		{name: "no EK root configured", der: good, trust: &attest.EKTrust{}, want: attest.ErrEKUntrusted},
		{name: "intermediate not configured", der: good, trust: &attest.EKTrust{Roots: []*x509.Certificate{root.cert}}, want: attest.ErrEKUntrusted},
		{name: "expired", der: inter.issue(t, ek, func(c *x509.Certificate) { tcg(c); c.NotAfter = now.Add(-time.Minute) }), trust: trust, want: attest.ErrEKExpired},
		{name: "not yet valid", der: inter.issue(t, ek, func(c *x509.Certificate) { tcg(c); c.NotBefore = now.Add(time.Hour) }), trust: trust, want: attest.ErrEKExpired},
		{name: "checked at a time after its validity", der: good, trust: trust, at: now.Add(48 * time.Hour), want: attest.ErrEKExpired},
		{name: "intermediate expired", der: good, trust: &attest.EKTrust{Roots: []*x509.Certificate{root.cert},
			Intermediates: []*x509.Certificate{root.recertify(t, inter, func(c *x509.Certificate) { c.NotAfter = now.Add(-time.Minute) })}}, want: attest.ErrEKExpired},
		{name: "revoked by the issuer's CRL", der: good, trust: withCRLs(trust, inter.crl(t, now.Add(time.Hour), goodCert.SerialNumber)), want: attest.ErrEKRevoked},
		{name: "intermediate revoked by the root's CRL", der: good, trust: withCRLs(trust, root.crl(t, now.Add(time.Hour), inter.cert.SerialNumber)), want: attest.ErrEKRevoked},
		{name: "the issuer's CRL is out of date", der: good, trust: withCRLs(trust, inter.crl(t, now.Add(-time.Minute))), want: attest.ErrEKCRLExpired},
		{name: "RSA 1024 EK", der: inter.issue(t, &rsa1024.PublicKey, tcg), trust: trust, want: attest.ErrEKUntrusted},
		{name: "ECC P-384 EK", der: inter.issue(t, p384.Public(), tcg), trust: trust, want: attest.ErrEKUntrusted},
		{name: "unknown critical extension", der: inter.issue(t, ek, func(c *x509.Certificate) {
			tcg(c)
			c.ExtraExtensions = append(c.ExtraExtensions, pkix.Extension{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 1}, Critical: true, Value: []byte{5, 0}})
		}), trust: trust, want: attest.ErrEKUntrusted},
		{name: "signed by an impostor of the issuer", der: impostorInter.issue(t, ek, tcg), trust: trust, want: attest.ErrEKUntrusted},
		{name: "signature flipped", der: flipLast(good), trust: trust, want: attest.ErrEKUntrusted},
		{name: "trailing data", der: append(append([]byte(nil), good...), 0), trust: trust, want: attest.ErrMalformedEvidence},
		{name: "not a certificate", der: []byte("not DER"), trust: trust, want: attest.ErrMalformedEvidence},
		{name: "oversized", der: make([]byte, attest.MaxEKCertificateSize+1), trust: trust, want: attest.ErrTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			at := now
			if !tc.at.IsZero() {
				at = tc.at
			}
			_, err := attest.VerifyEKCertificate(tc.der, tc.trust, at)
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func withCRLs(t *attest.EKTrust, crls ...*x509.RevocationList) *attest.EKTrust {
	cp := *t
	cp.CRLs = crls
	return &cp
}

func flipLast(b []byte) []byte {
	out := append([]byte(nil), b...)
	out[len(out)-1] ^= 1
	return out
}

// TestRealEKCertificates: EK certificates made by swtpm's own tools verify
// against their local CA (and not against another), and one made by this
// repository's local CA (the fleet's) verifies against its CA.
func TestRealEKCertificates(t *testing.T) {
	der, err := os.ReadFile("testdata/swtpm/ek-rsa2048.der")
	if err != nil {
		t.Fatal(err)
	}
	swtpmTrust := &attest.EKTrust{Roots: []*x509.Certificate{readPEMCert(t, "testdata/swtpm/localca-root.pem")},
		Intermediates: []*x509.Certificate{readPEMCert(t, "testdata/swtpm/localca-issuer.pem")}}
	at := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	if _, err := attest.VerifyEKCertificate(der, swtpmTrust, at); err != nil {
		t.Fatalf("swtpm_setup's EK certificate: %v", err)
	}
	fleet, err := ekca.New("fleet")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := attest.VerifyEKCertificate(der, &attest.EKTrust{Roots: []*x509.Certificate{fleet.Cert}}, at); !errors.Is(err, attest.ErrEKUntrusted) {
		t.Fatalf("swtpm_setup's EK certificate under the fleet's CA: %v, want %v", err, attest.ErrEKUntrusted)
	}
	p384, err := os.ReadFile("testdata/swtpm/ek-secp384r1.der")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := attest.VerifyEKCertificate(p384, swtpmTrust, at); !errors.Is(err, attest.ErrEKUntrusted) {
		t.Fatalf("swtpm's P-384 EK certificate: %v, want %v (unsupported EK)", err, attest.ErrEKUntrusted)
	}
	mine, err := fleet.Issue(&rsaKey(t, 1).PublicKey, 0x53575450, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := attest.VerifyEKCertificate(mine, &attest.EKTrust{Roots: []*x509.Certificate{fleet.Cert}}, time.Now()); err != nil {
		t.Fatalf("the local CA's EK certificate: %v", err)
	}
}
