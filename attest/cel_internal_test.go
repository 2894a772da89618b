package attest

import (
	"bytes"
	"crypto"
	"crypto/sha512"
	"errors"
	"strings"
	"testing"

	gecel "github.com/google/go-eventlog/cel"
)

// TestCheckTLVFraming walks framing at its exact bounds.
func TestCheckTLVFraming(t *testing.T) {
	tests := []struct {
		name string
		raw  []byte
		err  string // "" for accepted
	}{
		{name: "empty", raw: nil},
		{name: "empty value", raw: []byte{1, 0, 0, 0, 0}},
		{name: "value to the end", raw: []byte{1, 0, 0, 0, 2, 0xaa, 0xbb}},
		{name: "two TLVs", raw: []byte{1, 0, 0, 0, 1, 0xaa, 2, 0, 0, 0, 0}},
		{name: "header one byte short", raw: []byte{1, 0, 0, 0}, err: "truncated TLV header"},
		{name: "value one byte short", raw: []byte{1, 0, 0, 0, 2, 0xaa}, err: "TLV length 2 exceeds remaining 1 bytes"},
		{name: "value with no byte", raw: []byte{1, 0, 0, 0, 1}, err: "TLV length 1 exceeds remaining 0 bytes"},
		{name: "length of gigabytes", raw: []byte{1, 0xff, 0xff, 0xff, 0xff, 0}, err: "TLV length 4294967295 exceeds remaining 1 bytes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := checkTLVFraming(tc.raw)
			if tc.err == "" && err != nil || tc.err != "" && (err == nil || err.Error() != tc.err) {
				t.Fatalf("got %v, want %q", err, tc.err)
			}
		})
	}
}

// TestTDXLifecycleReplay replays a lifecycle log against RTMR 3, which the
// UEFI CC event log numbers as measurement register 4 (MRTD is 0), with a
// log built independently of tdxLayout.
func TestTDXLifecycleReplay(t *testing.T) {
	rtmr3 := make([]byte, sha512.Size384)
	log := gecel.NewConfComputeMR()
	for _, e := range []Event{AgentStartEvent([32]byte{1}), EnvKeyEvent([]byte("k"), []byte("h"))} {
		err := log.AppendEvent(e, []crypto.Hash{crypto.SHA384}, 4, func(_ crypto.Hash, _ int, d []byte) error {
			h := sha512.Sum384(append(rtmr3, d...))
			rtmr3 = h[:]
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	if err := log.EncodeCEL(&buf); err != nil {
		t.Fatal(err)
	}
	events, err := replayCEL(buf.Bytes(), tdxLayout, rtmr3)
	if err != nil || len(events) != 2 {
		t.Fatalf("replay: %v (%d events)", err, len(events))
	}
	other := bytes.Clone(rtmr3)
	other[0] ^= 1
	if _, err := replayCEL(buf.Bytes(), tdxLayout, other); !errors.Is(err, ErrCELReplay) {
		t.Fatalf("another RTMR 3: got %v, want %v", err, ErrCELReplay)
	}
	// The same log is no TPM lifecycle log.
	if _, err := replayCEL(buf.Bytes(), tpmLayout, make([]byte, 32)); !errors.Is(err, ErrCELReplay) || !strings.Contains(err.Error(), "is on register") {
		t.Fatalf("as a TPM log: got %v, want %v", err, ErrCELReplay)
	}
}
