package attest

import (
	"crypto"
	"io"
)

// Collector is the in-environment side of attestation: it owns the hardware
// (TPM or TDX module), the environment key and the HPKE key of one boot, and
// the lifecycle log. One Collector per agent process; methods are safe for
// concurrent use.
//
// The agent's sequence is: Extend(AgentStartEvent) -> GenerateKeys ->
// Extend(EnvKeyEvent) -> Collect(AdmissionChallenge) -> ... ->
// Extend(JobStartEvent) -> Collect(StatementChallenge) ... -> Close.
type Collector interface {
	Kind() Kind
	// Extend appends a lifecycle event to the log and extends it into the
	// lifecycle register (PCR 13 / RTMR 3).
	Extend(Event) error
	// GenerateKeys creates the environment key (non-exportable) and the
	// HPKE key. Calling it twice is an error: one key pair per boot.
	GenerateKeys() error
	// Signer signs with the environment key.
	Signer() crypto.Signer
	// EnvKey is the environment key's SubjectPublicKeyInfo.
	EnvKey() []byte
	// HPKE is the environment's HPKE key.
	HPKE() *HPKEKey
	// Collect produces evidence that answers the challenge.
	Collect(Challenge) (*Evidence, error)
	// Events returns the lifecycle events extended so far.
	Events() []Event
	// Close destroys the keys (flushes TPM handles, drops key material).
	io.Closer
}
