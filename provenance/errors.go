package provenance

import "errors"

// Sentinel errors; every rejection wraps one of them. A few name a cause
// and always come with the more general one they refine (said below), so
// callers can test either.
var (
	// ErrTooLarge: a bundle or embedded document over its size limit.
	ErrTooLarge = errors.New("input exceeds size limit")
	// ErrMalformed: not a parseable sigstore bundle / in-toto statement.
	ErrMalformed = errors.New("malformed bundle")
	// ErrNotAttestedRunner: a valid bundle, but not attested-runner
	// provenance (another predicate type or build type).
	ErrNotAttestedRunner = errors.New("not an attested-runner provenance")
	// ErrSubjectMismatch: the artifact's digest is not a subject.
	ErrSubjectMismatch = errors.New("artifact digest is not a subject of the provenance")
	// ErrSignature: the signature does not verify with the environment key
	// (statement edited after signing, or signed by another key).
	ErrSignature = errors.New("signature does not verify with the certified environment key")
	// ErrUntrustedEnvironment: the environment certificate is missing, not
	// signed by a trusted gate, or certifies another key.
	ErrUntrustedEnvironment = errors.New("environment not certified by a trusted gate")
	// ErrEnvCertValidity: the build ran outside the certificate's validity.
	ErrEnvCertValidity = errors.New("build outside the environment certificate's validity")
	// ErrMissingEvidence: the response-time quote is absent.
	ErrMissingEvidence = errors.New("provenance carries no response-time hardware evidence")
	// ErrEvidence: the response-time evidence does not verify (wraps the
	// attest error: quote over another statement, other boot, ...).
	ErrEvidence = errors.New("response-time evidence rejected")
	// ErrEnvKeyMismatch (with ErrEvidence in Verify): the hardware evidence
	// certifies another environment key than the one the gate certified
	// and that signed the statement.
	ErrEnvKeyMismatch = errors.New("hardware evidence certifies another environment key")
	// ErrBuildMismatch: the lifecycle log's build id is not this build's.
	ErrBuildMismatch = errors.New("hardware evidence is for another build")
	// ErrJobEnded: the quote's lifecycle log already shows job-end or
	// teardown: the statement was signed after the job, by whoever had the
	// environment then.
	ErrJobEnded = errors.New("hardware evidence was taken after the job ended")
	// ErrLevelTooLow: the environment's BuildEnv level is below the minimum.
	ErrLevelTooLow = errors.New("build environment level below the required minimum")
	// ErrSoftwareTPM (always with ErrLevelTooLow): the environment runs on a
	// software TPM (level 0), said by the gate's certificate, the consumer's
	// policy or the evidence's own label, and insecure mode was not asked
	// for, or an explicit minimum level was.
	ErrSoftwareTPM = errors.New("environment runs on a software TPM (simulator or swtpm)")
	// ErrRepositoryMismatch, ErrRefMismatch, ErrWorkflowMismatch,
	// ErrCommitMismatch, ErrRunMismatch, ErrBuilderMismatch: the build is
	// not the one the caller expects.
	ErrRepositoryMismatch = errors.New("built from another repository")
	ErrRefMismatch        = errors.New("built from another ref")
	ErrWorkflowMismatch   = errors.New("built by another workflow")
	ErrCommitMismatch     = errors.New("built from another commit")
	ErrRunMismatch        = errors.New("built by another workflow run")
	ErrBuilderMismatch    = errors.New("built by another builder")
	// ErrOwnerMismatch: the repository belongs to another owner
	// (ExpectedOwner, gh's --owner).
	ErrOwnerMismatch = errors.New("built from a repository of another owner")
	// ErrDispatch: the dispatch attestation in the bundle does not verify,
	// or is for another build or environment.
	ErrDispatch = errors.New("dispatch attestation rejected")
	// ErrServerMismatch: the job ran on another GitHub server than the
	// expected one (gh's --hostname).
	ErrServerMismatch = errors.New("built on another GitHub server")
	// ErrCertificateKey (with ErrSignature): a keyless bundle's certificate
	// is for another key than the certified environment key.
	ErrCertificateKey = errors.New("the bundle's certificate is not for the environment key")
	// ErrSigstore (with ErrSignature): the certificate chain, transparency
	// log entry, timestamps or issuer do not verify against the trusted
	// Sigstore material.
	ErrSigstore = errors.New("sigstore verification failed")
	// ErrCertificateIdentity: the certificate's workflow identity
	// (repository, commit, ref, workflow, run, runner environment) is not
	// the job the agent recorded.
	ErrCertificateIdentity = errors.New("certificate identity is not the recorded job")
	// ErrKeyless: keyless signing failed: Fulcio refused or could not be
	// reached, Rekor did not record the entry, or an instance URL is bad.
	// Nothing was signed for the job.
	ErrKeyless = errors.New("keyless signing failed")
	// ErrIDToken (with ErrKeyless): the job's OIDC token is missing, too
	// large or not a compact JWT.
	ErrIDToken = errors.New("unusable OIDC token")
	// ErrUntrustedImage: runner-image provenance not signed by a trusted
	// image key.
	ErrUntrustedImage = errors.New("image provenance not signed by a trusted image key")
	// ErrNoExpectation: a required expectation (repository, trust root) is
	// empty. Verifying against nothing is not verifying. Signing refuses
	// with it too, when what is to be signed lacks a required field or has
	// an invalid one.
	ErrNoExpectation = errors.New("missing required expectation")
)
