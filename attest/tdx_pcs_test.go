package attest_test

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/attested-runner/attested-runner/internal/fakeclock"
	tdxtesting "github.com/google/go-tdx-guest/testing"
	tdxtd "github.com/google/go-tdx-guest/testing/testdata"
)

// fakePCS serves go-tdx-guest's real Intel collateral at the PCS v4 paths,
// with the real issuer chain headers, and counts requests.
func fakePCS(t *testing.T) (*httptest.Server, *atomic.Int32, *atomic.Value) {
	t.Helper()
	var n atomic.Int32
	var override atomic.Value // func(w, r) bool: true when it answered
	h := func(m map[string][]string) (string, string) {
		for k, v := range m {
			return k, v[0]
		}
		return "", ""
	}
	routes := map[string]struct {
		header map[string][]string
		body   []byte
	}{
		"/tdx/certification/v4/tcb?fmspc=50806f000000":          {tdxtesting.TcbInfoHeader, tdxtd.TcbInfoBody},
		"/tdx/certification/v4/qe/identity":                     {tdxtesting.QeIdentityHeader, tdxtd.QeIdentityBody},
		"/sgx/certification/v4/pckcrl?ca=platform&encoding=der": {tdxtesting.PckCrlHeader, tdxtd.PckCrlBody},
		"/IntelSGXRootCA.der":                                   {nil, tdxtd.RootCrlBody},
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		if f, ok := override.Load().(func(http.ResponseWriter, *http.Request) bool); ok && f(w, r) {
			return
		}
		route, ok := routes[r.URL.RequestURI()]
		if !ok {
			http.NotFound(w, r)
			return
		}
		if route.header != nil {
			k, v := h(route.header)
			w.Header().Set(k, v)
		}
		w.Write(route.body)
	}))
	t.Cleanup(srv.Close)
	return srv, &n, &override
}

// TestPCSCache: the gate's PCS client fetches the four collateral items,
// serves them from its cache until the earliest nextUpdate Intel gives
// (QE identity, 2023-07-08T07:24:59Z), then fetches again; the collateral
// it serves gives go-tdx-guest's verdict on the real SPR E4 quote.
func TestPCSCache(t *testing.T) {
	srv, n, _ := fakePCS(t)
	clock := fakeclock.New(time.Date(2023, time.July, 1, 0, 0, 0, 0, time.UTC))
	p := &attest.PCS{BaseURL: srv.URL, RootCRLURL: srv.URL + "/IntelSGXRootCA.der", Now: clock.Now}
	ctx := context.Background()
	c, err := p.TDXCollateral(ctx, "50806F000000", "platform")
	if err != nil {
		t.Fatal(err)
	}
	if got := n.Load(); got != 4 {
		t.Fatalf("%d requests, want 4 (TCB info, QE identity, PCK CRL, root CRL)", got)
	}
	if !bytes.Equal(c.TCBInfo.Body, tdxtd.TcbInfoBody) || c.TCBInfo.IssuerChain == "" || c.PCKCRL.IssuerChain == "" {
		t.Fatal("collateral not as served")
	}
	clock.Add(time.Date(2023, time.July, 8, 7, 24, 0, 0, time.UTC).Sub(clock.Now()))
	if _, err := p.TDXCollateral(ctx, "50806f000000", "platform"); err != nil || n.Load() != 4 {
		t.Fatalf("before expiry: %v, %d requests, want the cached entry", err, n.Load())
	}
	clock.Add(time.Minute)
	if _, err := p.TDXCollateral(ctx, "50806f000000", "platform"); err != nil || n.Load() != 8 {
		t.Fatalf("after the QE identity's nextUpdate: %v, %d requests, want a fresh fetch", err, n.Load())
	}

	q, err := attest.ParseTDXQuote(tdxtd.RawQuote)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := attest.EvaluateTDXTCB(ctx, q, p, nil, time.Date(2023, time.July, 1, 0, 0, 0, 0, time.UTC)); !errors.Is(err, attest.ErrTDXTCBStatus) {
		t.Fatalf("real quote judged with PCS collateral: got %v, want %v", err, attest.ErrTDXTCBStatus)
	}
}

// TestPCSFailures: a PCS error, an oversized answer, bad platform ids and
// an expired answer fail closed; nothing expired is cached.
func TestPCSFailures(t *testing.T) {
	srv, n, override := fakePCS(t)
	clock := fakeclock.New(time.Date(2023, time.July, 1, 0, 0, 0, 0, time.UTC))
	p := &attest.PCS{BaseURL: srv.URL, RootCRLURL: srv.URL + "/IntelSGXRootCA.der", Now: clock.Now}
	ctx := context.Background()
	for _, tc := range []struct {
		name, fmspc, ca string
		want            error
	}{
		{"unknown platform", "00606a000000", "platform", attest.ErrTDXCollateral},
		{"FMSPC not hex", "../../x", "platform", attest.ErrTDXCollateral},
		{"unknown CA", "50806f000000", "root&x=1", attest.ErrTDXCollateral},
	} {
		if _, err := p.TDXCollateral(ctx, tc.fmspc, tc.ca); !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
		}
	}
	override.Store(func(w http.ResponseWriter, r *http.Request) bool {
		w.Write(make([]byte, attest.MaxPCSResponseSize+1))
		return true
	})
	if _, err := p.TDXCollateral(ctx, "50806f000000", "platform"); !errors.Is(err, attest.ErrTooLarge) {
		t.Errorf("oversized: got %v, want %v", err, attest.ErrTooLarge)
	}
	override.Store(func(w http.ResponseWriter, r *http.Request) bool { return false })

	clock.Add(time.Date(2023, time.July, 20, 0, 0, 0, 0, time.UTC).Sub(clock.Now()))
	before := n.Load()
	for range 2 {
		if _, err := p.TDXCollateral(ctx, "50806f000000", "platform"); err != nil {
			t.Fatal(err)
		}
	}
	if got := n.Load() - before; got != 8 {
		t.Errorf("expired collateral: %d requests for two calls, want 8 (never cached)", got)
	}
}
