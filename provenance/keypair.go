package provenance

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"

	protocommon "github.com/sigstore/protobuf-specs/gen/pb-go/common/v1"
)

// Keypair adapts any ECDSA P-256 crypto.Signer (a TPM-resident environment
// key, a gate key in a file or a KMS) to sigstore-go's sign.Keypair.
type Keypair struct {
	signer crypto.Signer
	pub    *ecdsa.PublicKey
	spki   []byte
}

// NewKeypair wraps signer, which must hold an ECDSA P-256 key.
func NewKeypair(signer crypto.Signer) (*Keypair, error) {
	pub, ok := signer.Public().(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return nil, fmt.Errorf("signing key is %T, want ECDSA P-256", signer.Public())
	}
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	return &Keypair{signer: signer, pub: pub, spki: spki}, nil
}

// KeyID is how bundles name a key: base64 of the SHA-256 of its
// SubjectPublicKeyInfo (sigstore-go's default hint).
func KeyID(spki []byte) string {
	d := sha256.Sum256(spki)
	return base64.StdEncoding.EncodeToString(d[:])
}

// GetHashAlgorithm implements sign.Keypair.
func (k *Keypair) GetHashAlgorithm() protocommon.HashAlgorithm {
	return protocommon.HashAlgorithm_SHA2_256
}

// GetSigningAlgorithm implements sign.Keypair.
func (k *Keypair) GetSigningAlgorithm() protocommon.PublicKeyDetails {
	return protocommon.PublicKeyDetails_PKIX_ECDSA_P256_SHA_256
}

// GetHint implements sign.Keypair.
func (k *Keypair) GetHint() []byte { return []byte(KeyID(k.spki)) }

// GetKeyAlgorithm implements sign.Keypair.
func (k *Keypair) GetKeyAlgorithm() string { return "ECDSA" }

// GetPublicKey implements sign.Keypair.
func (k *Keypair) GetPublicKey() crypto.PublicKey { return k.pub }

// GetPublicKeyPem implements sign.Keypair.
func (k *Keypair) GetPublicKeyPem() (string, error) {
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: k.spki})), nil
}

// SignData implements sign.Keypair: SHA-256, then ECDSA (ASN.1) by the signer.
func (k *Keypair) SignData(_ context.Context, data []byte) ([]byte, []byte, error) {
	d := sha256.Sum256(data)
	sig, err := k.signer.Sign(rand.Reader, d[:], crypto.SHA256)
	if err != nil {
		return nil, nil, err
	}
	return sig, d[:], nil
}

// SPKI is the signer's SubjectPublicKeyInfo.
func (k *Keypair) SPKI() []byte { return k.spki }

// ParseSigningKey reads a PEM ECDSA P-256 private key, PKCS#8 ("PRIVATE
// KEY") or SEC 1 ("EC PRIVATE KEY"), as jobgate keygen writes them.
func ParseSigningKey(b []byte) (*ecdsa.PrivateKey, error) {
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	var key any
	var err error
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("PEM type %q, want PRIVATE KEY or EC PRIVATE KEY", block.Type)
	}
	if err != nil {
		return nil, err
	}
	k, ok := key.(*ecdsa.PrivateKey)
	if !ok || k.Curve != elliptic.P256() {
		return nil, fmt.Errorf("want ECDSA P-256, got %T", key)
	}
	return k, nil
}
