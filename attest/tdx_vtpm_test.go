package attest_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/attested-runner/attested-runner/attest/attesttest"
	tdxpb "github.com/google/go-tdx-guest/proto/tdx"
)

// TestTDXVTPMLevel3: TPM evidence carrying a TDX quote whose REPORTDATA
// binds the challenge, both keys and the quote's AK, from a TD whose MRTD
// the image lists, on a platform Intel's collateral rates UpToDate, is
// level 3 from hardware "tdx" (BuildEnv L3.hw-quote): a vTPM in a TDX
// confidential VM, Compute Engine's shape. Each way the quote can fail
// refuses the evidence with its own error; without collateral, or without
// a quote, the TPM's level 2 stands; labelled software, 0. The quotes are
// go-tdx-guest's real COS quote re-signed under a test chain (no TDX
// hardware, and no real vTPM-with-TDX attestation ships upstream).
func TestTDXVTPMLevel3(t *testing.T) {
	f := readTDXFiles(t)
	signer, err := attesttest.NewTDXSigner(f.quote)
	if err != nil {
		t.Fatal(err)
	}
	other, err := attesttest.NewTDXSigner(f.quote)
	if err != nil {
		t.Fatal(err)
	}
	ch := attest.AdmissionChallenge(bytes.Repeat([]byte{5}, 32))
	otherAK, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	otherAKSPKI, _ := x509.MarshalPKIXPublicKey(otherAK.Public())
	withCollateral := func(o attesttest.CollateralOptions) func(*attest.Policy) {
		return func(p *attest.Policy) { p.TDXCollateral = collateral(t, signer, o) }
	}
	for _, tc := range []struct {
		name     string
		signer   *attesttest.TDXSigner
		report   func(*tdxpb.TDQuoteBody)
		policy   func(*attest.Policy)
		evidence func(*attest.Evidence)
		want     error
		msg      string
		// wantLevel when it verifies, with wantHW.
		wantLevel int
		wantHW    string
	}{
		{name: "quote binds this attestation", wantLevel: 3, wantHW: attest.HardwareTDX},
		{name: "collateral embedded in the evidence", policy: func(p *attest.Policy) { p.TDXCollateral = nil },
			evidence: func(e *attest.Evidence) { e.TPM.TDX.Collateral = collateral(t, signer, attesttest.CollateralOptions{}) }, wantLevel: 3, wantHW: attest.HardwareTDX},
		{name: "no collateral: level 2", policy: func(p *attest.Policy) { p.TDXCollateral = nil }, wantLevel: 2, wantHW: attest.HardwareTPM},
		{name: "no quote: level 2", evidence: func(e *attest.Evidence) { e.TPM.TDX = nil }, wantLevel: 2, wantHW: attest.HardwareTPM},
		{name: "AK not the one the quote binds", evidence: func(e *attest.Evidence) {
			rd := ch.TDXVTPMReportData(e.EnvKey, e.HPKEPublicKey, otherAKSPKI)
			q, err := signer.Sign(func(b *tdxpb.TDQuoteBody) { b.ReportData = rd[:] })
			if err != nil {
				t.Fatal(err)
			}
			e.TPM.TDX.Quote = q
		}, want: attest.ErrNonceMismatch, msg: "REPORTDATA"},
		{name: "TDX-only REPORTDATA (no AK)", evidence: func(e *attest.Evidence) {
			rd := ch.TDXReportData(e.EnvKey, e.HPKEPublicKey)
			q, err := signer.Sign(func(b *tdxpb.TDQuoteBody) { b.ReportData = rd[:] })
			if err != nil {
				t.Fatal(err)
			}
			e.TPM.TDX.Quote = q
		}, want: attest.ErrNonceMismatch},
		{name: "debug TD", report: func(b *tdxpb.TDQuoteBody) { b.TdAttributes[0] |= 1 }, want: attest.ErrTDXDebug},
		{name: "quote under another chain", signer: other, want: attest.ErrTDXQuote},
		{name: "quote signature broken", evidence: func(e *attest.Evidence) { e.TPM.TDX.Quote[200] ^= 1 }, want: attest.ErrTDXQuote},
		{name: "MRTD not listed", policy: func(p *attest.Policy) { p.Reference.Images[0].TDXMRTDs = []attest.Hex{make([]byte, 48)} },
			want: attest.ErrReferenceMismatch, msg: "not among image"},
		{name: "image lists no MRTD", policy: func(p *attest.Policy) { p.Reference.Images[0].TDXMRTDs = nil },
			want: attest.ErrReferenceMismatch, msg: "lists no tdxMrtds"},
		{name: "TCB out of date", policy: withCollateral(attesttest.CollateralOptions{Status: "OutOfDate"}), want: attest.ErrTDXTCBStatus, msg: "OutOfDate"},
		{name: "stale collateral", policy: withCollateral(attesttest.CollateralOptions{
			Issued: time.Now().Add(-48 * time.Hour), NextUpdate: time.Now().Add(-time.Hour)}), want: attest.ErrTDXCollateralExpired, msg: "expired"},
		{name: "quote from another quoting enclave", signer: signer.WithQE(func(r *tdxpb.EnclaveReport) { r.MrSigner = make([]byte, 32) }),
			want: attest.ErrTDXQEIdentity, msg: "MRSIGNER"},
		{name: "not a TDX quote", evidence: func(e *attest.Evidence) { e.TPM.TDX.Quote = []byte("not a quote") }, want: attest.ErrMalformedEvidence, msg: "malformed evidence: TDX quote:"},
		{name: "labelled software TPM: refused", evidence: func(e *attest.Evidence) { e.SoftwareTPMUnsafe = true }, want: attest.ErrSoftwareTPM},
		{name: "labelled software TPM, allowed: level 0", evidence: func(e *attest.Evidence) { e.SoftwareTPMUnsafe = true },
			policy: func(p *attest.Policy) { p.AllowSoftwareTPMUnsafe = true }, wantLevel: 0, wantHW: attest.HardwareTDX},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := signer
			if tc.signer != nil {
				s = tc.signer
			}
			c, p := attesttest.SimulatedTDXVTPM(t, s, tc.report)
			p.TDXCollateral = collateral(t, signer, attesttest.CollateralOptions{})
			p.TrustedTDXRoots = signer.Roots
			if err := attesttest.BootAgent(c); err != nil {
				t.Fatal(err)
			}
			if tc.policy != nil {
				tc.policy(p)
			}
			claims, err := verifyCollected(t, c, ch, p, tc.evidence)
			if refusedAs(t, err, tc.want, tc.msg) {
				return
			}
			if claims.Level != tc.wantLevel || claims.Hardware != tc.wantHW {
				t.Errorf("level %d from %q, want %d from %q", claims.Level, claims.Hardware, tc.wantLevel, tc.wantHW)
			}
			if tc.wantLevel == 3 && (claims.TDXTCB == nil || claims.TDXCollateral == nil || claims.TDXQE == nil || !bytes.Equal(claims.MRTD, signer.Template().GetMrTd()) || claims.RTMRs != nil) {
				t.Errorf("level 3 claims: TCB %v, collateral %v, QE %v, MRTD %x, RTMRs %x", claims.TDXTCB, claims.TDXCollateral != nil, claims.TDXQE, claims.MRTD, claims.RTMRs)
			}
		})
	}
}

// TestTDXVTPMDecode: a TDX part that is empty, oversized, or next to
// another TEE report is refused on decoding.
func TestTDXVTPMDecode(t *testing.T) {
	f := readTDXFiles(t)
	signer, err := attesttest.NewTDXSigner(f.quote)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := attesttest.SimulatedTDXVTPM(t, signer, nil)
	if err := attesttest.BootAgent(c); err != nil {
		t.Fatal(err)
	}
	ev, err := c.Collect(attest.AdmissionChallenge(bytes.Repeat([]byte{5}, 32)))
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		edit func(*attest.TPMEvidence)
		want error
	}{
		"no quote": {func(e *attest.TPMEvidence) { e.TDX = &attest.TDXVTPMEvidence{} }, attest.ErrMalformedEvidence},
		"quote oversized": {func(e *attest.TPMEvidence) {
			e.TDX = &attest.TDXVTPMEvidence{Quote: make([]byte, attest.MaxQuoteSize+1)}
		}, attest.ErrTooLarge},
		"SEV-SNP part too":   {func(e *attest.TPMEvidence) { e.SNP = &attest.SNPEvidence{Report: make([]byte, 1184), VCEK: []byte{1}} }, attest.ErrMalformedEvidence},
		"Azure HCL part too": {func(e *attest.TPMEvidence) { e.AzureHCL = &attest.AzureHCLEvidence{Report: []byte{1}, VCEK: []byte{1}} }, attest.ErrMalformedEvidence},
		"collateral oversized": {func(e *attest.TPMEvidence) {
			e.TDX = &attest.TDXVTPMEvidence{Quote: e.TDX.Quote, Collateral: &attest.TDXCollateral{PCKCRL: attest.PCSResponse{Body: make([]byte, attest.MaxPCSResponseSize+1)}}}
		}, attest.ErrTooLarge},
	} {
		t.Run(name, func(t *testing.T) {
			if err := decodeEdited(t, ev, tc.edit); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

// TestTDXVTPMCollection: a collector given two TEE report sources refuses
// to start; a TD that fails to quote fails collection, saying so.
func TestTDXVTPMCollection(t *testing.T) {
	t.Run("TDX and SEV-SNP", func(t *testing.T) {
		_, err := attest.NewTPMCollector(attesttest.Simulator(t), attest.TPMOptions{TDX: func([64]byte) ([]byte, error) { return nil, nil }, SNP: attesttest.NewSNPHost(t)})
		if err == nil || !strings.Contains(err.Error(), "give at most one") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("quote fails", func(t *testing.T) {
		c, err := attest.NewTPMCollector(attesttest.Simulator(t), attest.TPMOptions{
			EventLog: func() ([]byte, error) { return attesttest.BootLog(), nil },
			TDX:      func([64]byte) ([]byte, error) { return nil, errors.New("no quote today") },
		})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := attesttest.BootAgent(c); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Collect(attest.AdmissionChallenge(bytes.Repeat([]byte{5}, 32))); err == nil || !strings.Contains(err.Error(), "TDX quote: no quote today") {
			t.Fatalf("got %v", err)
		}
	})
}
