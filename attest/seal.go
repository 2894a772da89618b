package attest

import (
	"crypto/ecdh"
	"crypto/hpke"
	"errors"
	"fmt"
)

// Secrets for an environment (its JIT runner configuration) travel sealed
// with HPKE (RFC 9180: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,
// ChaCha20-Poly1305) to the X25519 key whose public half the environment's
// quote bound. Only the agent in that attested environment can open them:
// a captured ciphertext is useless elsewhere (threat model: intercepted JIT
// config). The context string is bound as HPKE info, so a ciphertext sealed
// for one purpose or runner cannot be opened as another.

const sealInfoPrefix = "attested-runner/v1/seal/"

// MaxSealedSize bounds a sealed secret.
const MaxSealedSize = 64 << 10

// ErrSealed is returned when a sealed secret cannot be opened: wrong key,
// wrong context, or tampered ciphertext.
var ErrSealed = errors.New("sealed secret cannot be opened with this key and context")

// Seal encrypts plaintext to an environment's HPKE public key.
func Seal(recipient []byte, context string, plaintext []byte) ([]byte, error) {
	pub, err := ecdh.X25519().NewPublicKey(recipient)
	if err != nil {
		return nil, fmt.Errorf("HPKE recipient key: %w", err)
	}
	pk, err := hpke.NewDHKEMPublicKey(pub)
	if err != nil {
		return nil, err
	}
	return hpke.Seal(pk, hpke.HKDFSHA256(), hpke.ChaCha20Poly1305(), []byte(sealInfoPrefix+context), plaintext)
}

// HPKEKey is an environment's ephemeral X25519 key. It lives only in agent
// memory and dies with the process.
type HPKEKey struct {
	priv *ecdh.PrivateKey
}

// NewHPKEKey generates a fresh key.
func NewHPKEKey() (*HPKEKey, error) {
	priv, err := hpke.DHKEM(ecdh.X25519()).GenerateKey()
	if err != nil {
		return nil, err
	}
	raw, err := priv.Bytes()
	if err != nil {
		return nil, err
	}
	k, err := ecdh.X25519().NewPrivateKey(raw)
	clear(raw)
	if err != nil {
		return nil, err
	}
	return &HPKEKey{priv: k}, nil
}

// PublicKey is the raw 32-byte X25519 public key.
func (k *HPKEKey) PublicKey() []byte { return k.priv.PublicKey().Bytes() }

// Open decrypts a secret sealed to this key for context.
func (k *HPKEKey) Open(context string, sealed []byte) ([]byte, error) {
	if len(sealed) > MaxSealedSize {
		return nil, fmt.Errorf("%w: %d bytes", ErrTooLarge, len(sealed))
	}
	if k == nil || k.priv == nil {
		return nil, fmt.Errorf("%w: key destroyed", ErrSealed)
	}
	sk, err := hpke.NewDHKEMPrivateKey(k.priv)
	if err != nil {
		return nil, err
	}
	pt, err := hpke.Open(sk, hpke.HKDFSHA256(), hpke.ChaCha20Poly1305(), []byte(sealInfoPrefix+context), sealed)
	if err != nil {
		return nil, ErrSealed
	}
	return pt, nil
}

// Destroy drops the private key. Go cannot guarantee the bytes are wiped
// from memory; dropping the only reference is what it offers.
func (k *HPKEKey) Destroy() { k.priv = nil }
