package attest_test

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/attested-runner/attested-runner/attest"
)

// TestEKCRLs: a CRL is taken only from a configured EK CA (one that would
// silently check nothing is refused), within its size limit, DER or PEM;
// padding after an NV certificate is trimmed, garbage is not DER.
func TestEKCRLs(t *testing.T) {
	root, stranger := newAuthority(t), newAuthority(t)
	inter := root.intermediate(t, nil)
	trust := func(crls ...*x509.RevocationList) *attest.EKTrust {
		return &attest.EKTrust{Roots: []*x509.Certificate{root.cert}, Intermediates: []*x509.Certificate{inter.cert}, CRLs: crls}
	}
	next := time.Now().Add(time.Hour)
	if err := trust(root.crl(t, next), inter.crl(t, next)).CheckCRLIssuers(); err != nil {
		t.Fatalf("the root's and the intermediate's CRLs: %v", err)
	}
	if err := trust(root.crl(t, next), stranger.crl(t, next)).CheckCRLIssuers(); err == nil || !strings.Contains(err.Error(), "not signed by any configured EK root or intermediate") {
		t.Fatalf("a CRL of a CA not configured: %v", err)
	}

	der := root.crl(t, next).Raw
	for name, b := range map[string][]byte{"DER": der, "PEM": pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der})} {
		crl, err := attest.ParseCRL(b)
		if err != nil || !bytes.Equal(crl.Raw, der) {
			t.Errorf("%s CRL: %v", name, err)
		}
	}
	if _, err := attest.ParseCRL(make([]byte, attest.MaxCRLSize+1)); !errors.Is(err, attest.ErrTooLarge) {
		t.Errorf("oversized CRL: %v", err)
	}
	if _, err := attest.ParseCRL([]byte("not a CRL")); err == nil {
		t.Error("garbage parsed as a CRL")
	}

	dir := t.TempDir()
	good, bad := filepath.Join(dir, "root.crl"), filepath.Join(dir, "bad.crl")
	if err := os.WriteFile(good, der, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte("not a CRL"), 0o644); err != nil {
		t.Fatal(err)
	}
	if crl, err := attest.LoadCRL(good); err != nil || crl == nil {
		t.Errorf("CRL file: %v", err)
	}
	for _, p := range []string{bad, filepath.Join(dir, "missing.crl")} {
		if crl, err := attest.LoadCRL(p); err == nil || crl != nil || !strings.Contains(err.Error(), filepath.Base(p)) {
			t.Errorf("LoadCRL(%s) = %v, %v: want an error naming the file", filepath.Base(p), crl, err)
		}
	}

	cert := root.issue(t, root.key.Public(), nil)
	if got, err := attest.TrimDER(append(append([]byte(nil), cert...), 0xff, 0xff, 0xff)); err != nil || !bytes.Equal(got, cert) {
		t.Errorf("padded NV certificate: %v", err)
	}
	if _, err := attest.TrimDER([]byte{0xff, 0x01}); !errors.Is(err, attest.ErrMalformedEvidence) {
		t.Errorf("not DER: %v", err)
	}
}
