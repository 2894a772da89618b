package attest

import (
	"crypto/ecdsa"
	"fmt"
)

// Claims is what verified evidence establishes. Every field comes from data
// that Verify checked cryptographically; nothing is copied from unverified
// input.
type Claims struct {
	Kind Kind
	// EnvKey is the environment signing key the hardware certified.
	EnvKey       *ecdsa.PublicKey
	EnvKeySPKI   []byte
	EnvKeyDigest string
	// HPKEPublicKey is the key the gate may seal secrets to.
	HPKEPublicKey []byte
	// AKDigest names the attestation key (TPM: SHA-256 of the AK SPKI;
	// TDX: SHA-256 of the PCK leaf certificate).
	AKDigest string
	// AK is the attestation key's SubjectPublicKeyInfo (TPM only).
	AK []byte
	// ImageID is the reference image the measurements matched, Image the
	// matched entry of the policy's reference values.
	ImageID string
	Image   *Image
	// Level is the BuildEnv level this evidence earned: 2 for a TPM quote,
	// 3 only when a verified hardware TEE report binds the attestation (see
	// Hardware), 0 for a software TPM accepted under AllowSoftwareTPMUnsafe.
	// No policy setting raises it.
	Level int
	// Hardware names the hardware path that gave the level: HardwareTPM,
	// HardwareTDX or HardwareSEVSNP (a vTPM with an SEV-SNP report).
	Hardware string
	// Lifecycle is the replayed lifecycle log.
	Lifecycle *Lifecycle
	// SoftwareTPM is true for evidence labelled as from a simulator/swtpm.
	SoftwareTPM bool

	// TPM only: the quoted SHA-256 PCR bank and what the event log says.
	PCRs map[uint32][]byte
	// SecureBoot (TPM event log or TDX CCEL) and KernelCmdline (TDX CCEL,
	// when the log records it) come from the replayed firmware log.
	SecureBoot    bool
	KernelCmdline string
	EFIApps       [][]byte
	// BootEvents are the replay-verified TCG events (PCR, digest, type).
	BootEvents []BootEvent

	// TDX only.
	MRTD  []byte
	RTMRs [][]byte
	// TDXQE is the quoting enclave that signed the quote; TDXTCB Intel's
	// TCB verdict (nil: not evaluated, no collateral) and TDXCollateral the
	// collateral it was judged with, to embed for offline re-checks.
	TDXQE         *TDXQEIdentity
	TDXTCB        *TDXTCB
	TDXCollateral *TDXCollateral

	// SNP is what the SEV-SNP report riding in TPM evidence established
	// (nil: none, or not judged).
	SNP *SNPClaims
}

// Hardware paths, as recorded in Claims.Hardware, environment certificates
// and provenance.
const (
	HardwareTPM    = "tpm"
	HardwareTDX    = "tdx"
	HardwareSEVSNP = "sev-snp"
)

// IsTEE reports whether hardware is a TEE path that can give
// BuildEnv level 3 (L3.hw-quote): a TPM alone cannot.
func IsTEE(hardware string) bool {
	return hardware == HardwareTDX || hardware == HardwareSEVSNP
}

// BootEvent is one replay-verified firmware/boot event.
type BootEvent struct {
	PCR    uint32
	Type   string
	Digest []byte
}

// Verify checks evidence against a challenge and a policy, and returns what
// it establishes. It fails closed: an empty policy, an empty event log, an
// unknown event, a missing register or any mismatch is an error wrapping one
// of the sentinels in errors.go.
//
// For TPM evidence Verify checks, in order:
//   - the policy has reference images, allowed agent digests and an AK trust
//     root (ErrPolicyEmpty, ErrNoTrustRoot);
//   - the evidence decodes within limits (ErrMalformedEvidence, ErrTooLarge);
//   - a software TPM label is allowed by the policy (ErrSoftwareTPM);
//   - the AK is a restricted signing key that the policy trusts directly or
//     through an AK certificate chain valid at Policy.Time (ErrUntrustedAK);
//   - the SHA-256 quote's qualifying data is the challenge bound to the
//     environment and HPKE keys (ErrNonceMismatch), its signature and PCR
//     digest are valid (ErrQuoteSignature);
//   - the TCG event log is non-empty (ErrEventLogEmpty), has only known
//     event types and replays to the quoted PCRs (ErrEventLogReplay);
//   - the lifecycle log replays to PCR 13, every event is known
//     (ErrUnknownEvent, ErrCELReplay), in order, naming these keys
//     (ErrCELOrder);
//   - TPM2_Certify by the same AK over the same bound nonce names the
//     environment key, which is a P-256 signing key that is fixedTPM,
//     fixedParent, sensitiveDataOrigin and lives in the null hierarchy, so it
//     cannot leave the TPM and dies at reboot (ErrKeyNotCertified);
//   - the PCR values and boot events match one reference image
//     (ErrReferenceMismatch);
//   - the agent binary recorded in agent-start is allowed (ErrAgentNotAllowed).
//
// For TDX evidence Verify checks the quote's signature and PCK chain to
// Intel's root offline (ErrTDXQuote), REPORTDATA against the bound challenge
// (ErrNonceMismatch), the DEBUG attribute (ErrTDXDebug), the quoting
// enclave's identity (ErrTDXQEIdentity), the TCB against Intel collateral
// from Policy.TDXCollateral or the evidence when there is any
// (EvaluateTDXTCB: ErrTDXCollateral, ErrTDXCollateralExpired,
// ErrTDXTCBStatus; without collateral the level is 2), the CCEL replay
// against RTMR 0-2 (ErrEventLogEmpty, ErrEventLogReplay), MRTD and RTMR 0-2
// against a reference image (ErrReferenceMismatch), and the lifecycle log
// against RTMR 3 and the agent digest as above. The environment key is
// bound by REPORTDATA.
//
// Verify does NOT check: that the nonce is fresh or unused (the caller owns
// nonces), the TDX TCB when no collateral is given (level 2 then), or
// anything about the job a lifecycle log names (the caller compares
// Lifecycle.BuildID). SEV-SNP is not an evidence kind: see VerifySNPReport.
func Verify(ev *Evidence, ch Challenge, p *Policy) (*Claims, error) {
	if err := ch.validate(); err != nil {
		return nil, err
	}
	envKey, err := ev.checkShape()
	if err != nil {
		return nil, err
	}
	if err := p.check(ev.Kind); err != nil {
		return nil, err
	}
	c, err := verifyEvidence(ev, envKey, &ch, p, &steps{})
	if err != nil {
		return nil, err
	}
	return c, nil
}

// verifyEvidence runs the checks on our evidence format, whose shape has
// been checked (envKey is the parsed ev.EnvKey). ch nil and parts of p
// absent are allowed only when inspecting (Verify has checked both).
func verifyEvidence(ev *Evidence, envKey *ecdsa.PublicKey, ch *Challenge, p *Policy, s *steps) (c *Claims, err error) {
	if ev.SoftwareTPMUnsafe && !p.AllowSoftwareTPMUnsafe {
		return nil, s.fail("decode", ErrSoftwareTPM)
	}
	// Third-party parsers run on attacker-controlled bytes; a panic in one
	// must not take the gate down. The guards in this package (and their
	// fuzz targets) are meant to make this unreachable.
	defer func() {
		if r := recover(); r != nil {
			c, err = nil, s.fail("decode", fmt.Errorf("%w: parser panic: %v", ErrMalformedEvidence, r))
		}
	}()
	c = &Claims{
		Kind:          ev.Kind,
		EnvKey:        envKey,
		EnvKeySPKI:    ev.EnvKey,
		EnvKeyDigest:  KeyDigest(ev.EnvKey),
		HPKEPublicKey: ev.HPKEPublicKey,
		SoftwareTPM:   ev.SoftwareTPMUnsafe,
	}
	switch ev.Kind {
	case KindTPM:
		err = verifyTPM(ev, ch, p, c, s)
	case KindTDX:
		err = verifyTDX(ev, ch, p, c, s)
	}
	if err != nil {
		return c, err
	}
	if p.Reference == nil {
		s.skip("agent", "no reference values given")
		return c, nil
	}
	if err := s.run("agent", func() (string, error) {
		if !agentAllowed(p.Reference, c.Lifecycle.AgentDigest) {
			return "", fmt.Errorf("%w: %x", ErrAgentNotAllowed, c.Lifecycle.AgentDigest)
		}
		return fmt.Sprintf("agent sha256:%x allowed", c.Lifecycle.AgentDigest[:8]), nil
	}); err != nil {
		return c, err
	}
	return c, nil
}

func agentAllowed(rv *ReferenceValues, digest []byte) bool {
	for _, d := range rv.AgentDigests {
		if string(d) == string(digest) {
			return true
		}
	}
	return false
}
