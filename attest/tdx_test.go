package attest

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	tdxpb "github.com/google/go-tdx-guest/proto/tdx"
	tdxtd "github.com/google/go-tdx-guest/testing/testdata"
	"github.com/google/go-tdx-guest/verify"
)

type tdxSample struct {
	quote       []byte
	table, ccel []byte
	nonce       []byte
}

func loadTDXSample(t testing.TB) tdxSample {
	t.Helper()
	read := func(name string) []byte {
		b, err := os.ReadFile("testdata/tdx/" + name)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	return tdxSample{
		quote: read("cos-113-tdx-quote.dat"),
		table: read("ccel_table.dat"),
		ccel:  read("ccel_data.dat"),
		nonce: read("nonce.dat"),
	}
}

// validAt is a time inside every certificate's validity in the quote's PCK
// chain: real quotes in test data outlive their certificates.
func validAt(t testing.TB, q *tdxpb.QuoteV4) time.Time {
	t.Helper()
	chain, err := verify.ExtractChainFromQuote(q)
	if err != nil {
		t.Fatal(err)
	}
	at := chain.PCKCertificate.NotBefore
	for _, c := range []*time.Time{&chain.IntermediateCertificate.NotBefore, &chain.RootCertificate.NotBefore} {
		if c.After(at) {
			at = *c
		}
	}
	return at.Add(24 * time.Hour)
}

func TestRealTDXQuotes(t *testing.T) {
	s := loadTDXSample(t)
	for name, raw := range map[string][]byte{"cos-113": s.quote, "SPR-E4": tdxtd.RawQuote} {
		t.Run(name, func(t *testing.T) {
			q, err := ParseTDXQuote(raw)
			if err != nil {
				t.Fatal(err)
			}
			if err := VerifyTDXQuote(q, nil, validAt(t, q)); err != nil {
				t.Fatalf("real quote rejected: %v", err)
			}
			// One flipped bit in the signed body.
			bad := bytes.Clone(raw)
			bad[200] ^= 1
			q2, err := ParseTDXQuote(bad)
			if err != nil {
				t.Fatal(err)
			}
			if err := VerifyTDXQuote(q2, nil, validAt(t, q)); !errors.Is(err, ErrTDXQuote) {
				t.Fatalf("flipped bit: got %v, want ErrTDXQuote", err)
			}
			// Certificates checked at a time they were not valid.
			if err := VerifyTDXQuote(q, nil, time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)); !errors.Is(err, ErrTDXQuote) {
				t.Fatalf("before validity: got %v, want ErrTDXQuote", err)
			}
		})
	}
}

func TestRealCCELReplay(t *testing.T) {
	s := loadTDXSample(t)
	q, err := ParseTDXQuote(s.quote)
	if err != nil {
		t.Fatal(err)
	}
	if err := ReplayCCEL(s.table, s.ccel, q); err != nil {
		t.Fatalf("real CCEL: %v", err)
	}
	// What attested-verify evidence prints: the real COS 113 boot has
	// Secure Boot off and boots through GRUB with a dm-verity root.
	st, err := replayCCEL(s.table, s.ccel, q)
	if err != nil {
		t.Fatal(err)
	}
	if st.GetSecureBoot().GetEnabled() || !strings.Contains(st.GetLinuxKernel().GetCommandLine(), "dm_verity.error_behavior=3") {
		t.Errorf("CCEL state: Secure Boot %v, kernel command line %q", st.GetSecureBoot().GetEnabled(), st.GetLinuxKernel().GetCommandLine())
	}
	if err := ReplayCCEL(s.table, nil, q); !errors.Is(err, ErrEventLogEmpty) {
		t.Fatalf("empty CCEL: got %v", err)
	}
	// Flip a bit of a measured digest: the first SHA-384 digest after the
	// first event header. Find one that breaks replay.
	tampered := false
	for off := 100; off < 4000 && !tampered; off += 16 {
		bad := bytes.Clone(s.ccel)
		bad[off] ^= 0x80
		if err := ReplayCCEL(s.table, bad, q); errors.Is(err, ErrEventLogReplay) {
			tampered = true
		}
	}
	if !tampered {
		t.Fatal("no tampering of the CCEL was detected")
	}
}

// TestTDXEvidence runs the TDX collector and Verify with the real quote
// injected as what "hardware" returned: the quote verifies, but its
// REPORTDATA binds another nonce and no key of ours, so Verify must refuse
// it. (A positive end-to-end TDX run needs TDX hardware.)
func TestTDXEvidence(t *testing.T) {
	s := loadTDXSample(t)
	q, err := ParseTDXQuote(s.quote)
	if err != nil {
		t.Fatal(err)
	}
	var askedRD [64]byte
	var extended [][]byte
	c, err := NewTDXCollector(TDXOptions{
		Quote:      func(rd [64]byte) ([]byte, error) { askedRD = rd; return s.quote, nil },
		ExtendRTMR: func(i int, d []byte) error { extended = append(extended, d); return nil },
		ReadCCEL:   func() ([]byte, []byte, error) { return s.table, s.ccel, nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Extend(AgentStartEvent(sha256.Sum256([]byte("agent")))); err != nil {
		t.Fatal(err)
	}
	if err := c.GenerateKeys(); err != nil {
		t.Fatal(err)
	}
	if err := c.Extend(EnvKeyEvent(c.EnvKey(), c.HPKE().PublicKey())); err != nil {
		t.Fatal(err)
	}
	if len(extended) != 2 || len(extended[0]) != 48 {
		t.Fatalf("RTMR extends: %d, want 2 SHA-384 digests", len(extended))
	}
	ch := AdmissionChallenge(bytes.Repeat([]byte{7}, 32))
	ev, err := c.Collect(ch)
	if err != nil {
		t.Fatal(err)
	}
	if want := ch.TDXReportData(c.EnvKey(), c.HPKE().PublicKey()); askedRD != want {
		t.Fatal("collector asked the hardware for another REPORTDATA than the binding")
	}
	body := q.GetTdQuoteBody()
	p := &Policy{
		Reference: &ReferenceValues{
			Format:       ReferenceValuesFormat,
			Images:       []Image{{ID: "cos-113", MRTD: body.GetMrTd(), RTMRs: []Hex{body.GetRtmrs()[0], body.GetRtmrs()[1], body.GetRtmrs()[2]}}},
			AgentDigests: []Hex{make([]byte, 32)},
		},
		Time: validAt(t, q),
	}
	if _, err := Verify(ev, ch, p); !errors.Is(err, ErrNonceMismatch) {
		t.Fatalf("Verify: got %v, want ErrNonceMismatch", err)
	}
}

// TestTDXPolicyChecks runs the post-signature checks on the real quote's
// claims: image matching and the DEBUG attribute.
func TestTDXPolicyChecks(t *testing.T) {
	s := loadTDXSample(t)
	q, err := ParseTDXQuote(s.quote)
	if err != nil {
		t.Fatal(err)
	}
	body := q.GetTdQuoteBody()
	c := &Claims{MRTD: body.GetMrTd(), RTMRs: body.GetRtmrs()}
	img := Image{ID: "cos-113", MRTD: body.GetMrTd(), RTMRs: []Hex{body.GetRtmrs()[0], body.GetRtmrs()[1], body.GetRtmrs()[2]}}
	rv := &ReferenceValues{Format: ReferenceValuesFormat, Images: []Image{img}, AgentDigests: []Hex{make([]byte, 32)}}
	if err := rv.Validate(); err != nil {
		t.Fatal(err)
	}
	if got, err := matchTDXImage(rv, c); err != nil || got.ID != "cos-113" {
		t.Fatalf("matching image: %v, %v", got, err)
	}
	other := img
	other.RTMRs = []Hex{img.RTMRs[0], img.RTMRs[1], make(Hex, 48)}
	rv.Images = []Image{other}
	if _, err := matchTDXImage(rv, c); !errors.Is(err, ErrReferenceMismatch) {
		t.Fatalf("RTMR 2 mismatch: got %v", err)
	}
	if body.GetTdAttributes()[0]&tdAttributesDebug != 0 {
		t.Fatal("the production quote claims DEBUG")
	}
}
