package attest_test

import (
	"bytes"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/google/go-sev-guest/abi"
	sevtest "github.com/google/go-sev-guest/testing"
	sevtd "github.com/google/go-sev-guest/verify/testdata"
	"github.com/google/go-sev-guest/verify/trust"
)

// TestRealSNPReport runs VerifySNPReport on go-sev-guest's real Milan
// attestation report and its real VCEK (verify/testdata; go-sev-guest's
// TestRealAttestationVerification accepts the pair). The report's guest
// policy is 0xb0000: SMT allowed and DEBUG on, so its honest verdict is
// ErrSNPDebug; each other check is shown by breaking one thing before it.
// No SEV-SNP hardware was used: no report here binds our keys, and no
// genuine non-debug report was available.
func TestRealSNPReport(t *testing.T) {
	report, vcek := sevtd.AttestationBytes, sevtd.VcekBytes
	var rd [64]byte
	copy(rd[:], []byte{1, 2, 3, 4, 5}) // the report's REPORT_DATA
	parsed, err := attest.ParseSNPReport(report)
	if err != nil {
		t.Fatal(err)
	}
	valid := func() *attest.SNPPolicy {
		return &attest.SNPPolicy{
			Measurements: []attest.Hex{make([]byte, 48), parsed.GetMeasurement()},
			SNPRequirements: attest.SNPRequirements{
				AllowSMT:   true,
				MinimumTCB: attest.SNPTCB{BootLoader: 2, TEE: 0, SNP: 5, Microcode: 68}, // exactly the reported TCB
			},
			Time: time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC),
		}
	}
	flip := func(off int) []byte {
		b := bytes.Clone(report)
		b[off] ^= 1
		return b
	}
	tests := []struct {
		name   string
		report []byte
		vcek   []byte
		rd     func(*[64]byte)
		policy func(*attest.SNPPolicy)
		want   error
		msg    string
	}{
		{name: "genuine report: DEBUG on", want: attest.ErrSNPDebug, msg: "0xb0000"},
		{name: "MEASUREMENT edited", report: flip(0x90), want: attest.ErrSNPReport},
		{name: "REPORT_DATA edited", report: flip(0x50), want: attest.ErrSNPReport},
		{name: "signature edited", report: flip(abi.ReportSize - 0x200 + 3), want: attest.ErrSNPReport},
		{name: "AMD's ASK presented as the VCEK", vcek: askDER(t), want: attest.ErrSNPReport},
		{name: "VCEK not a certificate", vcek: []byte("junk"), want: attest.ErrSNPReport},
		{name: "no VCEK", vcek: []byte{}, want: attest.ErrMalformedEvidence},
		{name: "VCEK expired", policy: func(p *attest.SNPPolicy) { p.Time = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC) }, want: attest.ErrSNPReport},
		{name: "REPORT_DATA of another challenge", rd: func(b *[64]byte) { b[0] ^= 1 }, want: attest.ErrNonceMismatch},
		{name: "MEASUREMENT not a reference value", policy: func(p *attest.SNPPolicy) { p.Measurements = p.Measurements[:1] }, want: attest.ErrReferenceMismatch, msg: "b07af962"},
		{name: "no reference measurement", policy: func(p *attest.SNPPolicy) { p.Measurements = nil }, want: attest.ErrPolicyEmpty},
		{name: "SNP firmware below the minimum", policy: func(p *attest.SNPPolicy) { p.MinimumTCB.SNP = 6 }, want: attest.ErrSNPTCB, msg: "SNP 5"},
		{name: "microcode below the minimum", policy: func(p *attest.SNPPolicy) { p.MinimumTCB.Microcode = 69 }, want: attest.ErrSNPTCB},
		{name: "SMT not accepted", policy: func(p *attest.SNPPolicy) { p.AllowSMT = false }, want: attest.ErrSNPPolicy, msg: "SMT"},
		{name: "report one byte short", report: report[:abi.ReportSize-1], want: attest.ErrMalformedEvidence},
		{name: "report one byte long", report: append(bytes.Clone(report), 0), want: attest.ErrTooLarge},
		{name: "VCEK over the limit", vcek: make([]byte, attest.MaxSNPCertSize+1), want: attest.ErrTooLarge},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, v, want := report, vcek, rd
			if tc.report != nil {
				r = tc.report
			}
			if tc.vcek != nil {
				v = tc.vcek
			}
			if tc.rd != nil {
				tc.rd(&want)
			}
			p := valid()
			if tc.policy != nil {
				tc.policy(p)
			}
			_, err := attest.VerifySNPReport(r, v, want, p)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if tc.msg != "" && !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("%q does not say %q", err, tc.msg)
			}
		})
	}
}

// askDER is AMD's real Milan ASK certificate (go-sev-guest's embedded
// roots): a genuine AMD certificate that is not the report's signer.
func askDER(t *testing.T) []byte {
	t.Helper()
	block, _ := pem.Decode(trust.AskArkMilanVcekBytes)
	if block == nil {
		t.Fatal("no ASK")
	}
	return block.Bytes
}

// FuzzSNPReport: the report parser never panics, on real reports mutated.
func FuzzSNPReport(f *testing.F) {
	f.Add(sevtd.AttestationBytes)
	f.Add(make([]byte, abi.ReportSize))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := attest.ParseSNPReport(b)
		if err == nil && r == nil {
			t.Fatal("nil report without error")
		}
		var rd [64]byte
		if _, err := attest.VerifySNPReport(b, sevtd.VcekBytes, rd, &attest.SNPPolicy{Measurements: []attest.Hex{make([]byte, 48)}}); err == nil {
			t.Fatal("a fuzzed report verified")
		}
	})
}

// TestSNPCollectionNeedsHardware: without SEV-SNP hardware (this machine)
// collection refuses with ErrNoSNP and says what is missing.
func TestSNPCollectionNeedsHardware(t *testing.T) {
	if attest.DetectSNP() == nil {
		t.Skip("an SEV-SNP guest: collection is possible here")
	}
	_, err := attest.SNPQuoteProvider()
	if !errors.Is(err, attest.ErrNoSNP) || !strings.Contains(err.Error(), "/dev/sev-guest") {
		t.Fatalf("got %v, want %v naming the interfaces", err, attest.ErrNoSNP)
	}
}

// TestSNPGuestPolicyResigned: the guest-policy checks on reports that
// differ only in their POLICY field, re-signed under go-sev-guest's
// test-only AMD chain (ARK -> ASK -> VCEK) and verified with that chain as
// the roots: no debug, no migration agent, SMT as configured is accepted;
// each forbidden bit alone is refused with its error; and the same report
// is refused under AMD's real roots. (go-sev-guest's real report has DEBUG
// on, so without re-signing the accepting path and the migration-agent
// check could not be shown.)
func TestSNPGuestPolicyResigned(t *testing.T) {
	signer, err := sevtest.DefaultTestOnlyCertChain("Milan-B0", time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	roots := map[string][]*trust.AMDRootCerts{"Milan": {{Product: "Milan", ProductCerts: &trust.ProductCerts{Ark: signer.Ark, Ask: signer.Ask}}}}
	var rd [64]byte
	copy(rd[:], "attested-runner nonce")
	measurement := bytes.Repeat([]byte{0xa5}, 48)
	report := func(guestPolicy uint64) []byte {
		t.Helper()
		raw := bytes.Clone(sevtd.AttestationBytes)
		binary.LittleEndian.PutUint64(raw[0x08:0x10], guestPolicy)
		copy(raw[0x50:0x90], rd[:])
		copy(raw[0x90:0xC0], measurement)
		clear(raw[0x180:0x188]) // REPORTED_TCB: the test VCEK certifies TCB 0
		clear(raw[0x1A0:0x1E0]) // CHIP_ID: and hardware id 0
		r, s, err := signer.Sign(abi.SignedComponent(raw))
		if err != nil {
			t.Fatal(err)
		}
		if err := abi.SetSignature(r, s, raw); err != nil {
			t.Fatal(err)
		}
		return raw
	}
	const (
		smt      = 1 << 16
		reserved = 1 << 17 // must be one
		ma       = 1 << 18
		debug    = 1 << 19
	)
	for _, tc := range []struct {
		name     string
		policy   uint64
		allowSMT bool
		amd      bool
		want     error
		msg      string
	}{
		{name: "no debug, no migration agent, no SMT", policy: reserved},
		{name: "SMT allowed and accepted", policy: reserved | smt, allowSMT: true},
		{name: "migration agent allowed", policy: reserved | ma, want: attest.ErrSNPPolicy, msg: "migration agent"},
		{name: "SMT allowed, not accepted", policy: reserved | smt, want: attest.ErrSNPPolicy, msg: "SMT"},
		{name: "debug on", policy: reserved | debug, want: attest.ErrSNPDebug},
		{name: "reserved bit 17 clear: refused by the parser", policy: smt, allowSMT: true, want: attest.ErrMalformedEvidence, msg: "reserved"},
		{name: "valid, but under AMD's real roots", policy: reserved, amd: true, want: attest.ErrSNPReport},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &attest.SNPPolicy{Measurements: []attest.Hex{measurement}, SNPRequirements: attest.SNPRequirements{AllowSMT: tc.allowSMT, TrustedRoots: roots},
				Time: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
			if tc.amd {
				p.TrustedRoots = nil
			}
			c, err := attest.VerifySNPReport(report(tc.policy), signer.Vcek.Raw, rd, p)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("got %v", err)
				}
				if f := c.GuestPolicyFlags(); f.Debug || f.MigrateMA || f.SMT != tc.allowSMT || !bytes.Equal(c.Measurement, measurement) {
					t.Errorf("claims %+v", c)
				}
				return
			}
			if !errors.Is(err, tc.want) || (tc.msg != "" && !strings.Contains(err.Error(), tc.msg)) {
				t.Fatalf("got %v, want %v (%q)", err, tc.want, tc.msg)
			}
		})
	}
}
