package attest_test

import (
	"context"
	"encoding/json"
	"errors"
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
