package attest

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/attested-runner/attested-runner/internal/fileio"
)

// ReferenceValuesFormat identifies version 1 of the reference-values document.
const ReferenceValuesFormat = "https://github.com/attested-runner/attested-runner/reference-values/v1"

// MaxReferenceValuesSize bounds a reference-values file.
const MaxReferenceValuesSize = 1 << 20

// Hex is a byte string written as lower-case hex in JSON.
type Hex []byte

// MarshalJSON writes hex.
func (h Hex) MarshalJSON() ([]byte, error) { return json.Marshal(hex.EncodeToString(h)) }

// UnmarshalJSON reads hex.
func (h *Hex) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	d, err := hex.DecodeString(s)
	if err != nil {
		return fmt.Errorf("not hex: %q", s)
	}
	*h = d
	return nil
}

func (h Hex) String() string { return hex.EncodeToString(h) }

// EventRef names one event that must appear, replay-verified, in the TCG
// event log: its PCR and its SHA-256 digest.
type EventRef struct {
	PCR         uint32 `json:"pcr"`
	Digest      Hex    `json:"digest"`
	Description string `json:"description,omitempty"`
}

// Image holds the reference values of one runner image (BuildEnv
// L2.ref-values). Evidence matches an image when every value listed matches;
// values not listed are not compared, so an image must list at least one.
type Image struct {
	ID string `json:"id"`
	// PCRs are exact SHA-256 PCR values, keyed by PCR index.
	PCRs map[uint32]Hex `json:"pcrs,omitempty"`
	// Events must each appear in the replayed TCG event log. Sturdier than
	// exact PCR values where firmware versions vary.
	Events []EventRef `json:"events,omitempty"`
	// SecureBoot requires the event log to show Secure Boot enabled.
	SecureBoot bool `json:"secureBoot,omitempty"`
	// MRTD and RTMRs (RTMR 0-2; RTMR 3 carries the lifecycle log) are the
	// TDX reference values.
	MRTD  Hex   `json:"mrtd,omitempty"`
	RTMRs []Hex `json:"rtmrs,omitempty"`
	// SNPMeasurements are the SEV-SNP launch MEASUREMENTs (48 bytes each)
	// of the confidential VM a TPM image runs in, for TPM evidence that
	// carries an SEV-SNP report (a vTPM in an SEV-SNP VM). A report is
	// judged only against them: evidence with a report, matching an image
	// that lists none, is refused.
	SNPMeasurements []Hex `json:"snpMeasurements,omitempty"`
	// TDXMRTDs are the TD firmware measurements (MRTD, 48 bytes each) of
	// the TDX confidential VM a TPM image runs in, for TPM evidence that
	// carries a TDX quote (a vTPM in a TDX VM). As SNPMeasurements: a
	// quote is judged only against them, and refused if none is listed.
	TDXMRTDs []Hex `json:"tdxMrtds,omitempty"`
}

func (im *Image) isTDX() bool { return len(im.MRTD) > 0 }

func (im *Image) validate() error {
	if im.ID == "" {
		return errors.New("image without id")
	}
	if im.isTDX() {
		if len(im.MRTD) != 48 || len(im.RTMRs) != 3 {
			return fmt.Errorf("image %q: TDX needs a 48-byte mrtd and rtmrs 0-2", im.ID)
		}
		for i, r := range im.RTMRs {
			if len(r) != 48 {
				return fmt.Errorf("image %q: rtmr %d is %d bytes, want 48", im.ID, i, len(r))
			}
		}
		if len(im.PCRs) > 0 || len(im.Events) > 0 || len(im.SNPMeasurements) > 0 || len(im.TDXMRTDs) > 0 {
			return fmt.Errorf("image %q: mixes TDX and TPM reference values", im.ID)
		}
		return nil
	}
	if len(im.PCRs) == 0 && len(im.Events) == 0 {
		return fmt.Errorf("image %q lists no PCR value and no event: it would match anything", im.ID)
	}
	for i, v := range im.PCRs {
		if i > 23 || len(v) != 32 {
			return fmt.Errorf("image %q: PCR %d value must be 32 bytes (SHA-256)", im.ID, i)
		}
		if i == LifecyclePCR {
			return fmt.Errorf("image %q: PCR %d is the lifecycle PCR, checked by replay, not by value", im.ID, i)
		}
	}
	for _, e := range im.Events {
		if e.PCR > 23 || len(e.Digest) != 32 {
			return fmt.Errorf("image %q: event on PCR %d needs a 32-byte digest", im.ID, e.PCR)
		}
	}
	for _, f := range []struct {
		what string
		list []Hex
	}{{"SEV-SNP measurement", im.SNPMeasurements}, {"TDX MRTD", im.TDXMRTDs}} {
		for _, m := range f.list {
			if len(m) != 48 {
				return fmt.Errorf("image %q: %s %x is %d bytes, want 48", im.ID, f.what, m, len(m))
			}
		}
	}
	return nil
}

// ReferenceValues is the document scripts/ emits for an image build and the
// gate loads: the images it may admit and the agent binaries allowed in them.
type ReferenceValues struct {
	Format string  `json:"format"`
	Images []Image `json:"images"`
	// AgentDigests are SHA-256 digests of allowed agent binaries, as
	// recorded in the agent-start lifecycle event.
	AgentDigests []Hex `json:"agentDigests"`
}

// Validate rejects empty or malformed reference values: an empty allow-list
// is ErrPolicyEmpty, never "allow all".
func (rv *ReferenceValues) Validate() error {
	if rv == nil || len(rv.Images) == 0 {
		return fmt.Errorf("%w: no reference image", ErrPolicyEmpty)
	}
	if len(rv.AgentDigests) == 0 {
		return fmt.Errorf("%w: no allowed agent digest", ErrPolicyEmpty)
	}
	seen := map[string]bool{}
	for i := range rv.Images {
		if err := rv.Images[i].validate(); err != nil {
			return fmt.Errorf("%w: %v", ErrPolicyEmpty, err)
		}
		if seen[rv.Images[i].ID] {
			return fmt.Errorf("%w: image id %q twice", ErrPolicyEmpty, rv.Images[i].ID)
		}
		seen[rv.Images[i].ID] = true
	}
	for _, d := range rv.AgentDigests {
		if len(d) != 32 {
			return fmt.Errorf("%w: agent digest %x is not SHA-256", ErrPolicyEmpty, d)
		}
	}
	return nil
}

// ParseReferenceValues reads and validates a reference-values document.
func ParseReferenceValues(b []byte) (*ReferenceValues, error) {
	if len(b) > MaxReferenceValuesSize {
		return nil, fmt.Errorf("%w: reference values are %d bytes", ErrTooLarge, len(b))
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var rv ReferenceValues
	if err := dec.Decode(&rv); err != nil {
		return nil, fmt.Errorf("reference values: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("reference values: trailing data")
	}
	if rv.Format != ReferenceValuesFormat {
		return nil, fmt.Errorf("reference values: format %q, want %q", rv.Format, ReferenceValuesFormat)
	}
	if err := rv.Validate(); err != nil {
		return nil, err
	}
	return &rv, nil
}

// LoadReferenceValues reads a reference-values file.
func LoadReferenceValues(path string) (*ReferenceValues, error) {
	b, err := readLimited(path, MaxReferenceValuesSize)
	if err != nil {
		return nil, err
	}
	rv, err := ParseReferenceValues(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return rv, nil
}

// Policy is everything Verify needs besides the evidence: what to trust and
// what to expect. Build it once; it is read-only during verification.
type Policy struct {
	Reference *ReferenceValues
	// TrustedAKs are attestation keys trusted directly (enrolled AKs).
	TrustedAKs []crypto.PublicKey
	// TrustedAKRoots are CAs whose AK certificates are trusted (e.g. the
	// GCE vTPM EK/AK roots), with optional intermediates.
	TrustedAKRoots         []*x509.Certificate
	TrustedAKIntermediates []*x509.Certificate
	// TrustedEKs are the EK certificate roots (with intermediates and
	// CRLs) under which a gate trusts an AK proven by credential
	// activation. Verify does not read it: the gate verifies the EK and
	// the activation, then passes the activated AK as the only TrustedAK.
	TrustedEKs *EKTrust
	// TrustedTDXRoots replaces Intel's SGX root CA (intel_sgx_root_ca.pem).
	// Nil means the embedded root, which is what production wants.
	TrustedTDXRoots *x509.CertPool
	// Time is when certificates must be valid; zero means now. Set it to
	// verify historical evidence.
	Time time.Time
	// DirectKernelBoot relaxes one event-log check for firmware that loads
	// the kernel itself (QEMU -kernel, no bootloader): the kernel is measured
	// as an EFI application before the "Calling EFI Application" event.
	// Every other check stays.
	DirectKernelBoot bool
	// AllowSoftwareTPMUnsafe accepts evidence labelled as coming from a
	// simulator or swtpm. Demos and tests only.
	AllowSoftwareTPMUnsafe bool
	// TDXCollateral gives Intel collateral for TDX TCB evaluation (the
	// gate: a PCS cache; a consumer: the collateral in the environment
	// certificate). Nil: the collateral embedded in the evidence, if any.
	// TDX evidence without collateral verifies, but only at level 2: level
	// 3 needs an UpToDate TCB.
	TDXCollateral TDXCollateralSource
	// MinTDXQESVN is the lowest TD quoting enclave ISVSVN accepted.
	MinTDXQESVN uint32
	// SNP is what SEV-SNP reports (riding in TPM evidence) must satisfy
	// besides the image's measurement. The zero value: AMD's roots, SMT
	// not allowed, any TCB.
	SNP SNPRequirements
	// There is no setting for the level: it is earned (see Claims.Level).
}

func (p *Policy) now() time.Time {
	if p.Time.IsZero() {
		return time.Now()
	}
	return p.Time
}

func (p *Policy) hasAKRoots() bool {
	return len(p.TrustedAKs) > 0 || len(p.TrustedAKRoots) > 0
}

func (p *Policy) check(kind Kind) error {
	if p == nil {
		return fmt.Errorf("%w: no policy", ErrPolicyEmpty)
	}
	if err := p.Reference.Validate(); err != nil {
		return err
	}
	if kind == KindTPM && len(p.TrustedAKs) == 0 && len(p.TrustedAKRoots) == 0 {
		return ErrNoTrustRoot
	}
	return nil
}

func readLimited(path string, limit int64) ([]byte, error) {
	b, err := fileio.ReadFile(path, limit)
	if errors.Is(err, fileio.ErrTooLarge) {
		return nil, fmt.Errorf("%w: %v", ErrTooLarge, err)
	}
	return b, err
}

// sortedPCRs lists the PCR indices of an image in order, for stable messages.
func sortedPCRs(m map[uint32]Hex) []uint32 {
	out := make([]uint32, 0, len(m))
	for i := range m {
		out = append(out, i)
	}
	sort.Slice(out, func(a, b int) bool { return out[a] < out[b] })
	return out
}

// checkReference runs the "reference values" step with match (L2/L3
// image matching). matched is false when there were no reference values
// (a skipped step, err nil) or the claims matched no image (err set).
func checkReference(s *steps, p *Policy, c *Claims, match func(*ReferenceValues, *Claims) (*Image, error)) (matched bool, err error) {
	if p.Reference == nil {
		s.skip("reference values", "no reference values given")
		return false, nil
	}
	err = s.run("reference values", func() (string, error) {
		img, err := match(p.Reference, c)
		if err != nil {
			return "", err
		}
		c.ImageID, c.Image = img.ID, img
		return "matches image " + img.ID, nil
	})
	return err == nil, err
}

// matchImage returns the first image of this kind with no mismatch, or an
// ErrReferenceMismatch listing why each image of the kind did not match.
func matchImage(rv *ReferenceValues, kind Kind, mismatch func(*Image) string) (*Image, error) {
	var reasons []string
	for i := range rv.Images {
		im := &rv.Images[i]
		if im.isTDX() != (kind == KindTDX) {
			continue
		}
		reason := mismatch(im)
		if reason == "" {
			return im, nil
		}
		reasons = append(reasons, im.ID+": "+reason)
	}
	if len(reasons) == 0 {
		return nil, fmt.Errorf("%w: policy has no %s image", ErrReferenceMismatch, kind)
	}
	return nil, fmt.Errorf("%w: %s", ErrReferenceMismatch, strings.Join(reasons, "; "))
}

// LoadCertificates reads PEM certificates (AK roots or intermediates).
func LoadCertificates(path string) ([]*x509.Certificate, error) {
	b, err := readLimited(path, MaxReferenceValuesSize)
	if err != nil {
		return nil, err
	}
	var out []*x509.Certificate
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no PEM certificate", path)
	}
	return out, nil
}
