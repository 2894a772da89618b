package provenance

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/attested-runner/attested-runner/attest"
	vsa "github.com/in-toto/attestation/go/predicates/vsa/v1"
	intoto "github.com/in-toto/attestation/go/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// VSAPredicate is the SLSA Verification Summary Attestation predicate type.
const VSAPredicate = "https://slsa.dev/verification_summary/v1"

var timeZero time.Time

// EnvCertificate is what the gate certifies when it admits an environment:
// the signed verification result BuildEnv L2.verify-before-dispatch and
// L3.verify-hw-before-dispatch require. It travels as a SLSA VSA (in-toto
// vsa/v1) whose subject is the environment key, signed by the gate as a
// DSSE sigstore bundle.
type EnvCertificate struct {
	// GateID identifies the gate (the VSA verifier id).
	GateID string `json:"gateId"`
	// EnvKey is the certified environment key's SubjectPublicKeyInfo.
	EnvKey []byte      `json:"-"`
	Kind   attest.Kind `json:"kind"`
	// AK is the attestation key's SPKI (TPM), so consumers can check the
	// response-time quote came from the same TPM.
	AK []byte `json:"ak,omitempty"`
	// Image is the reference image the boot matched: what response-time
	// quotes must still match.
	Image attest.Image `json:"image"`
	// AgentDigest is the agent binary admitted (agent-start).
	AgentDigest attest.Hex `json:"agentDigest"`
	// EvidenceDigest is the SHA-256 of the admission evidence.
	EvidenceDigest string `json:"evidenceDigest"`
	// PolicyDigest is the SHA-256 of the reference values applied.
	PolicyDigest string   `json:"policyDigest"`
	RunnerName   string   `json:"runnerName"`
	Labels       []string `json:"labels"`
	BuilderID    string   `json:"builderId"`
	// Level is the BuildEnv level verified (0: software TPM, demo only).
	Level int `json:"level"`
	// Hardware is the hardware path that gave the level (attest.Claims.
	// Hardware): "tpm" for level 2, a TEE ("tdx", "sev-snp") for level 3.
	Hardware string `json:"hardware"`
	// TDXTCB is the TCB verdict behind a TDX level 3, and TDXCollateral the
	// Intel collateral it was judged with (Intel-signed), so a consumer
	// re-checks the response-time quote's TCB offline at the build's time.
	TDXTCB        *attest.TDXTCB        `json:"tdxTcb,omitempty"`
	TDXCollateral *attest.TDXCollateral `json:"tdxCollateral,omitempty"`
	// SEVSNP is what the SEV-SNP report behind a vTPM's level 3 showed:
	// response-time reports must come from the same launch measurement
	// (Image.SNPMeasurements), with a TCB at least this one and SMT only
	// if it was admitted so.
	SEVSNP      *attest.SNPClaims `json:"sevSnp,omitempty"`
	SoftwareTPM bool              `json:"softwareTpm,omitempty"`
	// DirectKernelBoot records that the gate verified the boot under
	// attest.Policy.DirectKernelBoot (a QEMU -kernel boot measures the
	// kernel before "Calling EFI Application"): response-time quotes of the
	// same boot can only replay under the same relaxation.
	DirectKernelBoot bool      `json:"directKernelBoot,omitempty"`
	IssuedAt         time.Time `json:"issuedAt"`
	NotAfter         time.Time `json:"notAfter"`
}

// LevelName is how VSAs write a BuildEnv level.
func LevelName(level int) string { return fmt.Sprintf("SLSA_BUILDENV_LEVEL_%d", level) }

func (c *EnvCertificate) validate() error {
	switch {
	case c.GateID == "":
		return fmt.Errorf("no gate id")
	case len(c.EnvKey) == 0:
		return fmt.Errorf("no environment key")
	case c.RunnerName == "" || c.BuilderID == "":
		return fmt.Errorf("no runner name or builder id")
	case c.IssuedAt.IsZero() || !c.NotAfter.After(c.IssuedAt):
		return fmt.Errorf("validity %v..%v is empty", c.IssuedAt, c.NotAfter)
	case c.Image.ID == "":
		return fmt.Errorf("no image")
	case c.Level < 0 || c.Level > 3:
		return fmt.Errorf("level %d", c.Level)
	case c.Hardware == "":
		return fmt.Errorf("no hardware path")
	case c.Level == 3 && !attest.IsTEE(c.Hardware):
		// Level 3 is earned by a TEE report, never configured.
		return fmt.Errorf("level 3 from hardware %q: level 3 needs a TEE report", c.Hardware)
	case c.Level == 3 && c.Hardware == attest.HardwareTDX && c.TDXCollateral == nil:
		return fmt.Errorf("TDX level 3 without the collateral its TCB was judged with")
	case c.Level == 3 && c.Hardware == attest.HardwareSEVSNP && (c.SEVSNP == nil || len(c.Image.SNPMeasurements) == 0):
		return fmt.Errorf("SEV-SNP level 3 without the report's verdict or the image's SEV-SNP measurements")
	case c.Level == 3 && c.Hardware == attest.HardwareSEVSNP && c.SEVSNP.Binding != attest.SNPBindingReportData && c.SEVSNP.Binding != attest.SNPBindingAzureHCL:
		return fmt.Errorf("SEV-SNP level 3 with binding %q: the certificate must say how the report bound the vTPM", c.SEVSNP.Binding)
	}
	if _, err := attest.ParseEnvKey(c.EnvKey); err != nil {
		return err
	}
	return nil
}

// IssueEnvCert signs an environment certificate with the gate key. It
// refuses (ErrNoExpectation) a certificate VerifyEnvCert would refuse for
// a missing or invalid field.
func IssueEnvCert(ctx context.Context, gateKey crypto.Signer, c *EnvCertificate) ([]byte, error) {
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("%w: environment certificate: %w", ErrNoExpectation, err)
	}
	ann, err := json.Marshal(c)
	if err != nil {
		return nil, err
	}
	annS, err := jsonToStruct(ann)
	if err != nil {
		return nil, err
	}
	keyDigest := attest.KeyDigest(c.EnvKey)
	pred := &vsa.VerificationSummary{
		Verifier:           &vsa.VerificationSummary_Verifier{Id: c.GateID},
		TimeVerified:       timestamppb.New(c.IssuedAt),
		ResourceUri:        "attested-runner:env-key:sha256:" + keyDigest,
		Policy:             &vsa.VerificationSummary_Policy{Uri: "attested-runner:reference-values", Digest: map[string]string{"sha256": c.PolicyDigest}},
		InputAttestations:  []*vsa.VerificationSummary_InputAttestation{{Uri: "attested-runner:evidence", Digest: map[string]string{"sha256": c.EvidenceDigest}}},
		VerificationResult: "PASSED",
		VerifiedLevels:     []string{LevelName(c.Level)},
		SlsaVersion:        "1.1",
	}
	predS, err := toStruct(pred)
	if err != nil {
		return nil, err
	}
	st := &intoto.Statement{
		Type: intoto.StatementTypeUri,
		Subject: []*intoto.ResourceDescriptor{{
			Name:        "attested-runner-environment/" + c.RunnerName,
			Digest:      map[string]string{"sha256": keyDigest},
			Content:     c.EnvKey,
			MediaType:   "application/pkix-spki",
			Annotations: annS,
		}},
		PredicateType: VSAPredicate,
		Predicate:     predS,
	}
	payload, err := protojson.Marshal(st)
	if err != nil {
		return nil, err
	}
	return signPayload(ctx, payload, gateKey)
}

// VerifyEnvCert checks an environment certificate against trusted gate keys
// and returns what it certifies. Validity times are returned, not enforced:
// the caller compares them with the build's times.
//
// Every bundle of one job carries the same certificate, so successful
// verifications are cached (bounded), keyed by the certificate's bytes and
// the trusted keys.
func VerifyEnvCert(raw []byte, trustedGates []crypto.PublicKey) (*EnvCertificate, error) {
	if len(trustedGates) == 0 {
		return nil, fmt.Errorf("%w: no trusted gate key", ErrNoExpectation)
	}
	key := envCertCacheKey(raw, trustedGates)
	if c, ok := envCertCache.get(key); ok {
		return c, nil
	}
	c, err := verifyEnvCert(raw, trustedGates)
	if err != nil {
		return nil, err
	}
	envCertCache.put(key, c)
	return c.clone(), nil
}

func verifyEnvCert(raw []byte, trustedGates []crypto.PublicKey) (*EnvCertificate, error) {
	p, err := parseBundle(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUntrustedEnvironment, err)
	}
	if p.predicateType() != VSAPredicate || len(p.subjects()) != 1 {
		return nil, fmt.Errorf("%w: not an environment certificate", ErrUntrustedEnvironment)
	}
	subj := obj(p.subjects()[0])
	spki := bytesField(subj["content"])
	keyDigestHex := str(obj(subj["digest"])["sha256"])
	if !strings.HasPrefix(str(subj["name"]), "attested-runner-environment/") || len(spki) == 0 || keyDigestHex != attest.KeyDigest(spki) {
		return nil, fmt.Errorf("%w: certificate subject is not an environment key", ErrUntrustedEnvironment)
	}
	keyDigest, _ := hex.DecodeString(keyDigestHex)
	var verr error
	ok := false
	for _, gk := range trustedGates {
		if _, verr = p.verifySignature(gk, keyDigest); verr == nil {
			ok = true
			break
		}
	}
	if !ok {
		return nil, fmt.Errorf("%w: not signed by a trusted gate key: %v", ErrUntrustedEnvironment, verr)
	}
	// Verified: now read it.
	ann, err := json.Marshal(subj["annotations"])
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(ann))
	dec.DisallowUnknownFields()
	var c EnvCertificate
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("%w: certificate annotations: %v", ErrUntrustedEnvironment, err)
	}
	c.EnvKey = spki
	pred := p.predicate()
	levels := list(pred["verifiedLevels"])
	if str(pred["verificationResult"]) != "PASSED" || str(obj(pred["verifier"])["id"]) != c.GateID ||
		len(levels) != 1 || str(levels[0]) != LevelName(c.Level) {
		return nil, fmt.Errorf("%w: VSA does not say PASSED at the certified level", ErrUntrustedEnvironment)
	}
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUntrustedEnvironment, err)
	}
	return &c, nil
}

// CertificateFor fills an environment certificate from verified claims; the
// caller (the gate) adds identity, runner and validity fields.
func CertificateFor(c *attest.Claims) *EnvCertificate {
	cert := &EnvCertificate{
		EnvKey:        slices.Clone(c.EnvKeySPKI),
		Kind:          c.Kind,
		AK:            slices.Clone(c.AK),
		AgentDigest:   slices.Clone(c.Lifecycle.AgentDigest),
		Level:         c.Level,
		Hardware:      c.Hardware,
		SoftwareTPM:   c.SoftwareTPM,
		TDXTCB:        c.TDXTCB,
		TDXCollateral: c.TDXCollateral,
		SEVSNP:        c.SNP,
	}
	if c.Image != nil {
		cert.Image = *c.Image
	}
	return cert
}

func (c *EnvCertificate) clone() *EnvCertificate {
	out := *c
	out.EnvKey = slices.Clone(c.EnvKey)
	out.AK = slices.Clone(c.AK)
	out.AgentDigest = slices.Clone(c.AgentDigest)
	out.Labels = slices.Clone(c.Labels)
	out.Image.PCRs = maps.Clone(c.Image.PCRs)
	out.Image.Events = slices.Clone(c.Image.Events)
	out.Image.RTMRs = slices.Clone(c.Image.RTMRs)
	out.Image.SNPMeasurements = slices.Clone(c.Image.SNPMeasurements)
	out.Image.TDXMRTDs = slices.Clone(c.Image.TDXMRTDs)
	return &out
}

// envCertCacheKey names a (certificate, trusted keys) pair. Every part is
// length-framed: without framing, bytes could
// move between the certificate and the keys ((cert, [A, B]) and
// (cert || SPKI(A), [B]) would hash the same bytes) and a pair that never
// verified would be served from the cache.
func envCertCacheKey(raw []byte, roots []crypto.PublicKey) [32]byte {
	h := sha256.New()
	frame := func(b []byte) {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(b)))
		h.Write(n[:])
		h.Write(b)
	}
	frame(raw)
	for _, r := range roots {
		// Framed too, though DER already delimits an SPKI. A key that does
		// not marshal frames as empty: it verifies nothing.
		spki, _ := x509.MarshalPKIXPublicKey(r)
		frame(spki)
	}
	var k [32]byte
	h.Sum(k[:0])
	return k
}

// certCache is a small bounded cache of verified certificates.
type certCache struct {
	mu sync.Mutex
	m  map[[32]byte]*EnvCertificate
}

var envCertCache = &certCache{m: map[[32]byte]*EnvCertificate{}}

func (c *certCache) get(k [32]byte) (*EnvCertificate, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.m[k]
	if !ok {
		return nil, false
	}
	return v.clone(), true
}

func (c *certCache) put(k [32]byte, v *EnvCertificate) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= 64 {
		clear(c.m) // bounded; a fresh start is as good as LRU here
	}
	c.m[k] = v.clone()
}
