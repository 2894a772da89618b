package attest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/google/go-tdx-guest/pcs"
	tdxpb "github.com/google/go-tdx-guest/proto/tdx"
	"github.com/google/go-tdx-guest/verify"
)

// TDX TCB evaluation errors. They are declared here, not in errors.go, to
// keep this feature in its own files; they are sentinels like the others.
var (
	// ErrTDXCollateral: Intel collateral (TCB info, QE identity, CRLs) is
	// missing, malformed, not signed under the trusted root, revokes the
	// PCK chain, or does not describe this platform.
	ErrTDXCollateral = errors.New("TDX collateral missing or invalid")
	// ErrTDXCollateralExpired: an item of the collateral is past its
	// nextUpdate (or its signing certificate expired) at Policy.Time: stale
	// collateral fails closed. The message names each expired item.
	ErrTDXCollateralExpired = errors.New("TDX collateral expired")
	// ErrTDXTCBStatus: Intel's TCB info gives this platform (or its quoting
	// enclave) a TCB status other than UpToDate, or no level at all (older
	// than every level Intel lists).
	ErrTDXTCBStatus = errors.New("TDX TCB is not up to date")
	// ErrTDXQEIdentity: the quote was signed by a quoting enclave that is
	// not Intel's TD quoting enclave (MRSIGNER, ISVPRODID), or one below
	// the policy's minimum ISVSVN.
	ErrTDXQEIdentity = errors.New("TDX quoting enclave identity mismatch")
)

// MaxPCSResponseSize bounds one Intel PCS response body or issuer chain
// (real ones are 1-10 KiB).
const MaxPCSResponseSize = 64 << 10

// Intel's TD quoting enclave: MRSIGNER and ISVPRODID as published in
// Intel's TD_QE identity (and seen in every real quote in go-tdx-guest's
// test data). A quote whose QE report names another signer was not made by
// Intel's quoting enclave, whatever certificate chain it carries.
var (
	intelTDQEMRSigner = mustHex("dc9e2a7c6f948f17474e34a7fc43ed030f7c1563f1babddf6340c82e0e54a8c5")
	intelTDQEProdID   = uint32(2)
)

// PCSResponse is one Intel PCS response as served: the issuer chain header
// (URL-escaped PEM: signing certificate, then root) and the body. Kept
// unmodified, so anyone can re-check Intel's signature on it.
type PCSResponse struct {
	IssuerChain string `json:"issuerChain,omitempty"`
	Body        []byte `json:"body"`
}

// TDXCollateral is the Intel collateral a TDX quote is judged with: TCB
// info for the platform's FMSPC, the TD quoting enclave identity, and the
// PCK and root CA CRLs. It is self-authenticating (Intel signs every part
// under the SGX root CA), so it can travel in evidence or an environment
// certificate and be re-checked offline at a given time.
type TDXCollateral struct {
	TCBInfo    PCSResponse `json:"tcbInfo"`
	QEIdentity PCSResponse `json:"qeIdentity"`
	PCKCRL     PCSResponse `json:"pckCrl"`
	RootCACRL  PCSResponse `json:"rootCaCrl"`
}

// TDXCollateralSource gives the collateral for a platform: fmspc is the
// PCK certificate's FMSPC (hex), ca its issuing CA ("platform" or
// "processor"). A *TDXCollateral is a source that always returns itself;
// PCS fetches from Intel with a cache.
type TDXCollateralSource interface {
	TDXCollateral(ctx context.Context, fmspc, ca string) (*TDXCollateral, error)
}

// TDXCollateral implements TDXCollateralSource: c itself, whatever the
// platform (a collateral for another FMSPC fails verification).
func (c *TDXCollateral) TDXCollateral(context.Context, string, string) (*TDXCollateral, error) {
	return c, nil
}

// TDXTCB is what TCB evaluation established: Intel's verdict on the
// platform and its quoting enclave, and the dates of the collateral used.
type TDXTCB struct {
	FMSPC       string    `json:"fmspc"`
	Status      string    `json:"status"`
	TCBDate     string    `json:"tcbDate,omitempty"`
	AdvisoryIDs []string  `json:"advisoryIds,omitempty"`
	QEStatus    string    `json:"qeStatus"`
	QETCBDate   string    `json:"qeTcbDate,omitempty"`
	EvaluatedAt time.Time `json:"evaluatedAt"`
	// Collateral dates: issued and next update of each item.
	Items []CollateralItem `json:"items"`
}

// CollateralItem is one dated item of the collateral.
type CollateralItem struct {
	Name       string    `json:"name"`
	Issued     time.Time `json:"issued"`
	NextUpdate time.Time `json:"nextUpdate"`
}

// TDXQEIdentity is the quoting enclave that signed a quote, from its
// (PCK-signed) QE report.
type TDXQEIdentity struct {
	MRSigner  Hex    `json:"mrsigner"`
	ISVProdID uint32 `json:"isvProdId"`
	ISVSVN    uint32 `json:"isvSvn"`
}

// parsedCollateral is TDXCollateral decoded, nothing verified yet.
type parsedCollateral struct {
	tcb       pcs.TdxTcbInfo
	qe        pcs.QeIdentity
	pckCRL    *x509.RevocationList
	rootCRL   *x509.RevocationList
	issuers   map[string][2]*x509.Certificate // signing, root
	raw       *TDXCollateral
	itemDates []CollateralItem
}

func (c *TDXCollateral) checkSize() error {
	for _, r := range []PCSResponse{c.TCBInfo, c.QEIdentity, c.PCKCRL, c.RootCACRL} {
		if len(r.Body) > MaxPCSResponseSize || len(r.IssuerChain) > MaxPCSResponseSize {
			return fmt.Errorf("%w: TDX collateral item over %d bytes", ErrTooLarge, MaxPCSResponseSize)
		}
	}
	return nil
}

// parse decodes every part; an absent part is ErrTDXCollateral: nothing to
// check is never a pass.
func (c *TDXCollateral) parse() (*parsedCollateral, error) {
	if c == nil {
		return nil, fmt.Errorf("%w: none", ErrTDXCollateral)
	}
	if err := c.checkSize(); err != nil {
		return nil, err
	}
	p := &parsedCollateral{raw: c, issuers: map[string][2]*x509.Certificate{}}
	bad := func(item string, err error) error { return fmt.Errorf("%w: %s: %v", ErrTDXCollateral, item, err) }
	for _, it := range []struct {
		name  string
		chain string
	}{{"tcbInfo", c.TCBInfo.IssuerChain}, {"qeIdentity", c.QEIdentity.IssuerChain}, {"pckCrl", c.PCKCRL.IssuerChain}} {
		certs, err := parseIssuerChain(it.chain)
		if err != nil {
			return nil, bad(it.name+" issuer chain", err)
		}
		p.issuers[it.name] = certs
	}
	if err := decodeJSON(c.TCBInfo.Body, &p.tcb); err != nil || p.tcb.TcbInfo.ID == "" {
		return nil, bad("tcbInfo", orMissing(err))
	}
	if err := decodeJSON(c.QEIdentity.Body, &p.qe); err != nil || p.qe.EnclaveIdentity.ID == "" {
		return nil, bad("qeIdentity", orMissing(err))
	}
	var err error
	if p.pckCRL, err = x509.ParseRevocationList(c.PCKCRL.Body); err != nil {
		return nil, bad("pckCrl", err)
	}
	if p.rootCRL, err = x509.ParseRevocationList(c.RootCACRL.Body); err != nil {
		return nil, bad("rootCaCrl", err)
	}
	tcb, qe := p.tcb.TcbInfo, p.qe.EnclaveIdentity
	p.itemDates = []CollateralItem{
		{"tcbInfo", tcb.IssueDate, tcb.NextUpdate},
		{"qeIdentity", qe.IssueDate, qe.NextUpdate},
		{"pckCrl", p.pckCRL.ThisUpdate, p.pckCRL.NextUpdate},
		{"rootCaCrl", p.rootCRL.ThisUpdate, p.rootCRL.NextUpdate},
	}
	for _, name := range []string{"tcbInfo", "qeIdentity", "pckCrl"} {
		for i, what := range []string{"signing certificate", "root certificate"} {
			cert := p.issuers[name][i]
			p.itemDates = append(p.itemDates, CollateralItem{name + " " + what, cert.NotBefore, cert.NotAfter})
		}
	}
	return p, nil
}

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

func orMissing(err error) error {
	if err == nil {
		return errors.New("missing")
	}
	return err
}

func decodeJSON(b []byte, v any) error {
	if len(b) == 0 {
		return errors.New("empty")
	}
	return json.Unmarshal(b, v)
}

// parseIssuerChain decodes a PCS issuer chain header: URL-escaped PEM of
// exactly two certificates (signing, root).
func parseIssuerChain(h string) ([2]*x509.Certificate, error) {
	var out [2]*x509.Certificate
	if h == "" {
		return out, errors.New("missing")
	}
	s, err := url.QueryUnescape(h)
	if err != nil {
		return out, err
	}
	rest := []byte(s)
	for i := range out {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil || block.Type != "CERTIFICATE" {
			return out, fmt.Errorf("certificate %d missing", i)
		}
		if out[i], err = x509.ParseCertificate(block.Bytes); err != nil {
			return out, err
		}
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return out, errors.New("more than two certificates")
	}
	return out, nil
}

// expired names every item of the collateral that is past its nextUpdate
// (or whose signing certificate expired) at t, or not yet issued.
func (p *parsedCollateral) expired(t time.Time) error {
	var stale []string
	for _, it := range p.itemDates {
		switch {
		case it.NextUpdate.IsZero():
			stale = append(stale, it.Name+" has no expiry")
		case t.After(it.NextUpdate):
			stale = append(stale, fmt.Sprintf("%s expired %s", it.Name, it.NextUpdate.UTC().Format(time.RFC3339)))
		case t.Before(it.Issued):
			stale = append(stale, fmt.Sprintf("%s not valid before %s", it.Name, it.Issued.UTC().Format(time.RFC3339)))
		}
	}
	if len(stale) > 0 {
		return fmt.Errorf("%w at %s: %s", ErrTDXCollateralExpired, t.UTC().Format(time.RFC3339), strings.Join(stale, "; "))
	}
	return nil
}

// getter serves the collateral to go-tdx-guest as the PCS would, by URL.
func (p *parsedCollateral) getter() collateralGetter { return collateralGetter{p.raw} }

type collateralGetter struct{ c *TDXCollateral }

func (g collateralGetter) Get(u string) (map[string][]string, []byte, error) {
	c := g.c
	switch {
	case strings.HasPrefix(u, pcs.TdxBaseURL+"/tcb?"):
		return map[string][]string{pcs.TcbInfoIssuerChainPhrase: {c.TCBInfo.IssuerChain}}, c.TCBInfo.Body, nil
	case u == pcs.QeIdentityURL():
		return map[string][]string{pcs.SgxQeIdentityIssuerChainPhrase: {c.QEIdentity.IssuerChain}}, c.QEIdentity.Body, nil
	case strings.HasPrefix(u, pcs.SgxBaseURL+"/pckcrl?"):
		return map[string][]string{pcs.SgxPckCrlIssuerChainPhrase: {c.PCKCRL.IssuerChain}}, c.PCKCRL.Body, nil
	case strings.HasSuffix(u, ".der"):
		// The root CA CRL, at the distribution point named in the QE
		// identity issuer's root certificate.
		return http.Header{}, c.RootCACRL.Body, nil
	}
	return nil, nil, fmt.Errorf("no collateral for %s", u)
}

// pckPlatform returns the FMSPC and issuing CA of a quote's PCK certificate.
func pckPlatform(quote *tdxpb.QuoteV4) (fmspc, ca string, qe TDXQEIdentity, err error) {
	chain, err := verify.ExtractChainFromQuote(quote)
	if err != nil {
		return "", "", qe, fmt.Errorf("%w: PCK chain: %v", ErrTDXQuote, err)
	}
	exts, err := pcs.PckCertificateExtensions(chain.PCKCertificate)
	if err != nil {
		return "", "", qe, fmt.Errorf("%w: PCK certificate extensions: %v", ErrTDXQuote, err)
	}
	switch chain.PCKCertificate.Issuer.CommonName {
	case "Intel SGX PCK Platform CA":
		ca = "platform"
	case "Intel SGX PCK Processor CA":
		ca = "processor"
	default:
		return "", "", qe, fmt.Errorf("%w: PCK issuer %q", ErrTDXQuote, chain.PCKCertificate.Issuer.CommonName)
	}
	r := quote.GetSignedData().GetCertificationData().GetQeReportCertificationData().GetQeReport()
	qe = TDXQEIdentity{MRSigner: r.GetMrSigner(), ISVProdID: r.GetIsvProdId(), ISVSVN: r.GetIsvSvn()}
	return exts.FMSPC, ca, qe, nil
}

// checkQEIdentity: the QE report (signed by the PCK key, checked by
// VerifyTDXQuote) names Intel's TD quoting enclave, at least minSVN.
func checkQEIdentity(qe TDXQEIdentity, minSVN uint32) error {
	if !bytes.Equal(qe.MRSigner, intelTDQEMRSigner) {
		return fmt.Errorf("%w: MRSIGNER %x is not Intel's TD quoting enclave", ErrTDXQEIdentity, []byte(qe.MRSigner))
	}
	if qe.ISVProdID != intelTDQEProdID {
		return fmt.Errorf("%w: ISVPRODID %d, want %d", ErrTDXQEIdentity, qe.ISVProdID, intelTDQEProdID)
	}
	if qe.ISVSVN < minSVN {
		return fmt.Errorf("%w: ISVSVN %d below the policy's minimum %d", ErrTDXQEIdentity, qe.ISVSVN, minSVN)
	}
	return nil
}

// EvaluateTDXTCB judges a quote whose signature and PCK chain were already
// verified (VerifyTDXQuote) against Intel collateral from src, as of t,
// under roots (nil: Intel's SGX root CA). In order:
//   - the collateral decodes, every part present (ErrTDXCollateral);
//   - no item is past its nextUpdate or before its issue date, no issuer
//     certificate expired (ErrTDXCollateralExpired, naming each item);
//   - Intel's signatures on the TCB info and QE identity verify under
//     roots (ErrTDXCollateral);
//   - the collateral's QE identity names this quote's quoting enclave:
//     MRSIGNER and ISVPRODID (ErrTDXQEIdentity);
//   - go-tdx-guest verifies the collateral's signatures to roots, the PCK
//     and root CRLs (revocation of the PCK chain), FMSPC, PCEID, the TDX
//     module's MRSIGNERSEAM and attributes, and the QE report's MISCSELECT
//     and attributes (ErrTDXCollateral);
//   - the platform's TCB level and the quoting enclave's are UpToDate
//     (ErrTDXTCBStatus, with Intel's status, date and advisories).
//
// Any other status (SWHardeningNeeded, ConfigurationNeeded, OutOfDate) is a
// rejection: go-tdx-guest accepts UpToDate only, and so do we.
func EvaluateTDXTCB(ctx context.Context, quote *tdxpb.QuoteV4, src TDXCollateralSource, roots *x509.CertPool, t time.Time) (*TDXTCB, *TDXCollateral, error) {
	if src == nil {
		return nil, nil, fmt.Errorf("%w: no collateral source", ErrTDXCollateral)
	}
	if roots == nil {
		roots = defaultTDXRoots()
	}
	fmspc, ca, qe, err := pckPlatform(quote)
	if err != nil {
		return nil, nil, err
	}
	raw, err := src.TDXCollateral(ctx, fmspc, ca)
	if err != nil {
		if errors.Is(err, ErrTDXCollateral) || errors.Is(err, ErrTDXCollateralExpired) || errors.Is(err, ErrTooLarge) {
			return nil, nil, err
		}
		return nil, nil, fmt.Errorf("%w: fetching collateral for FMSPC %s: %v", ErrTDXCollateral, fmspc, err)
	}
	p, err := raw.parse()
	if err != nil {
		return nil, nil, err
	}
	if err := p.expired(t); err != nil {
		return nil, nil, err
	}
	// Intel's signatures first, so that a TCB verdict reported below comes
	// from Intel, not from whoever served the collateral. go-tdx-guest
	// checks them again, with the CRLs.
	if err := p.checkSignatures(roots, t); err != nil {
		return nil, nil, err
	}
	ident := p.qe.EnclaveIdentity
	if !bytes.Equal(ident.Mrsigner.Bytes, qe.MRSigner) || uint32(ident.IsvProdID) != qe.ISVProdID {
		return nil, nil, fmt.Errorf("%w: quote's QE MRSIGNER %x ISVPRODID %d, Intel's QE identity says %x ISVPRODID %d",
			ErrTDXQEIdentity, []byte(qe.MRSigner), qe.ISVProdID, ident.Mrsigner.Bytes, ident.IsvProdID)
	}
	opts := &verify.Options{
		GetCollateral:    true,
		CheckRevocations: true,
		Getter:           p.getter(),
		TrustedRoots:     roots,
		Now:              &verify.TimeSet{PckCertChain: t, TcbInfo: t, QeIdentity: t, PckCrl: t, RootCaCrl: t},
	}
	verr := verify.TdxQuoteContext(ctx, quote, opts)
	// opts now holds the collateral as go-tdx-guest read it: ask it which
	// TCB levels match, to say why a quote failed. The collateral parsed
	// and is fresh (checked above), so this reads the levels; it does not
	// verify anything, verr does.
	tdxLevel, qeLevel, lerr := verify.SupportedTcbLevelsFromCollateral(quote, opts)
	res := &TDXTCB{
		FMSPC: fmspc, EvaluatedAt: t.UTC(), Items: p.itemDates,
		Status: string(tdxLevel.TcbStatus), TCBDate: tdxLevel.TcbDate, AdvisoryIDs: tdxLevel.AdvisoryIDs,
		QEStatus: string(qeLevel.TcbStatus), QETCBDate: qeLevel.TcbDate,
	}
	if res.Status != string(pcs.TcbComponentStatusUpToDate) {
		status := res.Status
		if status == "" {
			status = "no matching TCB level (older than every level Intel lists)"
		}
		return res, nil, fmt.Errorf("%w: platform TCB %s (FMSPC %s, TCB date %q, advisories %v)", ErrTDXTCBStatus, status, fmspc, res.TCBDate, res.AdvisoryIDs)
	}
	if res.QEStatus != string(pcs.TcbComponentStatusUpToDate) {
		status := res.QEStatus
		if status == "" {
			status = fmt.Sprintf("no matching level for ISVSVN %d", qe.ISVSVN)
		}
		return res, nil, fmt.Errorf("%w: quoting enclave TCB %s", ErrTDXTCBStatus, status)
	}
	if verr != nil || lerr != nil {
		return res, nil, fmt.Errorf("%w: %v", ErrTDXCollateral, errors.Join(verr, lerr))
	}
	return res, raw, nil
}

// checkSignatures verifies Intel's signature on the TCB info and the QE
// identity: the signing certificate of each issuer chain must chain to
// roots at t and sign the item's raw JSON (ECDSA P-256, SHA-256, r || s).
func (p *parsedCollateral) checkSignatures(roots *x509.CertPool, t time.Time) error {
	for _, it := range []struct {
		name, field string
		body        []byte
	}{{"tcbInfo", "tcbInfo", p.raw.TCBInfo.Body}, {"qeIdentity", "enclaveIdentity", p.raw.QEIdentity.Body}} {
		var doc map[string]json.RawMessage
		if err := json.Unmarshal(it.body, &doc); err != nil {
			return fmt.Errorf("%w: %s: %v", ErrTDXCollateral, it.name, err)
		}
		var sigHex string
		if err := json.Unmarshal(doc["signature"], &sigHex); err != nil {
			return fmt.Errorf("%w: %s signature: %v", ErrTDXCollateral, it.name, err)
		}
		sig, err := hex.DecodeString(sigHex)
		if err != nil || len(sig) != 64 || len(doc[it.field]) == 0 {
			return fmt.Errorf("%w: %s: no signed body or signature", ErrTDXCollateral, it.name)
		}
		signer := p.issuers[it.name][0]
		if _, err := signer.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: t, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			return fmt.Errorf("%w: %s signing certificate: %v", ErrTDXCollateral, it.name, err)
		}
		pub, ok := signer.PublicKey.(*ecdsa.PublicKey)
		d := sha256.Sum256(doc[it.field])
		if !ok || !ecdsa.Verify(pub, d[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])) {
			return fmt.Errorf("%w: %s: Intel's signature does not verify", ErrTDXCollateral, it.name)
		}
	}
	return nil
}

// SortedItems returns the items by next update, soonest first.
func (t *TDXTCB) SortedItems() []CollateralItem {
	out := append([]CollateralItem(nil), t.Items...)
	sort.SliceStable(out, func(i, j int) bool { return out[i].NextUpdate.Before(out[j].NextUpdate) })
	return out
}
