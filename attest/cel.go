package attest

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"unicode/utf8"

	gecel "github.com/google/go-eventlog/cel"
	gepb "github.com/google/go-eventlog/proto/state"
	"github.com/google/go-eventlog/register"
)

// The agent's lifecycle is recorded as a TCG Canonical Event Log (CEL) whose
// records are extended into PCR 13 (TPM) or RTMR 3 (TDX, CC MR index 4).
// Each record's content is a TLV of type CELContentType wrapping one typed
// event TLV, the same nesting go-tpm-tools uses for its COS events.
const (
	// CELContentType marks a CEL record as an attested-runner lifecycle
	// event. Chosen from the range the CEL spec leaves to implementers.
	CELContentType uint8 = 0xA1
	// LifecyclePCR is the TPM PCR the lifecycle log is extended into: a
	// PCR firmware and bootloaders leave alone, resettable only by reboot.
	LifecyclePCR = 13
	// LifecycleRTMR is the TDX RTMR the lifecycle log is extended into.
	LifecycleRTMR = 3
)

// EventType is a lifecycle event type. The set is closed: a verifier rejects
// any other value (ErrUnknownEvent).
type EventType uint8

// Lifecycle event types, in the only order they may occur.
const (
	// EventAgentStart: the agent started; content is the SHA-256 of its binary.
	EventAgentStart EventType = 1
	// EventEnvKey: the environment key exists; content is SHA-256(env-key
	// SPKI) || SHA-256(HPKE public key).
	EventEnvKey EventType = 2
	// EventJobStart: the separator. A job was dispatched; content is its
	// build id. No job code runs before this event. BuildEnv L2.agent-dispatch.
	EventJobStart EventType = 3
	// EventJobEnd: the job finished; content is its build id.
	EventJobEnd EventType = 4
	// EventTeardown: the environment is being destroyed; content is the reason.
	EventTeardown EventType = 5
)

func (t EventType) String() string {
	switch t {
	case EventAgentStart:
		return "agent-start"
	case EventEnvKey:
		return "env-key"
	case EventJobStart:
		return "job-start"
	case EventJobEnd:
		return "job-end"
	case EventTeardown:
		return "teardown"
	}
	return fmt.Sprintf("unknown(%d)", uint8(t))
}

// Event is one typed lifecycle event. Build them with the constructors
// (AgentStartEvent, EnvKeyEvent, ...), not by hand.
type Event struct {
	Type    EventType
	Content []byte
}

// AgentStartEvent records the agent binary's SHA-256 digest.
func AgentStartEvent(binaryDigest [sha256.Size]byte) Event {
	return Event{Type: EventAgentStart, Content: binaryDigest[:]}
}

// EnvKeyEvent records the environment key and the HPKE key of this boot.
func EnvKeyEvent(envKeySPKI, hpkePublic []byte) Event {
	return Event{Type: EventEnvKey, Content: envKeyDigest(envKeySPKI, hpkePublic)}
}

// JobStartEvent is the separator: the build id of the job dispatched.
func JobStartEvent(buildID string) Event {
	return Event{Type: EventJobStart, Content: []byte(buildID)}
}

// JobEndEvent records the end of the job with this build id.
func JobEndEvent(buildID string) Event {
	return Event{Type: EventJobEnd, Content: []byte(buildID)}
}

// TeardownEvent records why the environment is being destroyed.
func TeardownEvent(reason string) Event {
	return Event{Type: EventTeardown, Content: []byte(reason)}
}

func envKeyDigest(envKeySPKI, hpkePublic []byte) []byte {
	k := sha256.Sum256(envKeySPKI)
	h := sha256.Sum256(hpkePublic)
	return append(k[:], h[:]...)
}

// encodeTLV is the CEL encoding of a TLV: type, big-endian 32-bit length,
// value. (gecel.TLV.MarshalBinary, which cannot fail, without its error.)
func encodeTLV(typ uint8, value []byte) []byte {
	b := binary.BigEndian.AppendUint32([]byte{typ}, uint32(len(value)))
	return append(b, value...)
}

// TLV implements the go-eventlog cel.Content interface.
func (e Event) TLV() (gecel.TLV, error) {
	return gecel.TLV{Type: CELContentType, Value: encodeTLV(uint8(e.Type), e.Content)}, nil
}

// GenerateDigest implements the go-eventlog cel.Content interface: the digest
// extended is the hash of the whole content TLV.
func (e Event) GenerateDigest(h crypto.Hash) ([]byte, error) {
	hh := h.New()
	hh.Write(encodeTLV(CELContentType, encodeTLV(uint8(e.Type), e.Content)))
	return hh.Sum(nil), nil
}

// String renders the event for humans; content is printed as text only for
// events whose content is text.
func (e Event) String() string {
	switch e.Type {
	case EventAgentStart, EventEnvKey:
		return fmt.Sprintf("%s %x", e.Type, e.Content)
	default:
		return fmt.Sprintf("%s %q", e.Type, e.Content)
	}
}

func eventFromTLV(t gecel.TLV) (Event, error) {
	if t.Type != CELContentType {
		return Event{}, fmt.Errorf("%w: CEL content type %d", ErrUnknownEvent, t.Type)
	}
	if len(t.Value) < 5 {
		return Event{}, fmt.Errorf("%w: truncated event TLV", ErrCELReplay)
	}
	var inner gecel.TLV
	if err := inner.UnmarshalBinary(t.Value); err != nil {
		return Event{}, fmt.Errorf("%w: event TLV: %v", ErrCELReplay, err)
	}
	e := Event{Type: EventType(inner.Type), Content: bytes.Clone(inner.Value)}
	if err := e.validate(); err != nil {
		return Event{}, err
	}
	return e, nil
}

func (e Event) validate() error {
	if len(e.Content) > MaxEventContent {
		return fmt.Errorf("%w: %s event content %d bytes", ErrTooLarge, e.Type, len(e.Content))
	}
	switch e.Type {
	case EventAgentStart:
		if len(e.Content) != sha256.Size {
			return fmt.Errorf("%w: agent-start content is %d bytes, want %d", ErrCELOrder, len(e.Content), sha256.Size)
		}
	case EventEnvKey:
		if len(e.Content) != 2*sha256.Size {
			return fmt.Errorf("%w: env-key content is %d bytes, want %d", ErrCELOrder, len(e.Content), 2*sha256.Size)
		}
	case EventJobStart, EventJobEnd, EventTeardown:
		if !utf8.Valid(e.Content) {
			return fmt.Errorf("%w: %s content is not UTF-8", ErrCELOrder, e.Type)
		}
		if e.Type != EventTeardown && len(e.Content) == 0 {
			return fmt.Errorf("%w: %s without a build id", ErrCELOrder, e.Type)
		}
	default:
		return fmt.Errorf("%w: type %d", ErrUnknownEvent, uint8(e.Type))
	}
	return nil
}

// celLayout says where a lifecycle log lives: which register, which bank.
type celLayout struct {
	mrType gecel.MRType
	index  uint8
	hash   crypto.Hash
}

var (
	tpmLayout = celLayout{mrType: gecel.PCRType, index: LifecyclePCR, hash: crypto.SHA256}
	tdxLayout = celLayout{mrType: gecel.CCMRType, index: LifecycleRTMR + 1, hash: crypto.SHA384}
)

// checkTLVFraming walks the TLV framing of an encoded CEL without allocating,
// so a length field claiming gigabytes is refused before go-eventlog's decoder
// allocates it.
func checkTLVFraming(b []byte) error {
	for len(b) > 0 {
		if len(b) < 5 {
			return errors.New("truncated TLV header")
		}
		n := binary.BigEndian.Uint32(b[1:5])
		if uint64(n) > uint64(len(b)-5) {
			return fmt.Errorf("TLV length %d exceeds remaining %d bytes", n, len(b)-5)
		}
		b = b[5+int(n):]
	}
	return nil
}

// DecodeCEL parses an encoded lifecycle log without replaying it. It checks
// framing, size, record numbering and that every record is a known event on
// the lifecycle register. Replay is separate (replayCEL) because its register
// values come from a verified quote.
func DecodeCEL(raw []byte) (gecel.CEL, []Event, error) {
	if len(raw) > MaxCELSize {
		return nil, nil, fmt.Errorf("%w: lifecycle log is %d bytes, limit %d", ErrTooLarge, len(raw), MaxCELSize)
	}
	if err := checkTLVFraming(raw); err != nil {
		return nil, nil, fmt.Errorf("%w: lifecycle log: %v", ErrMalformedEvidence, err)
	}
	log, err := gecel.DecodeToCEL(bytes.NewBuffer(raw))
	if err != nil {
		return nil, nil, fmt.Errorf("%w: lifecycle log: %v", ErrMalformedEvidence, err)
	}
	recs := log.Records()
	if len(recs) > MaxCELEvents {
		return nil, nil, fmt.Errorf("%w: %d lifecycle events, limit %d", ErrTooLarge, len(recs), MaxCELEvents)
	}
	events := make([]Event, 0, len(recs))
	for i, r := range recs {
		if r.RecNum != uint64(i) {
			return nil, nil, fmt.Errorf("%w: record %d has number %d", ErrCELOrder, i, r.RecNum)
		}
		e, err := eventFromTLV(r.Content)
		if err != nil {
			return nil, nil, fmt.Errorf("record %d: %w", i, err)
		}
		if err := gecel.VerifyDigests(e, r.Digests); err != nil {
			return nil, nil, fmt.Errorf("%w: record %d (%s): %v", ErrCELReplay, i, e.Type, err)
		}
		events = append(events, e)
	}
	return log, events, nil
}

// replayCEL decodes the lifecycle log and replays it against the value of the
// lifecycle register taken from a verified quote.
func replayCEL(raw []byte, layout celLayout, registerValue []byte) ([]Event, error) {
	log, events, err := DecodeCEL(raw)
	if err != nil {
		return nil, err
	}
	for i, r := range log.Records() {
		if r.IndexType != layout.mrType || r.Index != layout.index {
			return nil, fmt.Errorf("%w: record %d is on register type %d index %d, want type %d index %d",
				ErrCELReplay, i, r.IndexType, r.Index, layout.mrType, layout.index)
		}
		if _, ok := r.Digests[layout.hash]; !ok {
			return nil, fmt.Errorf("%w: record %d has no %v digest", ErrCELReplay, i, layout.hash)
		}
	}
	if len(registerValue) != layout.hash.Size() {
		return nil, fmt.Errorf("%w: lifecycle register value missing from the quote", ErrCELReplay)
	}
	var bank register.MRBank
	switch layout.mrType {
	case gecel.PCRType:
		bank = register.PCRBank{TCGHashAlgo: gepb.HashAlgo_SHA256, PCRs: []register.PCR{{Index: int(layout.index), Digest: registerValue, DigestAlg: layout.hash}}}
	default:
		bank = register.RTMRBank{RTMRs: []register.RTMR{{Index: int(layout.index) - 1, Digest: registerValue}}}
	}
	if len(events) == 0 {
		// An empty log replays only to an unextended register. Ordering
		// (checkLifecycle) rejects it anyway: an agent always extends.
		if !bytes.Equal(registerValue, make([]byte, layout.hash.Size())) {
			return nil, fmt.Errorf("%w: register extended but the log is empty", ErrCELReplay)
		}
		return events, nil
	}
	if err := log.Replay(bank); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCELReplay, err)
	}
	return events, nil
}

// Lifecycle is what a verified lifecycle log says about the environment.
type Lifecycle struct {
	// AgentDigest is the SHA-256 of the agent binary (agent-start).
	AgentDigest []byte
	// BuildID is the job dispatched (job-start), empty if none yet.
	BuildID string
	// JobEnded is true once job-end was recorded.
	JobEnded bool
	// TornDown is true once teardown was recorded.
	TornDown bool
	// Events is the whole log, in order.
	Events []Event
}

// checkLifecycle enforces the only allowed order: agent-start, env-key naming
// this evidence's keys, then at most one job-start (single use), its job-end,
// and teardown last.
func checkLifecycle(events []Event, envKeySPKI, hpkePublic []byte) (*Lifecycle, error) {
	if len(events) < 2 {
		return nil, fmt.Errorf("%w: %d events, want at least agent-start and env-key", ErrCELOrder, len(events))
	}
	if events[0].Type != EventAgentStart {
		return nil, fmt.Errorf("%w: first event is %s, want agent-start", ErrCELOrder, events[0].Type)
	}
	if events[1].Type != EventEnvKey {
		return nil, fmt.Errorf("%w: second event is %s, want env-key", ErrCELOrder, events[1].Type)
	}
	if !bytes.Equal(events[1].Content, envKeyDigest(envKeySPKI, hpkePublic)) {
		return nil, fmt.Errorf("%w: the env-key event names other keys than the evidence", ErrKeyNotCertified)
	}
	lc := &Lifecycle{AgentDigest: events[0].Content, Events: events}
	prev := EventEnvKey
	for i, e := range events[2:] {
		ok := false
		switch e.Type {
		case EventJobStart:
			ok = prev == EventEnvKey
			lc.BuildID = string(e.Content)
		case EventJobEnd:
			ok = prev == EventJobStart && string(e.Content) == lc.BuildID
			lc.JobEnded = true
		case EventTeardown:
			ok = prev != EventTeardown
			lc.TornDown = true
		}
		if !ok {
			return nil, fmt.Errorf("%w: event %d (%s) after %s", ErrCELOrder, i+2, e.Type, prev)
		}
		prev = e.Type
	}
	return lc, nil
}

// lifecycleLog is a collector's lifecycle CEL and the events in it. The
// collector serializes access (it holds the device lock anyway).
type lifecycleLog struct {
	layout celLayout
	cel    gecel.CEL
	events []Event
}

func newLifecycleLog(layout celLayout) lifecycleLog {
	cel := gecel.NewPCR()
	if layout.mrType == gecel.CCMRType {
		cel = gecel.NewConfComputeMR()
	}
	return lifecycleLog{layout: layout, cel: cel}
}

// extend validates e, extends its digest into the lifecycle register with
// extender, and records it.
func (l *lifecycleLog) extend(e Event, extender gecel.MRExtender) error {
	if err := e.validate(); err != nil {
		return err
	}
	if err := l.cel.AppendEvent(e, []crypto.Hash{l.layout.hash}, int(l.layout.index), extender); err != nil {
		return fmt.Errorf("extending %s: %w", e.Type, err)
	}
	l.events = append(l.events, e)
	return nil
}

func (l *lifecycleLog) snapshot() []Event { return append([]Event(nil), l.events...) }

func (l *lifecycleLog) encode() ([]byte, error) {
	var buf bytes.Buffer
	if err := l.cel.EncodeCEL(&buf); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
