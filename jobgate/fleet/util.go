package fleet

import (
	"crypto"
	"crypto/x509"
	"fmt"
	"sync"
	"time"
)

func marshalKey(k crypto.PublicKey) ([]byte, error) {
	b, err := x509.MarshalPKIXPublicKey(k)
	if err != nil {
		return nil, fmt.Errorf("fleet: VM attestation key: %w", err)
	}
	return b, nil
}

func parseKey(spki []byte) (crypto.PublicKey, error) {
	k, err := x509.ParsePKIXPublicKey(spki)
	if err != nil {
		return nil, fmt.Errorf("fleet: VM attestation key: %w", err)
	}
	return k, nil
}

// tokenBucket limits launches to a rate per minute with a burst of one
// minute's worth (at least one).
type tokenBucket struct {
	mu     sync.Mutex
	rate   float64 // tokens per second
	burst  float64
	tokens float64
	last   time.Time
}

func newTokenBucket(perMinute float64, now time.Time) tokenBucket {
	burst := max(perMinute, 1)
	return tokenBucket{rate: perMinute / 60, burst: burst, tokens: burst, last: now}
}

func (b *tokenBucket) take(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if now.After(b.last) {
		b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
		b.last = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
