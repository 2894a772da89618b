package attest_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/attested-runner/attested-runner/attest/attesttest"
	"github.com/google/go-tpm-tools/client"
	pb "github.com/google/go-tpm-tools/proto/attest"
	"google.golang.org/protobuf/proto"
)

func TestInspectEvidence(t *testing.T) {
	m := attesttest.SimulatedMachine(t)
	ch := attest.AdmissionChallenge(nonce(t))
	ev, err := m.Collector.Collect(ch)
	if err != nil {
		t.Fatal(err)
	}
	// Nothing but the evidence: everything that can be checked is, the
	// rest is reported as skipped, and since nothing says who signed the
	// quote, the inspection is not verified.
	in := attest.InspectEvidence(ev, attest.InspectOptions{Policy: &attest.Policy{AllowSoftwareTPMUnsafe: true}})
	if in.Verified() || !errors.Is(in.Err, attest.ErrNoTrustRoot) {
		t.Fatalf("no AK root: got %v, want %v", in.Err, attest.ErrNoTrustRoot)
	}
	wantStatus(t, in, map[string]attest.Status{
		"attestation key": attest.StatusSkipped, "quote": attest.StatusPass, "nonce": attest.StatusSkipped,
		"event log": attest.StatusPass, "environment key": attest.StatusPass,
		"reference values": attest.StatusSkipped, "agent": attest.StatusSkipped,
	})
	if in.Claims == nil || len(in.Claims.PCRs) == 0 {
		t.Errorf("measurements not reported: %+v", in.Claims)
	}
	wantDetail(t, in, "quote", "signature and PCR digest valid (signature by the attestation's own, unverified AK)")
	wantDetail(t, in, "event log", "Secure Boot enabled")
	// The AK trusted, nothing else: verified, with the rest skipped.
	in = attest.InspectEvidence(ev, attest.InspectOptions{Policy: &attest.Policy{AllowSoftwareTPMUnsafe: true, TrustedAKs: m.Policy.TrustedAKs}})
	if !in.Verified() {
		t.Fatalf("%v %+v", in.Err, in.Checks)
	}
	wantStatus(t, in, map[string]attest.Status{"attestation key": attest.StatusPass, "nonce": attest.StatusSkipped, "reference values": attest.StatusSkipped})
	// Full inputs: same as Verify, nothing skipped.
	in = attest.InspectEvidence(ev, attest.InspectOptions{Challenge: &ch, Policy: m.Policy})
	if !in.Verified() || in.Claims.ImageID != "test-image" {
		t.Fatalf("%v %+v", in.Err, in.Checks)
	}
	for _, c := range in.Checks {
		if c.Status != attest.StatusPass {
			t.Errorf("full inputs: %+v", c)
		}
	}
	wantDetail(t, in, "quote", "signature, PCR digest and nonce valid, ")
	// A candidate derived from the evidence admits it.
	rv := in.CandidateReferenceValues("candidate")
	p := *m.Policy
	p.Reference = rv
	if _, err := attest.Verify(ev, ch, &p); err != nil {
		t.Fatalf("candidate reference values do not admit their own evidence: %v", err)
	}
	// The software-TPM label fails an inspection that does not allow it.
	if in := attest.InspectEvidence(ev, attest.InspectOptions{}); !errors.Is(in.Err, attest.ErrSoftwareTPM) {
		t.Fatalf("software TPM label: %v", in.Err)
	}
	other := attest.AdmissionChallenge(nonce(t))
	in = attest.InspectEvidence(ev, attest.InspectOptions{Challenge: &other})
	if !errors.Is(in.Err, attest.ErrNonceMismatch) {
		t.Fatalf("wrong challenge: %v", in.Err)
	}
}

// TestInspectBareAttestation inspects what `gotpm attest` produces: a
// go-tpm-tools Attestation with a raw nonce and no lifecycle log.
func TestInspectBareAttestation(t *testing.T) {
	sim := attesttest.Simulator(t)
	ak, err := attest.OpenAK(sim)
	if err != nil {
		t.Fatal(err)
	}
	defer ak.Close()
	n := nonce(t)
	att, err := ak.Attest(client.AttestOpts{Nonce: n, TCGEventLog: attesttest.BootLog(), SkipTeeAttestation: true})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := proto.Marshal(att)
	var back pb.Attestation
	if err := proto.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	p, err := attesttest.Policy(sim)
	if err != nil {
		t.Fatal(err)
	}
	in := attest.InspectTPMAttestation(&back, attest.InspectOptions{RawNonce: n, Policy: p})
	if !in.Verified() || in.Claims.ImageID != "test-image" || !in.Claims.SecureBoot {
		t.Fatalf("%v %+v", in.Err, in.Checks)
	}
	in = attest.InspectTPMAttestation(&back, attest.InspectOptions{RawNonce: nonce(t), Policy: p})
	if !errors.Is(in.Err, attest.ErrNonceMismatch) {
		t.Fatalf("wrong nonce: %v", in.Err)
	}
	// No AK root: whoever made the quote, it is not verified.
	in = attest.InspectTPMAttestation(&back, attest.InspectOptions{RawNonce: n, Policy: &attest.Policy{Reference: p.Reference}})
	if in.Verified() || !errors.Is(in.Err, attest.ErrNoTrustRoot) {
		t.Fatalf("no AK root: got %v, want %v", in.Err, attest.ErrNoTrustRoot)
	}
	wantStatus(t, in, map[string]attest.Status{"attestation key": attest.StatusSkipped, "quote": attest.StatusPass, "reference values": attest.StatusPass})
	// No nonce: skipped, not passed.
	in = attest.InspectTPMAttestation(&back, attest.InspectOptions{Policy: p})
	if !in.Verified() {
		t.Fatalf("no nonce: %v", in.Err)
	}
	wantStatus(t, in, map[string]attest.Status{"attestation key": attest.StatusPass, "quote": attest.StatusPass, "nonce": attest.StatusSkipped, "lifecycle log": attest.StatusSkipped})
}

// wantDetail checks that the named check's detail contains want.
func wantDetail(t *testing.T, in *attest.Inspection, name, want string) {
	t.Helper()
	for _, c := range in.Checks {
		if c.Name == name {
			if !strings.Contains(c.Detail, want) {
				t.Errorf("check %q: detail %q, want %q", name, c.Detail, want)
			}
			return
		}
	}
	t.Errorf("no check %q (%+v)", name, in.Checks)
}

var wantStatus = attest.WantStatusForTest
