package provenance

import (
	"crypto"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"

	intoto "github.com/in-toto/attestation/go/v1"
	"github.com/sigstore/sigstore-go/pkg/fulcio/certificate"
	"github.com/sigstore/sigstore-go/pkg/verify"
	"google.golang.org/protobuf/encoding/protojson"
)

// Keyless bundles: when the job granted id-token: write, the agent has
// Fulcio certify the environment key for the job's workflow identity and
// records the signature in Rekor, so that gh and cosign understand the
// bundle. The hardware byproducts stay: a certificate names a workflow,
// only the environment certificate and the quote say what machine signed.

// ActionsIssuer is the OIDC issuer of GitHub Actions job tokens on
// github.com.
const ActionsIssuer = "https://token.actions.githubusercontent.com"

// ActionsIssuerFor is the job-token issuer of a GitHub server: github.com's
// ActionsIssuer, or GitHub Enterprise Server's SERVER/_services/token.
func ActionsIssuerFor(serverURL string) string {
	if sameServer(serverURL, "https://github.com") {
		return ActionsIssuer
	}
	return strings.TrimSuffix(serverURL, "/") + "/_services/token"
}

// RunnerEnvironmentSelfHosted is the runner_environment claim (and Fulcio
// extension) of a job on a self-hosted runner.
const RunnerEnvironmentSelfHosted = "self-hosted"

// CheckCertificateIdentity fails unless a Fulcio certificate's GitHub
// Actions extensions name the recorded job: its repository, commit, ref,
// workflow, run attempt and a self-hosted runner. The agent checks it
// before it signs with a certificate (the token came from the job, which
// is hostile); the verifier checks it again after the chain verified.
func CheckCertificateIdentity(cert *x509.Certificate, j Job) error {
	ext, err := certificate.ParseExtensions(cert.Extensions)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrCertificateIdentity, err)
	}
	return checkExtensions(ext, j)
}

func checkExtensions(ext certificate.Extensions, j Job) error {
	server := strings.TrimSuffix(j.ServerURL, "/")
	for _, c := range []struct {
		name, got, want string
		fold            bool
	}{
		{"source repository", ext.SourceRepositoryURI, repoURL(j), true},
		{"source commit", ext.SourceRepositoryDigest, j.SHA, true},
		{"source ref", ext.SourceRepositoryRef, j.Ref, false},
		{"workflow", ext.BuildConfigURI, server + "/" + j.WorkflowRef, true},
		{"run", ext.RunInvocationURI, j.InvocationURL(), true},
		{"runner environment", ext.RunnerEnvironment, RunnerEnvironmentSelfHosted, false},
	} {
		if c.got == c.want || (c.fold && strings.EqualFold(c.got, c.want)) {
			continue
		}
		return fmt.Errorf("%w: %s is %q, the job recorded %q", ErrCertificateIdentity, c.name, c.got, c.want)
	}
	if ext.SourceRepositoryIdentifier != "" && j.RepositoryID != "" && ext.SourceRepositoryIdentifier != j.RepositoryID {
		return fmt.Errorf("%w: repository id is %q, the job recorded %q", ErrCertificateIdentity, ext.SourceRepositoryIdentifier, j.RepositoryID)
	}
	return nil
}

// verifyEnvSignature verifies the provenance's DSSE signature by envKey,
// the key the gate (or the hardware evidence) certified, for a bundle that
// carries a public-key hint or a certificate for that key.
//
// A certificate bundle with trusted Sigstore material is verified the
// Sigstore way too: chain to a Fulcio CA at an observer time (Rekor's
// integrated time or a signed timestamp), a transparency log entry, SCTs
// when the material has CT logs, the OIDC issuer, and the certificate's
// workflow identity against the recorded job. Without trusted material
// only the signature by the certificate's key, which must be envKey, is
// checked: the hardware path alone vouches for it, and the report says so.
func (p *parsedBundle) verifyEnvSignature(envKey crypto.PublicKey, subjectSHA256 []byte, job Job, opts *VerifyOptions) (*verify.VerificationResult, string, error) {
	vc, err := p.b.VerificationContent()
	if err != nil {
		return nil, "", fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	leaf := vc.Certificate()
	if leaf == nil {
		vr, err := p.verifySignature(envKey, subjectSHA256)
		detail := "DSSE signature by environment key " + keyName(envKey)
		if opts.TrustedSigstore != nil {
			detail += " (key-signed: no certificate for the Sigstore root to check)"
		}
		return vr, detail, err
	}
	if pub, ok := leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(envKey) {
		return nil, "", fmt.Errorf("%w: %w: it is for %s, the environment key is %s", ErrSignature, ErrCertificateKey, keyName(leaf.PublicKey), keyName(envKey))
	}
	digest := verify.WithArtifactDigest("sha256", subjectSHA256)
	if opts.TrustedSigstore == nil {
		sig, err := p.b.SignatureContent()
		if err != nil {
			return nil, "", fmt.Errorf("%w: %v", ErrMalformed, err)
		}
		if err := verify.VerifySignatureWithArtifactDigests(sig, vc, nil, []verify.ArtifactDigest{{Algorithm: "sha256", Digest: subjectSHA256}}); err != nil {
			return nil, "", fmt.Errorf("%w: %v", ErrSignature, err)
		}
		summary, err := certificate.SummarizeCertificate(leaf)
		if err != nil {
			return nil, "", fmt.Errorf("%w: %v", ErrMalformed, err)
		}
		vr := verify.NewVerificationResult()
		vr.Signature = &verify.SignatureVerificationResult{Certificate: &summary}
		return vr, "DSSE signature by environment key " + keyName(envKey) + " (keyless bundle: certificate and transparency log not checked, no Sigstore trusted root given)", nil
	}
	vopts := []verify.VerifierOption{verify.WithTransparencyLog(1), verify.WithObserverTimestamps(1), verify.WithoutStatementPredicate()}
	if len(opts.TrustedSigstore.CTLogs()) > 0 {
		vopts = append(vopts, verify.WithSignedCertificateTimestamps(1))
	}
	v, err := verify.NewVerifier(opts.TrustedSigstore, vopts...)
	if err != nil {
		return nil, "", fmt.Errorf("%w: %v", ErrSigstore, err)
	}
	issuer := opts.ExpectedCertIssuer
	if issuer == "" {
		issuer = ActionsIssuerFor(job.ServerURL)
	}
	id, err := verify.NewShortCertificateIdentity(issuer, "", "", "^"+regexp.QuoteMeta(strings.TrimSuffix(job.ServerURL, "/")+"/"))
	if err != nil {
		return nil, "", fmt.Errorf("%w: %v", ErrSigstore, err)
	}
	vr, err := v.Verify(p.b, verify.NewPolicy(digest, verify.WithCertificateIdentity(id)))
	if err != nil {
		return nil, "", fmt.Errorf("%w: %w: %v", ErrSignature, ErrSigstore, err)
	}
	if err := checkExtensions(vr.Signature.Certificate.Extensions, job); err != nil {
		return nil, "", err
	}
	return vr, fmt.Sprintf("DSSE signature by environment key %s, certified by Fulcio for %s (issuer %s), in a transparency log", keyName(envKey),
		vr.Signature.Certificate.SubjectAlternativeName, vr.Signature.Certificate.Issuer), nil
}

// SigstoreJSON is the sigstore-go verification result of the signature
// step, with the whole statement, as gh attestation verify --format json
// prints it ("verificationResult").
func (r *Result) SigstoreJSON() (json.RawMessage, error) {
	if r.sigstore == nil {
		return nil, nil
	}
	vr := *r.sigstore
	var st intoto.Statement
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(r.statement, &st); err == nil {
		vr.Statement = &st
	}
	return json.Marshal(&vr)
}
