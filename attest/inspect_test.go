package attest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"strings"
	"testing"
)

// TestInspectRealTDXQuote inspects the real COS 113 quote with its CCEL and
// its own REPORTDATA (the nonce it was made for): every check passes, and the
// candidate reference values derived from it match it.
func TestInspectRealTDXQuote(t *testing.T) {
	s := loadTDXSample(t)
	q, err := ParseTDXQuote(s.quote)
	if err != nil {
		t.Fatal(err)
	}
	when := validAt(t, q)
	in := InspectTDXQuote(s.quote, s.table, s.ccel, InspectOptions{RawNonce: s.nonce, Policy: &Policy{Time: when}})
	if !in.Verified() {
		t.Fatalf("inspection failed: %v\n%+v", in.Err, in.Checks)
	}
	wantStatus(t, in, map[string]Status{"quote": StatusPass, "event log": StatusPass, "nonce": "", "reference values": StatusSkipped})
	rv := in.CandidateReferenceValues("cos-113")
	rv.AgentDigests = []Hex{make(Hex, 32)}
	if err := rv.Validate(); err != nil {
		t.Fatalf("candidate reference values: %v", err)
	}
	in = InspectTDXQuote(s.quote, s.table, s.ccel, InspectOptions{RawNonce: s.nonce, Policy: &Policy{Time: when, Reference: rv}})
	if !in.Verified() || in.Claims.ImageID != "cos-113" {
		t.Fatalf("against its candidate values: %v %+v", in.Err, in.Checks)
	}
	wrong := bytes.Clone(s.nonce)
	wrong[0] ^= 1
	in = InspectTDXQuote(s.quote, s.table, s.ccel, InspectOptions{RawNonce: wrong, Policy: &Policy{Time: when}})
	if !errors.Is(in.Err, ErrNonceMismatch) {
		t.Fatalf("wrong nonce: %v", in.Err)
	}
	if last := in.Checks[len(in.Checks)-1]; last.Status != StatusFail || last.Name != "quote" {
		t.Errorf("last check %+v", last)
	}
}

// TestInspectTDXMissingInputs: a bare quote's missing nonce and CCEL are
// skipped, not passed and not failed; the quote's signer is still checked
// against Intel's root, so the inspection is verified. Evidence of our
// own format carries its CCEL: there an empty one fails, as in Verify.
func TestInspectTDXMissingInputs(t *testing.T) {
	s := loadTDXSample(t)
	q, err := ParseTDXQuote(s.quote)
	if err != nil {
		t.Fatal(err)
	}
	p := &Policy{Time: validAt(t, q)}
	in := InspectTDXQuote(s.quote, nil, nil, InspectOptions{Policy: p})
	if !in.Verified() {
		t.Fatalf("quote alone: %v %+v", in.Err, in.Checks)
	}
	wantStatus(t, in, map[string]Status{"quote": StatusPass, "nonce": StatusSkipped, "event log": StatusSkipped})
	if len(in.Claims.MRTD) == 0 {
		t.Error("MRTD not reported")
	}

	// Half a CCEL (table without log, log without table): a replay was
	// asked for, and it fails.
	in = InspectTDXQuote(s.quote, s.table, nil, InspectOptions{Policy: p})
	if !errors.Is(in.Err, ErrEventLogEmpty) {
		t.Fatalf("table without log: got %v, want %v", in.Err, ErrEventLogEmpty)
	}
	in = InspectTDXQuote(s.quote, nil, s.ccel, InspectOptions{Policy: p})
	if !errors.Is(in.Err, ErrEventLogReplay) {
		t.Fatalf("log without table: got %v, want %v", in.Err, ErrEventLogReplay)
	}

	envKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	spki, _ := x509.MarshalPKIXPublicKey(envKey.Public())
	hk, err := NewHPKEKey()
	if err != nil {
		t.Fatal(err)
	}
	ev := &Evidence{Format: EvidenceFormat, Kind: KindTDX, EnvKey: spki, HPKEPublicKey: hk.PublicKey(), TDX: &TDXEvidence{Quote: s.quote}}
	in = InspectEvidence(ev, InspectOptions{Policy: p})
	if !errors.Is(in.Err, ErrEventLogEmpty) {
		t.Fatalf("our evidence without its CCEL: got %v, want %v (%+v)", in.Err, ErrEventLogEmpty, in.Checks)
	}
}

// wantStatus checks the named checks' statuses ("" for absent), and that
// no check reported as passed says it did not check something.
func wantStatus(t *testing.T, in *Inspection, want map[string]Status) {
	t.Helper()
	got := map[string]Status{}
	for _, c := range in.Checks {
		got[c.Name] = c.Status
		if c.Status == StatusPass && strings.Contains(strings.ToUpper(c.Detail), "NOT CHECKED") {
			t.Errorf("check %q passed without checking: %s", c.Name, c.Detail)
		}
	}
	for name, st := range want {
		if got[name] != st {
			t.Errorf("check %q: %q, want %q (%+v)", name, got[name], st, in.Checks)
		}
	}
}
