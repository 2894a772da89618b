package attest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"math/big"
	"strings"
	"testing"

	"github.com/google/go-tpm/legacy/tpm2"
)

// TestVerifyAKSignature: each scheme verifies with the key kind it fits,
// and every mismatch is an error, never a panic: no signature, a scheme
// for the other key kind, a digest outside SHA-2, a scheme an RSA key does
// not use, a signature by another key.
func TestVerifyAKSignature(t *testing.T) {
	data := []byte("TPMS_ATTEST bytes")
	d := sha256.Sum256(data)
	ek, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	r, s, err := ecdsa.Sign(rand.Reader, ek, d[:])
	if err != nil {
		t.Fatal(err)
	}
	ecdsaSig := &tpm2.Signature{Alg: tpm2.AlgECDSA, ECC: &tpm2.SignatureECC{HashAlg: tpm2.AlgSHA256, R: r, S: s}}
	pkcs, err := rsa.SignPKCS1v15(rand.Reader, rk, crypto.SHA256, d[:])
	if err != nil {
		t.Fatal(err)
	}
	rsassa := &tpm2.Signature{Alg: tpm2.AlgRSASSA, RSA: &tpm2.SignatureRSA{HashAlg: tpm2.AlgSHA256, Signature: pkcs}}
	pss, err := rsa.SignPSS(rand.Reader, rk, crypto.SHA256, d[:], &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
	if err != nil {
		t.Fatal(err)
	}
	rsapss := &tpm2.Signature{Alg: tpm2.AlgRSAPSS, RSA: &tpm2.SignatureRSA{HashAlg: tpm2.AlgSHA256, Signature: pss}}

	for name, tc := range map[string]struct {
		ak  crypto.PublicKey
		sig *tpm2.Signature
	}{"ECDSA": {&ek.PublicKey, ecdsaSig}, "RSASSA": {&rk.PublicKey, rsassa}, "RSA-PSS": {&rk.PublicKey, rsapss}} {
		if alg, err := verifyAKSignature(tc.ak, tc.sig, data); err != nil || alg != tpm2.AlgSHA256 {
			t.Errorf("%s: %v, %v", name, alg, err)
		}
	}

	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for _, tc := range []struct {
		name string
		ak   crypto.PublicKey
		sig  *tpm2.Signature
		data []byte
		want string
	}{
		{"no signature", &ek.PublicKey, nil, data, "no signature"},
		{"no digest in it", &ek.PublicKey, &tpm2.Signature{Alg: tpm2.AlgECDSA}, data, "carries no digest"},
		{"SHA-1", &ek.PublicKey, &tpm2.Signature{Alg: tpm2.AlgECDSA, ECC: &tpm2.SignatureECC{HashAlg: tpm2.AlgSHA1, R: r, S: s}}, data, "is not SHA-256"},
		{"ECDSA for an RSA key", &rk.PublicKey, ecdsaSig, data, "an RSA attestation key signs with RSASSA or RSA-PSS"},
		{"RSASSA for an ECC key", &ek.PublicKey, rsassa, data, "an ECC attestation key signs with ECDSA"},
		{"RSASSA carrying an ECDSA signature", &rk.PublicKey, &tpm2.Signature{Alg: tpm2.AlgRSASSA, ECC: ecdsaSig.ECC}, data, "an RSA attestation key signs with RSASSA or RSA-PSS"},
		{"RSA signature under another scheme", &rk.PublicKey, &tpm2.Signature{Alg: tpm2.AlgECDSA, RSA: rsassa.RSA}, data, "an RSA attestation key signs with RSASSA or RSA-PSS, not"},
		{"ECDSA by another key", &other.PublicKey, ecdsaSig, data, "does not verify"},
		{"RSASSA over other data", &rk.PublicKey, rsassa, []byte("other"), "does not verify"},
		{"RSA-PSS read as RSASSA", &rk.PublicKey, &tpm2.Signature{Alg: tpm2.AlgRSASSA, RSA: rsapss.RSA}, data, "does not verify"},
		{"ECDSA with R zero", &ek.PublicKey, &tpm2.Signature{Alg: tpm2.AlgECDSA, ECC: &tpm2.SignatureECC{HashAlg: tpm2.AlgSHA256, R: new(big.Int), S: s}}, data, "does not verify"},
		{"a key of no supported kind", "not a key", ecdsaSig, data, "want ECDSA or RSA"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			alg, err := verifyAKSignature(tc.ak, tc.sig, tc.data)
			if err == nil || !strings.Contains(err.Error(), tc.want) || alg != 0 {
				t.Fatalf("got %v, %v; want an error with %q", alg, err, tc.want)
			}
		})
	}
}
