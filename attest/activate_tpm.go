package attest

import (
	"crypto"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/google/go-tpm-tools/client"
	"github.com/google/go-tpm/legacy/tpm2"
	"github.com/google/go-tpm/tpmutil"
)

// ActivationRequest is what an agent asks a gate for a credential with:
// its TPM's EK certificate and its AK's public area.
type ActivationRequest struct {
	// EKCertificate is the DER EK certificate read from the TPM's NV.
	EKCertificate []byte `json:"ekCertificate"`
	// AKPublic is the AK's TPMT_PUBLIC.
	AKPublic []byte `json:"akPublic"`
}

// EKActivator is a Collector whose TPM can prove its AK with the EK
// (credential activation). TPMCollector is one.
type EKActivator interface {
	// ActivationRequest returns the TPM's EK certificate and the AK's
	// public area, or nil when the TPM has no EK certificate.
	ActivationRequest() (*ActivationRequest, error)
	// ActivateCredential recovers a credential's secret with
	// TPM2_ActivateCredential: the EK of ActivationRequest's certificate
	// decrypts it, for the AK only.
	ActivateCredential(*Credential) ([]byte, error)
}

// maxCredentialPart bounds each part of a credential the agent hands to
// its TPM (an RSA 2048 EK's encrypted seed is 258 bytes, an ID object 68).
const maxCredentialPart = 1024

// ReadEKCertificate reads the EK certificate (or any DER certificate, such
// as Azure's AK certificate) at an NV index (owner authorization, then the
// index's own, both empty), without the padding NV indices often have
// after it. It returns an error wrapping
// ErrNoEKCertificate when the index does not exist.
func ReadEKCertificate(rw io.ReadWriter, index uint32) ([]byte, error) {
	b, err := readNV(rw, index, MaxEKCertificateSize)
	if errors.Is(err, errNoNVIndex) {
		return nil, fmt.Errorf("%w: %w", ErrNoEKCertificate, err)
	}
	if err != nil {
		return nil, err
	}
	return TrimDER(b)
}

// errNoNVIndex: the TPM has no such NV index.
var errNoNVIndex = errors.New("no such NV index")

// readNV reads an NV index of at most limit bytes (owner authorization,
// then the index's own, both empty).
func readNV(rw io.ReadWriter, index uint32, limit int) ([]byte, error) {
	h := tpmutil.Handle(index)
	pub, err := tpm2.NVReadPublic(rw, h)
	if err != nil {
		return nil, fmt.Errorf("%w: %#x: %v", errNoNVIndex, index, err)
	}
	if pub.DataSize == 0 || int(pub.DataSize) > limit {
		return nil, fmt.Errorf("%w: NV index %#x holds %d bytes", ErrTooLarge, index, pub.DataSize)
	}
	b, err := tpm2.NVReadEx(rw, h, tpm2.HandleOwner, "", 0)
	if err != nil {
		if b, err = tpm2.NVReadEx(rw, h, h, "", 0); err != nil {
			return nil, fmt.Errorf("reading NV index %#x: %w", index, err)
		}
	}
	return b, nil
}

// ErrNoEKCertificate: the TPM has no EK certificate at the index.
var ErrNoEKCertificate = errors.New("no EK certificate")

// ActivationRequest implements EKActivator: the certificate of the RSA EK
// if the TPM has one, else that of the ECC P-256 EK.
func (t *TPMCollector) ActivationRequest() (*ActivationRequest, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, errors.New("collector closed")
	}
	var cert []byte
	for _, idx := range []uint32{EKCertNVIndexRSA, EKCertNVIndexECC} {
		b, err := ReadEKCertificate(t.rw, idx)
		if errors.Is(err, ErrNoEKCertificate) {
			continue
		}
		if err != nil {
			return nil, err
		}
		cert = b
		break
	}
	if cert == nil {
		return nil, nil
	}
	area, err := t.ak.PublicArea().Encode()
	if err != nil {
		return nil, err
	}
	t.ekCert = cert
	return &ActivationRequest{EKCertificate: cert, AKPublic: area}, nil
}

// ActivateCredential implements EKActivator. The EK is made again from its
// default template (a primary key: the same key for the same seed, which
// is what the certificate certifies; nothing is persisted) and used with
// its policy, PolicySecret(endorsement), as TPM2_ActivateCredential's key;
// the AK, with its empty authorization, is the object the credential is
// for. The TPM checks the credential's integrity and that it names the AK.
func (t *TPMCollector) ActivateCredential(c *Credential) ([]byte, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, errors.New("collector closed")
	}
	if t.ekCert == nil {
		return nil, errors.New("no EK certificate read: call ActivationRequest first")
	}
	if c == nil {
		return nil, fmt.Errorf("%w: no credential", ErrMalformedEvidence)
	}
	id, err := unwrapTPM2B(c.IDObject)
	if err != nil {
		return nil, fmt.Errorf("credential ID object: %w", err)
	}
	enc, err := unwrapTPM2B(c.EncryptedSecret)
	if err != nil {
		return nil, fmt.Errorf("credential encrypted secret: %w", err)
	}
	cert, err := x509.ParseCertificate(t.ekCert)
	if err != nil {
		return nil, fmt.Errorf("the TPM's EK certificate: %w", err)
	}
	certKey, ok := cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok {
		return nil, fmt.Errorf("EK certificate key %T", cert.PublicKey)
	}
	tmpl := client.DefaultEKTemplateRSA()
	if cert.PublicKeyAlgorithm == x509.ECDSA {
		tmpl = client.DefaultEKTemplateECC()
	}
	ek, _, err := tpm2.CreatePrimary(t.rw, tpm2.HandleEndorsement, tpm2.PCRSelection{}, "", "", tmpl)
	if err != nil {
		return nil, fmt.Errorf("creating the EK: %w", err)
	}
	defer tpm2.FlushContext(t.rw, ek)
	ekPub, _, _, err := tpm2.ReadPublic(t.rw, ek)
	if err != nil {
		return nil, err
	}
	key, err := ekPub.Key()
	if err != nil {
		return nil, err
	}
	if !certKey.Equal(key) {
		return nil, errors.New("the EK certificate in NV is not for this TPM's default-template EK")
	}
	sess, err := client.NewEKSession(t.rw)
	if err != nil {
		return nil, fmt.Errorf("EK policy session: %w", err)
	}
	defer sess.Close()
	ekAuth, err := sess.Auth()
	if err != nil {
		return nil, fmt.Errorf("EK policy session: %w", err)
	}
	akAuth := tpm2.AuthCommand{Session: tpm2.HandlePasswordSession, Attributes: tpm2.AttrContinueSession}
	secret, err := tpm2.ActivateCredentialUsingAuth(t.rw, []tpm2.AuthCommand{akAuth, ekAuth}, t.ak.Handle(), ek, id, enc)
	if err != nil {
		return nil, fmt.Errorf("TPM2_ActivateCredential: %w", err)
	}
	return secret, nil
}

// unwrapTPM2B returns the body of a TPM2B structure (a 2-byte big-endian
// size, then exactly that many bytes).
func unwrapTPM2B(b []byte) ([]byte, error) {
	if len(b) > maxCredentialPart+2 {
		return nil, fmt.Errorf("%w: %d bytes", ErrTooLarge, len(b))
	}
	if len(b) < 2 || int(binary.BigEndian.Uint16(b)) != len(b)-2 || len(b) == 2 {
		return nil, fmt.Errorf("%w: not a TPM2B structure", ErrMalformedEvidence)
	}
	return b[2:], nil
}
