package attest

import (
	"bytes"
	"context"
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
	statepb "github.com/google/go-eventlog/proto/state"
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

func verifyTDX(ev *Evidence, ch *Challenge, p *Policy, c *Claims, s *steps) error {
	var quote *tdxpb.QuoteV4
	if err := s.run("decode", func() (string, error) {
		var err error
		quote, err = ParseTDXQuote(ev.TDX.Quote)
		return "attested-runner TDX evidence", err
	}); err != nil {
		return err
	}
	var rd []byte
	if ch != nil {
		b := ch.TDXReportData(ev.EnvKey, ev.HPKEPublicKey)
		rd = b[:]
	}
	if err := verifyTDXQuoteInput(tdxInput{quote: quote, table: ev.TDX.CCELTable, ccel: ev.TDX.CCEL, reportData: rd, ev: ev}, p, c, s); err != nil {
		return err
	}
	return nil
}

// tdxInput is a TDX quote to check: ours (ev set) or a bare quote.
type tdxInput struct {
	quote       *tdxpb.QuoteV4
	table, ccel []byte
	// reportData expected; nil: not checked (inspection only).
	reportData []byte
	ev         *Evidence
}

func verifyTDXQuoteInput(in tdxInput, p *Policy, c *Claims, s *steps) error {
	quote := in.quote
	body := quote.GetTdQuoteBody()
	what := "REPORTDATA is the given nonce"
	var evColl *TDXCollateral
	if in.ev != nil {
		what, evColl = "REPORTDATA binds the challenge and keys", in.ev.TDX.Collateral
	}
	tcbUpToDate, err := verifyTDXPlatform(tdxKindSteps, quote, in.reportData, what, evColl, p, c, s)
	if err != nil {
		return err
	}
	if in.reportData == nil {
		s.skip("nonce", "no nonce given: REPORTDATA not compared, the quote may answer any challenge (freshness not checked)")
	}
	if in.ev == nil && len(in.ccel) == 0 && len(in.table) == 0 {
		// A bare quote given alone: RTMR 0-2 are still the quote's (signed)
		// values, but nothing explains them.
		s.skip("event log", "no CCEL given: RTMR 0-2 not replayed")
	} else if err := s.run("event log", func() (string, error) {
		st, err := replayCCEL(in.table, in.ccel, quote)
		if err != nil {
			return "", err
		}
		c.SecureBoot = st.GetSecureBoot().GetEnabled()
		c.KernelCmdline = st.GetLinuxKernel().GetCommandLine()
		return fmt.Sprintf("CCEL replays to RTMR 0-2 (Secure Boot %s)", onOff(c.SecureBoot)), nil
	}); err != nil {
		return err
	}
	if in.ev == nil {
		s.skip("lifecycle log", "a bare TDX quote carries no lifecycle log")
	} else if err := s.run("lifecycle log", func() (string, error) {
		events, err := replayCEL(in.ev.CEL, tdxLayout, body.GetRtmrs()[LifecycleRTMR])
		if err != nil {
			return "", err
		}
		if c.Lifecycle, err = checkLifecycle(events, in.ev.EnvKey, in.ev.HPKEPublicKey); err != nil {
			return "", err
		}
		return lifecycleString(c.Lifecycle), nil
	}); err != nil {
		return err
	}
	if matched, err := checkReference(s, p, c, matchTDXImage); !matched {
		return err
	}
	// L3.hw-quote: the quote comes from the CPU, covering the TD's boot,
	// on a platform whose TCB Intel rates UpToDate. Without a TCB verdict
	// the same quote is worth level 2: known-vulnerable firmware could
	// have made it.
	c.Level, c.Hardware = 2, HardwareTDX
	if tcbUpToDate {
		c.Level = 3
	}
	return nil
}

// tdxStepNames name the steps of verifyTDXPlatform: plain for TDX
// evidence, prefixed for the TDX quote riding in TPM evidence (whose own
// quote step is the TPM's). rtmrs: the quote's RTMRs are the boot's
// measurements, claimed as such (TDX evidence); a vTPM's boot is in its
// PCRs, and its TD's RTMRs are not reference values.
type tdxStepNames struct {
	quote, qe, tcb string
	rtmrs          bool
}

var (
	tdxKindSteps = tdxStepNames{"quote", "quoting enclave", "tcb", true}
	tdxVTPMSteps = tdxStepNames{"tdx quote", "tdx enclave", "tdx tcb", false}
)

// verifyTDXPlatform checks what a TDX quote says about the platform: its
// signature and PCK chain, the DEBUG attribute, REPORTDATA (reportData;
// nil: not compared, what describes a match), the quoting enclave, and
// the TCB against Intel collateral (the policy's source, else evColl).
// It reports whether the TCB was judged UpToDate, the condition of
// level 3 (L3.hw-quote).
func verifyTDXPlatform(names tdxStepNames, quote *tdxpb.QuoteV4, reportData []byte, what string, evColl *TDXCollateral, p *Policy, c *Claims, s *steps) (bool, error) {
	body := quote.GetTdQuoteBody()
	if err := s.run(names.quote, func() (string, error) {
		if err := VerifyTDXQuote(quote, p.TrustedTDXRoots, p.now()); err != nil {
			return "", err
		}
		if chain, err := verify.ExtractChainFromQuote(quote); err == nil && chain.PCKCertificate != nil && c.AKDigest == "" {
			d := sha256.Sum256(chain.PCKCertificate.Raw)
			c.AKDigest = hex.EncodeToString(d[:])
		}
		if attrs := body.GetTdAttributes(); len(attrs) == 0 || attrs[0]&tdAttributesDebug != 0 {
			return "", ErrTDXDebug
		}
		c.MRTD = body.GetMrTd()
		if names.rtmrs {
			c.RTMRs = body.GetRtmrs()
		}
		if reportData == nil {
			return "signature and PCK chain valid offline, not debuggable", nil
		}
		if subtle.ConstantTimeCompare(body.GetReportData(), reportData) != 1 {
			return "", fmt.Errorf("%w: TDX REPORTDATA", ErrNonceMismatch)
		}
		return "signature and PCK chain valid offline, not debuggable, " + what, nil
	}); err != nil {
		return false, err
	}
	if err := s.run(names.qe, func() (string, error) {
		_, _, qe, err := pckPlatform(quote)
		if err != nil {
			return "", err
		}
		if err := checkQEIdentity(qe, p.MinTDXQESVN); err != nil {
			return "", err
		}
		c.TDXQE = &qe
		return fmt.Sprintf("Intel TD quoting enclave (MRSIGNER %x..., ISVPRODID %d, ISVSVN %d)", []byte(qe.MRSigner[:4]), qe.ISVProdID, qe.ISVSVN), nil
	}); err != nil {
		return false, err
	}
	// TCB evaluation against Intel collateral: the policy's source, else
	// the collateral the evidence carries (Intel-signed either way).
	var src TDXCollateralSource = p.TDXCollateral
	if src == nil && evColl != nil {
		src = evColl
	}
	if src == nil {
		s.skip(names.tcb, "no Intel collateral given: TCB status not evaluated, so at most level 2")
		return false, nil
	}
	if err := s.run(names.tcb, func() (string, error) {
		tcb, coll, err := EvaluateTDXTCB(context.Background(), quote, src, p.TrustedTDXRoots, p.now())
		c.TDXTCB = tcb
		if err != nil {
			return "", err
		}
		c.TDXCollateral = coll
		first := tcb.SortedItems()[0]
		return fmt.Sprintf("platform %s (FMSPC %s, TCB date %s), quoting enclave %s; collateral valid until %s (%s)",
			tcb.Status, tcb.FMSPC, tcb.TCBDate, tcb.QEStatus, first.NextUpdate.UTC().Format(time.RFC3339), first.Name), nil
	}); err != nil {
		return false, err
	}
	return true, nil
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
	_, err := replayCCEL(table, log, quote)
	return err
}

// replayCCEL is ReplayCCEL returning what the replayed log says (Secure
// Boot state, kernel command line).
func replayCCEL(table, log []byte, quote *tdxpb.QuoteV4) (*statepb.FirmwareLogState, error) {
	if len(bytes.TrimRight(log, "\xff\x00")) == 0 {
		return nil, ErrEventLogEmpty
	}
	if len(log) > MaxEventLogSize {
		return nil, fmt.Errorf("%w: CCEL is %d bytes", ErrTooLarge, len(log))
	}
	rtmrs := quote.GetTdQuoteBody().GetRtmrs()
	bank := register.RTMRBank{}
	for i := 0; i < LifecycleRTMR; i++ {
		bank.RTMRs = append(bank.RTMRs, register.RTMR{Index: i, Digest: rtmrs[i]})
	}
	st, err := ccel.ReplayAndExtract(table, log, bank, extract.Opts{Loader: extract.UnsupportedLoader})
	if err != nil {
		return nil, fmt.Errorf("%w: CCEL: %v", ErrEventLogReplay, err)
	}
	// The kernel command line is extracted only for a known bootloader.
	// Try GRUB's layout (which COS uses) for that one fact; the replay
	// above is what verifies.
	if st.GetLinuxKernel().GetCommandLine() == "" {
		if g, err := ccel.ReplayAndExtract(table, log, bank, extract.Opts{Loader: extract.GRUB}); err == nil {
			st.LinuxKernel = g.GetLinuxKernel()
		}
	}
	return st, nil
}

func matchTDXImage(rv *ReferenceValues, c *Claims) (*Image, error) {
	return matchImage(rv, KindTDX, func(im *Image) string {
		if !bytes.Equal(c.MRTD, im.MRTD) {
			return fmt.Sprintf("MRTD is %x", c.MRTD)
		}
		for r := 0; r < LifecycleRTMR; r++ {
			if !bytes.Equal(c.RTMRs[r], im.RTMRs[r]) {
				return fmt.Sprintf("RTMR %d is %x", r, c.RTMRs[r])
			}
		}
		return ""
	})
}
