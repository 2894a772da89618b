package fakegithub

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"sync"
)

var (
	appKeyOnce sync.Once
	appKey     *rsa.PrivateKey
	appKeyPEM  []byte
	appKeyErr  error
)

// AppKey is one GitHub App key per process, with its PKCS #1 PEM form (what
// GitHub hands an App's owner). RSA-2048 generation is slow, under -race
// much slower, and every test of a process can share the fixture.
func AppKey() (*rsa.PrivateKey, []byte, error) {
	appKeyOnce.Do(func() {
		appKey, appKeyErr = rsa.GenerateKey(rand.Reader, 2048)
		if appKeyErr == nil {
			appKeyPEM = pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(appKey)})
		}
	})
	return appKey, appKeyPEM, appKeyErr
}
