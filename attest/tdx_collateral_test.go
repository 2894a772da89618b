package attest_test

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/attested-runner/attested-runner/attest"
	tdxtesting "github.com/google/go-tdx-guest/testing"
	tdxtd "github.com/google/go-tdx-guest/testing/testdata"
)

// realCollateral is the Intel PCS collateral go-tdx-guest ships in its test
// data for FMSPC 50806f000000 (the SPR E4 quote's platform), as served:
// issuer chain headers and bodies, unmodified.
func realCollateral() *attest.TDXCollateral {
	h := func(m map[string][]string) string {
		for _, v := range m {
			return v[0]
		}
		return ""
	}
	return &attest.TDXCollateral{
		TCBInfo:    attest.PCSResponse{IssuerChain: h(tdxtesting.TcbInfoHeader), Body: tdxtd.TcbInfoBody},
		QEIdentity: attest.PCSResponse{IssuerChain: h(tdxtesting.QeIdentityHeader), Body: tdxtd.QeIdentityBody},
		PCKCRL:     attest.PCSResponse{IssuerChain: h(tdxtesting.PckCrlHeader), Body: tdxtd.PckCrlBody},
		RootCACRL:  attest.PCSResponse{Body: tdxtd.RootCrlBody},
	}
}

// TestRealTDXCollateral judges go-tdx-guest's real SPR E4 quote with the
// real Intel collateral next to it. The verdicts are go-tdx-guest's own:
// TestNegativeRawQuoteVerifyWithCollateral (at 2023-07-01 the quote's TCB
// matches no level of that TCB info: "no matching TCB level found") and
// TestNegativeObtainAndVerifyCollateral (in 2053 "tcbInfo has expired").
// The dates in between come from the collateral itself: QE identity and
// PCK CRL next updates 2023-07-08, TCB info 2023-07-18.
func TestRealTDXCollateral(t *testing.T) {
	q, err := attest.ParseTDXQuote(tdxtd.RawQuote)
	if err != nil {
		t.Fatal(err)
	}
	day := func(y int, m time.Month, d int) time.Time { return time.Date(y, m, d, 1, 0, 0, 0, time.UTC) }
	tests := []struct {
		name    string
		at      time.Time
		want    error
		msg     []string
		notMsg  string
		collate func(*attest.TDXCollateral)
	}{
		{name: "fresh collateral: TCB matches no level", at: day(2023, time.July, 1), want: attest.ErrTDXTCBStatus, msg: []string{"no matching TCB level", "FMSPC 50806f000000"}},
		{name: "QE identity and PCK CRL stale", at: day(2023, time.July, 10), want: attest.ErrTDXCollateralExpired,
			msg: []string{"qeIdentity expired 2023-07-08T07:24:59Z", "pckCrl expired 2023-07-08T07:27:52Z"}, notMsg: "tcbInfo expired"},
		{name: "TCB info stale too", at: day(2023, time.July, 20), want: attest.ErrTDXCollateralExpired, msg: []string{"tcbInfo expired 2023-07-18T08:42:58Z", "qeIdentity expired"}},
		{name: "2053", at: day(2053, time.July, 1), want: attest.ErrTDXCollateralExpired, msg: []string{"tcbInfo expired", "signing certificate expired", "rootCaCrl expired"}},
		{name: "before the TCB info was issued", at: day(2023, time.June, 10), want: attest.ErrTDXCollateralExpired, msg: []string{"tcbInfo not valid before 2023-06-18T08:42:58Z"}},
		{name: "no PCK CRL", at: day(2023, time.July, 1), want: attest.ErrTDXCollateral, msg: []string{"pckCrl"},
			collate: func(c *attest.TDXCollateral) { c.PCKCRL = attest.PCSResponse{} }},
		{name: "no TCB info issuer chain", at: day(2023, time.July, 1), want: attest.ErrTDXCollateral, msg: []string{"tcbInfo issuer chain"},
			collate: func(c *attest.TDXCollateral) { c.TCBInfo.IssuerChain = "" }},
		// Each part malformed once: refused as what it is, naming the part.
		{name: "TCB info not JSON", at: day(2023, time.July, 1), want: attest.ErrTDXCollateral, msg: []string{"tcbInfo: invalid character"},
			collate: func(c *attest.TDXCollateral) { c.TCBInfo.Body = []byte("not json") }},
		{name: "TCB info without its id", at: day(2023, time.July, 1), want: attest.ErrTDXCollateral, msg: []string{"tcbInfo: missing"},
			collate: func(c *attest.TDXCollateral) { c.TCBInfo.Body = []byte(`{"tcbInfo":{}}`) }},
		{name: "QE identity not JSON", at: day(2023, time.July, 1), want: attest.ErrTDXCollateral, msg: []string{"qeIdentity: invalid character"},
			collate: func(c *attest.TDXCollateral) { c.QEIdentity.Body = []byte("not json") }},
		{name: "QE identity without its id", at: day(2023, time.July, 1), want: attest.ErrTDXCollateral, msg: []string{"qeIdentity: missing"},
			collate: func(c *attest.TDXCollateral) { c.QEIdentity.Body = []byte(`{"enclaveIdentity":{}}`) }},
		{name: "PCK CRL garbage", at: day(2023, time.July, 1), want: attest.ErrTDXCollateral, msg: []string{"pckCrl: x509"},
			collate: func(c *attest.TDXCollateral) { c.PCKCRL.Body = []byte("not a CRL") }},
		{name: "root CA CRL garbage", at: day(2023, time.July, 1), want: attest.ErrTDXCollateral, msg: []string{"rootCaCrl: x509"},
			collate: func(c *attest.TDXCollateral) { c.RootCACRL.Body = []byte("not a CRL") }},
		{name: "issuer chain not URL-escaped", at: day(2023, time.July, 1), want: attest.ErrTDXCollateral, msg: []string{"qeIdentity issuer chain: invalid URL escape"},
			collate: func(c *attest.TDXCollateral) { c.QEIdentity.IssuerChain = "%zz" }},
		{name: "issuer chain of one certificate", at: day(2023, time.July, 1), want: attest.ErrTDXCollateral, msg: []string{"pckCrl issuer chain: certificate 1 missing"},
			collate: func(c *attest.TDXCollateral) {
				c.PCKCRL.IssuerChain = editChain(t, c.PCKCRL.IssuerChain, func(b []*pem.Block) []*pem.Block { return b[:1] })
			}},
		{name: "issuer chain of three certificates", at: day(2023, time.July, 1), want: attest.ErrTDXCollateral, msg: []string{"tcbInfo issuer chain: more than two certificates"},
			collate: func(c *attest.TDXCollateral) {
				c.TCBInfo.IssuerChain = editChain(t, c.TCBInfo.IssuerChain, func(b []*pem.Block) []*pem.Block { return append(b, b[1]) })
			}},
		{name: "issuer chain with a broken certificate", at: day(2023, time.July, 1), want: attest.ErrTDXCollateral, msg: []string{"qeIdentity issuer chain: x509"},
			collate: func(c *attest.TDXCollateral) {
				c.QEIdentity.IssuerChain = editChain(t, c.QEIdentity.IssuerChain, func(b []*pem.Block) []*pem.Block {
					return []*pem.Block{{Type: "CERTIFICATE", Bytes: []byte("broken")}, b[1]}
				})
			}},
		{name: "issuer chain of something else", at: day(2023, time.July, 1), want: attest.ErrTDXCollateral, msg: []string{"qeIdentity issuer chain: certificate 0 missing"},
			collate: func(c *attest.TDXCollateral) {
				c.QEIdentity.IssuerChain = editChain(t, c.QEIdentity.IssuerChain, func(b []*pem.Block) []*pem.Block {
					return []*pem.Block{{Type: "PUBLIC KEY", Bytes: b[0].Bytes}, b[1]}
				})
			}},
		{name: "an item over the size limit", at: day(2023, time.July, 1), want: attest.ErrTooLarge, msg: []string{"TDX collateral item over"},
			collate: func(c *attest.TDXCollateral) { c.RootCACRL.Body = make([]byte, attest.MaxPCSResponseSize+1) }},
		{name: "an issuer chain over the size limit", at: day(2023, time.July, 1), want: attest.ErrTooLarge, msg: []string{"TDX collateral item over"},
			collate: func(c *attest.TDXCollateral) {
				c.TCBInfo.IssuerChain = strings.Repeat("a", attest.MaxPCSResponseSize+1)
			}},
		{name: "TCB info signature not hex", at: day(2023, time.July, 1), want: attest.ErrTDXCollateral, msg: []string{"tcbInfo: no signed body or signature"},
			collate: func(c *attest.TDXCollateral) { c.TCBInfo.Body = setJSON(t, c.TCBInfo.Body, "signature", `"zz"`) }},
		{name: "QE identity signature too short", at: day(2023, time.July, 1), want: attest.ErrTDXCollateral, msg: []string{"qeIdentity: no signed body or signature"},
			collate: func(c *attest.TDXCollateral) {
				c.QEIdentity.Body = setJSON(t, c.QEIdentity.Body, "signature", `"abcd"`)
			}},
		{name: "QE identity without a signature", at: day(2023, time.July, 1), want: attest.ErrTDXCollateral, msg: []string{"qeIdentity signature:"},
			collate: func(c *attest.TDXCollateral) { c.QEIdentity.Body = setJSON(t, c.QEIdentity.Body, "signature", "") }},
		// Intel's signatures: the fresh case above got past them (its verdict
		// comes from signed data); one edited field breaks them.
		{name: "QE identity edited", at: day(2023, time.July, 1), want: attest.ErrTDXCollateral, msg: []string{"qeIdentity: Intel's signature"},
			collate: func(c *attest.TDXCollateral) {
				c.QEIdentity.Body = []byte(strings.Replace(string(c.QEIdentity.Body), `"isvprodid":2`, `"isvprodid":3`, 1))
			}},
		{name: "TCB info edited to UpToDate", at: day(2023, time.July, 1), want: attest.ErrTDXCollateral, msg: []string{"tcbInfo: Intel's signature"},
			collate: func(c *attest.TDXCollateral) {
				c.TCBInfo.Body = []byte(strings.Replace(string(c.TCBInfo.Body), `"pcesvn":11`, `"pcesvn":0`, 1))
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := realCollateral()
			if tc.collate != nil {
				tc.collate(c)
			}
			tcb, used, err := attest.EvaluateTDXTCB(context.Background(), q, c, nil, tc.at)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if used != nil {
				t.Error("rejected collateral returned as used")
			}
			for _, m := range tc.msg {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("%q does not say %q", err, m)
				}
			}
			if tc.notMsg != "" && strings.Contains(err.Error(), tc.notMsg) {
				t.Errorf("%q says %q", err, tc.notMsg)
			}
			if errors.Is(tc.want, attest.ErrTDXTCBStatus) && (tcb == nil || tcb.Status != "" || tcb.QEStatus != "UpToDate") {
				t.Errorf("TCB verdict %+v: want no platform level, QE UpToDate (ISVSVN 4 is Intel's UpToDate level)", tcb)
			}
		})
	}
	if _, _, err := attest.EvaluateTDXTCB(context.Background(), q, nil, nil, day(2023, time.July, 1)); !errors.Is(err, attest.ErrTDXCollateral) {
		t.Fatalf("no source: got %v", err)
	}
}

// FuzzTDXCollateral: collateral arrives from the network or inside evidence;
// whatever its bytes, evaluation never panics and never passes the real SPR
// E4 quote (whose TCB no real Intel collateral rates UpToDate), seeded
// with the real collateral.
func FuzzTDXCollateral(f *testing.F) {
	seed, err := json.Marshal(realCollateral())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	f.Add([]byte(`{}`))
	q, err := attest.ParseTDXQuote(tdxtd.RawQuote)
	if err != nil {
		f.Fatal(err)
	}
	at := time.Date(2023, time.July, 1, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, b []byte) {
		var c attest.TDXCollateral
		if json.Unmarshal(b, &c) != nil {
			return
		}
		if _, _, err := attest.EvaluateTDXTCB(context.Background(), q, &c, nil, at); err == nil {
			t.Fatal("fuzzed collateral passed")
		}
	})
}

// editChain rewrites a PCS issuer chain header (URL-escaped PEM).
func editChain(t *testing.T, h string, edit func([]*pem.Block) []*pem.Block) string {
	t.Helper()
	s, err := url.QueryUnescape(h)
	if err != nil {
		t.Fatal(err)
	}
	var blocks []*pem.Block
	for rest := []byte(s); ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		blocks = append(blocks, b)
	}
	var out []byte
	for _, b := range edit(blocks) {
		out = append(out, pem.EncodeToMemory(b)...)
	}
	return url.QueryEscape(string(out))
}

// setJSON replaces one top-level field of a JSON object (removes it when
// value is empty).
func setJSON(t *testing.T, body []byte, field, value string) []byte {
	t.Helper()
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatal(err)
	}
	doc[field] = json.RawMessage(value)
	if value == "" {
		delete(doc, field)
	}
	b, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// failingSource is a collateral source that fails with err.
type failingSource struct{ err error }

func (f failingSource) TDXCollateral(context.Context, string, string) (*attest.TDXCollateral, error) {
	return nil, f.err
}

// TestTDXCollateralSources: no collateral is never a pass: a source that
// fails (its error kept when it already says what is wrong), one that
// hands back nothing, and signing certificates under roots that are not
// Intel's.
func TestTDXCollateralSources(t *testing.T) {
	q, err := attest.ParseTDXQuote(tdxtd.RawQuote)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2023, time.July, 1, 1, 0, 0, 0, time.UTC)
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		src  attest.TDXCollateralSource
		want error
		msg  string
	}{
		{"no source", nil, attest.ErrTDXCollateral, "no collateral source"},
		{"a source that hands back nothing", (*attest.TDXCollateral)(nil), attest.ErrTDXCollateral, "none"},
		{"PCS unreachable", failingSource{errors.New("dial tcp: connection refused")}, attest.ErrTDXCollateral, "fetching collateral for FMSPC 50806f000000: dial tcp"},
		{"a stale cache says so itself", failingSource{fmt.Errorf("%w: tcbInfo expired", attest.ErrTDXCollateralExpired)}, attest.ErrTDXCollateralExpired, "tcbInfo expired"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, used, err := attest.EvaluateTDXTCB(ctx, q, tc.src, nil, at)
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) || used != nil {
				t.Fatalf("got %v (collateral %v), want %v with %q", err, used, tc.want, tc.msg)
			}
			if tc.want == attest.ErrTDXCollateralExpired && strings.Contains(err.Error(), "fetching") {
				t.Fatalf("a source's own verdict rewrapped: %v", err)
			}
		})
	}
	if _, _, err := attest.EvaluateTDXTCB(ctx, q, realCollateral(), x509.NewCertPool(), at); !errors.Is(err, attest.ErrTDXCollateral) || !strings.Contains(err.Error(), "tcbInfo signing certificate") {
		t.Fatalf("Intel's collateral under other roots: %v", err)
	}
}
