package attest

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"time"
)

// NV indices of the EK certificates (TCG EK Credential Profile 2.0,
// 2.2.1.4: low range), the ones go-tpm-tools' client reads too.
const (
	// EKCertNVIndexRSA holds the certificate of the RSA 2048 EK made from
	// the default template (profile template L-1).
	EKCertNVIndexRSA = 0x01c00002
	// EKCertNVIndexECC holds the certificate of the ECC NIST P-256 EK
	// made from the default template (L-2).
	EKCertNVIndexECC = 0x01c0000a
)

// Size limits of EK enrollment inputs. EK certificates are 1-2 KiB; CRLs
// of TPM vendors are a few KiB to a few hundred.
const (
	MaxEKCertificateSize = 8 << 10
	MaxCRLSize           = 4 << 20
)

// EKTrust is what an EK certificate must chain to. Only Roots are trust
// anchors; Intermediates help build chains. CRLs are checked for every
// certificate of the chain whose issuer has one here; a certificate whose
// issuer has none is not checked for revocation.
type EKTrust struct {
	Roots         []*x509.Certificate
	Intermediates []*x509.Certificate
	CRLs          []*x509.RevocationList
}

// Empty reports whether t trusts no EK.
func (t *EKTrust) Empty() bool { return t == nil || len(t.Roots) == 0 }

// EKCertificate is an EK certificate that VerifyEKCertificate accepted.
type EKCertificate struct {
	Cert *x509.Certificate
	// PublicKey is the EK: *rsa.PublicKey (2048 bits) or *ecdsa.PublicKey
	// (P-256), the keys of the profile's default templates.
	PublicKey crypto.PublicKey
	// Digest is the hex SHA-256 of the DER certificate (logs, audit).
	Digest string
}

var oidSubjectAltName = asn1.ObjectIdentifier{2, 5, 29, 17}

// VerifyEKCertificate checks an EK certificate (DER) against t at time now:
//   - it parses, within MaxEKCertificateSize, with nothing after it
//     (ErrTooLarge, ErrMalformedEvidence);
//   - its key is an RSA 2048 or ECC P-256 key, the EKs of the default
//     templates, which credential activation supports (ErrEKUntrusted);
//   - it is within its validity period (ErrEKExpired);
//   - it chains to one of t.Roots through t.Intermediates, every
//     certificate of the chain valid at now (ErrEKUntrusted, ErrEKExpired);
//   - no CRL of t whose issuer is on the chain lists a certificate of the
//     chain (ErrEKRevoked), and every such CRL is current (ErrEKCRLExpired).
//
// The TCG profile puts the TPM's manufacturer, model and version in a
// critical subjectAltName of directoryName form that Go does not parse;
// that extension is accepted, any other unhandled critical one is not.
// It does NOT check that the TPM holding the certificate owns the EK: that
// is what credential activation proves.
func VerifyEKCertificate(der []byte, t *EKTrust, now time.Time) (*EKCertificate, error) {
	ek, err := ParseEKCertificate(der)
	if err != nil {
		return nil, err
	}
	cert, pub := ek.Cert, ek.PublicKey
	name := ek.Digest[:16]
	if now.Before(cert.NotBefore) || now.After(cert.NotAfter) {
		return nil, fmt.Errorf("%w: EK certificate %s is valid from %s to %s, not at %s", ErrEKExpired, name,
			cert.NotBefore.Format(time.RFC3339), cert.NotAfter.Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	if t.Empty() {
		return nil, fmt.Errorf("%w: no EK root is configured", ErrEKUntrusted)
	}
	// Verify on a copy: cert is returned to the caller unchanged.
	leaf := *cert
	leaf.UnhandledCriticalExtensions = slices.DeleteFunc(slices.Clone(cert.UnhandledCriticalExtensions), func(oid asn1.ObjectIdentifier) bool {
		return oid.Equal(oidSubjectAltName)
	})
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	for _, r := range t.Roots {
		roots.AddCert(r)
	}
	for _, c := range t.Intermediates {
		inter.AddCert(c)
	}
	chains, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	if err != nil {
		var inv x509.CertificateInvalidError
		if errors.As(err, &inv) && inv.Reason == x509.Expired {
			return nil, fmt.Errorf("%w: EK certificate %s: %v", ErrEKExpired, name, err)
		}
		return nil, fmt.Errorf("%w: EK certificate %s (issuer %q): %v", ErrEKUntrusted, name, cert.Issuer.String(), err)
	}
	if err := checkRevocation(chains, t.CRLs, now); err != nil {
		return nil, fmt.Errorf("EK certificate %s: %w", name, err)
	}
	return &EKCertificate{Cert: cert, PublicKey: pub, Digest: ek.Digest}, nil
}

// ParseEKCertificate parses an EK certificate (DER) and checks its form
// only: within MaxEKCertificateSize, nothing after it (ErrTooLarge,
// ErrMalformedEvidence), an RSA 2048 or ECC P-256 key (ErrEKUntrusted).
// It checks NO signature, validity or chain: the result is not trusted
// until VerifyEKCertificate accepts the same bytes. (A gate makes a
// credential under it at challenge time; the credential is worth nothing
// unless admission verifies the certificate.)
func ParseEKCertificate(der []byte) (*EKCertificate, error) {
	if len(der) > MaxEKCertificateSize {
		return nil, fmt.Errorf("%w: EK certificate is %d bytes, limit %d", ErrTooLarge, len(der), MaxEKCertificateSize)
	}
	if len(der) == 0 {
		return nil, fmt.Errorf("%w: no EK certificate", ErrMalformedEvidence)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("%w: EK certificate: %v", ErrMalformedEvidence, err)
	}
	if !bytes.Equal(cert.Raw, der) {
		return nil, fmt.Errorf("%w: data after the EK certificate", ErrMalformedEvidence)
	}
	pub, err := ekPublicKey(cert)
	if err != nil {
		return nil, err
	}
	d := sha256.Sum256(der)
	return &EKCertificate{Cert: cert, PublicKey: pub, Digest: hex.EncodeToString(d[:])}, nil
}

// ekPublicKey returns the certificate's key if it is an EK credential
// activation works with here: the default templates' RSA 2048 and P-256
// (both SHA-256 names and AES-128 protection, which credactivation's
// 16-byte symmetric seed matches).
func ekPublicKey(cert *x509.Certificate) (crypto.PublicKey, error) {
	switch k := cert.PublicKey.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() == 2048 {
			return k, nil
		}
		return nil, fmt.Errorf("%w: RSA EK of %d bits (only the 2048-bit default EK is supported)", ErrEKUntrusted, k.N.BitLen())
	case *ecdsa.PublicKey:
		if k.Curve == elliptic.P256() {
			return k, nil
		}
		return nil, fmt.Errorf("%w: ECC EK on %s (only the P-256 default EK is supported)", ErrEKUntrusted, k.Curve.Params().Name)
	}
	return nil, fmt.Errorf("%w: EK key is %T", ErrEKUntrusted, cert.PublicKey)
}

// checkRevocation passes if some chain has no revoked certificate. Each
// certificate below the root is looked up in the CRL of its issuer (same
// issuer name, signed by the issuer's key); a stale CRL fails closed.
func checkRevocation(chains [][]*x509.Certificate, crls []*x509.RevocationList, now time.Time) error {
	if len(crls) == 0 {
		return nil
	}
	var first error
	for _, chain := range chains {
		err := chainRevocation(chain, crls, now)
		if err == nil {
			return nil
		}
		if first == nil {
			first = err
		}
	}
	return first
}

func chainRevocation(chain []*x509.Certificate, crls []*x509.RevocationList, now time.Time) error {
	for i := 0; i+1 < len(chain); i++ {
		c, issuer := chain[i], chain[i+1]
		for _, crl := range crls {
			if !bytes.Equal(crl.RawIssuer, c.RawIssuer) {
				continue
			}
			if err := crl.CheckSignatureFrom(issuer); err != nil {
				// Another CA of the same name: not this issuer's list.
				continue
			}
			if !crl.NextUpdate.IsZero() && now.After(crl.NextUpdate) {
				return fmt.Errorf("%w: the CRL of %q was due for an update at %s", ErrEKCRLExpired, issuer.Subject.String(), crl.NextUpdate.Format(time.RFC3339))
			}
			for _, e := range crl.RevokedCertificateEntries {
				if e.SerialNumber != nil && e.SerialNumber.Cmp(c.SerialNumber) == 0 {
					return fmt.Errorf("%w: serial %s revoked by %q at %s", ErrEKRevoked, c.SerialNumber, issuer.Subject.String(), e.RevocationTime.Format(time.RFC3339))
				}
			}
		}
	}
	return nil
}

// ParseCRL parses a DER or PEM X.509 CRL (policy.ekCRLs).
func ParseCRL(b []byte) (*x509.RevocationList, error) {
	if len(b) > MaxCRLSize {
		return nil, fmt.Errorf("%w: CRL is %d bytes, limit %d", ErrTooLarge, len(b), MaxCRLSize)
	}
	if blk, _ := pem.Decode(b); blk != nil && blk.Type == "X509 CRL" {
		b = blk.Bytes
	}
	crl, err := x509.ParseRevocationList(b)
	if err != nil {
		return nil, fmt.Errorf("CRL: %w", err)
	}
	return crl, nil
}

// LoadCRL reads a CRL file (DER or PEM).
func LoadCRL(path string) (*x509.RevocationList, error) {
	b, err := readLimited(path, MaxCRLSize)
	if err != nil {
		return nil, err
	}
	crl, err := ParseCRL(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return crl, nil
}

// CheckCRLIssuers refuses CRLs that no configured CA signed: a CRL that
// matches no issuer would silently check nothing.
func (t *EKTrust) CheckCRLIssuers() error {
	for _, crl := range t.CRLs {
		ok := false
		for _, ca := range append(slices.Clone(t.Roots), t.Intermediates...) {
			if bytes.Equal(crl.RawIssuer, ca.RawSubject) && crl.CheckSignatureFrom(ca) == nil {
				ok = true
				break
			}
		}
		if !ok {
			return fmt.Errorf("the CRL of %q is not signed by any configured EK root or intermediate", crl.Issuer.String())
		}
	}
	return nil
}

// TrimDER returns the DER object at the start of b: NV indices are often
// larger than the certificate they hold, padded after it.
func TrimDER(b []byte) ([]byte, error) {
	var raw asn1.RawValue
	if _, err := asn1.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("%w: not DER: %v", ErrMalformedEvidence, err)
	}
	return raw.FullBytes, nil
}
