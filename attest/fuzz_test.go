package attest_test

import (
	"encoding/json"
	"os"
	"testing"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/attested-runner/attested-runner/attest/attesttest"
)

// realEvidence returns encoded evidence from a simulated machine with a job
// lifecycle, and its challenge and policy, as fuzz seeds.
func realEvidence(f *testing.F) ([]byte, attest.Challenge, *attest.Policy) {
	m := attesttest.SimulatedMachine(f)
	for _, e := range []attest.Event{attest.JobStartEvent("o/r/actions/runs/1/attempts/1/jobs/j"), attest.JobEndEvent("o/r/actions/runs/1/attempts/1/jobs/j")} {
		if err := m.Collector.Extend(e); err != nil {
			f.Fatal(err)
		}
	}
	ch := attest.StatementChallenge(make([]byte, 32))
	ev, err := m.Collector.Collect(ch)
	if err != nil {
		f.Fatal(err)
	}
	b, err := ev.Encode()
	if err != nil {
		f.Fatal(err)
	}
	return b, ch, m.Policy
}

// FuzzDecodeEvidence: decoding and verification never panic, on a
// simulated machine's evidence and, in testdata/fuzz, TPM evidence carrying
// each TEE part (SEV-SNP report, Azure HCL report, TDX quote) mutated.
func FuzzDecodeEvidence(f *testing.F) {
	b, ch, p := realEvidence(f)
	f.Add(b)
	f.Add([]byte(`{"format":"` + attest.EvidenceFormat + `","kind":"tdx"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, err := attest.DecodeEvidence(b)
		if err != nil {
			return
		}
		// Whatever decodes must verify or fail cleanly, never panic.
		_, _ = attest.Verify(ev, ch, p)
	})
}

func FuzzDecodeCEL(f *testing.F) {
	b, _, _ := realEvidence(f)
	ev, err := attest.DecodeEvidence(b)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(ev.CEL)
	f.Add([]byte{0, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		_, events, err := attest.DecodeCEL(b)
		if err == nil && len(events) > attest.MaxCELEvents {
			t.Fatalf("%d events past the limit", len(events))
		}
	})
}

func FuzzParseReferenceValues(f *testing.F) {
	b, _, p := realEvidence(f)
	_ = b
	rv, err := json.Marshal(p.Reference)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(rv)
	if sample, err := os.ReadFile("testdata/reference-values.json"); err == nil {
		f.Add(sample)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		rv, err := attest.ParseReferenceValues(b)
		if err == nil && rv.Validate() != nil {
			t.Fatal("parsed reference values do not validate")
		}
	})
}
