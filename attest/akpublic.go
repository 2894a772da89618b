package attest

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"fmt"

	pb "github.com/google/go-tpm-tools/proto/attest"
	"github.com/google/go-tpm/legacy/tpm2"
	"github.com/google/go-tpm/legacy/tpm2/credactivation"
	"google.golang.org/protobuf/proto"
)

// MaxAKPublicSize bounds a TPMT_PUBLIC (an RSA 4096 key's is ~540 bytes).
const MaxAKPublicSize = 1024

// AKAttributes are the object attributes an attestation key must have to
// be trusted through credential activation: a restricted signing key
// (the TPM signs only digests it computed itself: quotes, certifications)
// generated in its TPM and never duplicable out of it.
const AKAttributes = tpm2.FlagRestricted | tpm2.FlagSign | tpm2.FlagFixedTPM | tpm2.FlagFixedParent | tpm2.FlagSensitiveDataOrigin

// AKPublicArea is an attestation key's public area that CheckAKPublic accepted.
type AKPublicArea struct {
	// Area is the TPMT_PUBLIC, exactly as given.
	Area   []byte
	Public tpm2.Public
	// Name is the TPM name: nameAlg || H(Area). TPM2_ActivateCredential
	// releases a credential only to the loaded object of this name.
	Name tpm2.Name
	// Key and SPKI are the public key.
	Key  crypto.PublicKey
	SPKI []byte
}

// NameBytes is the encoded name (alg || digest), as bound into admissions.
func (a *AKPublicArea) NameBytes() []byte {
	b, _ := a.Name.Digest.Encode() // a Name from CheckAKPublic always has a digest
	return b
}

// CheckAKPublic decodes an AK public area (TPMT_PUBLIC) and checks it
// before a credential is made for its name:
//   - it is at most MaxAKPublicSize and encodes back to the same bytes
//     (ErrTooLarge, ErrMalformedEvidence);
//   - its attributes include fixedTPM, fixedParent, sensitiveDataOrigin,
//     restricted and sign, and not decrypt (ErrAKAttributes): the name,
//     which covers the attributes, then names a key the TPM generated and
//     will not let leave, and that signs only TPM-made attestations;
//   - its name algorithm is SHA-256 and its scheme ECDSA-SHA256 on P-256 or
//     RSASSA / RSA-PSS with SHA-256 on a key of 2048 bits or more
//     (ErrAKAttributes).
//
// Credential activation then proves that this named key and the EK live in
// the same TPM: a TPM releases the credential only to a loaded object of
// this name with its sensitive part (TPM 2.0 Part 3, 12.5; a public-only
// object offers no authorization), and a TPM refuses to import or load with
// its private part an object whose fixedTPM is set (Part 1, 27.7.2), so the
// object was created in the EK's TPM.
func CheckAKPublic(area []byte) (*AKPublicArea, error) {
	if len(area) > MaxAKPublicSize {
		return nil, fmt.Errorf("%w: AK public area is %d bytes, limit %d", ErrTooLarge, len(area), MaxAKPublicSize)
	}
	pub, err := tpm2.DecodePublic(area)
	if err != nil {
		return nil, fmt.Errorf("%w: AK public area: %v", ErrMalformedEvidence, err)
	}
	if enc, err := pub.Encode(); err != nil || !bytes.Equal(enc, area) {
		return nil, fmt.Errorf("%w: AK public area does not re-encode to the bytes given", ErrMalformedEvidence)
	}
	if pub.Attributes&AKAttributes != AKAttributes || pub.Attributes&tpm2.FlagDecrypt != 0 {
		return nil, fmt.Errorf("%w: attributes %#x (want fixedTPM, fixedParent, sensitiveDataOrigin, restricted, sign; no decrypt)", ErrAKAttributes, uint32(pub.Attributes))
	}
	if pub.NameAlg != tpm2.AlgSHA256 {
		return nil, fmt.Errorf("%w: name algorithm %v, want SHA-256", ErrAKAttributes, pub.NameAlg)
	}
	scheme, err := akSigScheme(pub)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrAKAttributes, err)
	}
	key, err := pub.Key()
	if err != nil {
		return nil, fmt.Errorf("%w: AK public key: %v", ErrMalformedEvidence, err)
	}
	switch k := key.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() || scheme.Alg != tpm2.AlgECDSA {
			return nil, fmt.Errorf("%w: ECC AK must be ECDSA on P-256", ErrAKAttributes)
		}
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 || scheme.Alg == tpm2.AlgECDSA {
			return nil, fmt.Errorf("%w: RSA AK of %d bits with %v (want >= 2048, RSASSA or RSA-PSS)", ErrAKAttributes, k.N.BitLen(), scheme.Alg)
		}
	default:
		return nil, fmt.Errorf("%w: AK key is %T", ErrAKAttributes, key)
	}
	name, err := pub.Name()
	if err != nil || name.Digest == nil {
		return nil, fmt.Errorf("%w: AK name: %v", ErrMalformedEvidence, err)
	}
	spki, err := x509.MarshalPKIXPublicKey(key)
	if err != nil {
		return nil, fmt.Errorf("%w: AK public key: %v", ErrMalformedEvidence, err)
	}
	return &AKPublicArea{Area: bytes.Clone(area), Public: pub, Name: name, Key: key, SPKI: spki}, nil
}

// Credential is what TPM2_MakeCredential would output: a secret wrapped so
// that only the TPM holding the EK, and in it only an object of the AK's
// name, can recover it with TPM2_ActivateCredential. Both fields are the
// TPM wire structures, size-prefixed (TPM2B_ID_OBJECT,
// TPM2B_ENCRYPTED_SECRET).
type Credential struct {
	IDObject        []byte `json:"idObject"`
	EncryptedSecret []byte `json:"encryptedSecret"`
}

// MakeCredential wraps secret for ak under the EK ek (from a verified EK
// certificate), with go-tpm's credactivation (TPM 2.0 Part 1, 24: KDFa /
// KDFe, AES-128-CFB and the integrity HMAC of the default EK templates).
func MakeCredential(ek crypto.PublicKey, ak *AKPublicArea, secret []byte) (*Credential, error) {
	if ak == nil || ak.Name.Digest == nil {
		return nil, fmt.Errorf("%w: no AK name", ErrMalformedEvidence)
	}
	if len(secret) == 0 || len(secret) > 32 {
		return nil, fmt.Errorf("credential secret of %d bytes: want 1 to 32", len(secret))
	}
	id, enc, err := credactivation.Generate(ak.Name.Digest, ek, 16, secret)
	if err != nil {
		return nil, fmt.Errorf("making the credential: %w", err)
	}
	return &Credential{IDObject: id, EncryptedSecret: enc}, nil
}

// TPMAKPublic returns the AK public area (TPMT_PUBLIC) that TPM evidence
// names as its signer. It checks nothing: Verify does.
func (e *Evidence) TPMAKPublic() ([]byte, error) {
	if e == nil || e.Kind != KindTPM || e.TPM == nil {
		return nil, fmt.Errorf("%w: not TPM evidence", ErrMalformedEvidence)
	}
	var att pb.Attestation
	if err := proto.Unmarshal(e.TPM.Attestation, &att); err != nil {
		return nil, fmt.Errorf("%w: attestation: %v", ErrMalformedEvidence, err)
	}
	if len(att.GetAkPub()) == 0 {
		return nil, fmt.Errorf("%w: attestation has no AK public area", ErrMalformedEvidence)
	}
	return att.GetAkPub(), nil
}
