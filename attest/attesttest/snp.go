package attesttest

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"github.com/google/go-sev-guest/abi"
	spb "github.com/google/go-sev-guest/proto/sevsnp"
	sevtest "github.com/google/go-sev-guest/testing"
	sevtd "github.com/google/go-sev-guest/verify/testdata"
	"github.com/google/go-sev-guest/verify/trust"
)

// SNP guest-policy bits (AMD SEV-SNP ABI, "Guest policy structure").
const (
	SNPPolicySMT      = 1 << 16
	SNPPolicyReserved = 1 << 17 // must be one
	SNPPolicyMA       = 1 << 18
	SNPPolicyDebug    = 1 << 19
)

// SNPHost is a stand-in for an AMD secure processor: a go-sev-guest
// QuoteProvider that answers each report request with go-sev-guest's real
// Milan report (verify/testdata) edited to carry the requested REPORT_DATA,
// Measurement and GuestPolicy, re-signed under go-sev-guest's test-only
// AMD chain (ARK -> ASK -> VCEK), and followed by that chain's certificate
// table, as a host supplies it. Roots is the chain to trust in its place.
// It is not hardware: it shows the report travelling through our
// collection and verification, not that a real secure processor signs it.
type SNPHost struct {
	Signer      *sevtest.AmdSigner
	Roots       map[string][]*trust.AMDRootCerts
	Measurement []byte
	GuestPolicy uint64
	// Edit, if set, changes the raw report before it is signed; Tamper
	// after (which breaks the signature).
	Edit, Tamper func(raw []byte)
	// NoCertificates answers with the report alone, as a host that
	// supplies no VCEK does.
	NoCertificates bool
	// Err, if set, is returned instead of a report; Answer, if set, is
	// returned as the raw answer (a host answering garbage).
	Err    error
	Answer []byte
	// KDS is AMD's KDS as the guest reaches it (nil: unreachable), given
	// to the collector as TPMOptions.SNPKDS; FakeKDS serves Signer's VCEK.
	KDS trust.HTTPSGetter
}

// FakeKDS is go-sev-guest's fake AMD KDS serving h.Signer's certificates
// at the KDS URLs.
func (h *SNPHost) FakeKDS() (trust.HTTPSGetter, error) {
	return sevtest.FakeKDSFromSigner(h.Signer)
}

// SNPChainTime is when SNPHost's test-only chain was made: its
// certificates are valid from then.
var SNPChainTime = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// NewSNPHost returns a host whose guests are launched with measurement
// 0xa5... and a policy without debug, migration agent or SMT.
func NewSNPHost(t testing.TB) *SNPHost {
	t.Helper()
	signer, err := sevtest.DefaultTestOnlyCertChain("Milan-B0", SNPChainTime)
	if err != nil {
		t.Fatal(err)
	}
	return &SNPHost{
		Signer:      signer,
		Roots:       map[string][]*trust.AMDRootCerts{"Milan": {{Product: "Milan", ProductCerts: &trust.ProductCerts{Ark: signer.Ark, Ask: signer.Ask}}}},
		Measurement: bytes.Repeat([]byte{0xa5}, abi.MeasurementSize),
		GuestPolicy: SNPPolicyReserved,
	}
}

// Report is a signed report with reportData, without certificates.
func (h *SNPHost) Report(reportData [64]byte) ([]byte, error) {
	raw := bytes.Clone(sevtd.AttestationBytes[:abi.ReportSize])
	binary.LittleEndian.PutUint64(raw[0x08:0x10], h.GuestPolicy)
	copy(raw[0x50:0x90], reportData[:])
	copy(raw[0x90:0xC0], h.Measurement)
	clear(raw[0x180:0x188]) // REPORTED_TCB: the test VCEK certifies TCB 0
	clear(raw[0x1A0:0x1E0]) // CHIP_ID: and hardware id 0
	if h.Edit != nil {
		h.Edit(raw)
	}
	r, s, err := h.Signer.Sign(abi.SignedComponent(raw))
	if err != nil {
		return nil, err
	}
	if err := abi.SetSignature(r, s, raw); err != nil {
		return nil, err
	}
	if h.Tamper != nil {
		h.Tamper(raw)
	}
	return raw, nil
}

// IsSupported implements client.QuoteProvider.
func (h *SNPHost) IsSupported() bool { return true }

// Product implements client.QuoteProvider.
func (h *SNPHost) Product() *spb.SevProduct {
	return &spb.SevProduct{Name: spb.SevProduct_SEV_PRODUCT_MILAN}
}

// GetRawQuote implements client.QuoteProvider: the report and, unless
// NoCertificates, the certificate table.
func (h *SNPHost) GetRawQuote(reportData [64]byte) ([]uint8, error) {
	if h.Err != nil || h.Answer != nil {
		return h.Answer, h.Err
	}
	raw, err := h.Report(reportData)
	if err != nil {
		return nil, err
	}
	if h.NoCertificates {
		return raw, nil
	}
	table, err := h.Signer.CertTableBytes()
	if err != nil {
		return nil, errors.Join(errors.New("test SEV-SNP certificate table"), err)
	}
	return append(raw, table...), nil
}
