package attest_test

import (
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/attested-runner/attested-runner/attest/attesttest"
	gecel "github.com/google/go-eventlog/cel"
	tdxpb "github.com/google/go-tdx-guest/proto/tdx"
	"github.com/google/go-tdx-guest/verify"
)

// tdxFiles is the real COS 113 TD's quote and CCEL (testdata/tdx).
type tdxFiles struct{ quote, table, ccel []byte }

func readTDXFiles(t testing.TB) tdxFiles {
	t.Helper()
	read := func(name string) []byte {
		b, err := os.ReadFile("testdata/tdx/" + name)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	return tdxFiles{quote: read("cos-113-tdx-quote.dat"), table: read("ccel_table.dat"), ccel: read("ccel_data.dat")}
}

// tdxMachine is a simulated TD: the real COS 113 boot (its TD report and
// CCEL), an agent's collector whose RTMR 3 extends are computed here, and
// quotes signed under a test root by signer, with edit (if not nil) applied
// to each TD report.
type tdxMachine struct {
	signer    *attesttest.TDXSigner
	collector *attest.TDXCollector
	policy    *attest.Policy
	edit      func(*tdxpb.TDQuoteBody)
}

func newTDXMachine(t *testing.T, f tdxFiles, signer *attesttest.TDXSigner) *tdxMachine {
	t.Helper()
	m := &tdxMachine{signer: signer}
	rtmr3 := make([]byte, sha512.Size384)
	c, err := attest.NewTDXCollector(attest.TDXOptions{
		Quote: func(rd [64]byte) ([]byte, error) {
			return signer.Sign(func(b *tdxpb.TDQuoteBody) {
				b.ReportData, b.Rtmrs[3] = rd[:], bytes.Clone(rtmr3)
				if m.edit != nil {
					m.edit(b)
				}
			})
		},
		ExtendRTMR: func(i int, d []byte) error {
			if i != attest.LifecycleRTMR {
				return fmt.Errorf("extend of RTMR %d", i)
			}
			h := sha512.Sum384(append(rtmr3, d...))
			rtmr3 = h[:]
			return nil
		},
		ReadCCEL: func() ([]byte, []byte, error) { return f.table, f.ccel, nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := attesttest.BootAgent(c); err != nil {
		t.Fatal(err)
	}
	body := signer.Template()
	m.collector = c
	m.policy = &attest.Policy{
		Reference: &attest.ReferenceValues{
			Format:       attest.ReferenceValuesFormat,
			Images:       []attest.Image{{ID: "cos-113", MRTD: body.GetMrTd(), RTMRs: []attest.Hex{body.GetRtmrs()[0], body.GetRtmrs()[1], body.GetRtmrs()[2]}}},
			AgentDigests: []attest.Hex{attesttest.AgentDigest[:]},
		},
		TrustedTDXRoots: signer.Roots,
	}
	return m
}

// flipCCELDigest flips one bit of the SHA-384 digest of the first event
// measured into RTMR 0-2 (CC MR 1-3): the log still parses.
func flipCCELDigest(t testing.TB, ccel []byte) []byte {
	t.Helper()
	_, evs := agileEvents(t, ccel)
	for _, e := range evs {
		if e.pcr >= 1 && e.pcr <= 3 && e.typ != tcgEVNoAction {
			out := bytes.Clone(ccel)
			out[e.off+12+2] ^= 1 // after PCR, type, count and the first algorithm id
			return out
		}
	}
	t.Fatal("no event on RTMR 0-2")
	return nil
}

// TestTDXVerify runs Verify on TDX evidence end to end (collector, quote,
// CCEL, lifecycle log), builds valid evidence and breaks one thing per case.
func TestTDXVerify(t *testing.T) {
	f := readTDXFiles(t)
	signer, err := attesttest.NewTDXSigner(f.quote)
	if err != nil {
		t.Fatal(err)
	}
	expiredRoot, err := signer.WithExpiredRootCopy()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		signer   *attesttest.TDXSigner
		report   func(*tdxpb.TDQuoteBody)
		extend   []attest.Event
		evidence func(*attest.Evidence)
		policy   func(*attest.Policy)
		want     error
		msg      string
	}{
		{name: "genuine"},
		{name: "DEBUG TD", report: func(b *tdxpb.TDQuoteBody) { b.TdAttributes[0] |= 0x01 }, want: attest.ErrTDXDebug},
		{name: "REPORTDATA of another challenge", report: func(b *tdxpb.TDQuoteBody) { b.ReportData[0] ^= 1 }, want: attest.ErrNonceMismatch},
		{name: "PCK chain not under the trusted root", policy: func(p *attest.Policy) { p.TrustedTDXRoots = nil }, want: attest.ErrTDXQuote},
		// Policy.Time zero is now, not the zero time (which would let
		// go-tdx-guest skip its expiry check of the embedded chain).
		{name: "PCK chain embeds an expired root", signer: expiredRoot, want: attest.ErrTDXQuote, msg: "expired"},
		{name: "TD report edited after signing", evidence: func(e *attest.Evidence) {
			e.TDX.Quote = bytes.Clone(e.TDX.Quote)
			e.TDX.Quote[48+136] ^= 1 // MRTD
		}, want: attest.ErrTDXQuote},
		{name: "quote does not decode", evidence: func(e *attest.Evidence) { e.TDX.Quote = []byte("not a quote") }, want: attest.ErrMalformedEvidence, msg: "TDX quote:"},
		{name: "no CCEL", evidence: func(e *attest.Evidence) { e.TDX.CCEL = nil }, want: attest.ErrEventLogEmpty},
		{name: "CCEL digest flipped", evidence: func(e *attest.Evidence) { e.TDX.CCEL = flipCCELDigest(t, e.TDX.CCEL) }, want: attest.ErrEventLogReplay},
		{name: "lifecycle event removed", evidence: func(e *attest.Evidence) {
			editCEL(t, e, func(r []gecel.Record) []gecel.Record { return r[:1] })
		}, want: attest.ErrCELReplay},
		{name: "lifecycle out of order", extend: []attest.Event{attest.JobEndEvent("octo/app/actions/runs/1/attempts/1/jobs/j")}, want: attest.ErrCELOrder},
		{name: "MRTD not the reference", policy: func(p *attest.Policy) { p.Reference.Images[0].MRTD[0] ^= 1 }, want: attest.ErrReferenceMismatch, msg: "MRTD is"},
		{name: "RTMR 2 not the reference", policy: func(p *attest.Policy) { p.Reference.Images[0].RTMRs[2][0] ^= 1 }, want: attest.ErrReferenceMismatch, msg: "RTMR 2 is"},
		{name: "reference values for TPMs only", policy: func(p *attest.Policy) {
			p.Reference.Images = []attest.Image{{ID: "tpm", PCRs: map[uint32]attest.Hex{0: make(attest.Hex, 32)}}}
		}, want: attest.ErrReferenceMismatch, msg: "no tdx image"},
		{name: "agent not in reference values", policy: func(p *attest.Policy) { p.Reference.AgentDigests = []attest.Hex{make(attest.Hex, 32)} }, want: attest.ErrAgentNotAllowed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sg := signer
			if tc.signer != nil {
				sg = tc.signer
			}
			m := newTDXMachine(t, f, sg)
			m.edit = tc.report
			for _, e := range tc.extend {
				if err := m.collector.Extend(e); err != nil {
					t.Fatal(err)
				}
			}
			ch := attest.AdmissionChallenge(nonce(t))
			ev, err := m.collector.Collect(ch)
			if err != nil {
				t.Fatal(err)
			}
			if tc.evidence != nil {
				tc.evidence(ev)
			}
			if tc.policy != nil {
				tc.policy(m.policy)
			}
			c, err := attest.Verify(ev, ch, m.policy)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Verify: got %v, want %v", err, tc.want)
			}
			if tc.msg != "" && !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("Verify: got %q, want the %q check", err, tc.msg)
			}
			if err != nil {
				return
			}
			pck := sha256.Sum256(sg.PCK.Raw)
			if c.Level != 3 || c.ImageID != "cos-113" || c.AKDigest != hex.EncodeToString(pck[:]) || !bytes.Equal(c.Lifecycle.AgentDigest, attesttest.AgentDigest[:]) {
				t.Errorf("claims: level %d, image %q, AK %s, lifecycle %+v", c.Level, c.ImageID, c.AKDigest, c.Lifecycle)
			}
		})
	}
}

// TestInspectTDX: inspection of TDX evidence and of a bare quote with its
// nonce runs the same checks, and says which binding it checked.
func TestInspectTDX(t *testing.T) {
	f := readTDXFiles(t)
	signer, err := attesttest.NewTDXSigner(f.quote)
	if err != nil {
		t.Fatal(err)
	}
	m := newTDXMachine(t, f, signer)
	ch := attest.AdmissionChallenge(nonce(t))
	ev, err := m.collector.Collect(ch)
	if err != nil {
		t.Fatal(err)
	}
	in := attest.InspectEvidence(ev, attest.InspectOptions{Challenge: &ch, Policy: m.policy})
	if !in.Verified() {
		t.Fatalf("%v %+v", in.Err, in.Checks)
	}
	wantDetail(t, in, "quote", "REPORTDATA binds the challenge and keys")

	rd := ch.TDXReportData(ev.EnvKey, ev.HPKEPublicKey)
	p := &attest.Policy{TrustedTDXRoots: signer.Roots}
	in = attest.InspectTDXQuote(ev.TDX.Quote, f.table, f.ccel, attest.InspectOptions{RawNonce: rd[:], Policy: p})
	if !in.Verified() {
		t.Fatalf("%v %+v", in.Err, in.Checks)
	}
	wantDetail(t, in, "quote", "REPORTDATA is the given nonce")
	pck := sha256.Sum256(signer.PCK.Raw)
	if in.Claims.AKDigest != hex.EncodeToString(pck[:]) {
		t.Errorf("AK digest %q, want the PCK certificate's", in.Claims.AKDigest)
	}

	bad := bytes.Clone(ev.TDX.Quote)
	bad[48+136] ^= 1 // MRTD
	in = attest.InspectTDXQuote(bad, f.table, f.ccel, attest.InspectOptions{RawNonce: rd[:], Policy: p})
	if !errors.Is(in.Err, attest.ErrTDXQuote) {
		t.Fatalf("edited TD report: got %v, want %v", in.Err, attest.ErrTDXQuote)
	}
	in = attest.InspectTDXQuote(ev.TDX.Quote, f.table, flipCCELDigest(t, f.ccel), attest.InspectOptions{Policy: p})
	if !errors.Is(in.Err, attest.ErrEventLogReplay) {
		t.Fatalf("CCEL digest flipped: got %v, want %v", in.Err, attest.ErrEventLogReplay)
	}
	// No size limit before ParseTDXQuote's, nor before ReplayCCEL's.
	in = attest.InspectTDXQuote(append(bytes.Clone(ev.TDX.Quote), make([]byte, attest.MaxQuoteSize)...), nil, nil, attest.InspectOptions{Policy: p})
	if !errors.Is(in.Err, attest.ErrTooLarge) {
		t.Fatalf("oversized quote: got %v, want %v", in.Err, attest.ErrTooLarge)
	}
	in = attest.InspectTDXQuote(ev.TDX.Quote, f.table, append(bytes.Clone(f.ccel), bytes.Repeat([]byte{0xff}, attest.MaxEventLogSize)...), attest.InspectOptions{Policy: p})
	if !errors.Is(in.Err, attest.ErrTooLarge) {
		t.Fatalf("oversized CCEL: got %v, want %v", in.Err, attest.ErrTooLarge)
	}
}

// TestTDXLimits: the quote and CCEL size limits at their exact bounds, and
// a quote checked against roots that are not Intel's.
func TestTDXLimits(t *testing.T) {
	f := readTDXFiles(t)
	pad := func(b []byte, size int, with byte) []byte {
		return append(bytes.Clone(b), bytes.Repeat([]byte{with}, size-len(b))...)
	}
	// Bytes after the signed data are the quote's (unsigned) extra bytes.
	q, err := attest.ParseTDXQuote(pad(f.quote, attest.MaxQuoteSize, 0))
	if err != nil {
		t.Fatalf("quote at the size limit: %v", err)
	}
	if _, err := attest.ParseTDXQuote(pad(f.quote, attest.MaxQuoteSize+1, 0)); !errors.Is(err, attest.ErrTooLarge) {
		t.Fatalf("quote over the size limit: got %v, want %v", err, attest.ErrTooLarge)
	}
	if _, err := attest.ParseTDXQuote([]byte("not a quote")); !errors.Is(err, attest.ErrMalformedEvidence) || !strings.Contains(err.Error(), "TDX quote:") {
		t.Fatalf("not a quote: got %v, want %v", err, attest.ErrMalformedEvidence)
	}
	if err := attest.ReplayCCEL(f.table, pad(f.ccel, attest.MaxEventLogSize, 0xff), q); err != nil {
		t.Fatalf("CCEL at the size limit: %v", err)
	}
	if err := attest.ReplayCCEL(f.table, pad(f.ccel, attest.MaxEventLogSize+1, 0xff), q); !errors.Is(err, attest.ErrTooLarge) {
		t.Fatalf("CCEL over the size limit: got %v, want %v", err, attest.ErrTooLarge)
	}
	if err := attest.ReplayCCEL(f.table, flipCCELDigest(t, f.ccel), q); !errors.Is(err, attest.ErrEventLogReplay) {
		t.Fatalf("CCEL digest flipped: got %v, want %v", err, attest.ErrEventLogReplay)
	}
	// The real quote, at a time its chain was valid, under other roots.
	signer, err := attesttest.NewTDXSigner(f.quote)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := verify.ExtractChainFromQuote(q)
	if err != nil {
		t.Fatal(err)
	}
	at := chain.PCKCertificate.NotBefore.Add(24 * time.Hour) // the PCK certificate is the chain's youngest
	if err := attest.VerifyTDXQuote(q, nil, at); err != nil {
		t.Fatalf("control: Intel's root: %v", err)
	}
	if err := attest.VerifyTDXQuote(q, signer.Roots, at); !errors.Is(err, attest.ErrTDXQuote) {
		t.Fatalf("Intel's chain under a test root: got %v, want %v", err, attest.ErrTDXQuote)
	}
	if err := attest.VerifyTDXQuote(q, x509.NewCertPool(), at); !errors.Is(err, attest.ErrTDXQuote) {
		t.Fatalf("no root: got %v, want %v", err, attest.ErrTDXQuote)
	}
}
