package provenance

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	slsa "github.com/in-toto/attestation/go/predicates/provenance/v1"
	intoto "github.com/in-toto/attestation/go/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/attested-runner/attested-runner/attest"
)

// Runner-image provenance (BuildEnv L1.image-prov): what scripts/image
// built, from what, and the reference values computed from it, signed
// together by the image builder's key so that the gate can take reference
// values only from a signed build (L2.ref-values).
const (
	ImageBuildType           = "https://github.com/attested-runner/attested-runner/buildtypes/runner-image/v1"
	ReferenceValuesByproduct = "attested-runner/reference-values"
	ReferenceValuesMediaType = "application/vnd.attested-runner.reference-values+json"
)

// ImageBuild is one runner image build.
type ImageBuild struct {
	BuilderID string
	// Subjects are the image's files: kernel, initrd, command line (or the
	// UKI) and the agent binary.
	Subjects []Subject
	// Parameters are the build's external parameters (build.sh's manifest
	// and how reference values were computed), as JSON.
	Parameters json.RawMessage
	// Dependencies are the inputs: Debian packages with their .deb digests.
	Dependencies []Dependency
	// ReferenceValues is the attest reference-values document computed from
	// the subjects; it rides in the statement as a byproduct.
	ReferenceValues []byte
	StartedOn       time.Time
	FinishedOn      time.Time
}

// Dependency is one input of an image build.
type Dependency struct {
	Name   string // e.g. pkg:deb/debian/bash@5.2.15-2+b7?arch=amd64
	SHA256 []byte
}

func (b *ImageBuild) validate() error {
	if b.BuilderID == "" {
		return fmt.Errorf("%w: no builder id", ErrNoExpectation)
	}
	if len(b.Subjects) == 0 {
		return fmt.Errorf("%w: no subject", ErrNoExpectation)
	}
	for _, s := range b.Subjects {
		if s.Name == "" || len(s.SHA256) != sha256.Size {
			return fmt.Errorf("%w: subject %q needs a name and a SHA-256 digest", ErrNoExpectation, s.Name)
		}
	}
	for _, d := range b.Dependencies {
		if d.Name == "" || len(d.SHA256) != sha256.Size {
			return fmt.Errorf("%w: dependency %q needs a name and a SHA-256 digest", ErrNoExpectation, d.Name)
		}
	}
	if _, err := attest.ParseReferenceValues(b.ReferenceValues); err != nil {
		return fmt.Errorf("%w: image reference values: %w", ErrNoExpectation, err)
	}
	return nil
}

// SignImage signs an image build's SLSA v1 provenance with the image
// builder's key and returns the sigstore bundle's JSON. An incomplete or
// invalid build is refused with ErrNoExpectation.
func SignImage(ctx context.Context, b *ImageBuild, key crypto.Signer) ([]byte, error) {
	if err := b.validate(); err != nil {
		return nil, err
	}
	params := b.Parameters
	if len(params) == 0 {
		params = json.RawMessage("{}")
	}
	ext, err := jsonToStruct(params)
	if err != nil {
		return nil, fmt.Errorf("%w: image build parameters: %w", ErrNoExpectation, err)
	}
	var deps []*intoto.ResourceDescriptor
	for _, d := range b.Dependencies {
		deps = append(deps, &intoto.ResourceDescriptor{Uri: d.Name, Digest: sha256Map(d.SHA256)})
	}
	rvDigest := sha256.Sum256(b.ReferenceValues)
	pred := &slsa.Provenance{
		BuildDefinition: &slsa.BuildDefinition{
			BuildType:            ImageBuildType,
			ExternalParameters:   ext,
			ResolvedDependencies: deps,
		},
		RunDetails: &slsa.RunDetails{
			Builder: &slsa.Builder{Id: b.BuilderID},
			Metadata: &slsa.BuildMetadata{
				StartedOn:  timestamppb.New(b.StartedOn),
				FinishedOn: timestamppb.New(b.FinishedOn),
			},
			Byproducts: []*intoto.ResourceDescriptor{{
				Name:      ReferenceValuesByproduct,
				MediaType: ReferenceValuesMediaType,
				Digest:    sha256Map(rvDigest[:]),
				Content:   b.ReferenceValues,
			}},
		},
	}
	predS, err := toStruct(pred)
	if err != nil {
		return nil, err
	}
	st := &intoto.Statement{Type: intoto.StatementTypeUri, PredicateType: ProvenancePredicate, Predicate: predS}
	for _, s := range b.Subjects {
		st.Subject = append(st.Subject, &intoto.ResourceDescriptor{Name: s.Name, Digest: sha256Map(s.SHA256)})
	}
	if err := st.Validate(); err != nil {
		return nil, err
	}
	payload, err := protojson.Marshal(st)
	if err != nil {
		return nil, err
	}
	return signPayload(ctx, payload, key)
}

func sha256Map(d []byte) map[string]string { return map[string]string{"sha256": hex.EncodeToString(d)} }

// VerifiedImage is what a verified image provenance says.
type VerifiedImage struct {
	BuilderID string
	// Subjects maps each image file's name to its SHA-256.
	Subjects map[string][]byte
	// ReferenceValues is the signed reference-values document, parsed.
	ReferenceValues *attest.ReferenceValues
	// ReferenceValuesJSON is the same document as signed.
	ReferenceValuesJSON []byte
	// Boot is the boot path the reference values predict, as the image
	// build recorded it (externalParameters.referenceValues.boot):
	// BootQEMUDirect, "loader" or "uki"; empty if not recorded.
	Boot string
}

// BootQEMUDirect is the boot of a QEMU -kernel image: the firmware loads
// and measures the kernel itself (attest.Policy.DirectKernelBoot applies).
const BootQEMUDirect = "qemu-direct"

// VerifyImage checks a runner-image provenance bundle: a SLSA v1 statement
// of ImageBuildType, signed by one of the trusted image keys, whose
// reference-values byproduct matches its digest and parses. It returns what
// the image build attests; comparing the subjects with image files is the
// caller's (VerifiedImage.CheckFile).
func VerifyImage(raw []byte, trustedKeys []crypto.PublicKey) (*VerifiedImage, error) {
	if len(trustedKeys) == 0 {
		return nil, fmt.Errorf("%w: no trusted image key", ErrNoExpectation)
	}
	p, err := parseBundle(raw)
	if err != nil {
		return nil, err
	}
	pred := p.predicate()
	if p.predicateType() != ProvenancePredicate || str(obj(pred["buildDefinition"])["buildType"]) != ImageBuildType {
		return nil, fmt.Errorf("%w: not runner-image provenance (predicate %q, build type %q)", ErrNotAttestedRunner,
			p.predicateType(), str(obj(pred["buildDefinition"])["buildType"]))
	}
	first, err := hex.DecodeString(str(obj(obj(p.subjects()[0])["digest"])["sha256"]))
	if err != nil || len(first) != sha256.Size {
		return nil, fmt.Errorf("%w: subject without a SHA-256 digest", ErrMalformed)
	}
	var verr error
	signed := false
	for _, k := range trustedKeys {
		if _, verr = p.verifySignature(k, first); verr == nil {
			signed = true
			break
		}
	}
	if !signed {
		return nil, fmt.Errorf("%w: %v", ErrUntrustedImage, verr)
	}
	// Signed: now read it.
	v := &VerifiedImage{
		BuilderID: str(obj(obj(pred["runDetails"])["builder"])["id"]),
		Subjects:  map[string][]byte{},
		Boot:      str(obj(obj(obj(pred["buildDefinition"])["externalParameters"])["referenceValues"])["boot"]),
	}
	for _, s := range p.subjects() {
		d, err := hex.DecodeString(str(obj(obj(s)["digest"])["sha256"]))
		name := str(obj(s)["name"])
		if err != nil || len(d) != sha256.Size || name == "" {
			return nil, fmt.Errorf("%w: image subject %q without a name and a SHA-256 digest", ErrMalformed, name)
		}
		if _, dup := v.Subjects[name]; dup {
			return nil, fmt.Errorf("%w: image subject %q listed twice", ErrMalformed, name)
		}
		v.Subjects[name] = d
	}
	var rv map[string]any
	for _, bp := range list(obj(pred["runDetails"])["byproducts"]) {
		if str(obj(bp)["name"]) == ReferenceValuesByproduct {
			if rv != nil {
				return nil, fmt.Errorf("%w: two reference-values byproducts", ErrMalformed)
			}
			rv = obj(bp)
		}
	}
	content := bytesField(rv["content"])
	if len(content) == 0 {
		return nil, fmt.Errorf("%w: image provenance carries no reference values", ErrMalformed)
	}
	sum := sha256.Sum256(content)
	if str(obj(rv["digest"])["sha256"]) != hex.EncodeToString(sum[:]) {
		return nil, fmt.Errorf("%w: reference values do not match their digest", ErrMalformed)
	}
	if v.ReferenceValues, err = attest.ParseReferenceValues(content); err != nil {
		return nil, fmt.Errorf("%w: signed reference values: %w", ErrMalformed, err)
	}
	v.ReferenceValuesJSON = content
	return v, nil
}

// CheckFile fails unless the image provenance lists name with digest: an
// image file is the one that was built and signed.
func (v *VerifiedImage) CheckFile(name string, sha256Digest []byte) error {
	want, ok := v.Subjects[name]
	switch {
	case !ok:
		return fmt.Errorf("%w: %s is not a subject of the image provenance", ErrSubjectMismatch, name)
	case !bytes.Equal(want, sha256Digest):
		return fmt.Errorf("%w: %s has sha256 %x, the image provenance says %x", ErrSubjectMismatch, name, sha256Digest, want)
	}
	return nil
}
