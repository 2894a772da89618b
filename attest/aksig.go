package attest

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/subtle"
	"errors"
	"fmt"
	"slices"

	tpmpb "github.com/google/go-tpm-tools/proto/tpm"
	tpmquote "github.com/google/go-tpm-tools/quote"
	"github.com/google/go-tpm/legacy/tpm2"
)

// Attestation keys come in three signature schemes: ECDSA (the ECC AK of
// go-tpm-tools and GCE), RSASSA-PKCS1-v1_5 (GCE's and Azure's RSA AKs) and
// RSA-PSS (TPM 2.0 Part 1, 11.2.1: both are restricted signing schemes a TPM
// may give an AK). go-tpm-tools' quote.Verify checks the first two; RSA-PSS
// quotes are checked here, with the same checks.

// akSignatureHashes are the digests accepted in AK signatures, as in
// go-tpm-tools' quote.SignatureHashAlgs.
var akSignatureHashes = []tpm2.Algorithm{tpm2.AlgSHA256, tpm2.AlgSHA384, tpm2.AlgSHA512}

// verifyAKSignature checks a TPMT_SIGNATURE by the attestation key over
// data and returns the digest algorithm it used. The scheme must fit the
// key: ECDSA for an ECC key, RSASSA or RSA-PSS for an RSA key.
func verifyAKSignature(ak crypto.PublicKey, sig *tpm2.Signature, data []byte) (tpm2.Algorithm, error) {
	if sig == nil {
		return 0, errors.New("no signature")
	}
	var alg tpm2.Algorithm
	switch {
	case sig.ECC != nil:
		alg = sig.ECC.HashAlg
	case sig.RSA != nil:
		alg = sig.RSA.HashAlg
	default:
		return 0, fmt.Errorf("signature scheme %v carries no digest", sig.Alg)
	}
	if !slices.Contains(akSignatureHashes, alg) {
		return 0, fmt.Errorf("signature digest %v is not SHA-256, SHA-384 or SHA-512", alg)
	}
	h, err := alg.Hash()
	if err != nil {
		return 0, err
	}
	hh := h.New()
	hh.Write(data)
	digest := hh.Sum(nil)
	switch k := ak.(type) {
	case *ecdsa.PublicKey:
		if sig.Alg != tpm2.AlgECDSA || sig.ECC == nil {
			return 0, fmt.Errorf("an ECC attestation key signs with ECDSA, not %v", sig.Alg)
		}
		if !ecdsa.Verify(k, digest, sig.ECC.R, sig.ECC.S) {
			return 0, errors.New("ECDSA signature does not verify with the attestation key")
		}
	case *rsa.PublicKey:
		if sig.RSA == nil {
			return 0, fmt.Errorf("an RSA attestation key signs with RSASSA or RSA-PSS, not %v", sig.Alg)
		}
		switch sig.Alg {
		case tpm2.AlgRSASSA:
			err = rsa.VerifyPKCS1v15(k, h, digest, sig.RSA.Signature)
		case tpm2.AlgRSAPSS:
			// TPM 2.0 Part 1, B.7: the salt is as long as the digest where
			// the key allows it; Auto also accepts TPMs that use the
			// largest salt the key allows (earlier revisions).
			err = rsa.VerifyPSS(k, h, digest, sig.RSA.Signature, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto, Hash: h})
		default:
			return 0, fmt.Errorf("an RSA attestation key signs with RSASSA or RSA-PSS, not %v", sig.Alg)
		}
		if err != nil {
			return 0, fmt.Errorf("%v signature does not verify with the attestation key: %v", sig.Alg, err)
		}
	default:
		return 0, fmt.Errorf("attestation key is %T, want ECDSA or RSA", ak)
	}
	return alg, nil
}

// verifyQuote checks a quote made by ak for nonce: the signature, that it
// is a quote, its qualifying data, and that the PCR values given are those
// the TPM digested. ECDSA and RSASSA quotes go through go-tpm-tools'
// quote.Verify; RSA-PSS quotes through the same checks here.
func verifyQuote(q *tpmpb.Quote, ak crypto.PublicKey, nonce []byte) error {
	sig, err := tpm2.DecodeSignature(bytes.NewBuffer(q.GetRawSig()))
	if err != nil {
		return fmt.Errorf("quote signature: %v", err)
	}
	if sig.Alg != tpm2.AlgRSAPSS {
		return tpmquote.Verify(q, ak, nonce)
	}
	alg, err := verifyAKSignature(ak, sig, q.GetQuote())
	if err != nil {
		return err
	}
	ad, err := tpm2.DecodeAttestationData(q.GetQuote())
	if err != nil {
		return fmt.Errorf("quote attestation data: %v", err)
	}
	if ad.Type != tpm2.TagAttestQuote || ad.AttestedQuoteInfo == nil {
		return fmt.Errorf("attestation is %v, not a quote", ad.Type)
	}
	if subtle.ConstantTimeCompare(ad.ExtraData, nonce) != 1 {
		return errors.New("quote extra data is not the nonce")
	}
	return checkPCRDigest(ad.AttestedQuoteInfo, q.GetPcrs(), alg)
}

// checkPCRDigest checks that pcrs are exactly the quoted selection and that
// their digest (with the signature's hash, TPM 2.0 Part 3, 18.4) is the
// quoted one.
func checkPCRDigest(info *tpm2.QuoteInfo, pcrs *tpmpb.PCRs, alg tpm2.Algorithm) error {
	sel := info.PCRSelection
	if pcrs == nil || uint32(sel.Hash) != uint32(pcrs.GetHash()) || len(sel.PCRs) != len(pcrs.GetPcrs()) {
		return errors.New("the PCR values given are not the quoted selection")
	}
	idx := slices.Clone(sel.PCRs)
	slices.Sort(idx)
	h, err := alg.Hash()
	if err != nil {
		return err
	}
	d := h.New()
	for _, i := range idx {
		v, ok := pcrs.GetPcrs()[uint32(i)]
		if !ok {
			return fmt.Errorf("PCR %d is quoted but not given", i)
		}
		d.Write(v)
	}
	if subtle.ConstantTimeCompare(d.Sum(nil), info.PCRDigest) != 1 {
		return errors.New("the PCR values given do not match the quoted digest")
	}
	return nil
}
