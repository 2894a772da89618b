package attesttest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha512"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/google/go-tdx-guest/pcs"
	tdxpb "github.com/google/go-tdx-guest/proto/tdx"
	"github.com/google/go-tdx-guest/verify"
)

// CollateralOptions shape the collateral TDXSigner.Collateral signs.
type CollateralOptions struct {
	// Status is the TCB status Intel would give the platform (default
	// UpToDate), QEStatus the quoting enclave's (default UpToDate).
	Status, QEStatus string
	// Issued and NextUpdate date every item (default: a day ago, a day
	// from now).
	Issued, NextUpdate time.Time
	// QEMRSigner replaces the QE identity's MRSIGNER (default: the
	// template quote's, Intel's).
	QEMRSigner []byte
	// Revoke puts the PCK certificate on the PCK CRL.
	Revoke bool
}

// Collateral returns Intel-format TDX collateral for the signer's platform
// (the template PCK's FMSPC, PCEID, CPUSVN and PCESVN, the template's TEE
// TCB SVN and TDX module), signed under the signer's test root by a "TCB
// Signing" certificate, as Intel's PCS would serve it.
func (s *TDXSigner) Collateral(o CollateralOptions) (*attest.TDXCollateral, error) {
	if o.Status == "" {
		o.Status = string(pcs.TcbComponentStatusUpToDate)
	}
	if o.QEStatus == "" {
		o.QEStatus = string(pcs.TcbComponentStatusUpToDate)
	}
	now := time.Now()
	if o.Issued.IsZero() {
		o.Issued = now.Add(-24 * time.Hour)
	}
	if o.NextUpdate.IsZero() {
		o.NextUpdate = now.Add(24 * time.Hour)
	}
	chain, err := verify.ExtractChainFromQuote(s.template)
	if err != nil {
		return nil, err
	}
	exts, err := pcs.PckCertificateExtensions(chain.PCKCertificate)
	if err != nil {
		return nil, err
	}
	signKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(now.UnixNano()), Subject: pkix.Name{CommonName: "Intel SGX TCB Signing"},
		NotBefore: s.root.NotBefore, NotAfter: s.root.NotAfter, KeyUsage: x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, s.root, &signKey.PublicKey, s.rootKey)
	if err != nil {
		return nil, err
	}
	signer, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	tcbChain := url.QueryEscape(string(chainPEM(signer, s.root)))
	rfc := func(t time.Time) string { return t.UTC().Format(time.RFC3339) }
	body := s.template.GetTdQuoteBody()
	svn := body.GetTeeTcbSvn()
	comps := func(svns []byte) []map[string]any {
		out := make([]map[string]any, len(svns))
		for i, v := range svns {
			out[i] = map[string]any{"svn": v}
		}
		return out
	}
	level := map[string]any{
		"tcb": map[string]any{
			"sgxtcbcomponents": comps(exts.TCB.CPUSvnComponents),
			"pcesvn":           exts.TCB.PCESvn,
			"tdxtcbcomponents": comps(svn),
		},
		"tcbDate": rfc(o.Issued), "tcbStatus": o.Status,
	}
	if o.Status == string(pcs.TcbComponentStatusOutOfDate) {
		level["advisoryIDs"] = []string{"INTEL-SA-TEST"}
	}
	seamAttrs := hex.EncodeToString(body.GetSeamAttributes())
	mask := hex.EncodeToString(bytesOf(0xff, len(body.GetSeamAttributes())))
	tcbInfo := map[string]any{
		"id": "TDX", "version": 3, "issueDate": rfc(o.Issued), "nextUpdate": rfc(o.NextUpdate),
		"fmspc": exts.FMSPC, "pceId": exts.PCEID, "tcbType": 0, "tcbEvaluationDataNumber": 17,
		"tdxModule": map[string]any{"mrsigner": hex.EncodeToString(body.GetMrSignerSeam()), "attributes": seamAttrs, "attributesMask": mask},
		"tdxModuleIdentities": []map[string]any{{
			"id": fmt.Sprintf("TDX_%02x", svn[1]), "mrsigner": hex.EncodeToString(body.GetMrSignerSeam()),
			"attributes": seamAttrs, "attributesMask": mask,
			"tcbLevels": []map[string]any{{"tcb": map[string]any{"isvsvn": svn[0]}, "tcbDate": rfc(o.Issued), "tcbStatus": o.Status}},
		}},
		"tcbLevels": []map[string]any{level},
	}
	qe := s.template.GetSignedData().GetCertificationData().GetQeReportCertificationData().GetQeReport()
	mrsigner := qe.GetMrSigner()
	if o.QEMRSigner != nil {
		mrsigner = o.QEMRSigner
	}
	misc := make([]byte, 4)
	misc[0], misc[1], misc[2], misc[3] = byte(qe.GetMiscSelect()), byte(qe.GetMiscSelect()>>8), byte(qe.GetMiscSelect()>>16), byte(qe.GetMiscSelect()>>24)
	qeIdentity := map[string]any{
		"id": "TD_QE", "version": 2, "issueDate": rfc(o.Issued), "nextUpdate": rfc(o.NextUpdate), "tcbEvaluationDataNumber": 17,
		"miscselect": hex.EncodeToString(misc), "miscselectMask": "ffffffff",
		"attributes": hex.EncodeToString(qe.GetAttributes()), "attributesMask": hex.EncodeToString(bytesOf(0xff, len(qe.GetAttributes()))),
		"mrsigner": hex.EncodeToString(mrsigner), "isvprodid": qe.GetIsvProdId(),
		"tcbLevels": []map[string]any{{"tcb": map[string]any{"isvsvn": qe.GetIsvSvn()}, "tcbDate": rfc(o.Issued), "tcbStatus": o.QEStatus}},
	}
	signed := func(name string, v any) ([]byte, error) {
		raw, err := json.Marshal(v)
		if err != nil {
			return nil, err
		}
		sig, err := rawSign(signKey, raw)
		if err != nil {
			return nil, err
		}
		return json.Marshal(map[string]any{name: json.RawMessage(raw), "signature": hex.EncodeToString(sig)})
	}
	tcbBody, err := signed("tcbInfo", tcbInfo)
	if err != nil {
		return nil, err
	}
	qeBody, err := signed("enclaveIdentity", qeIdentity)
	if err != nil {
		return nil, err
	}
	crl := func(issuer *x509.Certificate, key *ecdsa.PrivateKey, revoked *x509.Certificate) ([]byte, error) {
		rl := &x509.RevocationList{Number: big.NewInt(1), ThisUpdate: o.Issued, NextUpdate: o.NextUpdate}
		if revoked != nil {
			rl.RevokedCertificateEntries = []x509.RevocationListEntry{{SerialNumber: revoked.SerialNumber, RevocationTime: o.Issued}}
		}
		return x509.CreateRevocationList(rand.Reader, rl, issuer, key)
	}
	var revoked *x509.Certificate
	if o.Revoke {
		revoked = s.PCK
	}
	pckCRL, err := crl(s.inter, s.interKey, revoked)
	if err != nil {
		return nil, err
	}
	rootCRL, err := crl(s.root, s.rootKey, nil)
	if err != nil {
		return nil, err
	}
	return &attest.TDXCollateral{
		TCBInfo:    attest.PCSResponse{IssuerChain: tcbChain, Body: tcbBody},
		QEIdentity: attest.PCSResponse{IssuerChain: tcbChain, Body: qeBody},
		PCKCRL:     attest.PCSResponse{IssuerChain: url.QueryEscape(string(chainPEM(s.inter, s.root))), Body: pckCRL},
		RootCACRL:  attest.PCSResponse{Body: rootCRL},
	}, nil
}

func bytesOf(b byte, n int) []byte {
	out := make([]byte, n)
	for i := range out {
		out[i] = b
	}
	return out
}

// TDXMachine is a simulated TD for tests outside attest: the real COS 113
// boot (quote template, CCEL) read from dir (attest/testdata/tdx), an
// agent's collector booted to env-key whose RTMR 3 extends are computed
// here, quotes signed by a TDXSigner, and a policy that admits it at level
// 3: the image's MRTD and RTMR 0-2, AgentDigest, the signer's test root and
// its UpToDate collateral.
type TDXMachine struct {
	Signer    *TDXSigner
	Collector *attest.TDXCollector
	Policy    *attest.Policy
}

// NewTDXMachine builds a TDXMachine from the files in dir.
func NewTDXMachine(t testing.TB, dir string) *TDXMachine {
	t.Helper()
	m := NewUnbootedTDXMachine(t, dir)
	if err := BootAgent(m.Collector); err != nil {
		t.Fatal(err)
	}
	return m
}

// NewUnbootedTDXMachine is NewTDXMachine with a collector that has done
// nothing yet: the agent boots it.
func NewUnbootedTDXMachine(t testing.TB, dir string) *TDXMachine {
	t.Helper()
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	quote, table, ccel := read("cos-113-tdx-quote.dat"), read("ccel_table.dat"), read("ccel_data.dat")
	s, err := NewTDXSigner(quote)
	if err != nil {
		t.Fatal(err)
	}
	rtmr3 := make([]byte, sha512.Size384)
	c, err := attest.NewTDXCollector(attest.TDXOptions{
		Quote: func(rd [64]byte) ([]byte, error) {
			return s.Sign(func(b *tdxpb.TDQuoteBody) { b.ReportData, b.Rtmrs[3] = rd[:], append([]byte(nil), rtmr3...) })
		},
		ExtendRTMR: func(i int, d []byte) error {
			if i != attest.LifecycleRTMR {
				return fmt.Errorf("extend of RTMR %d", i)
			}
			h := sha512.Sum384(append(rtmr3, d...))
			rtmr3 = h[:]
			return nil
		},
		ReadCCEL: func() ([]byte, []byte, error) { return table, ccel, nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	coll, err := s.Collateral(CollateralOptions{})
	if err != nil {
		t.Fatal(err)
	}
	body := s.Template()
	return &TDXMachine{Signer: s, Collector: c, Policy: &attest.Policy{
		Reference: &attest.ReferenceValues{
			Format:       attest.ReferenceValuesFormat,
			Images:       []attest.Image{{ID: "cos-113", MRTD: body.GetMrTd(), RTMRs: []attest.Hex{body.GetRtmrs()[0], body.GetRtmrs()[1], body.GetRtmrs()[2]}}},
			AgentDigests: []attest.Hex{AgentDigest[:]},
		},
		TrustedTDXRoots: s.Roots,
		TDXCollateral:   coll,
	}}
}
