package provenance

import (
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	"github.com/attested-runner/attested-runner/attest"
	scai "github.com/in-toto/attestation/go/predicates/scai/v0"
	intoto "github.com/in-toto/attestation/go/v1"
	"google.golang.org/protobuf/types/known/structpb"
)

// SCAIPredicate is the SCAI attribute report predicate type (v0.3).
const SCAIPredicate = scai.PredicateTypeUri + scai.PredicateVersion

// Attributes of the dispatch attestation.
const (
	AttrDispatched   = "BUILDENV_DISPATCHED"
	AttrCertified    = "ENVIRONMENT_CERTIFIED"
	AttrHardwareQuot = "HARDWARE_QUOTE"
	bootEvidenceName = "attested-runner/admission-evidence"
	dispatchQuote    = "attested-runner/dispatch-quote"
)

// Dispatch is what the agent attests when a job is dispatched to it, after
// extending job-start and before the job's code runs (BuildEnv
// L2.agent-dispatch): this environment, admitted with this boot evidence and
// this certificate, was assigned this build. A fresh hardware quote over the
// statement rides along (L3.dispatch-includes-hw).
type Dispatch struct {
	Job                 Job
	AdmissionEvidenceSH []byte // SHA-256 of the admission evidence
	EnvCert             []byte
}

// SignDispatch builds the SCAI attribute report, quotes it and signs it with
// the environment key.
func SignDispatch(ctx context.Context, d *Dispatch, key crypto.Signer, q Quoter) ([]byte, error) {
	if err := d.Job.Validate(); err != nil {
		return nil, err
	}
	if len(d.EnvCert) == 0 || len(d.AdmissionEvidenceSH) != 32 {
		return nil, fmt.Errorf("%w: dispatch needs the environment certificate and admission evidence digest", ErrNoExpectation)
	}
	buildID := d.Job.BuildID()
	bd := sha256.Sum256([]byte(buildID))
	cd := sha256.Sum256(d.EnvCert)
	kp, err := NewKeypair(key)
	if err != nil {
		return nil, err
	}
	target := &intoto.ResourceDescriptor{Name: buildID, Digest: map[string]string{"sha256": hex.EncodeToString(bd[:])}}
	report := &scai.AttributeReport{
		Attributes: []*scai.AttributeAssertion{
			{Attribute: AttrDispatched, Target: target, Evidence: &intoto.ResourceDescriptor{
				Name: bootEvidenceName, Digest: map[string]string{"sha256": hex.EncodeToString(d.AdmissionEvidenceSH)},
			}},
			{Attribute: AttrCertified, Evidence: &intoto.ResourceDescriptor{
				Name: EnvCertByproduct, MediaType: BundleMediaType, Content: d.EnvCert,
				Digest: map[string]string{"sha256": hex.EncodeToString(cd[:])},
			}},
		},
		Producer: &intoto.ResourceDescriptor{Uri: "attested-runner:env-key:sha256:" + attest.KeyDigest(kp.SPKI())},
	}
	if err := report.Validate(); err != nil {
		return nil, err
	}
	predS, err := toStruct(report)
	if err != nil {
		return nil, err
	}
	st := &intoto.Statement{
		Type:          intoto.StatementTypeUri,
		Subject:       []*intoto.ResourceDescriptor{target},
		PredicateType: SCAIPredicate,
		Predicate:     predS,
	}
	payload, err := attachQuote(st, q, attest.DispatchChallenge, dispatchQuoteSlot)
	if err != nil {
		return nil, err
	}
	return signPayload(ctx, payload, key)
}

// dispatchQuoteSlot: SCAI carries the quote as one more attribute whose
// evidence is the hardware evidence document.
var dispatchQuoteSlot = quoteSlot{
	name: dispatchQuote,
	attach: func(st *intoto.Statement, rd *structpb.Value) error {
		attrs := st.GetPredicate().GetFields()["attributes"].GetListValue()
		if attrs == nil {
			return fmt.Errorf("SCAI report has no attributes")
		}
		a := &structpb.Struct{Fields: map[string]*structpb.Value{
			"attribute": structpb.NewStringValue(AttrHardwareQuot),
			"evidence":  rd,
		}}
		attrs.Values = append(attrs.Values, structpb.NewStructValue(a))
		return nil
	},
	remove: func(doc map[string]any) map[string]any {
		root, pred := copyPath(doc, "predicate")
		removeNamed(pred, "attributes", func(m map[string]any) bool {
			return m["attribute"] == AttrHardwareQuot && obj(m["evidence"])["name"] == dispatchQuote
		})
		return root
	},
}

// VerifyDispatch checks a dispatch attestation: signed by a gate-certified
// environment key, with a dispatch quote from the same boot, certifying the
// same key (ErrEnvKeyMismatch), whose lifecycle log shows job-start for the
// attested build (ErrBuildMismatch) and neither job-end nor teardown
// (ErrJobEnded). It returns the build id.
func VerifyDispatch(raw []byte, trustedGates []crypto.PublicKey) (string, *EnvCertificate, error) {
	return verifyDispatch(raw, trustedGates, teeRoots{})
}

// verifyDispatch is VerifyDispatch judging TEE reports under roots
// (VerifyOptions.TrustedSNPRoots and TrustedTDXRoots; zero: the vendors').
func verifyDispatch(raw []byte, trustedGates []crypto.PublicKey, roots teeRoots) (string, *EnvCertificate, error) {
	d, err := parseDispatch(raw)
	if err != nil {
		return "", nil, err
	}
	cert, err := VerifyEnvCert(d.certRaw, trustedGates)
	if err != nil {
		return "", nil, err
	}
	envKey, err := attest.ParseEnvKey(cert.EnvKey)
	if err != nil {
		return "", nil, err
	}
	buildID, err := d.verify(envKey, certPolicy(cert, cert.IssuedAt, roots))
	if err != nil {
		return "", nil, err
	}
	return buildID, cert, nil
}

// verifyDispatchEvidence is VerifyDispatch in evidence mode, trusting no
// gate: the dispatch must be signed by envKey (the key the response-time
// evidence certified) and its own quote must verify against the
// consumer's reference values and certify that same key. The gate
// certificate it carries is not consulted.
func verifyDispatchEvidence(raw []byte, envKey crypto.PublicKey, policy *attest.Policy) (string, error) {
	d, err := parseDispatch(raw)
	if err != nil {
		return "", err
	}
	return d.verify(envKey, policy)
}

// dispatchDoc is a parsed dispatch attestation: the gate certificate and
// the dispatch quote it carries.
type dispatchDoc struct {
	p              *parsedBundle
	certRaw, evRaw []byte
}

func parseDispatch(raw []byte) (*dispatchDoc, error) {
	p, err := parseBundle(raw)
	if err != nil {
		return nil, err
	}
	if p.predicateType() != SCAIPredicate || len(p.subjects()) != 1 {
		return nil, fmt.Errorf("%w: not a dispatch attestation", ErrNotAttestedRunner)
	}
	d := &dispatchDoc{p: p}
	for _, a := range list(p.predicate()["attributes"]) {
		a := obj(a)
		ev := obj(a["evidence"])
		switch {
		case a["attribute"] == AttrCertified:
			d.certRaw = bytesField(ev["content"])
		case a["attribute"] == AttrHardwareQuot && ev["name"] == dispatchQuote:
			d.evRaw = bytesField(ev["content"])
		}
	}
	return d, nil
}

// verify checks the signature by envKey, the subject naming the build,
// and the dispatch quote under policy: same key, job-start for this build,
// job still running. It returns the build id.
func (d *dispatchDoc) verify(envKey crypto.PublicKey, policy *attest.Policy) (string, error) {
	p := d.p
	subj := obj(p.subjects()[0])
	subjDigest := str(obj(subj["digest"])["sha256"])
	sd, err := hex.DecodeString(subjDigest)
	if err != nil || len(sd) != 32 {
		return "", fmt.Errorf("%w: subject digest", ErrMalformed)
	}
	if _, err := p.verifySignature(envKey, sd); err != nil {
		return "", err
	}
	buildID := str(subj["name"])
	if h := sha256.Sum256([]byte(buildID)); hex.EncodeToString(h[:]) != subjDigest {
		return "", fmt.Errorf("%w: subject digest is not the build id's", ErrMalformed)
	}
	if len(d.evRaw) == 0 {
		return "", ErrMissingEvidence
	}
	ev, err := attest.DecodeEvidence(d.evRaw)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrEvidence, err)
	}
	digest, err := statementDigest(p.doc, dispatchQuoteSlot.remove)
	if err != nil {
		return "", err
	}
	claims, err := attest.Verify(ev, attest.DispatchChallenge(digest), policy)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrEvidence, err)
	}
	// The quote must speak for the key that signed the dispatch (and the
	// gate or the response-time evidence certified), not for another key
	// of the same TPM and boot.
	if !claims.EnvKey.Equal(envKey) {
		return "", fmt.Errorf("%w: %s, the signer is %s", ErrEnvKeyMismatch, keyName(claims.EnvKey), keyName(envKey))
	}
	if claims.Lifecycle.BuildID != buildID {
		return "", fmt.Errorf("%w: lifecycle says %q", ErrBuildMismatch, claims.Lifecycle.BuildID)
	}
	if err := jobRunning(claims.Lifecycle); err != nil {
		return "", err
	}
	return buildID, nil
}
