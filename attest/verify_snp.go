package attest

import (
	"bytes"
	"crypto/subtle"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	spb "github.com/google/go-sev-guest/proto/sevsnp"
	sevverify "github.com/google/go-sev-guest/verify"
	"github.com/google/go-sev-guest/verify/trust"
)

// AMD SEV-SNP errors (sentinels, kept with the feature).
var (
	// ErrSNPReport: the attestation report does not verify: its signature,
	// or the VCEK/VLEK certificate's chain to AMD's ASK/ARK roots.
	ErrSNPReport = errors.New("SEV-SNP report verification failed")
	// ErrSNPDebug: the guest policy allows the host to debug the guest
	// (decrypt its memory). Such a guest proves nothing.
	ErrSNPDebug = errors.New("SEV-SNP guest policy allows debugging")
	// ErrSNPPolicy: another guest policy bit is not as required (migration
	// agent allowed, SMT when the policy forbids it).
	ErrSNPPolicy = errors.New("SEV-SNP guest policy not allowed")
	// ErrSNPTCB: the reported TCB is below the policy's minimum.
	ErrSNPTCB = errors.New("SEV-SNP reported TCB below the minimum")
)

// MaxSNPCertSize bounds the VCEK/VLEK certificate (real ones are ~1.4 KiB).
const MaxSNPCertSize = 8 << 10

// SNPTCB is an SEV-SNP TCB version: security patch levels per component.
type SNPTCB struct {
	BootLoader uint8 `json:"bootLoader"`
	TEE        uint8 `json:"tee"`
	SNP        uint8 `json:"snp"`
	Microcode  uint8 `json:"microcode"`
}

func (t SNPTCB) String() string {
	return fmt.Sprintf("bootloader %d, TEE %d, SNP %d, microcode %d", t.BootLoader, t.TEE, t.SNP, t.Microcode)
}

// SNPRequirements are what a policy asks of every SEV-SNP report besides
// its measurement (Policy.SNP; the measurements come from the matched
// image).
type SNPRequirements struct {
	// AllowSMT accepts guests whose policy allows simultaneous
	// multithreading (a side-channel risk some deployments accept).
	AllowSMT bool
	// MinimumTCB is the lowest reported TCB accepted, per component.
	MinimumTCB SNPTCB
	// TrustedRoots replaces AMD's embedded ARK/ASK roots (go-sev-guest's
	// trust.AMDRootCerts by product line). Nil means AMD's: anything else
	// is for tests, which sign reports under a test-only chain.
	TrustedRoots map[string][]*trust.AMDRootCerts `json:"-"`
}

// SNPPolicy is what an SEV-SNP report must satisfy.
type SNPPolicy struct {
	// Measurements are the allowed launch MEASUREMENTs (48 bytes each),
	// from the image's reference values. Empty is ErrPolicyEmpty.
	Measurements []Hex
	// Time is when certificates must be valid; zero means now.
	Time time.Time
	SNPRequirements
}

// SNPClaims is what a verified report establishes. It travels in
// environment certificates, so that a consumer re-judges response-time
// reports against what the gate admitted.
type SNPClaims struct {
	Measurement Hex `json:"measurement"`
	ReportData  Hex `json:"-"`
	// GuestPolicy is the report's POLICY field (GuestPolicyFlags decodes
	// it).
	GuestPolicy uint64 `json:"guestPolicy"`
	ReportedTCB SNPTCB `json:"reportedTcb"`
	// VCEKDigest names the signing key (SHA-256 of its certificate).
	VCEKDigest string `json:"vcekDigest"`
	// Binding is how the report bound a vTPM's attestation:
	// SNPBindingReportData or SNPBindingAzureHCL. Empty for a report
	// judged alone.
	Binding string `json:"binding,omitempty"`
}

// How an SEV-SNP report binds a vTPM's attestation (SNPClaims.Binding).
const (
	// SNPBindingReportData: REPORT_DATA is Challenge.SNPReportData (the
	// challenge, both keys and the AK), from a report made for this quote.
	SNPBindingReportData = "report-data"
	// SNPBindingAzureHCL: REPORT_DATA is the SHA-256 of the HCL runtime
	// data, which names the AK; made at boot by Azure's paravisor.
	SNPBindingAzureHCL = "azure-hcl"
)

// GuestPolicyFlags decodes GuestPolicy. VerifySNPReport refused any
// policy that does not decode, so for verified claims (and certificates
// made from them) the zero value, which allows nothing, is never returned
// for a real policy.
func (c *SNPClaims) GuestPolicyFlags() abi.SnpPolicy {
	flags, _ := abi.ParseSnpPolicy(c.GuestPolicy)
	return flags
}

func (p *SNPPolicy) roots() map[string][]*trust.AMDRootCerts {
	if p.TrustedRoots != nil {
		return p.TrustedRoots
	}
	return amdRoots()
}

// amdRoots are AMD's ARK and ASK (VCEK) and ASVK (VLEK) certificates for
// each product line, as embedded in go-sev-guest (from AMD's KDS).
var amdRoots = sync.OnceValue(func() map[string][]*trust.AMDRootCerts {
	out := map[string][]*trust.AMDRootCerts{}
	for line, r := range trust.DefaultRootCerts {
		out[line] = append(out[line], r)
	}
	for line, vlek := range map[string][]byte{"Milan": trust.AskArkMilanVlekBytes, "Genoa": trust.AskArkGenoaVlekBytes, "Turin": trust.AskArkTurinVlekBytes} {
		r := &trust.AMDRootCerts{ProductLine: line}
		if err := r.FromKDSCertBytes(vlek); err == nil {
			out[line] = append(out[line], r)
		}
	}
	return out
})

// ParseSNPReport decodes a raw attestation report, which must be exactly
// abi.ReportSize bytes.
func ParseSNPReport(raw []byte) (r *spb.Report, err error) {
	if len(raw) > abi.ReportSize {
		return nil, fmt.Errorf("%w: SEV-SNP report is %d bytes, want %d", ErrTooLarge, len(raw), abi.ReportSize)
	}
	if len(raw) != abi.ReportSize {
		return nil, fmt.Errorf("%w: SEV-SNP report is %d bytes, want %d", ErrMalformedEvidence, len(raw), abi.ReportSize)
	}
	defer func() {
		if p := recover(); p != nil {
			r, err = nil, fmt.Errorf("%w: SEV-SNP report: parser panic: %v", ErrMalformedEvidence, p)
		}
	}()
	if r, err = abi.ReportToProto(raw); err != nil {
		return nil, fmt.Errorf("%w: SEV-SNP report: %v", ErrMalformedEvidence, err)
	}
	return r, nil
}

// VerifySNPReport checks a raw SEV-SNP attestation report and the VCEK (or
// VLEK) certificate that signed it, offline, in this order:
//   - sizes and decoding (ErrTooLarge, ErrMalformedEvidence);
//   - the policy lists at least one measurement (ErrPolicyEmpty);
//   - go-sev-guest verifies the report signature with the VCEK/VLEK and the
//     certificate's chain to AMD's ASK and ARK (embedded roots, or
//     p.TrustedRoots in tests) at
//     p.Time (ErrSNPReport);
//   - REPORT_DATA is reportData (ErrNonceMismatch);
//   - MEASUREMENT is one of p.Measurements (ErrReferenceMismatch);
//   - each component of the reported TCB is at least p.MinimumTCB (ErrSNPTCB);
//   - the guest policy: no migration agent, SMT only if p.AllowSMT
//     (ErrSNPPolicy), and debugging off (ErrSNPDebug).
//
// It does NOT check revocation (AMD's CRL is not fetched), the host data,
// ID block or author key, nor VMPL; and SEV-SNP has no runtime-extendable
// register, so a lifecycle log cannot be bound to the report itself (on
// cloud CVMs a vTPM carries it; not wired here).
func VerifySNPReport(raw, vcekDER []byte, reportData [64]byte, p *SNPPolicy) (*SNPClaims, error) {
	if len(vcekDER) > MaxSNPCertSize {
		return nil, fmt.Errorf("%w: VCEK certificate is %d bytes", ErrTooLarge, len(vcekDER))
	}
	if len(vcekDER) == 0 {
		return nil, fmt.Errorf("%w: no VCEK/VLEK certificate", ErrMalformedEvidence)
	}
	r, err := ParseSNPReport(raw)
	if err != nil {
		return nil, err
	}
	if p == nil || len(p.Measurements) == 0 {
		return nil, fmt.Errorf("%w: no SEV-SNP measurement", ErrPolicyEmpty)
	}
	at := p.Time
	if at.IsZero() {
		at = time.Now()
	}
	att := &spb.Attestation{Report: r, CertificateChain: &spb.CertificateChain{VcekCert: vcekDER}}
	if err := sevverify.SnpAttestation(att, &sevverify.Options{DisableCertFetching: true, Now: at, TrustedRoots: p.roots()}); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSNPReport, err)
	}
	c := &SNPClaims{Measurement: r.GetMeasurement(), ReportData: r.GetReportData()}
	if cert, err := x509.ParseCertificate(vcekDER); err == nil {
		c.VCEKDigest = KeyDigest(cert.Raw)
	}
	if subtle.ConstantTimeCompare(r.GetReportData(), reportData[:]) != 1 {
		return nil, fmt.Errorf("%w: SEV-SNP REPORT_DATA", ErrNonceMismatch)
	}
	matched := false
	for _, m := range p.Measurements {
		matched = matched || bytes.Equal(m, r.GetMeasurement())
	}
	if !matched {
		return nil, fmt.Errorf("%w: SEV-SNP MEASUREMENT is %x", ErrReferenceMismatch, r.GetMeasurement())
	}
	parts := kds.DecomposeTCBVersion(kds.TCBVersion(r.GetReportedTcb()))
	c.ReportedTCB = SNPTCB{BootLoader: parts.BlSpl, TEE: parts.TeeSpl, SNP: parts.SnpSpl, Microcode: parts.UcodeSpl}
	min := p.MinimumTCB
	if c.ReportedTCB.BootLoader < min.BootLoader || c.ReportedTCB.TEE < min.TEE || c.ReportedTCB.SNP < min.SNP || c.ReportedTCB.Microcode < min.Microcode {
		return nil, fmt.Errorf("%w: reported %s, minimum %s", ErrSNPTCB, c.ReportedTCB, min)
	}
	c.GuestPolicy = r.GetPolicy()
	flags, err := abi.ParseSnpPolicy(r.GetPolicy())
	if err != nil {
		return nil, fmt.Errorf("%w: guest policy %#x: %v", ErrSNPPolicy, r.GetPolicy(), err)
	}
	if flags.MigrateMA {
		return nil, fmt.Errorf("%w: a migration agent is allowed", ErrSNPPolicy)
	}
	if flags.SMT && !p.AllowSMT {
		return nil, fmt.Errorf("%w: SMT is allowed and the policy does not accept it", ErrSNPPolicy)
	}
	if flags.Debug {
		return nil, fmt.Errorf("%w: guest policy %#x", ErrSNPDebug, r.GetPolicy())
	}
	return c, nil
}

// LoadSNPRoots reads an AMD root pair in the format AMD's KDS serves it
// (https://kdsintf.amd.com/vcek/v1/Milan/cert_chain: the ASK, then the
// ARK, in PEM) and returns it as SNPRequirements.TrustedRoots, keyed by
// the product line the ARK names ("ARK-Milan" -> "Milan").
func LoadSNPRoots(path string) (map[string][]*trust.AMDRootCerts, error) {
	b, err := readLimited(path, 4*MaxSNPCertSize)
	if err != nil {
		return nil, err
	}
	r := &trust.AMDRootCerts{}
	if err := r.FromKDSCertBytes(b); err != nil {
		return nil, fmt.Errorf("%s: not an AMD ASK and ARK in PEM: %w", path, err)
	}
	if r.ProductCerts.Ark == nil {
		// go-sev-guest logs an unparsable ARK and returns no error.
		return nil, fmt.Errorf("%s: the second certificate (the ARK) does not parse", path)
	}
	cn := r.ProductCerts.Ark.Subject.CommonName
	line, ok := strings.CutPrefix(cn, "ARK-")
	if !ok || line == "" {
		return nil, fmt.Errorf("%s: the ARK is %q, not ARK-<product line>", path, cn)
	}
	r.ProductLine = line
	return map[string][]*trust.AMDRootCerts{line: {r}}, nil
}
