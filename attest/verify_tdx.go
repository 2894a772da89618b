package attest

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	_ "embed"
	"encoding/hex"
	"fmt"
	"sync"
	"time"

	"github.com/google/go-eventlog/ccel"
	"github.com/google/go-eventlog/extract"
	"github.com/google/go-eventlog/register"
	"github.com/google/go-tdx-guest/abi"
	tdxpb "github.com/google/go-tdx-guest/proto/tdx"
	"github.com/google/go-tdx-guest/verify"
)

// tdAttributesDebug is bit 0 of TD_ATTRIBUTES: the host can read and write
// the TD's memory. Such a TD proves nothing.
const tdAttributesDebug = 0x01

// intelSGXRootCA is Intel's SGX Root CA (the same certificate go-tdx-guest
// embeds; SHA-256 fingerprint 44:A0:19:6B:...:74:D3). It is the default TDX
// trust root. Passing it explicitly keeps go-tdx-guest from logging a
// warning to stdout on every verification.
//
//go:embed intel_sgx_root_ca.pem
var intelSGXRootCA []byte

var defaultTDXRoots = sync.OnceValue(func() *x509.CertPool {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(intelSGXRootCA) {
		panic("attest: embedded Intel SGX root CA does not parse")
	}
	return pool
})

func verifyTDX(ev *Evidence, ch Challenge, p *Policy, c *Claims) error {
	quote, err := ParseTDXQuote(ev.TDX.Quote)
	if err != nil {
		return err
	}
	if err := VerifyTDXQuote(quote, p.TrustedTDXRoots, p.now()); err != nil {
		return err
	}
	body := quote.GetTdQuoteBody()
	rd := ch.TDXReportData(ev.EnvKey, ev.HPKEPublicKey)
	if subtle.ConstantTimeCompare(body.GetReportData(), rd[:]) != 1 {
		return fmt.Errorf("%w: TDX REPORTDATA", ErrNonceMismatch)
	}
	if attrs := body.GetTdAttributes(); len(attrs) == 0 || attrs[0]&tdAttributesDebug != 0 {
		return ErrTDXDebug
	}
	if err := ReplayCCEL(ev.TDX.CCELTable, ev.TDX.CCEL, quote); err != nil {
		return err
	}
	c.MRTD = body.GetMrTd()
	c.RTMRs = body.GetRtmrs()
	if chain, err := verify.ExtractChainFromQuote(quote); err == nil && chain.PCKCertificate != nil {
		d := sha256.Sum256(chain.PCKCertificate.Raw)
		c.AKDigest = hex.EncodeToString(d[:])
	}

	events, err := replayCEL(ev.CEL, tdxLayout, body.GetRtmrs()[LifecycleRTMR])
	if err != nil {
		return err
	}
	if c.Lifecycle, err = checkLifecycle(events, ev.EnvKey, ev.HPKEPublicKey); err != nil {
		return err
	}
	img, err := matchTDXImage(p.Reference, c)
	if err != nil {
		return err
	}
	c.ImageID = img.ID
	c.Level = 3 // L3.hw-quote: the quote comes from the CPU, covering the TD's boot.
	return nil
}

// ParseTDXQuote decodes a raw TDX v4 quote within MaxQuoteSize.
func ParseTDXQuote(raw []byte) (quote *tdxpb.QuoteV4, err error) {
	if len(raw) > MaxQuoteSize {
		return nil, fmt.Errorf("%w: TDX quote is %d bytes", ErrTooLarge, len(raw))
	}
	// go-tdx-guest's abi.QuoteToProto slices by lengths read from the quote
	// without bounds checks and panics on malformed QE auth data (found by
	// FuzzTDXQuote; see testdata/fuzz). Quotes arrive unauthenticated.
	defer func() {
		if r := recover(); r != nil {
			quote, err = nil, fmt.Errorf("%w: TDX quote: parser panic: %v", ErrMalformedEvidence, r)
		}
	}()
	q, err := abi.QuoteToProto(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: TDX quote: %v", ErrMalformedEvidence, err)
	}
	quote, ok := q.(*tdxpb.QuoteV4)
	if !ok {
		return nil, fmt.Errorf("%w: TDX quote version %T unsupported", ErrMalformedEvidence, q)
	}
	if len(quote.GetTdQuoteBody().GetRtmrs()) != 4 {
		return nil, fmt.Errorf("%w: TDX quote has %d RTMRs", ErrMalformedEvidence, len(quote.GetTdQuoteBody().GetRtmrs()))
	}
	return quote, nil
}

// VerifyTDXQuote checks a quote's signatures and PCK certificate chain to
// roots (nil: Intel's SGX root CA) as of t, offline: no collateral is fetched, so
// TCB status and revocation are not checked here.
func VerifyTDXQuote(quote *tdxpb.QuoteV4, roots *x509.CertPool, t time.Time) error {
	if roots == nil {
		roots = defaultTDXRoots()
	}
	opts := &verify.Options{
		GetCollateral:    false,
		CheckRevocations: false,
		TrustedRoots:     roots,
		Now: &verify.TimeSet{
			PckCertChain: t, TcbInfo: t, QeIdentity: t, PckCrl: t, RootCaCrl: t,
		},
	}
	if err := verify.TdxQuote(quote, opts); err != nil {
		return fmt.Errorf("%w: %v", ErrTDXQuote, err)
	}
	return nil
}

// ReplayCCEL replays the confidential computing event log against RTMR 0-2
// of a verified quote (RTMR 3 carries our lifecycle log, not firmware events).
func ReplayCCEL(table, log []byte, quote *tdxpb.QuoteV4) error {
	if len(bytes.TrimRight(log, "\xff\x00")) == 0 {
		return ErrEventLogEmpty
	}
	if len(log) > MaxEventLogSize {
		return fmt.Errorf("%w: CCEL is %d bytes", ErrTooLarge, len(log))
	}
	rtmrs := quote.GetTdQuoteBody().GetRtmrs()
	bank := register.RTMRBank{}
	for i := 0; i < LifecycleRTMR; i++ {
		bank.RTMRs = append(bank.RTMRs, register.RTMR{Index: i, Digest: rtmrs[i]})
	}
	if _, err := ccel.ReplayAndExtract(table, log, bank, extract.Opts{Loader: extract.UnsupportedLoader}); err != nil {
		return fmt.Errorf("%w: CCEL: %v", ErrEventLogReplay, err)
	}
	return nil
}

func matchTDXImage(rv *ReferenceValues, c *Claims) (*Image, error) {
	var reasons []string
	for i := range rv.Images {
		im := &rv.Images[i]
		if !im.isTDX() {
			continue
		}
		reason := ""
		switch {
		case !bytes.Equal(c.MRTD, im.MRTD):
			reason = fmt.Sprintf("MRTD is %x", c.MRTD)
		default:
			for r := 0; r < LifecycleRTMR; r++ {
				if !bytes.Equal(c.RTMRs[r], im.RTMRs[r]) {
					reason = fmt.Sprintf("RTMR %d is %x", r, c.RTMRs[r])
					break
				}
			}
		}
		if reason == "" {
			return im, nil
		}
		reasons = append(reasons, im.ID+": "+reason)
	}
	if len(reasons) == 0 {
		return nil, fmt.Errorf("%w: policy has no TDX image", ErrReferenceMismatch)
	}
	return nil, fmt.Errorf("%w: %s", ErrReferenceMismatch, joinReasons(reasons))
}
