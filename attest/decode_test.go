package attest_test

import (
	"bytes"
	"crypto/x509"
	"errors"
	"strings"
	"testing"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/attested-runner/attested-runner/attest/attesttest"
)

// TestEvidenceShapeRefusals: decoding refuses what is not one JSON
// document, and Verify (as DecodeEvidence) refuses evidence with a part
// missing, of the wrong kind or over its limit, each with its own error,
// before anything cryptographic; nil evidence is refused, not a panic.
func TestEvidenceShapeRefusals(t *testing.T) {
	ch := attest.AdmissionChallenge(bytes.Repeat([]byte{3}, 32))
	m := attesttest.SimulatedMachine(t)
	tpmEv, err := m.Collector.Collect(ch)
	if err != nil {
		t.Fatal(err)
	}
	enc, err := tpmEv.Encode()
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		b   []byte
		msg string
	}{
		"not JSON":      {enc[:len(enc)/2], "unexpected EOF"},
		"trailing data": {append(bytes.Clone(enc), []byte(` {}`)...), "trailing data"},
	} {
		if _, err := attest.DecodeEvidence(tc.b); !errors.Is(err, attest.ErrMalformedEvidence) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: got %v, want %q", name, err, tc.msg)
		}
	}
	if _, err := attest.Verify(nil, ch, m.Policy); !errors.Is(err, attest.ErrMalformedEvidence) {
		t.Errorf("nil evidence: got %v", err)
	}

	tdx := attesttest.NewTDXMachine(t, "testdata/tdx")
	tdxEv, err := tdx.Collector.Collect(ch)
	if err != nil {
		t.Fatal(err)
	}
	rsaSPKI, err := x509.MarshalPKIXPublicKey(&rsaKey(t, 1).PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	big := func(n int) []byte { return make([]byte, n) }
	for _, tc := range []struct {
		name string
		tdx  bool
		edit func(*attest.Evidence)
		want error
		msg  string
	}{
		{"lifecycle log over the limit", false, func(e *attest.Evidence) { e.CEL = big(attest.MaxCELSize + 1) }, attest.ErrTooLarge, "lifecycle log"},
		{"no environment key", false, func(e *attest.Evidence) { e.EnvKey = nil }, attest.ErrMalformedEvidence, "environment key missing"},
		{"environment key over 512 bytes", false, func(e *attest.Evidence) { e.EnvKey = big(513) }, attest.ErrMalformedEvidence, "over 512 bytes"},
		{"environment key not a key", false, func(e *attest.Evidence) { e.EnvKey = []byte("junk") }, attest.ErrMalformedEvidence, "environment key:"},
		{"environment key RSA", false, func(e *attest.Evidence) { e.EnvKey = rsaSPKI }, attest.ErrMalformedEvidence, "want ECDSA P-256"},
		{"HPKE key not X25519", false, func(e *attest.Evidence) { e.HPKEPublicKey = big(31) }, attest.ErrMalformedEvidence, "HPKE public key"},
		{"tpm part without certification", false, func(e *attest.Evidence) { e.TPM.CertifyInfo = nil }, attest.ErrMalformedEvidence, "lacks attestation"},
		{"tpm part without attestation", false, func(e *attest.Evidence) { e.TPM.Attestation = nil }, attest.ErrMalformedEvidence, "lacks attestation"},
		{"TPM attestation over the limit", false, func(e *attest.Evidence) {
			e.TPM.Attestation = big(attest.MaxAttestationSize + attest.MaxEventLogSize + 1)
		}, attest.ErrTooLarge, "TPM attestation"},
		{"certification over 1 KiB", false, func(e *attest.Evidence) { e.TPM.CertifySignature = big(1025) }, attest.ErrTooLarge, "over 1 KiB"},
		{"kind tpm with a tdx part", false, func(e *attest.Evidence) { e.TDX = &attest.TDXEvidence{Quote: []byte{1}} }, attest.ErrMalformedEvidence, "exactly the tpm part"},
		{"kind tdx with a tpm part", true, func(e *attest.Evidence) { e.TPM = &attest.TPMEvidence{} }, attest.ErrMalformedEvidence, "exactly the tdx part"},
		{"tdx part without a quote", true, func(e *attest.Evidence) { e.TDX.Quote = nil }, attest.ErrMalformedEvidence, "no quote"},
		{"TDX quote over the limit", true, func(e *attest.Evidence) { e.TDX.Quote = big(attest.MaxQuoteSize + 1) }, attest.ErrTooLarge, "TDX quote is"},
		{"CCEL over the limit", true, func(e *attest.Evidence) { e.TDX.CCEL = big(attest.MaxEventLogSize + 1) }, attest.ErrTooLarge, "CCEL"},
		{"CCEL table over 4 KiB", true, func(e *attest.Evidence) { e.TDX.CCELTable = big(4097) }, attest.ErrTooLarge, "CCEL"},
		{"collateral over the limit", true, func(e *attest.Evidence) {
			e.TDX.Collateral = &attest.TDXCollateral{TCBInfo: attest.PCSResponse{Body: big(attest.MaxPCSResponseSize + 1)}}
		}, attest.ErrTooLarge, "collateral"},
		{"unknown kind", false, func(e *attest.Evidence) { e.Kind = "sgx" }, attest.ErrMalformedEvidence, "unknown kind"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base, p := tpmEv, m.Policy
			if tc.tdx {
				base, p = tdxEv, tdx.Policy
			}
			b, err := base.Encode()
			if err != nil {
				t.Fatal(err)
			}
			ev, err := attest.DecodeEvidence(b) // a deep copy
			if err != nil {
				t.Fatal(err)
			}
			tc.edit(ev)
			if _, err := attest.Verify(ev, ch, p); !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("got %v, want %v (%q)", err, tc.want, tc.msg)
			}
		})
	}
}
