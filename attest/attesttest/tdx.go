package attesttest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/google/go-tdx-guest/abi"
	tdxpb "github.com/google/go-tdx-guest/proto/tdx"
	"github.com/google/go-tdx-guest/verify"
	"google.golang.org/protobuf/proto"
)

// TDXSigner signs TDX v4 quotes as a TD's quoting enclave would, with a PCK
// certificate chain under a test root that stands in for Intel's SGX root CA
// (trust it with attest.Policy.TrustedTDXRoots). It starts from a real quote
// and lets a test change any field of the TD's report: a DEBUG TD, another
// REPORTDATA, other RTMRs. Certificates are valid from a day before it was
// made to a day after.
type TDXSigner struct {
	// Roots holds the test root CA.
	Roots *x509.CertPool
	// PCK is the PCK leaf certificate quotes are signed under.
	PCK *x509.Certificate

	template  *tdxpb.QuoteV4
	chainPEM  []byte
	pckKey    *ecdsa.PrivateKey
	attestKey *ecdsa.PrivateKey
	root      *x509.Certificate
	rootKey   *ecdsa.PrivateKey
	inter     *x509.Certificate
	interKey  *ecdsa.PrivateKey
}

var oidAuthorityKeyID = asn1.ObjectIdentifier{2, 5, 29, 35}

// NewTDXSigner returns a signer whose quotes are copies of template (a raw
// v4 quote) re-signed under a fresh test chain. The PCK leaf carries the
// template PCK's extensions (FMSPC, TCB levels), as go-tdx-guest requires.
func NewTDXSigner(template []byte) (*TDXSigner, error) {
	q, err := abi.QuoteToProto(template)
	if err != nil {
		return nil, err
	}
	tq, ok := q.(*tdxpb.QuoteV4)
	if !ok {
		return nil, fmt.Errorf("template is a %T, want a v4 quote", q)
	}
	chain, err := verify.ExtractChainFromQuote(tq)
	if err != nil {
		return nil, err
	}
	s := &TDXSigner{template: tq}
	now := time.Now()
	ca := func(cn string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey, error) {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, nil, err
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(now.UnixNano()), Subject: pkix.Name{CommonName: cn},
			NotBefore: now.Add(-24 * time.Hour), NotAfter: now.Add(24 * time.Hour),
			IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
			// Where go-tdx-guest looks for the root CA CRL.
			CRLDistributionPoints: []string{"https://certificates.trustedservices.intel.com/IntelSGXRootCA.der"},
		}
		if parent == nil {
			parent, parentKey = tmpl, k
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &k.PublicKey, parentKey)
		if err != nil {
			return nil, nil, err
		}
		c, err := x509.ParseCertificate(der)
		return c, k, err
	}
	root, rootKey, err := ca("Intel SGX Root CA", nil, nil)
	if err != nil {
		return nil, err
	}
	inter, interKey, err := ca("Intel SGX PCK Platform CA", root, rootKey)
	if err != nil {
		return nil, err
	}
	if s.pckKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		return nil, err
	}
	leaf := &x509.Certificate{
		SerialNumber: big.NewInt(now.UnixNano()), Subject: pkix.Name{CommonName: "Intel SGX PCK Certificate"},
		NotBefore: now.Add(-24 * time.Hour), NotAfter: now.Add(24 * time.Hour),
	}
	for _, e := range chain.PCKCertificate.Extensions {
		if !e.Id.Equal(oidAuthorityKeyID) { // made for our intermediate
			leaf.ExtraExtensions = append(leaf.ExtraExtensions, e)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, leaf, inter, &s.pckKey.PublicKey, interKey)
	if err != nil {
		return nil, err
	}
	if s.PCK, err = x509.ParseCertificate(der); err != nil {
		return nil, err
	}
	s.root, s.rootKey, s.inter, s.interKey = root, rootKey, inter, interKey
	s.chainPEM = chainPEM(s.PCK, inter, root)
	s.Roots = x509.NewCertPool()
	s.Roots.AddCert(root)
	if s.attestKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		return nil, err
	}
	return s, nil
}

// WithExpiredRootCopy returns a signer whose quotes embed, as the last
// certificate of their PCK chain, a copy of the root (same subject, same
// key) that expired an hour ago. go-tdx-guest checks the embedded
// certificates' expiry itself, besides the chain it verifies to the trusted
// root.
func (s *TDXSigner) WithExpiredRootCopy() (*TDXSigner, error) {
	now := time.Now()
	tmpl := *s.root
	tmpl.NotBefore, tmpl.NotAfter = now.Add(-48*time.Hour), now.Add(-time.Hour)
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, &tmpl, &s.rootKey.PublicKey, s.rootKey)
	if err != nil {
		return nil, err
	}
	expired, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	out := *s
	out.chainPEM = chainPEM(s.PCK, s.inter, expired)
	return &out, nil
}

func chainPEM(certs ...*x509.Certificate) []byte {
	var b []byte
	for _, c := range certs {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return b
}

// RootPEM is the test root CA in PEM, as a consumer would be given it.
func (s *TDXSigner) RootPEM() []byte { return chainPEM(s.root) }

// Template is a copy of the TD report the signer starts from.
func (s *TDXSigner) Template() *tdxpb.TDQuoteBody {
	return proto.Clone(s.template.GetTdQuoteBody()).(*tdxpb.TDQuoteBody)
}

// Sign returns a raw quote of the template's TD report after edit (if not
// nil) has changed it, signed by a fresh attestation key certified by the
// quoting enclave's report, which the PCK key signs.
func (s *TDXSigner) Sign(edit func(*tdxpb.TDQuoteBody)) ([]byte, error) {
	q := proto.Clone(s.template).(*tdxpb.QuoteV4)
	if edit != nil {
		edit(q.TdQuoteBody)
	}
	sd := q.SignedData
	sd.EcdsaAttestationKey = append(s.attestKey.X.FillBytes(make([]byte, 32)), s.attestKey.Y.FillBytes(make([]byte, 32))...)
	qe := sd.CertificationData.QeReportCertificationData
	qe.PckCertificateChainData.PckCertChain = s.chainPEM
	qe.PckCertificateChainData.Size = uint32(len(s.chainPEM))
	// The QE report binds the attestation key: REPORTDATA is
	// SHA-256(attestation key || QE auth data), zero-padded.
	h := sha256.Sum256(append(append([]byte(nil), sd.EcdsaAttestationKey...), qe.GetQeAuthData().GetData()...))
	qe.QeReport.ReportData = append(h[:], make([]byte, 32)...)
	report, err := abi.EnclaveReportToAbiBytes(qe.QeReport)
	if err != nil {
		return nil, err
	}
	if qe.QeReportSignature, err = rawSign(s.pckKey, report); err != nil {
		return nil, err
	}
	if err := fixSizes(q); err != nil {
		return nil, err
	}
	header, err := abi.HeaderToAbiBytes(q.Header)
	if err != nil {
		return nil, err
	}
	body, err := abi.TdQuoteBodyToAbiBytes(q.TdQuoteBody)
	if err != nil {
		return nil, err
	}
	if sd.Signature, err = rawSign(s.attestKey, append(header, body...)); err != nil {
		return nil, err
	}
	return abi.QuoteToAbiBytes(q)
}

// fixSizes sets the signed data and certification data sizes from the
// encoded length of what they hold (the PCK chain is not the template's).
func fixSizes(q *tdxpb.QuoteV4) error {
	b, err := abi.QuoteToAbiBytes(q)
	if err != nil {
		return err
	}
	const (
		signedDataStart    = 48 + 584 + 4 // header, TD report, signed data size
		certificationStart = 64 + 64 + 6  // signature, attestation key, type and size
	)
	signed := len(b) - signedDataStart - len(q.GetExtraBytes())
	if signed <= certificationStart {
		return errors.New("quote too short")
	}
	q.SignedDataSize = uint32(signed)
	q.SignedData.CertificationData.Size = uint32(signed - certificationStart)
	return nil
}

// rawSign is the quote's signature format: r || s, 32 bytes each, of the
// SHA-256 of msg.
func rawSign(k *ecdsa.PrivateKey, msg []byte) ([]byte, error) {
	d := sha256.Sum256(msg)
	r, s, err := ecdsa.Sign(rand.Reader, k, d[:])
	if err != nil {
		return nil, err
	}
	return append(r.FillBytes(make([]byte, 32)), s.FillBytes(make([]byte, 32))...), nil
}

// WithQE returns a signer whose quotes carry the template's quoting
// enclave report after edit changed it (another MRSIGNER, ISVPRODID or
// ISVSVN), still signed by the PCK key: a quote from another enclave that
// holds a valid PCK chain.
func (s *TDXSigner) WithQE(edit func(*tdxpb.EnclaveReport)) *TDXSigner {
	out := *s
	out.template = proto.Clone(s.template).(*tdxpb.QuoteV4)
	edit(out.template.GetSignedData().GetCertificationData().GetQeReportCertificationData().GetQeReport())
	return &out
}
