package provenance

import (
	"context"
	"crypto"
	"encoding/hex"
	"fmt"
	"sort"
	"time"

	vsa "github.com/in-toto/attestation/go/predicates/vsa/v1"
	intoto "github.com/in-toto/attestation/go/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// LaunchVerification is what a fleet verified before it launched a VM
// (BuildEnv L1.verify-before-launch, L2.host-verifies-image): the image's
// signed provenance, against the exact files the VM boots.
type LaunchVerification struct {
	// GateID is the verifier; VM and Pool name the launch.
	GateID, VM, Pool string
	// ImageID is the reference image of the verified provenance.
	ImageID string
	// Files are the boot files, by name, with their SHA-256.
	Files map[string][]byte
	// ProvenanceSHA256 is the digest of the image provenance bundle.
	ProvenanceSHA256 []byte
	// BuilderID is who built the image (from its provenance).
	BuilderID string
	At        time.Time
}

// LaunchVSAResource prefixes the resource URI of a launch VSA.
const LaunchVSAResource = "attested-runner:vm:"

// IssueLaunchVSA signs a SLSA VSA saying the image files passed
// verification for this launch: subjects are the files, the input
// attestation is the image provenance, the level is BuildEnv L1.
func IssueLaunchVSA(ctx context.Context, key crypto.Signer, v *LaunchVerification) ([]byte, error) {
	if v.GateID == "" || v.VM == "" || len(v.Files) == 0 || len(v.ProvenanceSHA256) != 32 {
		return nil, fmt.Errorf("%w: a launch VSA needs the gate, the VM, the files and the provenance digest", ErrNoExpectation)
	}
	pred := &vsa.VerificationSummary{
		Verifier:     &vsa.VerificationSummary_Verifier{Id: v.GateID},
		TimeVerified: timestamppb.New(v.At),
		ResourceUri:  LaunchVSAResource + v.VM,
		Policy:       &vsa.VerificationSummary_Policy{Uri: "attested-runner:policy.imageSigners"},
		InputAttestations: []*vsa.VerificationSummary_InputAttestation{{
			Uri: "attested-runner:image-provenance:" + v.ImageID, Digest: map[string]string{"sha256": hex.EncodeToString(v.ProvenanceSHA256)},
		}},
		VerificationResult: "PASSED",
		VerifiedLevels:     []string{LevelName(1)},
		SlsaVersion:        "1.1",
	}
	predS, err := toStruct(pred)
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(v.Files))
	for n := range v.Files {
		names = append(names, n)
	}
	sort.Strings(names)
	st := &intoto.Statement{Type: intoto.StatementTypeUri, PredicateType: VSAPredicate, Predicate: predS}
	for _, n := range names {
		st.Subject = append(st.Subject, &intoto.ResourceDescriptor{Name: n, Digest: map[string]string{"sha256": hex.EncodeToString(v.Files[n])}})
	}
	payload, err := protojson.Marshal(st)
	if err != nil {
		return nil, err
	}
	return signPayload(ctx, payload, key)
}

// VerifyLaunchVSA checks a launch VSA against trusted gate keys and
// returns the VM it names and its subjects (name -> SHA-256).
func VerifyLaunchVSA(raw []byte, trustedGates []crypto.PublicKey) (string, map[string][]byte, error) {
	if len(trustedGates) == 0 {
		return "", nil, fmt.Errorf("%w: no trusted gate key", ErrNoExpectation)
	}
	p, err := parseBundle(raw)
	if err != nil {
		return "", nil, err
	}
	pred := p.predicate()
	uri := str(pred["resourceUri"])
	if p.predicateType() != VSAPredicate || len(uri) <= len(LaunchVSAResource) || uri[:len(LaunchVSAResource)] != LaunchVSAResource ||
		str(pred["verificationResult"]) != "PASSED" || len(p.subjects()) == 0 {
		return "", nil, fmt.Errorf("%w: not a launch VSA", ErrNotAttestedRunner)
	}
	subjects := map[string][]byte{}
	var first []byte
	for i, s := range p.subjects() {
		d, err := hex.DecodeString(str(obj(obj(s)["digest"])["sha256"]))
		if err != nil || len(d) != 32 {
			return "", nil, fmt.Errorf("%w: launch VSA subject digest", ErrMalformed)
		}
		if i == 0 {
			first = d
		}
		subjects[str(obj(s)["name"])] = d
	}
	var verr error
	for _, k := range trustedGates {
		if _, verr = p.verifySignature(k, first); verr == nil {
			return uri[len(LaunchVSAResource):], subjects, nil
		}
	}
	return "", nil, fmt.Errorf("%w: launch VSA not signed by a trusted gate: %v", ErrUntrustedEnvironment, verr)
}
