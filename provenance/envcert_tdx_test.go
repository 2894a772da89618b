package provenance_test

import (
	"context"
	"crypto"
	"reflect"
	"testing"
	"time"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/attested-runner/attested-runner/provenance"
	"github.com/attested-runner/attested-runner/provenance/provenancetest"
	"github.com/google/go-cmp/cmp"
	tdxtesting "github.com/google/go-tdx-guest/testing"
	tdxtd "github.com/google/go-tdx-guest/testing/testdata"
)

// TestEnvCertTDXRoundTrip: a TDX level-3 certificate carries the hardware
// path, the TCB verdict and the Intel collateral it was judged with
// through signing and verification unchanged, so a consumer re-judges the
// TCB with exactly those bytes.
func TestEnvCertTDXRoundTrip(t *testing.T) {
	e := provenancetest.NewEnv(t)
	h := func(m map[string][]string) string {
		for _, v := range m {
			return v[0]
		}
		return ""
	}
	c := *e.Cert
	c.Kind, c.Hardware, c.Level, c.SoftwareTPM = attest.KindTDX, attest.HardwareTDX, 3, false
	c.TDXCollateral = &attest.TDXCollateral{
		TCBInfo:    attest.PCSResponse{IssuerChain: h(tdxtesting.TcbInfoHeader), Body: tdxtd.TcbInfoBody},
		QEIdentity: attest.PCSResponse{IssuerChain: h(tdxtesting.QeIdentityHeader), Body: tdxtd.QeIdentityBody},
		PCKCRL:     attest.PCSResponse{IssuerChain: h(tdxtesting.PckCrlHeader), Body: tdxtd.PckCrlBody},
		RootCACRL:  attest.PCSResponse{Body: tdxtd.RootCrlBody},
	}
	at := time.Date(2023, time.July, 1, 0, 0, 0, 0, time.UTC)
	c.TDXTCB = &attest.TDXTCB{FMSPC: "50806f000000", Status: "UpToDate", TCBDate: "2023-02-15T00:00:00Z", QEStatus: "UpToDate", EvaluatedAt: at,
		Items: []attest.CollateralItem{{Name: "tcbInfo", Issued: at.Add(-time.Hour), NextUpdate: at.Add(time.Hour)}}}
	raw, err := provenance.IssueEnvCert(context.Background(), e.GateKey, &c)
	if err != nil {
		t.Fatal(err)
	}
	got, err := provenance.VerifyEnvCert(raw, []crypto.PublicKey{e.GateKey.Public()})
	if err != nil {
		t.Fatal(err)
	}
	if got.Hardware != attest.HardwareTDX || got.Level != 3 {
		t.Errorf("level %d from %q", got.Level, got.Hardware)
	}
	if !reflect.DeepEqual(got.TDXCollateral, c.TDXCollateral) {
		t.Error("collateral changed in the certificate")
	}
	if d := cmp.Diff(c.TDXTCB, got.TDXTCB); d != "" {
		t.Errorf("TCB verdict changed (-want +got):\n%s", d)
	}
}
