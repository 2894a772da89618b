package attest

import (
	"fmt"
	"slices"

	pb "github.com/google/go-tpm-tools/proto/attest"
)

// InspectOptions say what an inspection can check. Unlike Verify, absent
// inputs are allowed: the checks that need them are reported as skipped.
type InspectOptions struct {
	// Challenge is what attested-runner evidence answers; nil: the nonce
	// binding is not checked.
	Challenge *Challenge
	// RawNonce is a bare go-tpm-tools attestation's nonce (quote extra
	// data); nil: not checked.
	RawNonce []byte
	// Policy carries trust roots and reference values; either may be
	// absent. Nil means neither.
	Policy *Policy
}

// Inspection is an admin's view of evidence: every check with its outcome,
// and whatever was measured.
type Inspection struct {
	Source string
	Kind   Kind
	Checks []Check
	// Claims holds what verification established, as far as it went.
	Claims *Claims
	// Err is the first failure, nil if none.
	Err error
}

// Verified reports whether no check failed and the quote's signer was
// checked against a trust anchor (a TPM quote against a trusted AK or AK
// root, a TDX quote against Intel's root). Other skipped checks do not fail
// an inspection; callers that require them say so by passing their inputs.
func (i *Inspection) Verified() bool { return i.Err == nil }

// finish records the checks and the verdict: the first failure err or,
// when every check passed or was skipped but the quote's signer was not
// checked against any trust anchor, ErrNoTrustRoot: a quote that anyone
// could have made verifies nothing.
func (i *Inspection) finish(s *steps, err error) *Inspection {
	if err == nil && s.unanchored != "" {
		err = fmt.Errorf("%w: %s", ErrNoTrustRoot, s.unanchored)
	}
	i.Err, i.Checks = err, s.checks
	return i
}

func (o InspectOptions) policy() *Policy {
	if o.Policy == nil {
		return &Policy{}
	}
	return o.Policy
}

// InspectEvidence checks attested-runner evidence with whatever inputs are
// given.
func InspectEvidence(ev *Evidence, o InspectOptions) *Inspection {
	in := &Inspection{Source: "attested-runner evidence", Kind: ev.Kind}
	s := &steps{}
	envKey, err := ev.checkShape()
	if err != nil {
		return in.finish(s, s.fail("decode", err))
	}
	p := o.policy()
	if o.Challenge != nil {
		if err := o.Challenge.validate(); err != nil {
			return in.finish(s, s.fail("decode", err))
		}
	}
	if p.Reference != nil {
		if err := p.Reference.Validate(); err != nil {
			return in.finish(s, s.fail("reference values", err))
		}
	}
	inspect := *p
	inspect.AllowSoftwareTPMUnsafe = true // reported, not refused, when inspecting
	c, err := verifyEvidence(ev, envKey, o.Challenge, &inspect, s)
	in.Claims = c
	if err == nil && ev.SoftwareTPMUnsafe && !p.AllowSoftwareTPMUnsafe {
		err = s.fail("software TPM", ErrSoftwareTPM)
	}
	return in.finish(s, err)
}

// InspectTPMAttestation checks a bare go-tpm-tools Attestation (as made by
// `gotpm attest` or client.Key.Attest), with its canonical event log if any.
func InspectTPMAttestation(att *pb.Attestation, o InspectOptions) (in *Inspection) {
	in = &Inspection{Source: "go-tpm-tools attestation", Kind: KindTPM}
	s := &steps{}
	defer func() {
		if r := recover(); r != nil {
			in.finish(s, s.fail("decode", fmt.Errorf("%w: parser panic: %v", ErrMalformedEvidence, r)))
		}
	}()
	in.Claims = &Claims{Kind: KindTPM}
	return in.finish(s, verifyTPMInput(tpmInput{att: att, cel: att.GetCanonicalEventLog(), nonce: o.RawNonce}, o.policy(), in.Claims, s))
}

// InspectTDXQuote checks a raw TDX quote and its CCEL (table and log both
// nil: the replay is skipped).
func InspectTDXQuote(quote, table, ccel []byte, o InspectOptions) *Inspection {
	in := &Inspection{Source: "TDX quote", Kind: KindTDX}
	s := &steps{}
	q, err := ParseTDXQuote(quote)
	if err != nil {
		return in.finish(s, s.fail("decode", err))
	}
	in.Claims = &Claims{Kind: KindTDX}
	return in.finish(s, verifyTDXQuoteInput(tdxInput{quote: q, table: table, ccel: ccel, reportData: o.RawNonce}, o.policy(), in.Claims, s))
}

// CandidateReferenceValues turns what an inspection measured into a
// reference-values document an admin can review and load into the gate:
// exact values of the PCRs the boot log touched (TPM) or MRTD and RTMR 0-2
// (TDX), the Secure Boot state seen, and the agent digest if a lifecycle
// log was present. Only measurements that replayed are used; nil when the
// inspection got no measurements.
func (i *Inspection) CandidateReferenceValues(id string) *ReferenceValues {
	c := i.Claims
	if c == nil {
		return nil
	}
	rv := &ReferenceValues{Format: ReferenceValuesFormat}
	switch {
	case len(c.MRTD) > 0 && len(c.RTMRs) == 4:
		rv.Images = []Image{{ID: id, MRTD: c.MRTD, RTMRs: []Hex{c.RTMRs[0], c.RTMRs[1], c.RTMRs[2]}}}
	case len(c.BootEvents) > 0:
		im := Image{ID: id, PCRs: map[uint32]Hex{}, SecureBoot: c.SecureBoot}
		for _, e := range c.BootEvents {
			if v, ok := c.PCRs[e.PCR]; ok && e.PCR != LifecyclePCR {
				im.PCRs[e.PCR] = slices.Clone(v)
			}
		}
		rv.Images = []Image{im}
	default:
		return nil
	}
	if c.Lifecycle != nil && len(c.Lifecycle.AgentDigest) > 0 {
		rv.AgentDigests = []Hex{slices.Clone(c.Lifecycle.AgentDigest)}
	}
	return rv
}
