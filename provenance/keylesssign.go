package provenance

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/go-openapi/runtime"
	httptransport "github.com/go-openapi/runtime/client"
	"github.com/go-openapi/strfmt"
	rekorclient "github.com/sigstore/rekor/pkg/generated/client"
	rekorutil "github.com/sigstore/rekor/pkg/util"
	"github.com/sigstore/sigstore-go/pkg/fulcio/certificate"
	"github.com/sigstore/sigstore-go/pkg/sign"
)

// Limits of the keyless exchange: every byte read from Fulcio, Rekor or
// an OIDC token endpoint is bounded.
const (
	// MaxIDTokenSize bounds a job's OIDC token (GitHub's are ~1.5 KB).
	MaxIDTokenSize = 16 << 10
	// maxSigstoreResponse bounds a Fulcio or Rekor answer (sigstore-go's
	// Fulcio client reads at most 1 MiB itself).
	maxSigstoreResponse = 1 << 20
	// defaultSigstoreTimeout bounds one Fulcio or Rekor request.
	defaultSigstoreTimeout = 30 * time.Second
)

// Keyless says where, and as whom, the environment key is certified for a
// keyless bundle. The gate's policy names the instances; the token comes
// from the job.
type Keyless struct {
	// FulcioURL and RekorURL are the Sigstore instances (public good:
	// https://fulcio.sigstore.dev and https://rekor.sigstore.dev, or
	// private ones). Rekor speaks the v1 API (POST /api/v1/log/entries).
	FulcioURL, RekorURL string
	// ExpectedIssuer, optional, is the OIDC issuer the certificate must
	// name; default ActionsIssuerFor(the job's server).
	ExpectedIssuer string
	// IDToken is the job's OIDC token (audience sigstore). It is a bearer
	// credential for its lifetime: it goes to Fulcio and nowhere else, and
	// no error or log line carries it.
	IDToken string
	// Transport, optional, carries the requests (a private instance's CA,
	// tests). Default http.DefaultTransport.
	Transport http.RoundTripper
	// Timeout bounds each request (default 30 s).
	Timeout time.Duration

	// unsafeSkipIdentityCheck lets tests make the bundle a subverted agent
	// could make, to show that the verifier refuses it (export_test.go).
	unsafeSkipIdentityCheck bool
}

func (k *Keyless) check() error {
	for _, u := range []struct{ name, url string }{{"Fulcio", k.FulcioURL}, {"Rekor", k.RekorURL}} {
		p, err := url.Parse(u.url)
		if err != nil || (p.Scheme != "https" && p.Scheme != "http") || p.Host == "" {
			return fmt.Errorf("%w: %s URL %q is not an http(s) URL", ErrKeyless, u.name, u.url)
		}
	}
	return checkIDToken(k.IDToken)
}

// checkIDToken refuses what cannot be a JWT, without echoing any of it.
func checkIDToken(tok string) error {
	switch {
	case tok == "":
		return fmt.Errorf("%w: %w: no OIDC token", ErrKeyless, ErrIDToken)
	case len(tok) > MaxIDTokenSize:
		return fmt.Errorf("%w: %w: %d bytes, limit %d", ErrKeyless, ErrIDToken, len(tok), MaxIDTokenSize)
	case strings.Count(tok, ".") != 2 || strings.ContainsFunc(tok, func(r rune) bool {
		return !(r == '.' || r == '-' || r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z')
	}):
		return fmt.Errorf("%w: %w: not a compact JWT", ErrKeyless, ErrIDToken)
	}
	return nil
}

func (k *Keyless) timeout() time.Duration {
	if k.Timeout > 0 {
		return k.Timeout
	}
	return defaultSigstoreTimeout
}

func (k *Keyless) transport() http.RoundTripper {
	rt := k.Transport
	if rt == nil {
		rt = http.DefaultTransport
	}
	return limitedTransport{rt, maxSigstoreResponse}
}

// SignKeyless is Sign for a job that handed over its OIDC token: Fulcio
// certifies the environment key for the job's workflow identity (the
// proof of possession is signed by the environment key itself), the
// certificate is checked against the job the agent recorded, and only
// then is the provenance signed, by that key, and recorded in Rekor. The
// bundle carries the certificate and the transparency log entry; the
// statement still carries the environment certificate and the
// response-time quote.
//
// It refuses to sign (ErrCertificateKey, ErrCertificateIdentity) when the
// certificate is for another key or names another job, issuer or runner
// environment than b.Job, and fails (ErrKeyless) when Fulcio or Rekor do.
func SignKeyless(ctx context.Context, b *Build, key crypto.Signer, q Quoter, k *Keyless) ([]byte, error) {
	if err := k.check(); err != nil {
		return nil, err
	}
	kp, err := NewKeypair(key)
	if err != nil {
		return nil, err
	}
	der, err := k.certify(ctx, kp, b.Job)
	if err != nil {
		return nil, err
	}
	st, err := b.statement()
	if err != nil {
		return nil, err
	}
	payload, err := attachQuote(st, q, attest.StatementChallenge, provenanceQuote)
	if err != nil {
		return nil, err
	}
	rc, err := rekorEntries(k.RekorURL, k.transport(), k.timeout())
	if err != nil {
		return nil, err
	}
	rekor := sign.NewRekor(&sign.RekorOptions{BaseURL: k.RekorURL, Timeout: k.timeout(), Client: rc, Version: 1})
	pb, err := sign.Bundle(&sign.DSSEData{Data: payload, PayloadType: InTotoPayloadType}, kp, sign.BundleOptions{
		Context:                    ctx,
		CertificateProvider:        issuedCertificate(der),
		CertificateProviderOptions: &sign.CertificateProviderOptions{},
		TransparencyLogs:           []sign.Transparency{rekor},
	})
	if err != nil {
		return nil, fmt.Errorf("%w: transparency log: %v", ErrKeyless, err)
	}
	if n := len(pb.GetVerificationMaterial().GetTlogEntries()); n != 1 {
		return nil, fmt.Errorf("%w: %d transparency log entries, want 1", ErrKeyless, n)
	}
	return bundleJSON(pb)
}

// certify has Fulcio certify the environment key for the token's identity
// and checks the certificate before anything is signed with it: it must be
// for this key, from the expected issuer, for the recorded job (the token
// came from the job, which is hostile: it could hold another workflow's).
func (k *Keyless) certify(ctx context.Context, kp *Keypair, j Job) ([]byte, error) {
	f := sign.NewFulcio(&sign.FulcioOptions{BaseURL: strings.TrimSuffix(k.FulcioURL, "/"), Timeout: k.timeout(), Retries: 1, Transport: k.transport()})
	der, err := f.GetCertificate(ctx, kp, &sign.CertificateProviderOptions{IDToken: k.IDToken})
	if err != nil {
		return nil, fmt.Errorf("%w: Fulcio: %v", ErrKeyless, redact(err, k.IDToken))
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("%w: Fulcio's certificate: %v", ErrKeyless, err)
	}
	if pub, ok := cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(kp.GetPublicKey()) {
		return nil, fmt.Errorf("%w: Fulcio certified %s, the environment key is %s", ErrCertificateKey, keyName(cert.PublicKey), keyName(kp.GetPublicKey()))
	}
	ext, err := certificate.ParseExtensions(cert.Extensions)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCertificateIdentity, err)
	}
	if k.unsafeSkipIdentityCheck {
		return der, nil
	}
	if err := checkExtensions(ext, j); err != nil {
		return nil, err
	}
	issuer := k.ExpectedIssuer
	if issuer == "" {
		issuer = ActionsIssuerFor(j.ServerURL)
	}
	if ext.Issuer != issuer {
		return nil, fmt.Errorf("%w: issuer is %q, want %q", ErrCertificateIdentity, ext.Issuer, issuer)
	}
	return der, nil
}

// redact removes the token from an error's text, in case a server echoed
// it back.
func redact(err error, secret string) error {
	if secret == "" || !strings.Contains(err.Error(), secret) {
		return err
	}
	return errors.New(strings.ReplaceAll(err.Error(), secret, "[token]"))
}

// issuedCertificate hands sign.Bundle the certificate certify already
// obtained and checked.
type issuedCertificate []byte

func (c issuedCertificate) GetCertificate(context.Context, sign.Keypair, *sign.CertificateProviderOptions) ([]byte, error) {
	return c, nil
}

// rekorEntries is Rekor's generated v1 client over rt, so that its
// answers are size-limited too (rekor's own constructor takes no
// transport).
func rekorEntries(base string, rt http.RoundTripper, timeout time.Duration) (sign.RekorClient, error) {
	u, err := url.Parse(base)
	if err != nil {
		return nil, fmt.Errorf("%w: Rekor URL: %v", ErrKeyless, err)
	}
	path := u.Path
	if path == "" {
		path = rekorclient.DefaultBasePath
	}
	t := httptransport.NewWithClient(u.Host, path, []string{u.Scheme}, &http.Client{Transport: rt, Timeout: timeout})
	t.Consumers["application/json"] = runtime.JSONConsumer()
	t.Producers["application/json"] = runtime.JSONProducer()
	reg := strfmt.Default
	reg.Add("signedCheckpoint", &rekorutil.SignedNote{}, rekorutil.SignedCheckpointValidator)
	return rekorclient.New(t, reg).Entries, nil
}

// limitedTransport fails any response body longer than max.
type limitedTransport struct {
	rt  http.RoundTripper
	max int64
}

func (l limitedTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := l.rt.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	resp.Body = &limitedBody{rc: resp.Body, left: l.max, max: l.max}
	return resp, nil
}

type limitedBody struct {
	rc        io.ReadCloser
	left, max int64
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		// One byte more says whether the body really is over the limit.
		var one [1]byte
		switch _, err := io.ReadFull(b.rc, one[:]); {
		case err == nil:
			return 0, fmt.Errorf("%w: response over %d bytes", ErrTooLarge, b.max)
		case errors.Is(err, io.EOF):
			return 0, io.EOF
		default:
			return 0, err
		}
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	return n, err
}

func (b *limitedBody) Close() error { return b.rc.Close() }
