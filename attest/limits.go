package attest

// Size limits for every input that comes from outside the verifier. They are
// far above what real evidence needs (a TCG event log is 20-60 KiB, a padded
// CCEL 256 KiB, a TDX quote 5-8 KiB, our lifecycle log under 1 KiB) and far
// below what would let one request exhaust a gate's memory.
const (
	// MaxEvidenceSize bounds one encoded Evidence document.
	MaxEvidenceSize = 4 << 20
	// MaxEventLogSize bounds a TCG event log or a CCEL.
	MaxEventLogSize = 1 << 20
	// MaxAttestationSize bounds the go-tpm-tools Attestation protobuf without
	// its event log.
	MaxAttestationSize = 64 << 10
	// MaxQuoteSize bounds a raw TDX quote.
	MaxQuoteSize = 64 << 10
	// MaxCELSize bounds the canonical lifecycle event log.
	MaxCELSize = 64 << 10
	// MaxCELEvents bounds the number of lifecycle events. A runner's whole
	// life is five.
	MaxCELEvents = 16
	// MaxEventContent bounds one lifecycle event's content.
	MaxEventContent = 1 << 10
	// MinNonceSize is the shortest challenge nonce accepted.
	MinNonceSize = 16
)
