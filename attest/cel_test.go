package attest_test

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/attested-runner/attested-runner/attest/attesttest"
	gecel "github.com/google/go-eventlog/cel"
	"github.com/google/go-tpm/legacy/tpm2"
)

// contentTLV is e's record content, unvalidated (as a modified agent may
// extend it).
func contentTLV(e attest.Event) gecel.TLV {
	tlv, _ := e.TLV()
	return tlv
}

// celRecord is lifecycle record i on PCR 13 with content's SHA-256 digest.
func celRecord(t testing.TB, i uint64, content gecel.TLV) gecel.Record {
	t.Helper()
	b, err := content.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	d := sha256.Sum256(b)
	return gecel.Record{RecNum: i, Index: attest.LifecyclePCR, IndexType: gecel.PCRType, Digests: map[crypto.Hash][]byte{crypto.SHA256: d[:]}, Content: content}
}

// encodeCEL encodes records as they are, numbers included.
func encodeCEL(t testing.TB, recs ...gecel.Record) []byte {
	t.Helper()
	var buf bytes.Buffer
	for i := range recs {
		if err := recs[i].EncodeCELR(&buf); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

// celOf is a lifecycle log of these contents, numbered from 0.
func celOf(t testing.TB, contents ...gecel.TLV) []byte {
	t.Helper()
	recs := make([]gecel.Record, len(contents))
	for i, c := range contents {
		recs[i] = celRecord(t, uint64(i), c)
	}
	return encodeCEL(t, recs...)
}

// framedTLV is one TLV of n bytes in all: framed, but not a CEL record.
func framedTLV(n int) []byte {
	b := make([]byte, n)
	b[1], b[2], b[3], b[4] = byte((n-5)>>24), byte((n-5)>>16), byte((n-5)>>8), byte(n-5)
	return b
}

// TestDecodeCEL: what a lifecycle log must be before replay, each limit at
// its exact bound.
func TestDecodeCEL(t *testing.T) {
	teardown := contentTLV(attest.TeardownEvent("idle"))
	repeat := func(n int, c gecel.TLV) []gecel.TLV {
		out := make([]gecel.TLV, n)
		for i := range out {
			out[i] = c
		}
		return out
	}
	innerTeardown, err := gecel.TLV{Type: uint8(attest.EventTeardown), Value: []byte("idle")}.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		raw  []byte
		want error
		msg  string
	}{
		{name: "a whole lifecycle", raw: celOf(t,
			contentTLV(attest.AgentStartEvent(attesttest.AgentDigest)), contentTLV(attest.EnvKeyEvent([]byte("k"), []byte("h"))),
			contentTLV(attest.JobStartEvent("b")), contentTLV(attest.JobEndEvent("b")), teardown)},
		{name: "events at the limit", raw: celOf(t, repeat(attest.MaxCELEvents, teardown)...)},
		{name: "one event over the limit", raw: celOf(t, repeat(attest.MaxCELEvents+1, teardown)...), want: attest.ErrTooLarge, msg: "lifecycle events"},
		{name: "log at the size limit", raw: framedTLV(attest.MaxCELSize), want: attest.ErrMalformedEvidence},
		{name: "log one byte over the size limit", raw: framedTLV(attest.MaxCELSize + 1), want: attest.ErrTooLarge},
		{name: "TLV length beyond the log", raw: append(celOf(t, teardown), 0, 0, 0, 0x10, 0, 1, 2), want: attest.ErrMalformedEvidence, msg: "exceeds remaining"},
		{name: "truncated TLV header", raw: append(celOf(t, teardown), 0, 0, 0), want: attest.ErrMalformedEvidence, msg: "truncated TLV header"},
		{name: "framed but no record", raw: framedTLV(6), want: attest.ErrMalformedEvidence, msg: "lifecycle log:"},
		{name: "records numbered from 1", raw: encodeCEL(t, celRecord(t, 1, teardown)), want: attest.ErrCELOrder, msg: "has number 1"},
		{name: "content of another type", raw: celOf(t, gecel.TLV{Type: 0x42, Value: innerTeardown}), want: attest.ErrUnknownEvent, msg: "CEL content type 66"},
		{name: "content shorter than a TLV header", raw: celOf(t, gecel.TLV{Type: attest.CELContentType, Value: innerTeardown[:4]}), want: attest.ErrCELReplay, msg: "truncated event TLV"},
		{name: "content a bare TLV header", raw: celOf(t, contentTLV(attest.TeardownEvent("")))},
		{name: "event TLV length wrong", raw: celOf(t, gecel.TLV{Type: attest.CELContentType, Value: append(bytes.Clone(innerTeardown), 0)}), want: attest.ErrCELReplay, msg: "event TLV"},
		{name: "unknown event type", raw: celOf(t, contentTLV(attest.Event{Type: 9, Content: []byte("x")})), want: attest.ErrUnknownEvent, msg: "type 9"},
		{name: "content at the limit", raw: celOf(t, contentTLV(attest.TeardownEvent(strings.Repeat("x", attest.MaxEventContent))))},
		{name: "content over the limit", raw: celOf(t, contentTLV(attest.TeardownEvent(strings.Repeat("x", attest.MaxEventContent+1)))), want: attest.ErrTooLarge, msg: "teardown event content"},
		{name: "agent-start not a SHA-256 digest", raw: celOf(t, contentTLV(attest.Event{Type: attest.EventAgentStart, Content: make([]byte, 31)})), want: attest.ErrCELOrder, msg: "agent-start content is 31 bytes, want 32"},
		{name: "env-key not two SHA-256 digests", raw: celOf(t, contentTLV(attest.Event{Type: attest.EventEnvKey, Content: make([]byte, 32)})), want: attest.ErrCELOrder, msg: "env-key content is 32 bytes, want 64"},
		{name: "build id not UTF-8", raw: celOf(t, contentTLV(attest.JobStartEvent("\xff"))), want: attest.ErrCELOrder, msg: "not UTF-8"},
		{name: "job-start without build id", raw: celOf(t, contentTLV(attest.JobStartEvent(""))), want: attest.ErrCELOrder, msg: "job-start without a build id"},
		{name: "job-end without build id", raw: celOf(t, contentTLV(attest.JobEndEvent(""))), want: attest.ErrCELOrder, msg: "job-end without a build id"},
		{name: "digest of other content", raw: func() []byte {
			r := celRecord(t, 0, teardown)
			r.Content = contentTLV(attest.TeardownEvent("job completed"))
			return encodeCEL(t, r)
		}(), want: attest.ErrCELReplay},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := attest.DecodeCEL(tc.raw)
			if !errors.Is(err, tc.want) {
				t.Fatalf("DecodeCEL: got %v, want %v", err, tc.want)
			}
			if tc.msg != "" && !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("DecodeCEL: got %q, want the %q check", err, tc.msg)
			}
		})
	}
}

// TestCraftedLifecycle: a genuine TPM, an agent that extends a lifecycle
// out of the grammar (agent-start, env-key naming this evidence's keys, ...).
func TestCraftedLifecycle(t *testing.T) {
	agent := attest.AgentStartEvent(attesttest.AgentDigest)
	otherKeys := attest.EnvKeyEvent([]byte("another env key"), []byte("another HPKE key"))
	tests := []struct {
		name   string
		events []gecel.Content
		want   error
		msg    string
	}{
		{name: "no event", events: []gecel.Content{}, want: attest.ErrCELOrder, msg: "0 events"},
		{name: "agent-start alone", events: []gecel.Content{agent}, want: attest.ErrCELOrder, msg: "1 events"},
		{name: "env-key first", events: []gecel.Content{otherKeys, agent}, want: attest.ErrCELOrder, msg: "first event is env-key"},
		{name: "agent-start twice", events: []gecel.Content{agent, agent}, want: attest.ErrCELOrder, msg: "second event is agent-start"},
		{name: "env-key naming other keys", events: []gecel.Content{agent, otherKeys}, want: attest.ErrKeyNotCertified, msg: "names other keys"},
		{name: "unknown event type", events: []gecel.Content{agent, gecel.FakeTlv{EventType: gecel.FakeEvent1, EventContent: []byte("debug shell opened")}},
			want: attest.ErrUnknownEvent, msg: "CEL content type"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sim := attesttest.Simulator(t)
			defer sim.Close()
			p, err := attesttest.Policy(sim)
			if err != nil {
				t.Fatal(err)
			}
			ak, err := attest.OpenAK(sim)
			if err != nil {
				t.Fatal(err)
			}
			defer ak.Close()
			env := newKey(t, sim, tpm2.HandleNull, attest.EnvKeyTemplate())
			ch := attest.AdmissionChallenge(nonce(t))
			ev := craftEvidence(t, sim, ak, env, ch, tc.events...)
			_, err = attest.Verify(ev, ch, p)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Verify: got %v, want %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("Verify: got %q, want the %q check", err, tc.msg)
			}
		})
	}
}

// TestCollectorExtend: a collector records only valid events, and only
// once the register is extended.
func TestCollectorExtend(t *testing.T) {
	m := attesttest.SimulatedMachine(t)
	before := len(m.Collector.Events())
	if err := m.Collector.Extend(attest.JobStartEvent("")); !errors.Is(err, attest.ErrCELOrder) {
		t.Fatalf("job-start without build id: got %v, want %v", err, attest.ErrCELOrder)
	}
	if err := m.Collector.Extend(attest.Event{Type: 9}); !errors.Is(err, attest.ErrUnknownEvent) {
		t.Fatalf("unknown event: got %v, want %v", err, attest.ErrUnknownEvent)
	}
	if got := len(m.Collector.Events()); got != before {
		t.Errorf("%d events recorded, want %d", got, before)
	}

	broken := errors.New("RTMR extend failed")
	c, err := attest.NewTDXCollector(attest.TDXOptions{
		Quote:      func([64]byte) ([]byte, error) { return nil, io.EOF },
		ExtendRTMR: func(int, []byte) error { return broken },
		ReadCCEL:   func() ([]byte, []byte, error) { return nil, nil, io.EOF },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// go-eventlog wraps the extender's error with %v.
	if err := c.Extend(attest.AgentStartEvent(attesttest.AgentDigest)); err == nil || !strings.Contains(err.Error(), broken.Error()) {
		t.Fatalf("failed extend: got %v, want %v", err, broken)
	}
	if n := len(c.Events()); n != 0 {
		t.Errorf("%d events recorded after a failed extend", n)
	}
}
