package attest

import (
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/google/go-tdx-guest/pcs"
)

// Intel's Provisioning Certification Service and the SGX root CA's CRL.
const (
	IntelPCSURL     = "https://api.trustedservices.intel.com"
	IntelRootCRLURL = "https://certificates.trustedservices.intel.com/IntelSGXRootCA.der"
)

// PCS is a TDXCollateralSource that fetches collateral from Intel's PCS
// (v4 API) and caches it per platform until the earliest expiry Intel
// gives (the nextUpdate of TCB info, QE identity and CRLs, and the issuer
// certificates' NotAfter). It never serves an expired entry: past expiry it
// fetches again, and a failed fetch is an error (ErrTDXCollateral), not a
// stale answer. Fetched collateral is not verified here: EvaluateTDXTCB
// does that, so a PCS that serves bad data only makes verification fail.
type PCS struct {
	// BaseURL replaces IntelPCSURL, RootCRLURL IntelRootCRLURL (tests, or a
	// caching proxy such as Intel's PCCS).
	BaseURL, RootCRLURL string
	// Client is the HTTP client (default: a 30 s timeout).
	Client *http.Client
	// Now is the clock (default time.Now).
	Now func() time.Time

	mu    sync.Mutex
	cache map[string]pcsEntry
}

type pcsEntry struct {
	c       *TDXCollateral
	expires time.Time
}

func (p *PCS) now() time.Time {
	if p.Now != nil {
		return p.Now()
	}
	return time.Now()
}

// TDXCollateral implements TDXCollateralSource.
func (p *PCS) TDXCollateral(ctx context.Context, fmspc, ca string) (*TDXCollateral, error) {
	if b, err := hex.DecodeString(fmspc); err != nil || len(b) != 6 {
		return nil, fmt.Errorf("%w: FMSPC %q is not 6 hex bytes", ErrTDXCollateral, fmspc)
	}
	if ca != "platform" && ca != "processor" {
		return nil, fmt.Errorf("%w: PCK CA %q", ErrTDXCollateral, ca)
	}
	key := strings.ToLower(fmspc) + "/" + ca
	p.mu.Lock()
	e, ok := p.cache[key]
	p.mu.Unlock()
	if ok && p.now().Before(e.expires) {
		return e.c, nil
	}
	c, err := p.fetch(ctx, strings.ToLower(fmspc), ca)
	if err != nil {
		return nil, err
	}
	parsed, err := c.parse()
	if err != nil {
		return nil, err
	}
	expires := parsed.itemDates[0].NextUpdate
	for _, it := range parsed.itemDates[1:] {
		if it.NextUpdate.Before(expires) {
			expires = it.NextUpdate
		}
	}
	if p.now().Before(expires) {
		p.mu.Lock()
		if p.cache == nil {
			p.cache = map[string]pcsEntry{}
		}
		p.cache[key] = pcsEntry{c: c, expires: expires}
		p.mu.Unlock()
	}
	// Already expired collateral is returned uncached: verification then
	// names the expired items, which says more than "fetch failed".
	return c, nil
}

func (p *PCS) fetch(ctx context.Context, fmspc, ca string) (*TDXCollateral, error) {
	base := IntelPCSURL
	if p.BaseURL != "" {
		base = strings.TrimRight(p.BaseURL, "/")
	}
	rootCRL := IntelRootCRLURL
	if p.RootCRLURL != "" {
		rootCRL = p.RootCRLURL
	}
	var c TDXCollateral
	for _, r := range []struct {
		url, header string
		out         *PCSResponse
	}{
		{base + "/tdx/certification/v4/tcb?fmspc=" + url.QueryEscape(fmspc), pcs.TcbInfoIssuerChainPhrase, &c.TCBInfo},
		{base + "/tdx/certification/v4/qe/identity", pcs.SgxQeIdentityIssuerChainPhrase, &c.QEIdentity},
		{base + "/sgx/certification/v4/pckcrl?ca=" + ca + "&encoding=der", pcs.SgxPckCrlIssuerChainPhrase, &c.PCKCRL},
		{rootCRL, "", &c.RootCACRL},
	} {
		h, body, err := p.get(ctx, r.url)
		if err != nil {
			return nil, err
		}
		r.out.Body = body
		if r.header != "" {
			r.out.IssuerChain = h.Get(r.header)
		}
	}
	return &c, nil
}

func (p *PCS) get(ctx context.Context, u string) (http.Header, []byte, error) {
	client := p.Client
	if client == nil {
		client = &http.Client{Timeout: 30 * time.Second}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrTDXCollateral, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: fetching %s: %v", ErrTDXCollateral, u, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, nil, fmt.Errorf("%w: %s: HTTP %d", ErrTDXCollateral, u, resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxPCSResponseSize+1))
	if err != nil {
		return nil, nil, fmt.Errorf("%w: reading %s: %v", ErrTDXCollateral, u, err)
	}
	if len(body) > MaxPCSResponseSize {
		return nil, nil, fmt.Errorf("%w: %s: response over %d bytes", ErrTooLarge, u, MaxPCSResponseSize)
	}
	return resp.Header, body, nil
}
