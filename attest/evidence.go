package attest

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/google/go-sev-guest/abi"
)

// EvidenceFormat identifies version 1 of the evidence document.
const EvidenceFormat = "https://github.com/attested-runner/attested-runner/evidence/v1"

// Kind is the hardware that produced evidence.
type Kind string

// Evidence kinds.
const (
	KindTPM Kind = "tpm"
	KindTDX Kind = "tdx"
)

// Evidence is what an environment presents: a quote that binds its keys to a
// challenge, the logs that explain the quoted registers, and the keys.
// It is a JSON document (byte fields are base64) so that it can travel in
// HTTP bodies and be embedded in in-toto statements unchanged.
type Evidence struct {
	Format string `json:"format"`
	Kind   Kind   `json:"kind"`
	// EnvKey is the environment signing key, a P-256 SubjectPublicKeyInfo.
	EnvKey []byte `json:"envKey"`
	// HPKEPublicKey is the X25519 key secrets are sealed to.
	HPKEPublicKey []byte `json:"hpkePublicKey"`
	// CEL is the lifecycle log (TCG Canonical Event Log, see cel.go).
	CEL []byte `json:"cel"`
	// SoftwareTPMUnsafe is set by an agent running on a simulator or swtpm.
	// It is a label for honest errors, not a security boundary: trust comes
	// from the attestation key, which a software TPM's is not (unless an
	// admin enrolled it on purpose).
	SoftwareTPMUnsafe bool         `json:"softwareTpmUnsafe,omitempty"`
	TPM               *TPMEvidence `json:"tpm,omitempty"`
	TDX               *TDXEvidence `json:"tdx,omitempty"`
}

// TPMEvidence is a TPM 2.0 quote with its event log and the certification of
// the environment key.
type TPMEvidence struct {
	// Attestation is a go-tpm-tools attest.Attestation protobuf (binary): AK
	// public area or certificate, quotes over all PCR banks, the TCG event log.
	Attestation []byte `json:"attestation"`
	// EnvKeyPublic is the environment key's TPMT_PUBLIC area.
	EnvKeyPublic []byte `json:"envKeyPublic"`
	// CertifyInfo is the TPMS_ATTEST from TPM2_Certify(env key, AK).
	CertifyInfo []byte `json:"certifyInfo"`
	// CertifySignature is the AK's TPMT_SIGNATURE over CertifyInfo.
	CertifySignature []byte `json:"certifySignature"`
	// SNP, optional, is an AMD SEV-SNP attestation report whose
	// REPORT_DATA binds this attestation (Challenge.SNPReportData): a vTPM
	// in an SEV-SNP confidential VM. It is what can make TPM evidence
	// level 3.
	SNP *SNPEvidence `json:"snp,omitempty"`
	// AzureHCL, optional, is an Azure confidential VM's HCL report: an
	// SEV-SNP report binding runtime data that names this vTPM's AK (not
	// the challenge: freshness is the quote's). It is the other way TPM
	// evidence can be level 3; it excludes SNP.
	AzureHCL *AzureHCLEvidence `json:"azureHcl,omitempty"`
	// TDX, optional, is a TDX quote whose REPORTDATA binds this
	// attestation and its AK (Challenge.TDXVTPMReportData): a vTPM in a
	// TDX confidential VM. It excludes SNP and AzureHCL.
	TDX *TDXVTPMEvidence `json:"tdx,omitempty"`
}

// TDXVTPMEvidence is the TDX quote of a vTPM's TD, with, optionally, the
// Intel collateral to judge its TCB with (as TDXEvidence.Collateral).
type TDXVTPMEvidence struct {
	Quote      []byte         `json:"quote"`
	Collateral *TDXCollateral `json:"collateral,omitempty"`
}

// AzureHCLEvidence is the HCL report as read from the vTPM's NV index
// AzureHCLNVIndex, with the VCEK that signed its SEV-SNP report.
type AzureHCLEvidence struct {
	Report []byte `json:"report"`
	VCEK   []byte `json:"vcek"`
}

// SNPEvidence is an SEV-SNP attestation report with the VCEK (or VLEK)
// certificate that signed it.
type SNPEvidence struct {
	Report []byte `json:"report"`
	VCEK   []byte `json:"vcek"`
}

// TDXEvidence is a TDX quote (v4) with the confidential computing event log.
type TDXEvidence struct {
	Quote     []byte `json:"quote"`
	CCELTable []byte `json:"ccelTable"`
	CCEL      []byte `json:"ccel"`
	// Collateral, optional, is Intel collateral to judge the quote's TCB
	// with (self-authenticating: Intel signs it). Policy.TDXCollateral, when
	// set, takes precedence.
	Collateral *TDXCollateral `json:"collateral,omitempty"`
}

// Encode serializes evidence as JSON.
func (e *Evidence) Encode() ([]byte, error) {
	return json.Marshal(e)
}

// Digest is the SHA-256 of the encoded evidence, as recorded in the audit
// log and the environment certificate.
func Digest(encoded []byte) string {
	d := sha256.Sum256(encoded)
	return hex.EncodeToString(d[:])
}

// DecodeEvidence parses an encoded evidence document, refusing anything over
// MaxEvidenceSize, unknown fields, trailing data and missing parts. It does
// not verify anything: that is Verify's job.
func DecodeEvidence(b []byte) (*Evidence, error) {
	if len(b) > MaxEvidenceSize {
		return nil, fmt.Errorf("%w: evidence is %d bytes, limit %d", ErrTooLarge, len(b), MaxEvidenceSize)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var e Evidence
	if err := dec.Decode(&e); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformedEvidence, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: trailing data after evidence", ErrMalformedEvidence)
	}
	if _, err := e.checkShape(); err != nil {
		return nil, err
	}
	return &e, nil
}

// checkShape checks presence and sizes of every part, nothing cryptographic,
// and returns the parsed environment key.
func (e *Evidence) checkShape() (*ecdsa.PublicKey, error) {
	if e == nil {
		return nil, fmt.Errorf("%w: no evidence", ErrMalformedEvidence)
	}
	if e.Format != EvidenceFormat {
		return nil, fmt.Errorf("%w: format %q, want %q", ErrMalformedEvidence, e.Format, EvidenceFormat)
	}
	if len(e.CEL) > MaxCELSize {
		return nil, fmt.Errorf("%w: lifecycle log is %d bytes", ErrTooLarge, len(e.CEL))
	}
	envKey, err := ParseEnvKey(e.EnvKey)
	if err != nil {
		return nil, err
	}
	if _, err := ecdh.X25519().NewPublicKey(e.HPKEPublicKey); err != nil {
		return nil, fmt.Errorf("%w: HPKE public key: %v", ErrMalformedEvidence, err)
	}
	switch e.Kind {
	case KindTPM:
		if e.TPM == nil || e.TDX != nil {
			return nil, fmt.Errorf("%w: kind tpm needs exactly the tpm part", ErrMalformedEvidence)
		}
		t := e.TPM
		if len(t.Attestation) == 0 || len(t.EnvKeyPublic) == 0 || len(t.CertifyInfo) == 0 || len(t.CertifySignature) == 0 {
			return nil, fmt.Errorf("%w: tpm part lacks attestation, env key public area or certification", ErrMalformedEvidence)
		}
		if len(t.Attestation) > MaxAttestationSize+MaxEventLogSize {
			return nil, fmt.Errorf("%w: TPM attestation is %d bytes", ErrTooLarge, len(t.Attestation))
		}
		if len(t.EnvKeyPublic) > 1024 || len(t.CertifyInfo) > 1024 || len(t.CertifySignature) > 1024 {
			return nil, fmt.Errorf("%w: TPM key certification over 1 KiB", ErrTooLarge)
		}
		if snp := t.SNP; snp != nil {
			if len(snp.Report) > abi.ReportSize || len(snp.VCEK) > MaxSNPCertSize {
				return nil, fmt.Errorf("%w: SEV-SNP report %d bytes, VCEK %d bytes", ErrTooLarge, len(snp.Report), len(snp.VCEK))
			}
			if len(snp.Report) != abi.ReportSize || len(snp.VCEK) == 0 {
				return nil, fmt.Errorf("%w: SEV-SNP part needs a %d-byte report and its VCEK", ErrMalformedEvidence, abi.ReportSize)
			}
		}
		if btoi(t.SNP != nil)+btoi(t.AzureHCL != nil)+btoi(t.TDX != nil) > 1 {
			return nil, fmt.Errorf("%w: tpm part carries more than one TEE report (SEV-SNP, Azure HCL, TDX)", ErrMalformedEvidence)
		}
		if q := t.TDX; q != nil {
			if err := checkTDXQuoteShape("tpm part's tdx part", q.Quote, q.Collateral); err != nil {
				return nil, err
			}
		}
		if hcl := t.AzureHCL; hcl != nil {
			if len(hcl.Report) > maxHCLReportLen || len(hcl.VCEK) > MaxSNPCertSize {
				return nil, fmt.Errorf("%w: Azure HCL report %d bytes, VCEK %d bytes", ErrTooLarge, len(hcl.Report), len(hcl.VCEK))
			}
			if len(hcl.Report) == 0 || len(hcl.VCEK) == 0 {
				return nil, fmt.Errorf("%w: Azure HCL part needs the HCL report and its VCEK", ErrMalformedEvidence)
			}
		}
	case KindTDX:
		if e.TDX == nil || e.TPM != nil {
			return nil, fmt.Errorf("%w: kind tdx needs exactly the tdx part", ErrMalformedEvidence)
		}
		if err := checkTDXQuoteShape("tdx part", e.TDX.Quote, e.TDX.Collateral); err != nil {
			return nil, err
		}
		if len(e.TDX.CCEL) > MaxEventLogSize || len(e.TDX.CCELTable) > 4096 {
			return nil, fmt.Errorf("%w: CCEL is %d bytes", ErrTooLarge, len(e.TDX.CCEL))
		}
	default:
		return nil, fmt.Errorf("%w: unknown kind %q", ErrMalformedEvidence, e.Kind)
	}
	return envKey, nil
}

// checkTDXQuoteShape checks a TDX quote (present, within MaxQuoteSize)
// and the collateral that may come with it (within its limits), in part
// (a name for errors).
func checkTDXQuoteShape(part string, quote []byte, coll *TDXCollateral) error {
	if len(quote) == 0 {
		return fmt.Errorf("%w: %s has no quote", ErrMalformedEvidence, part)
	}
	if len(quote) > MaxQuoteSize {
		return fmt.Errorf("%w: TDX quote is %d bytes", ErrTooLarge, len(quote))
	}
	if coll != nil {
		return coll.checkSize()
	}
	return nil
}

// ParseEnvKey parses an environment key: a P-256 ECDSA SubjectPublicKeyInfo.
func ParseEnvKey(spki []byte) (*ecdsa.PublicKey, error) {
	if len(spki) == 0 || len(spki) > 512 {
		return nil, fmt.Errorf("%w: environment key missing or over 512 bytes", ErrMalformedEvidence)
	}
	pub, err := x509.ParsePKIXPublicKey(spki)
	if err != nil {
		return nil, fmt.Errorf("%w: environment key: %v", ErrMalformedEvidence, err)
	}
	k, ok := pub.(*ecdsa.PublicKey)
	if !ok || k.Curve != elliptic.P256() {
		return nil, fmt.Errorf("%w: environment key is %T, want ECDSA P-256", ErrMalformedEvidence, pub)
	}
	return k, nil
}

// KeyDigest is the hex SHA-256 of a SubjectPublicKeyInfo: how keys are named
// in logs, runner names and certificates (never the key itself).
func KeyDigest(spki []byte) string {
	d := sha256.Sum256(spki)
	return hex.EncodeToString(d[:])
}
