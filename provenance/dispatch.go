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
	p, err := parseBundle(raw)
	if err != nil {
		return "", nil, err
	}
	if p.predicateType() != SCAIPredicate || len(p.subjects()) != 1 {
		return "", nil, fmt.Errorf("%w: not a dispatch attestation", ErrNotAttestedRunner)
	}
	var certRaw, evRaw []byte
	for _, a := range list(p.predicate()["attributes"]) {
		a := obj(a)
		ev := obj(a["evidence"])
		switch {
		case a["attribute"] == AttrCertified:
			certRaw = bytesField(ev["content"])
		case a["attribute"] == AttrHardwareQuot && ev["name"] == dispatchQuote:
			evRaw = bytesField(ev["content"])
		}
	}
	cert, err := VerifyEnvCert(certRaw, trustedGates)
	if err != nil {
		return "", nil, err
	}
	envKey, err := attest.ParseEnvKey(cert.EnvKey)
	if err != nil {
		return "", nil, err
	}
	subj := obj(p.subjects()[0])
	subjDigest := str(obj(subj["digest"])["sha256"])
	sd, err := hex.DecodeString(subjDigest)
	if err != nil || len(sd) != 32 {
		return "", nil, fmt.Errorf("%w: subject digest", ErrMalformed)
	}
	if _, err := p.verifySignature(envKey, sd); err != nil {
		return "", nil, err
	}
	buildID := str(subj["name"])
	if h := sha256.Sum256([]byte(buildID)); hex.EncodeToString(h[:]) != subjDigest {
		return "", nil, fmt.Errorf("%w: subject digest is not the build id's", ErrMalformed)
	}
	if len(evRaw) == 0 {
		return "", nil, ErrMissingEvidence
	}
	ev, err := attest.DecodeEvidence(evRaw)
	if err != nil {
		return "", nil, fmt.Errorf("%w: %w", ErrEvidence, err)
	}
	digest, err := statementDigest(p.doc, dispatchQuoteSlot.remove)
	if err != nil {
		return "", nil, err
	}
	claims, err := attest.Verify(ev, attest.DispatchChallenge(digest), certPolicy(cert, cert.IssuedAt))
	if err != nil {
		return "", nil, fmt.Errorf("%w: %w", ErrEvidence, err)
	}
	// The quote must speak for the key that signed the dispatch (and the
	// gate certified), not for another key of the same TPM and boot.
	if !claims.EnvKey.Equal(envKey) {
		return "", nil, fmt.Errorf("%w: %s, the signer is %s", ErrEnvKeyMismatch, keyName(claims.EnvKey), keyName(envKey))
	}
	if claims.Lifecycle.BuildID != buildID {
		return "", nil, fmt.Errorf("%w: lifecycle says %q", ErrBuildMismatch, claims.Lifecycle.BuildID)
	}
	if err := jobRunning(claims.Lifecycle); err != nil {
		return "", nil, err
	}
	return buildID, cert, nil
}
