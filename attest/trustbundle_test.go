package attest_test

import (
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/attested-runner/attested-runner/attest"
	pb "github.com/google/go-tpm-tools/proto/attest"
	"github.com/google/go-tpm-tools/server"
	"google.golang.org/protobuf/proto"
)

// TestGCETrustBundle: the shipped gce bundle holds go-tpm-tools' GCE roots,
// and real Compute Engine EK certificates (RSA and ECC, both Google CAs)
// verify under it, as does a real GCE attestation's AK certificate; with
// the bundle's roots swapped for a test CA they do not.
func TestGCETrustBundle(t *testing.T) {
	b, err := attest.LoadTrustBundle("gce")
	if err != nil {
		t.Fatal(err)
	}
	if len(b.Roots) != 2 || len(b.Intermediates) != 3 || b.Version != attest.GCEBundleVersion {
		t.Fatalf("bundle: %d roots, %d intermediates, %q", len(b.Roots), len(b.Intermediates), b.Version)
	}
	found := false
	for _, r := range b.Roots {
		found = found || r.Equal(server.GceEKRoots[0])
	}
	if !found {
		t.Fatal("the bundle lacks go-tpm-tools' GceEKRoots")
	}
	trust := &attest.EKTrust{Roots: b.Roots, Intermediates: b.Intermediates}
	at := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	wrong := &attest.EKTrust{Roots: []*x509.Certificate{newAuthority(t).cert}, Intermediates: b.Intermediates}
	ekCerts, _ := filepath.Glob("testdata/gotpmtools/*_enc_cert.pem")
	if len(ekCerts) != 4 {
		t.Fatalf("%d real EK certificates", len(ekCerts))
	}
	for _, f := range ekCerts {
		der := readPEMCert(t, f).Raw
		if _, err := attest.VerifyEKCertificate(der, trust, at); err != nil {
			t.Errorf("%s: %v", f, err)
		}
		if _, err := attest.VerifyEKCertificate(der, wrong, at); !errors.Is(err, attest.ErrEKUntrusted) {
			t.Errorf("%s under another root: %v", f, err)
		}
	}
	raw, err := os.ReadFile("testdata/gotpmtools/gce-cos-85-nonce9009.pb")
	if err != nil {
		t.Fatal(err)
	}
	var att pb.Attestation
	if err := proto.Unmarshal(raw, &att); err != nil {
		t.Fatal(err)
	}
	p := &attest.Policy{TrustedAKRoots: b.Roots, TrustedAKIntermediates: b.Intermediates}
	if in := attest.InspectTPMAttestation(&att, attest.InspectOptions{RawNonce: []byte{0x90, 0x09}, Policy: p}); in.Err != nil {
		t.Fatalf("real GCE attestation under the bundle: %v", in.Err)
	}
	if _, err := attest.LoadTrustBundle("azure"); err == nil {
		t.Fatal("an unknown bundle loaded")
	}
}
