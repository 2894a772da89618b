// Package ekca manufactures TPMs the way a TPM vendor does, for TPMs that
// a gate makes itself (the qemu fleet's swtpm, one per VM) and for tests:
// a local CA signs the certificate of the TPM's endorsement key (EK),
// which is written to the TPM's NV at the index of the TCG EK Credential
// Profile. A gate that trusts the CA then trusts any such TPM's AK through
// credential activation, with no AK read or enrolled by hand.
//
// Why not swtpm_setup --create-ek-cert with swtpm_localca: it works
// (Debian 12, swtpm 0.7, as root and not), but it adds a second program
// chain (swtpm_setup, swtpm_localca, GnuTLS certtool) with its own
// configuration files, a lock file and a shared serial counter per CA
// directory, and its CA comes into existence only at the first VM's
// launch. Here the CA exists before any launch (the gate trusts it from
// the start), its key is an ordinary 0600 file written atomically, and the
// same code provisions the in-process simulator in unit tests, swtpm in
// the end-to-end tests and the fleet's VMs.
package ekca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"time"

	"github.com/attested-runner/attested-runner/internal/fileio"
	"github.com/google/go-tpm-tools/client"
	"github.com/google/go-tpm/legacy/tpm2"
	"github.com/google/go-tpm/tpmutil"
)

// CA is a local EK certificate authority: an ECDSA P-256 key and its
// self-signed certificate.
type CA struct {
	Cert *x509.Certificate
	key  crypto.Signer
}

// New makes a CA in memory (tests).
func New(name string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := randSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: name, Organization: []string{"attested-runner local EK CA"}},
		NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(10, 0, 0),
		IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, key: key}, nil
}

// Files of a CA directory.
const (
	CertFile = "ek-ca.pem"
	KeyFile  = "ek-ca-key.pem"
)

// LoadOrCreate loads the CA in dir (CertFile, KeyFile), creating dir
// (0700) and a new CA named name if it holds none. The key file must be
// mode 0600 or stricter.
func LoadOrCreate(dir, name string) (*CA, error) {
	certPath, keyPath := filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile)
	if _, err := os.Stat(keyPath); errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
		ca, err := New(name)
		if err != nil {
			return nil, err
		}
		der, err := x509.MarshalPKCS8PrivateKey(ca.key)
		if err != nil {
			return nil, err
		}
		// The key first: a certificate without its key is never left.
		if err := fileio.WriteFileAtomic(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
			return nil, err
		}
		if err := fileio.WriteFileAtomic(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw}), 0o644); err != nil {
			return nil, err
		}
		return ca, nil
	}
	keyPEM, err := fileio.ReadSecretFile(keyPath, 64<<10)
	if err != nil {
		return nil, fmt.Errorf("EK CA key: %w", err)
	}
	certPEM, err := fileio.ReadFile(certPath, 64<<10)
	if err != nil {
		return nil, fmt.Errorf("EK CA certificate: %w", err)
	}
	kb, _ := pem.Decode(keyPEM)
	cb, _ := pem.Decode(certPEM)
	if kb == nil || cb == nil {
		return nil, fmt.Errorf("EK CA in %s: PEM key and certificate expected", dir)
	}
	k, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("EK CA key: %w", err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("EK CA key is %T", k)
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("EK CA certificate: %w", err)
	}
	if pub, ok := cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(signer.Public()) {
		return nil, fmt.Errorf("EK CA in %s: the certificate is not for the key", dir)
	}
	return &CA{Cert: cert, key: signer}, nil
}

// EKCertValidity is how long an EK certificate made here is valid: a
// fleet VM's TPM lives for one VM's life (at most its job timeout).
const EKCertValidity = 7 * 24 * time.Hour

var (
	oidSubjectAltName  = asn1.ObjectIdentifier{2, 5, 29, 17}
	oidTPMManufacturer = asn1.ObjectIdentifier{2, 23, 133, 2, 1}
	oidTPMModel        = asn1.ObjectIdentifier{2, 23, 133, 2, 2}
	oidTPMVersion      = asn1.ObjectIdentifier{2, 23, 133, 2, 3}
	oidEKCertificate   = asn1.ObjectIdentifier{2, 23, 133, 8, 1}
)

// Issue signs an EK certificate for ek in the TCG EK Credential Profile's
// form: empty subject, the TPM's manufacturer, model and version in a
// critical subjectAltName directoryName, extended key usage
// tcg-kp-EKCertificate, not a CA.
func (ca *CA) Issue(ek crypto.PublicKey, manufacturer uint32, notAfter time.Time) ([]byte, error) {
	san, err := tpmSAN(manufacturer)
	if err != nil {
		return nil, err
	}
	serial, err := randSerial()
	if err != nil {
		return nil, err
	}
	usage := x509.KeyUsageKeyEncipherment
	if _, ok := ek.(*ecdsa.PublicKey); ok {
		usage = x509.KeyUsageKeyAgreement
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial, NotBefore: time.Now().Add(-time.Hour), NotAfter: notAfter,
		KeyUsage: usage, UnknownExtKeyUsage: []asn1.ObjectIdentifier{oidEKCertificate},
		BasicConstraintsValid: true,
		ExtraExtensions:       []pkix.Extension{{Id: oidSubjectAltName, Critical: true, Value: san}},
	}
	return x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, ek, ca.key)
}

func tpmSAN(manufacturer uint32) ([]byte, error) {
	attr := func(oid asn1.ObjectIdentifier, v string) []pkix.AttributeTypeAndValue {
		return []pkix.AttributeTypeAndValue{{Type: oid, Value: v}}
	}
	name, err := asn1.Marshal(pkix.RDNSequence{
		attr(oidTPMManufacturer, fmt.Sprintf("id:%08X", manufacturer)),
		attr(oidTPMModel, "attested-runner vTPM"),
		attr(oidTPMVersion, "id:00000001"),
	})
	if err != nil {
		return nil, err
	}
	// GeneralName directoryName is [4] EXPLICIT Name.
	return asn1.Marshal([]asn1.RawValue{{Class: asn1.ClassContextSpecific, Tag: 4, IsCompound: true, Bytes: name}})
}

func randSerial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

// Kind is which EK to certify.
type Kind int

// EK kinds: the TCG default templates.
const (
	RSA Kind = iota // RSA 2048, certificate at 0x01c00002
	ECC             // ECC NIST P-256, certificate at 0x01c0000a
)

// Index is the NV index of the kind's EK certificate.
func (k Kind) Index() uint32 {
	if k == ECC {
		return client.EKCertNVIndexECC
	}
	return client.EKCertNVIndexRSA
}

func (k Kind) template() tpm2.Public {
	if k == ECC {
		return client.DefaultEKTemplateECC()
	}
	return client.DefaultEKTemplateRSA()
}

// EKCertAttributes are the NV attributes of a provisioned EK certificate:
// created and written by the platform only, locked after writing, readable
// by owner, platform and with the index's empty authorization, no
// dictionary-attack lockout (the profile's recommendation).
const EKCertAttributes = tpm2.AttrPPWrite | tpm2.AttrWriteDefine | tpm2.AttrPPRead | tpm2.AttrOwnerRead |
	tpm2.AttrAuthRead | tpm2.AttrNoDA | tpm2.AttrPlatformCreate

// Provision manufactures a TPM reached through rw (a fresh one: its
// platform hierarchy still has the empty authorization firmware leaves
// before it locks it): it derives the EK of the kind's default template,
// has ca certify it, and writes the certificate at the kind's NV index,
// locked. It returns the certificate (DER).
func Provision(rw io.ReadWriter, ca *CA, kind Kind) ([]byte, error) {
	ek, pub, err := tpm2.CreatePrimary(rw, tpm2.HandleEndorsement, tpm2.PCRSelection{}, "", "", kind.template())
	if err != nil {
		return nil, fmt.Errorf("creating the EK: %w", err)
	}
	tpm2.FlushContext(rw, ek)
	manufacturer := uint32(0)
	if props, _, err := tpm2.GetCapability(rw, tpm2.CapabilityTPMProperties, 1, uint32(tpm2.Manufacturer)); err == nil && len(props) == 1 {
		if p, ok := props[0].(tpm2.TaggedProperty); ok {
			manufacturer = p.Value
		}
	}
	der, err := ca.Issue(pub, manufacturer, time.Now().Add(EKCertValidity))
	if err != nil {
		return nil, err
	}
	if err := WriteNV(rw, kind.Index(), EKCertAttributes, der); err != nil {
		return nil, err
	}
	return der, nil
}

// WriteNV defines an NV index under the platform hierarchy with attrs,
// writes data into it in chunks the TPM accepts, and write-locks it when
// attrs has AttrWriteDefine.
func WriteNV(rw io.ReadWriter, index uint32, attrs tpm2.NVAttr, data []byte) error {
	return writeNV(rw, tpm2.HandlePlatform, index, attrs, data)
}

// WriteOwnerNV is WriteNV under the owner hierarchy (an owner-created
// index, as a cloud's vTPM AK certificate is; attrs must not have
// AttrPlatformCreate).
func WriteOwnerNV(rw io.ReadWriter, index uint32, attrs tpm2.NVAttr, data []byte) error {
	return writeNV(rw, tpm2.HandleOwner, index, attrs, data)
}

func writeNV(rw io.ReadWriter, auth tpmutil.Handle, index uint32, attrs tpm2.NVAttr, data []byte) error {
	if len(data) == 0 || len(data) > 0xffff {
		return fmt.Errorf("NV data of %d bytes", len(data))
	}
	h := tpmutil.Handle(index)
	pw := tpm2.AuthCommand{Session: tpm2.HandlePasswordSession, Attributes: tpm2.AttrContinueSession}
	if err := tpm2.NVDefineSpaceEx(rw, auth, "", tpm2.NVPublic{NVIndex: h, NameAlg: tpm2.AlgSHA256, Attributes: attrs, DataSize: uint16(len(data))}, pw); err != nil {
		return fmt.Errorf("defining NV index %#x: %w", index, err)
	}
	writer := auth
	if attrs&(tpm2.AttrPPWrite|tpm2.AttrOwnerWrite) == 0 {
		writer = h
	}
	const chunk = 512 // below every TPM's TPM_PT_NV_BUFFER_MAX (swtpm: 1024+)
	for off := 0; off < len(data); off += chunk {
		end := min(off+chunk, len(data))
		if err := tpm2.NVWrite(rw, writer, h, "", data[off:end], uint16(off)); err != nil {
			return fmt.Errorf("writing NV index %#x at %d: %w", index, off, err)
		}
	}
	if attrs&tpm2.AttrWriteDefine != 0 {
		if err := tpm2.NVWriteLock(rw, writer, h, ""); err != nil {
			return fmt.Errorf("locking NV index %#x: %w", index, err)
		}
	}
	return nil
}

// CRL signs a CRL revoking the certificates of the given serials, due for
// its next update at next (DER).
func (ca *CA) CRL(next time.Time, serials ...*big.Int) ([]byte, error) {
	var entries []x509.RevocationListEntry
	now := time.Now()
	for _, s := range serials {
		entries = append(entries, x509.RevocationListEntry{SerialNumber: s, RevocationTime: now.Add(-time.Minute)})
	}
	number, err := randSerial()
	if err != nil {
		return nil, err
	}
	return x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number: number, ThisUpdate: now.Add(-time.Hour), NextUpdate: next, RevokedCertificateEntries: entries,
	}, ca.Cert, ca.key)
}
