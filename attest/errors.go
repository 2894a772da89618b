package attest

import "errors"

// Sentinel errors. Every rejection Verify makes wraps exactly one of these, so
// callers (the gate's audit log, the CLI's exit status, tests) can tell them
// apart with errors.Is.
var (
	// ErrPolicyEmpty: the policy has no reference image or no allowed agent
	// digest. An empty allow-list is never "nothing to check".
	ErrPolicyEmpty = errors.New("policy has no reference values")
	// ErrNoTrustRoot: the policy trusts no attestation key, AK root or TDX root.
	ErrNoTrustRoot = errors.New("policy trusts no attestation key")
	// ErrTooLarge: an input is over its size limit (see limits.go).
	ErrTooLarge = errors.New("input exceeds size limit")
	// ErrMalformedEvidence: evidence that does not decode or lacks a part.
	ErrMalformedEvidence = errors.New("malformed evidence")
	// ErrBadChallenge: a challenge nonce that is empty or too short.
	ErrBadChallenge = errors.New("challenge nonce is empty or too short")
	// ErrSoftwareTPM: evidence from a software TPM (simulator, swtpm) under a
	// policy that does not allow it.
	ErrSoftwareTPM = errors.New("evidence comes from a software TPM")
	// ErrUntrustedAK: the quote was made by an attestation key the policy
	// does not trust (another TPM, or an AK certificate off the trusted roots).
	ErrUntrustedAK = errors.New("attestation key is not trusted")
	// ErrNonceMismatch: the quote (or TDX REPORTDATA) was made for another
	// challenge, another environment key or another HPKE key: replay.
	ErrNonceMismatch = errors.New("quote does not bind this challenge and these keys")
	// ErrQuoteSignature: the quote signature or its PCR digest is wrong.
	ErrQuoteSignature = errors.New("quote signature or PCR digest invalid")
	// ErrEventLogEmpty: no TCG event log (or CCEL): nothing to check is a failure.
	ErrEventLogEmpty = errors.New("event log is empty")
	// ErrEventLogReplay: the event log does not replay to the quoted registers.
	ErrEventLogReplay = errors.New("event log does not replay to the quoted registers")
	// ErrReferenceMismatch: the measurements match no reference image.
	ErrReferenceMismatch = errors.New("measurements match no reference image")
	// ErrCELReplay: the lifecycle log does not replay to PCR 13 / RTMR 3, or
	// an event's content does not match its digest.
	ErrCELReplay = errors.New("lifecycle event log does not replay")
	// ErrUnknownEvent: a lifecycle event of a type this version does not know.
	ErrUnknownEvent = errors.New("unknown lifecycle event")
	// ErrCELOrder: lifecycle events out of the only allowed order
	// (agent-start, env-key, [job-start, [job-end]], [teardown]).
	ErrCELOrder = errors.New("lifecycle events out of order")
	// ErrAgentNotAllowed: the agent binary digest is not a reference value.
	ErrAgentNotAllowed = errors.New("agent binary is not in the reference values")
	// ErrKeyNotCertified: the environment key is not the key the AK certified
	// (or the TDX quote bound), or its TPM attributes allow export.
	ErrKeyNotCertified = errors.New("environment key is not certified by the attestation key")
	// ErrTDXQuote: the TDX quote's signature or certificate chain is invalid.
	ErrTDXQuote = errors.New("TDX quote verification failed")
	// ErrTDXDebug: the trust domain runs with the DEBUG attribute.
	ErrTDXDebug = errors.New("TDX trust domain is debuggable")
	// ErrKeyDestroyed: the environment key was destroyed at teardown.
	ErrKeyDestroyed = errors.New("environment key destroyed")
	// ErrNoTDX: this machine is not a TDX guest (no configfs-tsm report
	// interface, no /dev/tdx_guest).
	ErrNoTDX = errors.New("not a TDX guest")
)
