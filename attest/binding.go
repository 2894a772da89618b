package attest

import (
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"fmt"
	"hash"
)

// Purpose separates the uses of a quote, so evidence made for one can never
// be accepted as another: an admission quote is not a statement quote.
type Purpose string

// Quote purposes.
const (
	// PurposeAdmission: the gate's challenge before it mints a runner
	// (BuildEnv L2.verify-before-dispatch).
	PurposeAdmission Purpose = "admission"
	// PurposeDispatch: the agent's dispatch attestation at job start,
	// over the digest of the dispatch statement (L2.agent-dispatch).
	PurposeDispatch Purpose = "dispatch"
	// PurposeStatement: the response-time quote over the digest of a
	// provenance statement, verifiable offline (seed: response-time attestation).
	PurposeStatement Purpose = "statement"
)

// Challenge is what a quote must answer: a purpose and a nonce (a random
// server nonce for admission, a statement digest otherwise).
type Challenge struct {
	Purpose Purpose
	Nonce   []byte
}

// AdmissionChallenge wraps a gate-issued nonce.
func AdmissionChallenge(nonce []byte) Challenge {
	return Challenge{Purpose: PurposeAdmission, Nonce: nonce}
}

// DispatchChallenge wraps the digest of a dispatch statement.
func DispatchChallenge(digest []byte) Challenge {
	return Challenge{Purpose: PurposeDispatch, Nonce: digest}
}

// StatementChallenge wraps the digest of a provenance statement.
func StatementChallenge(digest []byte) Challenge {
	return Challenge{Purpose: PurposeStatement, Nonce: digest}
}

func (c Challenge) validate() error {
	switch c.Purpose {
	case PurposeAdmission, PurposeDispatch, PurposeStatement:
	default:
		return fmt.Errorf("%w: unknown purpose %q", ErrBadChallenge, c.Purpose)
	}
	if len(c.Nonce) < MinNonceSize {
		return fmt.Errorf("%w: %d bytes, want at least %d", ErrBadChallenge, len(c.Nonce), MinNonceSize)
	}
	return nil
}

const bindingDomain = "attested-runner/v1/"

// bind derives the value a quote carries: a domain-separated hash of the
// purpose, the nonce, the environment key and the HPKE key. A quote thereby
// certifies that this TPM/TD holds these keys, now, for this purpose.
// Further parts (the vTPM's AK, for an SEV-SNP report) follow the keys.
func (c Challenge) bind(h hash.Hash, envKeySPKI, hpkePublic []byte, more ...[]byte) []byte {
	h.Write([]byte(bindingDomain))
	for _, part := range append([][]byte{[]byte(c.Purpose), c.Nonce, envKeySPKI, hpkePublic}, more...) {
		var n [4]byte
		binary.BigEndian.PutUint32(n[:], uint32(len(part)))
		h.Write(n[:])
		h.Write(part)
	}
	return h.Sum(nil)
}

// TPMNonce is the qualifying data for TPM2_Quote and TPM2_Certify.
func (c Challenge) TPMNonce(envKeySPKI, hpkePublic []byte) []byte {
	return c.bind(sha256.New(), envKeySPKI, hpkePublic)
}

// TDXReportData is the 64-byte REPORTDATA for a TDX quote.
func (c Challenge) TDXReportData(envKeySPKI, hpkePublic []byte) [64]byte {
	var rd [64]byte
	copy(rd[:], c.bind(sha512.New(), envKeySPKI, hpkePublic))
	return rd
}

// snpVTPMBinding labels the SEV-SNP REPORT_DATA of a vTPM attestation, so
// that it can never equal a TDX REPORTDATA (which binds no AK).
const snpVTPMBinding = "sev-snp-vtpm"

// SNPReportData is the 64-byte REPORT_DATA of the SEV-SNP report that
// accompanies a vTPM attestation: the same purpose, nonce and keys as the
// TPM quote, and the vTPM's attestation key (SubjectPublicKeyInfo). Guest
// software inside the SEV-SNP VM thereby vouches, in a report the AMD
// secure processor signs, that this AK is its TPM's, now.
func (c Challenge) SNPReportData(envKeySPKI, hpkePublic, akSPKI []byte) [64]byte {
	var rd [64]byte
	copy(rd[:], c.bind(sha512.New(), envKeySPKI, hpkePublic, []byte(snpVTPMBinding), akSPKI))
	return rd
}

// tdxVTPMBinding labels the TDX REPORTDATA of a vTPM attestation, so that
// it equals neither a TDX-only REPORTDATA nor an SEV-SNP one.
const tdxVTPMBinding = "tdx-vtpm"

// TDXVTPMReportData is the 64-byte REPORTDATA of the TDX quote that
// accompanies a vTPM attestation in a TDX confidential VM (Compute
// Engine's shape): as SNPReportData, the TD vouching, in a quote the CPU
// signs, that this AK is its TPM's, now.
func (c Challenge) TDXVTPMReportData(envKeySPKI, hpkePublic, akSPKI []byte) [64]byte {
	var rd [64]byte
	copy(rd[:], c.bind(sha512.New(), envKeySPKI, hpkePublic, []byte(tdxVTPMBinding), akSPKI))
	return rd
}
