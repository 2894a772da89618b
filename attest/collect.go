package attest

import (
	"crypto"
	"errors"
	"io"
	"sync"

	gecel "github.com/google/go-eventlog/cel"
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

// bootState is what every collector keeps for one boot: the lifecycle log,
// the environment key's SubjectPublicKeyInfo, the HPKE key, and whether the
// collector is closed. mu also serializes the collector's device access.
type bootState struct {
	mu     sync.Mutex
	log    lifecycleLog
	spki   []byte
	hpke   *HPKEKey
	closed bool
}

// EnvKey implements Collector.
func (b *bootState) EnvKey() []byte { return b.spki }

// HPKE implements Collector.
func (b *bootState) HPKE() *HPKEKey { return b.hpke }

// Events implements Collector.
func (b *bootState) Events() []Event {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.log.snapshot()
}

// extend records e in the lifecycle log, extending the register with
// extender, under the lock; refused once closed.
func (b *bootState) extend(e Event, extender gecel.MRExtender) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return errors.New("collector closed")
	}
	return b.log.extend(e, extender)
}

// lockForCollect validates ch and takes the lock for a Collect; on success
// the caller holds b.mu and must unlock it.
func (b *bootState) lockForCollect(ch Challenge) error {
	if err := ch.validate(); err != nil {
		return err
	}
	b.mu.Lock()
	if b.spki == nil || b.closed {
		b.mu.Unlock()
		return errors.New("no environment key: GenerateKeys first")
	}
	return nil
}
