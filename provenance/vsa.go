package provenance

import (
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"time"

	vsa "github.com/in-toto/attestation/go/predicates/vsa/v1"
	intoto "github.com/in-toto/attestation/go/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// VerifierID identifies attested-verify as the verifier in the VSAs it writes.
const VerifierID = "https://github.com/attested-runner/attested-runner/attested-verify"

// VerifiedArtifact is one artifact a consumer verified and the bundle that
// proved it.
type VerifiedArtifact struct {
	Name         string
	SHA256       []byte
	BundleURI    string
	BundleSHA256 []byte
	Result       *Result
}

// ConsumerVSA renders a SLSA Verification Summary Attestation (vsa/v1) for
// artifacts that passed Verify: what was verified, against which
// expectations, with which input attestations, at which levels. It is an
// unsigned statement; SignConsumerVSA signs it.
func ConsumerVSA(arts []VerifiedArtifact, opts VerifyOptions, at time.Time) ([]byte, error) {
	st, err := consumerVSA(arts, opts, at)
	if err != nil {
		return nil, err
	}
	return protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(st)
}

// SignConsumerVSA is ConsumerVSA signed by the consumer's key: a DSSE
// sigstore bundle (media type v0.3, public-key hint), which sigstore-go and
// cosign verify with the key's public half.
func SignConsumerVSA(ctx context.Context, key crypto.Signer, arts []VerifiedArtifact, opts VerifyOptions, at time.Time) ([]byte, error) {
	st, err := consumerVSA(arts, opts, at)
	if err != nil {
		return nil, err
	}
	payload, err := protojson.Marshal(st)
	if err != nil {
		return nil, err
	}
	return signPayload(ctx, payload, key)
}

func consumerVSA(arts []VerifiedArtifact, opts VerifyOptions, at time.Time) (*intoto.Statement, error) {
	exp, err := json.Marshal(map[string]any{
		"repository": opts.ExpectedRepository, "owner": opts.ExpectedOwner, "server": opts.ExpectedServerURL,
		"ref": opts.ExpectedRef, "workflow": opts.ExpectedWorkflow,
		"commit": opts.ExpectedCommit, "runId": opts.ExpectedRunID, "builderId": opts.ExpectedBuilderID,
		"minLevel": opts.MinLevel, "evidenceMode": opts.ReferenceValues != nil,
		"allowSoftwareTPMInsecure": opts.AllowSoftwareTPMInsecure,
	})
	if err != nil {
		return nil, err
	}
	expDigest := sha256.Sum256(exp)
	pred := &vsa.VerificationSummary{
		Verifier:           &vsa.VerificationSummary_Verifier{Id: VerifierID},
		TimeVerified:       timestamppb.New(at),
		Policy:             &vsa.VerificationSummary_Policy{Uri: "attested-verify:expectations", Digest: map[string]string{"sha256": hex.EncodeToString(expDigest[:])}},
		VerificationResult: "PASSED",
		SlsaVersion:        "1.1",
	}
	st := &intoto.Statement{Type: intoto.StatementTypeUri, PredicateType: VSAPredicate}
	minLevel := -1
	for _, a := range arts {
		st.Subject = append(st.Subject, &intoto.ResourceDescriptor{Name: a.Name, Digest: map[string]string{"sha256": hex.EncodeToString(a.SHA256)}})
		pred.InputAttestations = append(pred.InputAttestations, &vsa.VerificationSummary_InputAttestation{
			Uri: a.BundleURI, Digest: map[string]string{"sha256": hex.EncodeToString(a.BundleSHA256)},
		})
		if minLevel < 0 || a.Result.Level < minLevel {
			minLevel = a.Result.Level
		}
	}
	if len(arts) > 0 {
		pred.ResourceUri = "git+" + repoURL(arts[0].Result.Job) + "@" + arts[0].Result.Job.Ref
		// The lowest BuildEnv level among the artifacts' environments. No
		// Build-track level is claimed: that is the platform operator's call.
		pred.VerifiedLevels = []string{LevelName(minLevel)}
	}
	predS, err := toStruct(pred)
	if err != nil {
		return nil, err
	}
	st.Predicate = predS
	return st, nil
}
