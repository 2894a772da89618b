package attest

import (
	"bytes"
	"errors"
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
