package provenance

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"time"

	slsa "github.com/in-toto/attestation/go/predicates/provenance/v1"
	intoto "github.com/in-toto/attestation/go/v1"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// URIs this package defines. BuildType is documented in docs/build-type.md.
const (
	BuildType = "https://github.com/attested-runner/attested-runner/buildtypes/actions-job/v2"
	// BuildTypeV1 is the format before RFC 8785: its response quote covers
	// a digest over Go's encoding/json output. Verify refuses it by name.
	BuildTypeV1          = "https://github.com/attested-runner/attested-runner/buildtypes/actions-job/v1"
	ProvenancePredicate  = "https://slsa.dev/provenance/v1"
	InTotoPayloadType    = "application/vnd.in-toto+json"
	BundleMediaType      = "application/vnd.dev.sigstore.bundle.v0.3+json"
	EvidenceMediaType    = "application/vnd.attested-runner.evidence+json"
	EnvCertByproduct     = "attested-runner/environment-certificate"
	DispatchByproduct    = "attested-runner/dispatch-attestation"
	ResponseQuoteProduct = "attested-runner/response-quote"
)

// Subject is one artifact the provenance is about.
type Subject struct {
	Name   string
	SHA256 []byte
}

// Image identifies the runner image the environment booted.
type Image struct {
	ID     string
	SHA256 []byte // optional: digest of the image artifact
}

// Build is everything the agent recorded about one job. It becomes the SLSA
// provenance statement; fields map as documented in docs/build-type.md.
type Build struct {
	BuilderID    string
	AgentVersion string
	Job          Job
	// Actions are the actions the job ran, resolved to commits.
	Actions []ActionRef
	Image   Image
	Labels  []string
	// Level is the BuildEnv level the gate verified at admission, Hardware
	// the hardware path that gave it (EnvCertificate.Hardware).
	Level      int
	Hardware   string
	Subjects   []Subject
	StartedOn  time.Time
	FinishedOn time.Time
	// EnvCert is the gate's environment certificate (a sigstore bundle).
	EnvCert []byte
	// DispatchDigest is the SHA-256 of the dispatch attestation bundle.
	DispatchDigest []byte
	// Dispatch, when set, is that bundle itself: it rides in the
	// statement so that a consumer checks BuildEnv L2.agent-dispatch (a
	// signed record of the job received, before its code ran) without the
	// agent's files. DispatchDigest must then be its digest (or empty).
	Dispatch []byte
	// Missing names inputs the agent could not record (e.g. "actions" when
	// the runner's diagnostic log was unreadable): marked, never guessed.
	Missing []string
}

func (b *Build) validate() error {
	if b.BuilderID == "" {
		return fmt.Errorf("%w: no builder id", ErrNoExpectation)
	}
	if len(b.Subjects) == 0 {
		return fmt.Errorf("%w: no subject", ErrNoExpectation)
	}
	for _, s := range b.Subjects {
		if s.Name == "" || len(s.SHA256) != 32 {
			return fmt.Errorf("subject %q needs a name and a SHA-256 digest", s.Name)
		}
	}
	if len(b.EnvCert) == 0 {
		return fmt.Errorf("%w: no environment certificate", ErrNoExpectation)
	}
	return b.Job.Validate()
}

// statement renders a Build as an in-toto Statement with a SLSA v1
// provenance predicate, without the response-time quote (which is computed
// over this statement and added by the signer).
func (b *Build) statement() (*intoto.Statement, error) {
	if err := b.validate(); err != nil {
		return nil, err
	}
	j := b.Job
	ext := map[string]any{
		"workflow": map[string]any{
			"ref":        j.WorkflowRef,
			"repository": repoURL(j),
			"path":       j.WorkflowPath(),
		},
		"repository": j.Repository,
		"ref":        j.Ref,
		"sha":        j.SHA,
		"eventName":  j.EventName,
		"job":        j.Job,
	}
	internal := map[string]any{
		"github": map[string]any{
			"repositoryId":      j.RepositoryID,
			"actor":             j.Actor,
			"runId":             j.RunID,
			"runAttempt":        j.RunAttempt,
			"workflowSha":       j.WorkflowSHA,
			"runnerName":        j.RunnerName,
			"runnerEnvironment": "self-hosted",
		},
		"attestedRunner": map[string]any{
			"labels":        toAny(b.Labels),
			"imageId":       b.Image.ID,
			"buildEnvLevel": float64(b.Level),
			"hardware":      b.Hardware,
			"buildId":       j.BuildID(),
			"missing":       toAny(b.Missing),
		},
	}
	extS, err := structpb.NewStruct(ext)
	if err != nil {
		return nil, err
	}
	intS, err := structpb.NewStruct(internal)
	if err != nil {
		return nil, err
	}
	deps := []*intoto.ResourceDescriptor{{
		Uri:    "git+" + repoURL(j) + "@" + j.Ref,
		Digest: map[string]string{"gitCommit": j.SHA},
	}}
	for _, a := range b.Actions {
		d := &intoto.ResourceDescriptor{
			Uri:    "git+" + strings.TrimSuffix(j.ServerURL, "/") + "/" + a.Repository + "@" + a.Ref,
			Digest: map[string]string{"gitCommit": a.SHA},
		}
		if a.Package != nil {
			// What ran is the package, not a checkout of the commit: its
			// manifest digest is recorded beside the commit it names (an
			// annotation, since the two digests are of different artifacts).
			ann, err := structpb.NewStruct(map[string]any{"immutableActionPackage": map[string]any{
				"version": a.Package.Version, "manifestDigest": a.Package.ManifestDigest,
			}})
			if err != nil {
				return nil, err
			}
			d.Annotations = ann
		}
		deps = append(deps, d)
	}
	img := &intoto.ResourceDescriptor{Name: "runner-image", Uri: "attested-runner-image:" + b.Image.ID}
	if len(b.Image.SHA256) > 0 {
		img.Digest = map[string]string{"sha256": hex.EncodeToString(b.Image.SHA256)}
	}
	deps = append(deps, img)

	byproducts := []*intoto.ResourceDescriptor{{
		Name:      EnvCertByproduct,
		MediaType: BundleMediaType,
		Content:   b.EnvCert,
	}}
	if len(b.Dispatch) > 0 {
		d := sha256.Sum256(b.Dispatch)
		if len(b.DispatchDigest) > 0 && !bytes.Equal(b.DispatchDigest, d[:]) {
			return nil, fmt.Errorf("%w: the dispatch digest is not the dispatch attestation's", ErrNoExpectation)
		}
		byproducts = append(byproducts, &intoto.ResourceDescriptor{
			Name:      DispatchByproduct,
			MediaType: BundleMediaType,
			Content:   b.Dispatch,
			Digest:    map[string]string{"sha256": hex.EncodeToString(d[:])},
		})
	} else if len(b.DispatchDigest) > 0 {
		byproducts = append(byproducts, &intoto.ResourceDescriptor{
			Name:   DispatchByproduct,
			Digest: map[string]string{"sha256": hex.EncodeToString(b.DispatchDigest)},
		})
	}
	pred := &slsa.Provenance{
		BuildDefinition: &slsa.BuildDefinition{
			BuildType:            BuildType,
			ExternalParameters:   extS,
			InternalParameters:   intS,
			ResolvedDependencies: deps,
		},
		RunDetails: &slsa.RunDetails{
			Builder: &slsa.Builder{
				Id:      b.BuilderID,
				Version: map[string]string{"attested-runner": b.AgentVersion},
			},
			Metadata: &slsa.BuildMetadata{
				InvocationId: j.BuildID(),
				StartedOn:    timestamppb.New(b.StartedOn),
				FinishedOn:   timestamppb.New(b.FinishedOn),
			},
			Byproducts: byproducts,
		},
	}
	predS, err := toStruct(pred)
	if err != nil {
		return nil, err
	}
	st := &intoto.Statement{
		Type:          intoto.StatementTypeUri,
		PredicateType: ProvenancePredicate,
		Predicate:     predS,
	}
	for _, s := range b.Subjects {
		st.Subject = append(st.Subject, &intoto.ResourceDescriptor{
			Name:   s.Name,
			Digest: map[string]string{"sha256": hex.EncodeToString(s.SHA256)},
		})
	}
	if err := st.Validate(); err != nil {
		return nil, err
	}
	return st, nil
}

func repoURL(j Job) string { return strings.TrimSuffix(j.ServerURL, "/") + "/" + j.Repository }

func toAny(s []string) []any {
	out := make([]any, 0, len(s))
	for _, v := range slices.Clone(s) {
		out = append(out, v)
	}
	return out
}
