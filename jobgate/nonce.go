package jobgate

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"time"
)

// A nonce is 16 random bytes, the expiry (8 bytes, Unix nanoseconds) and a
// 16-byte HMAC-SHA256 of both under the store's nonce key. The gate can
// check a nonce it issued, even across restarts (the key lives in the
// store), without having stored it; only its use is stored, which is what
// makes it single use.
const (
	nonceRandSize = 16
	nonceMACSize  = 16
	nonceSize     = nonceRandSize + 8 + nonceMACSize
)

func makeNonce(key []byte, expires time.Time) ([]byte, error) {
	n := make([]byte, nonceRandSize, nonceSize)
	if _, err := rand.Read(n); err != nil {
		return nil, err
	}
	n = binary.BigEndian.AppendUint64(n, uint64(expires.UnixNano()))
	return append(n, nonceMAC(key, n)...), nil
}

func nonceMAC(key, body []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(body)
	return m.Sum(nil)[:nonceMACSize]
}

// nonceSecretDomain separates activation secrets from nonce MACs under the
// same key.
const nonceSecretDomain = "attested-runner/v1/nonce-secret\x00"

// issuedNonceSecret is nonceSecret of a nonce issued under key (and only
// of one: ErrNonceUnknown otherwise), what both stores' NonceSecret return.
func issuedNonceSecret(key, nonce, info []byte) ([]byte, error) {
	if _, err := parseNonce(key, nonce); err != nil {
		return nil, err
	}
	return nonceSecret(key, nonce, info), nil
}

// nonceSecret is a 32-byte HMAC-SHA256 of the nonce and info,
// length-prefixed, under key in its own domain. Whoever knows the nonce
// but not the key cannot compute it.
func nonceSecret(key, nonce, info []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(nonceSecretDomain))
	for _, part := range [][]byte{nonce, info} {
		m.Write(binary.BigEndian.AppendUint32(nil, uint32(len(part))))
		m.Write(part)
	}
	return m.Sum(nil)
}

// parseNonce checks a nonce's MAC and returns its expiry.
func parseNonce(key, n []byte) (time.Time, error) {
	if len(n) != nonceSize {
		return time.Time{}, ErrNonceUnknown
	}
	body := n[:nonceRandSize+8]
	if !hmac.Equal(n[nonceRandSize+8:], nonceMAC(key, body)) {
		return time.Time{}, ErrNonceUnknown
	}
	return time.Unix(0, int64(binary.BigEndian.Uint64(body[nonceRandSize:]))), nil
}
