package attest

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"strings"
	"testing"

	tpmpb "github.com/google/go-tpm-tools/proto/tpm"
	"github.com/google/go-tpm/legacy/tpm2"
)

// pssQuote is a TPM2_Quote as an RSA-PSS attestation key makes it, built
// in software: the quote body ad (edited by the caller before signing) and
// the PCR values given with it.
func pssQuote(t *testing.T, k *rsa.PrivateKey, edit func(*tpm2.AttestationData)) *tpmpb.Quote {
	t.Helper()
	p0, p1 := sha256.Sum256([]byte("pcr 0")), sha256.Sum256([]byte("pcr 1"))
	digest := sha256.Sum256(append(p0[:], p1[:]...))
	ad := tpm2.AttestationData{Magic: 0xff544347, Type: tpm2.TagAttestQuote,
		QualifiedSigner: tpm2.Name{Digest: &tpm2.HashValue{Alg: tpm2.AlgSHA256, Value: make([]byte, 32)}},
		ExtraData:       []byte("the gate's nonce"),
		AttestedQuoteInfo: &tpm2.QuoteInfo{PCRSelection: tpm2.PCRSelection{Hash: tpm2.AlgSHA256, PCRs: []int{1, 0}},
			PCRDigest: digest[:]}}
	if edit != nil {
		edit(&ad)
	}
	raw, err := ad.Encode()
	if err != nil {
		t.Fatal(err)
	}
	d := sha256.Sum256(raw)
	s, err := rsa.SignPSS(rand.Reader, k, crypto.SHA256, d[:], &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
	if err != nil {
		t.Fatal(err)
	}
	sig, err := tpm2.Signature{Alg: tpm2.AlgRSAPSS, RSA: &tpm2.SignatureRSA{HashAlg: tpm2.AlgSHA256, Signature: s}}.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return &tpmpb.Quote{Quote: raw, RawSig: sig, Pcrs: &tpmpb.PCRs{Hash: tpmpb.HashAlgo_SHA256, Pcrs: map[uint32][]byte{0: p0[:], 1: p1[:]}}}
}

// TestVerifyQuoteRSAPSS: an RSA-PSS quote (verified here, not by
// go-tpm-tools) is accepted only when every check holds; each is broken
// once: the nonce, the kind of attestation, the signature, the body, the
// PCR values, their selection and their bank.
func TestVerifyQuoteRSAPSS(t *testing.T) {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	nonce := []byte("the gate's nonce")
	if err := verifyQuote(pssQuote(t, k, nil), &k.PublicKey, nonce); err != nil {
		t.Fatalf("genuine RSA-PSS quote: %v", err)
	}
	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	for _, tc := range []struct {
		name  string
		quote func() *tpmpb.Quote
		ak    crypto.PublicKey
		nonce []byte
		want  string
	}{
		{"another nonce", func() *tpmpb.Quote { return pssQuote(t, k, nil) }, &k.PublicKey, []byte("an old nonce"), "not the nonce"},
		{"no nonce", func() *tpmpb.Quote { return pssQuote(t, k, nil) }, &k.PublicKey, nil, "not the nonce"},
		{"signed by another key", func() *tpmpb.Quote { return pssQuote(t, other, nil) }, &k.PublicKey, nonce, "does not verify"},
		{"a certification, not a quote", func() *tpmpb.Quote {
			return pssQuote(t, k, func(ad *tpm2.AttestationData) {
				ad.Type, ad.AttestedQuoteInfo = tpm2.TagAttestCertify, nil
				ad.AttestedCertifyInfo = &tpm2.CertifyInfo{Name: ad.QualifiedSigner, QualifiedName: ad.QualifiedSigner}
			})
		}, &k.PublicKey, nonce, "not a quote"},
		{"signature bytes garbled", func() *tpmpb.Quote { q := pssQuote(t, k, nil); q.RawSig = []byte{0x00, 0x16}; return q }, &k.PublicKey, nonce, "quote signature"},
		{"body garbled under a valid signature", func() *tpmpb.Quote {
			q := pssQuote(t, k, nil)
			q.Quote = []byte("not a TPMS_ATTEST")
			d := sha256.Sum256(q.Quote)
			s, _ := rsa.SignPSS(rand.Reader, k, crypto.SHA256, d[:], &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
			q.RawSig, _ = tpm2.Signature{Alg: tpm2.AlgRSAPSS, RSA: &tpm2.SignatureRSA{HashAlg: tpm2.AlgSHA256, Signature: s}}.Encode()
			return q
		}, &k.PublicKey, nonce, "quote attestation data"},
		{"a PCR value edited", func() *tpmpb.Quote { q := pssQuote(t, k, nil); q.Pcrs.Pcrs[1] = make([]byte, 32); return q }, &k.PublicKey, nonce, "do not match the quoted digest"},
		{"a quoted PCR left out", func() *tpmpb.Quote { q := pssQuote(t, k, nil); delete(q.Pcrs.Pcrs, 1); return q }, &k.PublicKey, nonce, "not the quoted selection"},
		{"another PCR given in its place", func() *tpmpb.Quote {
			q := pssQuote(t, k, nil)
			q.Pcrs.Pcrs[7] = q.Pcrs.Pcrs[1]
			delete(q.Pcrs.Pcrs, 1)
			return q
		}, &k.PublicKey, nonce, "PCR 1 is quoted but not given"},
		{"another bank", func() *tpmpb.Quote { q := pssQuote(t, k, nil); q.Pcrs.Hash = tpmpb.HashAlgo_SHA1; return q }, &k.PublicKey, nonce, "not the quoted selection"},
		{"no PCR values", func() *tpmpb.Quote { q := pssQuote(t, k, nil); q.Pcrs = nil; return q }, &k.PublicKey, nonce, "not the quoted selection"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := verifyQuote(tc.quote(), tc.ak, tc.nonce); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error with %q", err, tc.want)
			}
		})
	}
}
