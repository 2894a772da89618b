package fakesigstore

import (
	"crypto"
	"crypto/x509"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sigstore/sigstore-go/pkg/root"
)

// TrustedRoot is the trusted material for a Fulcio root (this package's or
// a real Fulcio's) and rk, with no CT log and no timestamp authority
// (Rekor's integrated time is the observer time).
func TrustedRoot(t testing.TB, fulcioRoot *x509.Certificate, fulcioURL string, rk *Rekor) *root.TrustedRoot {
	t.Helper()
	start := time.Now().Add(-time.Hour)
	ca := &root.FulcioCertificateAuthority{Root: fulcioRoot, ValidityPeriodStart: start, URI: fulcioURL}
	logs := map[string]*root.TransparencyLog{
		hex.EncodeToString(rk.LogID): {
			BaseURL: rk.URL, ID: rk.LogID, ValidityPeriodStart: start, HashFunc: crypto.SHA256,
			PublicKey: &rk.Key.PublicKey, SignatureHashFunc: crypto.SHA256,
		},
	}
	tr, err := root.NewTrustedRoot(root.TrustedRootMediaType01, []root.CertificateAuthority{ca}, nil, nil, logs)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// WriteTrustedRoot writes tr as trusted_root.json in dir and returns its path.
func WriteTrustedRoot(t testing.TB, tr *root.TrustedRoot, dir string) string {
	t.Helper()
	b, err := tr.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "trusted_root.json")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// Sigstore is a whole local instance: issuer, Fulcio and Rekor.
type Sigstore struct {
	Issuer *Issuer
	Fulcio *Fulcio
	Rekor  *Rekor
}

// New serves a local Sigstore until the test ends.
func New(t testing.TB) *Sigstore {
	is := NewIssuer(t)
	return &Sigstore{Issuer: is, Fulcio: NewFulcio(t, is), Rekor: NewRekor(t)}
}

// TrustedRoot is the instance's trusted material.
func (s *Sigstore) TrustedRoot(t testing.TB) *root.TrustedRoot {
	return TrustedRoot(t, s.Fulcio.Root, s.Fulcio.URL, s.Rekor)
}
