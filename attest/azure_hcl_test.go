package attest_test

import (
	"bytes"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/google/go-tpm/legacy/tpm2"
)

// azureFiles are real Azure SEV-SNP confidential VM artifacts from
// kinvolk/azure-cvm-tooling (az-cvm-vtpm/test, MIT licence, Microsoft;
// see testdata/azure/README.md): an HCL report, the VCEK chain, and a vTPM
// AK with a quote over nonce "challenge".
func azureFile(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/azure/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func azureVCEK(t *testing.T) []byte {
	block, _ := pem.Decode(azureFile(t, "certs.pem"))
	if block == nil {
		t.Fatal("no VCEK")
	}
	return block.Bytes
}

// TestAzureHCLReport runs the Azure chain on kinvolk's real HCL report.
// What the real data shows: the report parses, its REPORT_DATA is the
// SHA-256 of the runtime data (the binding), and the runtime data names an
// RSA AK; an edited runtime data breaks the binding. What it cannot show:
// the VCEK shipped next to it (certs.pem) is not this report's signer (its
// signature does not verify with it: kinvolk's own tests check the chain
// and the hash, never the report signature), so VerifyAzureHCLReport's
// verdict on this pair is ErrSNPReport, and no Azure report was verified
// end to end here.
func TestAzureHCLReport(t *testing.T) {
	hcl, vcek := azureFile(t, "hcl-report-snp.bin"), azureVCEK(t)
	r, err := attest.ParseAzureHCLReport(hcl)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.CheckBinding(); err != nil {
		t.Fatalf("real binding: %v", err)
	}
	if r.AK == nil || r.AK.N.BitLen() != 2048 {
		t.Fatalf("AK %v", r.AK)
	}
	runtimeAt := 32 + 1184 + 20
	edit := func(off int) []byte {
		b := bytes.Clone(hcl)
		b[off] ^= 1
		return b
	}
	replace := func(old, new string) []byte {
		if len(old) != len(new) || !bytes.Contains(hcl, []byte(old)) {
			t.Fatalf("%q not in the runtime data", old)
		}
		return bytes.Replace(bytes.Clone(hcl), []byte(old), []byte(new), 1)
	}
	// The runtime data edited where the AK's modulus is: another AK.
	other, err := attest.ParseAzureHCLReport(edit(runtimeAt + 100))
	if err != nil {
		t.Fatal(err)
	}
	if err := other.CheckBinding(); !errors.Is(err, attest.ErrNonceMismatch) {
		t.Fatalf("runtime data edited: got %v, want %v", err, attest.ErrNonceMismatch)
	}
	for _, tc := range []struct {
		name string
		b    []byte
		want error
		msg  string
	}{
		{"not an HCL report", edit(0), attest.ErrAzureHCL, "no HCLA signature"},
		{"no runtime data", hcl[:runtimeAt], attest.ErrAzureHCL, "runtime data of 583 bytes"},
		{"shorter than the header", hcl[:100], attest.ErrAzureHCL, "shorter than its fixed part"},
		{"runtime data hashed otherwise", edit(32 + 1184 + 12), attest.ErrAzureHCL, "hash type"},
		{"oversized", append(bytes.Clone(hcl), make([]byte, 15<<10)...), attest.ErrTooLarge, "HCL report is"},
		{"runtime data not JSON", edit(runtimeAt), attest.ErrAzureHCL, "runtime data: invalid character"},
		{"no HCLAkPub", replace(`"kid":"HCLAkPub"`, `"kid":"HCLAkPuX"`), attest.ErrAzureHCL, "names no HCLAkPub"},
		{"HCLAkPub exponent 1", replace(`"e":"AQAB"`, `"e":"AAAB"`), attest.ErrAzureHCL, "not an RSA-2048+ key"},
	} {
		if _, err := attest.ParseAzureHCLReport(tc.b); !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: got %v, want %v (%q)", tc.name, err, tc.want, tc.msg)
		}
	}
	snp, err := attest.ParseSNPReport(r.SNPReport)
	if err != nil {
		t.Fatal(err)
	}
	p := &attest.SNPPolicy{Measurements: []attest.Hex{snp.GetMeasurement()}, SNPRequirements: attest.SNPRequirements{AllowSMT: true}, Time: time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)}
	if _, _, err := attest.VerifyAzureHCLReport(hcl, vcek, p); !errors.Is(err, attest.ErrSNPReport) {
		t.Fatalf("shipped VCEK: got %v, want %v (it is not this report's signer)", err, attest.ErrSNPReport)
	}
}

// TestAzureQuoteAK: the real vTPM quote (TPM2_Quote over nonce
// "challenge", kinvolk's serialization: length-prefixed signature,
// TPMS_ATTEST, PCR values) verifies with its AK (akpub.pem), and that AK
// is not the one the HCL report's runtime data names, so the quote is not
// bound to that SNP report.
func TestAzureQuoteAK(t *testing.T) {
	r, err := attest.ParseAzureHCLReport(azureFile(t, "hcl-report-snp.bin"))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(azureFile(t, "akpub.pem"))
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	ak := pub.(*rsa.PublicKey)
	q := azureFile(t, "quote.bin")
	next := func() []byte {
		n := binary.LittleEndian.Uint64(q)
		out := q[8 : 8+n]
		q = q[8+n:]
		return out
	}
	sig, msg := next(), next()
	d := sha256.Sum256(msg)
	if err := rsa.VerifyPKCS1v15(ak, crypto.SHA256, d[:], sig); err != nil {
		t.Fatalf("quote signature: %v", err)
	}
	ad, err := tpm2.DecodeAttestationData(msg)
	if err != nil || string(ad.ExtraData) != "challenge" {
		t.Fatalf("quote: %v, nonce %q", err, ad.ExtraData)
	}
	// kinvolk's quote and AK come from another VM than its HCL report: the
	// check "AK not in the HCL runtime data" refuses them, on real data.
	if r.AKMatches(ak) {
		t.Fatal("the quote's AK is named by the HCL report: the vectors changed, turn this into a positive test")
	}
	if !r.AKMatches(r.AK) {
		t.Fatal("the HCL AK does not match itself")
	}
}

// FuzzAzureHCLReport: the HCL report parser never panics, on kinvolk's real
// report and a synthetic one (in testdata/fuzz) mutated; what parses names an AK and keeps
// its parts inside the input.
func FuzzAzureHCLReport(f *testing.F) {
	b, err := os.ReadFile("testdata/azure/hcl-report-snp.bin")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b) // and testdata/fuzz: attesttest.SNPHost.AzureHCLReport's
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := attest.ParseAzureHCLReport(b)
		if err != nil {
			return
		}
		if r.AK == nil || len(r.SNPReport)+len(r.RuntimeData) > len(b) {
			t.Fatalf("parsed without an AK or past the input: %+v", r)
		}
		_ = r.CheckBinding()
	})
}
