package provenance

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/google/go-sev-guest/verify/trust"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/verify"
)

// VerifyOptions say what the caller demands (Expected*) and trusts
// (Trusted*), following slsa-verifier's naming.
type VerifyOptions struct {
	// ExpectedRepository (owner/name); it or ExpectedOwner is required.
	ExpectedRepository string
	// ExpectedOwner: the repository's owner (gh's --owner), when any of its
	// repositories will do.
	ExpectedOwner string
	// ExpectedServerURL, optional: the GitHub server the job ran on
	// (https://github.com; see ServerURLFor), as recorded from
	// GITHUB_SERVER_URL.
	ExpectedServerURL string
	// ExpectedRef (refs/heads/main, refs/tags/v1.2.3), optional.
	ExpectedRef string
	// ExpectedWorkflow, optional, in any form ParseWorkflowExpectation
	// reads: .github/workflows/release.yml,
	// owner/name/.github/workflows/release.yml, a host in front, and
	// @ref after any of them. Matched against GITHUB_WORKFLOW_REF.
	ExpectedWorkflow string
	// ExpectedCommit, optional: the full commit SHA.
	ExpectedCommit string
	// ExpectedRunID, optional: the workflow run id.
	ExpectedRunID string
	// ExpectedBuilderID, optional: the builder id the gate certifies.
	ExpectedBuilderID string
	// TrustedGateRoots are the gate keys whose environment certificates are
	// trusted. Required unless ReferenceValues is set.
	TrustedGateRoots []crypto.PublicKey
	// TrustedSNPRoots replaces AMD's ARK/ASK roots when, in gate mode, the
	// response-time SEV-SNP report of a vTPM is re-judged. Nil means AMD's
	// (what production wants); tests sign under a test-only chain. In
	// evidence mode ReferenceValues.SNP.TrustedRoots plays this part.
	TrustedSNPRoots map[string][]*trust.AMDRootCerts
	// TrustedTDXRoots replaces Intel's SGX root CA when, in gate mode, a
	// response-time or dispatch TDX quote (and its collateral) is
	// re-judged. Nil means Intel's: set it only for test chains. In
	// evidence mode ReferenceValues.TrustedTDXRoots plays this part.
	TrustedTDXRoots *x509.CertPool
	// TrustedSigstore, optional, is Sigstore trusted material (a
	// trusted_root.json): with it, a keyless bundle's Fulcio certificate,
	// transparency log entry and timestamps are verified, and the
	// certificate's issuer must be ExpectedCertIssuer (default: GitHub
	// Actions' issuer for the recorded server). It adds checks; it never
	// replaces the gate's or the hardware's.
	TrustedSigstore    root.TrustedMaterial
	ExpectedCertIssuer string
	// ReferenceValues switches to evidence mode: the response-time hardware
	// evidence is verified against this policy (reference values and AK
	// roots) and the gate is not trusted at all.
	ReferenceValues *attest.Policy
	// MinLevel is the lowest BuildEnv level accepted, 1 to 3; 0 means the
	// default, 2. AllowSoftwareTPMInsecure lowers only the default.
	MinLevel int
	// AllowSoftwareTPMInsecure accepts software-TPM environments (simulator
	// or swtpm; level 0) when MinLevel is the default, for demos and tests.
	// Never in production. In evidence mode it is meant to go with
	// ReferenceValues.AllowSoftwareTPMUnsafe, which makes every result a
	// software-TPM result (see Verify).
	AllowSoftwareTPMInsecure bool
}

// Check is one verification step, for human and JSON reports.
type Check struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
}

// Result is what a verified provenance establishes.
type Result struct {
	Checks    []Check         `json:"checks"`
	Job       Job             `json:"job"`
	BuilderID string          `json:"builderId"`
	BuildID   string          `json:"buildId"`
	Subjects  []Subject       `json:"-"`
	EnvCert   *EnvCertificate `json:"environment,omitempty"`
	Level     int             `json:"buildEnvLevel"`
	// Hardware is the hardware path that gave the level (attest.HardwareTDX,
	// attest.HardwareTPM, ...), from the response-time evidence.
	Hardware string `json:"hardware,omitempty"`
	// SoftwareTPM: the environment is a software TPM (then Level is 0).
	SoftwareTPM bool           `json:"softwareTpm,omitempty"`
	ImageID     string         `json:"imageId"`
	StartedOn   time.Time      `json:"startedOn"`
	FinishedOn  time.Time      `json:"finishedOn"`
	Actions     []string       `json:"actions"`
	Claims      *attest.Claims `json:"-"`

	// sigstore is sigstore-go's result of the signature step; statement
	// the verified statement (see SigstoreJSON).
	sigstore  *verify.VerificationResult
	statement []byte
}

func (r *Result) pass(name, detail string) { r.Checks = append(r.Checks, Check{name, true, detail}) }

func (r *Result) fail(name string, err error) error {
	r.Checks = append(r.Checks, Check{name, false, err.Error()})
	return err
}

// clockSkew is how far the agent's clock may be from the gate's when
// comparing build times with the certificate's validity.
const clockSkew = 2 * time.Minute

// Verify checks, offline, that bundle is attested-runner provenance for an
// artifact with the given SHA-256, produced by an environment the caller
// trusts, for the build the caller expects. It returns the Result with every
// check made (also on failure: the last check is the one that failed).
//
// Checks, in order: the bundle parses within MaxBundleSize; it is SLSA v1
// provenance of attested-runner's build type (ErrNotAttestedRunner); the
// artifact digest is a subject (ErrSubjectMismatch); the environment key is
// certified, by a trusted gate's certificate (ErrUntrustedEnvironment) or,
// in evidence mode, by hardware evidence verified against reference values;
// the DSSE signature verifies with that key (ErrSignature); for a keyless
// bundle, the certificate is for that key (ErrCertificateKey) and, with
// TrustedSigstore, its chain, transparency log entry, observer time,
// issuer (ErrSigstore) and workflow identity (ErrCertificateIdentity)
// verify, see verifyEnvSignature; the response-time
// evidence verifies with the statement's digest as challenge, from the same
// AK, boot and environment key (ErrEvidence, ErrEnvKeyMismatch), and its
// lifecycle log names this build (ErrBuildMismatch) and shows neither
// job-end nor teardown yet (ErrJobEnded); the build's times lie within the
// certificate (ErrEnvCertValidity); the level is high enough
// (ErrLevelTooLow, with ErrSoftwareTPM for a software TPM); repository,
// ref, workflow, commit, run and builder are the expected ones.
//
// The level: with a gate, the lower of the certificate's level and the
// response-time evidence's (under the certificate's policy); in evidence
// mode, what the verified hardware earned (attest.Claims.Level: 2 for a
// TPM, 3 only for a verified TEE report such as TDX; no policy raises it). It is 0, a software-TPM result,
// when the certificate says software TPM, when the consumer's policy
// allows software TPMs (ReferenceValues.AllowSoftwareTPMUnsafe: its trust
// roots may then be software TPMs), or when the evidence
// is labelled so. The label is the agent's own word, outside the quote: it
// can lower the level, never raise it. A software-TPM result passes only
// with AllowSoftwareTPMInsecure and the default MinLevel.
//
// Not checked: anything online (revocation, a Rekor lookup: the tlog entry
// is checked offline against TrustedSigstore), and the truth of what the
// attested agent recorded: the hardware evidence shows which agent binary,
// in which boot, signed it; that agent is trusted to record honestly.
func Verify(raw []byte, artifactSHA256 []byte, opts VerifyOptions) (*Result, error) {
	r := &Result{}
	if opts.ExpectedRepository == "" && opts.ExpectedOwner == "" {
		return r, r.fail("expectations", fmt.Errorf("%w: expected repository or owner", ErrNoExpectation))
	}
	var workflow *WorkflowExpectation
	if opts.ExpectedWorkflow != "" {
		var err error
		if workflow, err = ParseWorkflowExpectation(opts.ExpectedWorkflow); err != nil {
			return r, r.fail("expectations", err)
		}
	}
	if len(opts.TrustedGateRoots) == 0 && opts.ReferenceValues == nil {
		return r, r.fail("expectations", fmt.Errorf("%w: no trusted gate key and no reference values", ErrNoExpectation))
	}
	if len(artifactSHA256) != 32 {
		return r, r.fail("expectations", fmt.Errorf("%w: artifact SHA-256 digest", ErrNoExpectation))
	}
	if opts.MinLevel < 0 || opts.MinLevel > 3 {
		return r, r.fail("expectations", fmt.Errorf("%w: minimum level %d is not 1, 2 or 3", ErrNoExpectation, opts.MinLevel))
	}
	p, err := parseBundle(raw)
	if err != nil {
		return r, r.fail("bundle", err)
	}
	r.pass("bundle", "sigstore bundle v0.3 with a DSSE in-toto statement")

	prov, err := readProvenance(p)
	if err != nil {
		return r, r.fail("provenance", err)
	}
	r.pass("provenance", "SLSA v1 provenance, build type "+BuildType)

	if !p.hasSubject(artifactSHA256) {
		return r, r.fail("subject", fmt.Errorf("%w: sha256:%x", ErrSubjectMismatch, artifactSHA256))
	}
	r.pass("subject", "sha256:"+hex.EncodeToString(artifactSHA256))

	// The environment key: certified by the gate, or by hardware evidence.
	var envKey crypto.PublicKey
	var policy *attest.Policy
	evidence, err := prov.byproduct(ResponseQuoteProduct)
	if err != nil {
		return r, r.fail("evidence", err)
	}
	ev, err := attest.DecodeEvidence(evidence)
	if err != nil {
		return r, r.fail("evidence", fmt.Errorf("%w: %w", ErrEvidence, err))
	}
	if opts.ReferenceValues != nil {
		policy = opts.ReferenceValues
		pk, err := attest.ParseEnvKey(ev.EnvKey)
		if err != nil {
			return r, r.fail("environment", fmt.Errorf("%w: %w", ErrEvidence, err))
		}
		envKey = pk
		r.pass("environment", "evidence mode: key certified by the hardware evidence below, gate not trusted")
	} else {
		certRaw, err := prov.byproduct(EnvCertByproduct)
		if err != nil {
			return r, r.fail("environment", fmt.Errorf("%w: %w", ErrUntrustedEnvironment, err))
		}
		cert, err := VerifyEnvCert(certRaw, opts.TrustedGateRoots)
		if err != nil {
			return r, r.fail("environment", err)
		}
		r.EnvCert = cert
		if envKey, err = attest.ParseEnvKey(cert.EnvKey); err != nil {
			return r, r.fail("environment", fmt.Errorf("%w: %w", ErrUntrustedEnvironment, err))
		}
		policy = certPolicy(cert, prov.finishedOn, opts.teeRoots())
		r.pass("environment", fmt.Sprintf("certified by gate %s: runner %s, image %s, %s", cert.GateID, cert.RunnerName, cert.Image.ID, LevelName(cert.Level)))
	}

	vr, detail, err := p.verifyEnvSignature(envKey, artifactSHA256, prov.job, &opts)
	if err != nil {
		return r, r.fail("signature", err)
	}
	r.sigstore, r.statement = vr, p.payload
	r.pass("signature", detail)

	// Everything in the statement is now authentic. Check the hardware's
	// response-time evidence over it.
	digest, err := statementDigest(p.doc, provenanceQuote.remove)
	if err != nil {
		return r, r.fail("evidence", err)
	}
	// The software-TPM label is reported, not refused, here: the level step
	// below decides, and the label can only lower the level.
	labelled := *policy
	labelled.AllowSoftwareTPMUnsafe = true
	claims, err := attest.Verify(ev, attest.StatementChallenge(digest), &labelled)
	if err != nil {
		return r, r.fail("evidence", fmt.Errorf("%w: %w", ErrEvidence, err))
	}
	if !claims.EnvKey.Equal(envKey) {
		return r, r.fail("evidence", fmt.Errorf("%w: %w: %s, the signer is %s", ErrEvidence, ErrEnvKeyMismatch, keyName(claims.EnvKey), keyName(envKey)))
	}
	if claims.Lifecycle.BuildID != prov.buildID || claims.Lifecycle.BuildID == "" {
		return r, r.fail("evidence", fmt.Errorf("%w: lifecycle log says %q, provenance says %q", ErrBuildMismatch, claims.Lifecycle.BuildID, prov.buildID))
	}
	if err := jobRunning(claims.Lifecycle); err != nil {
		return r, r.fail("evidence", err)
	}
	r.Claims = claims
	r.ImageID = claims.ImageID
	r.pass("evidence", fmt.Sprintf("%s quote over this statement; lifecycle: %s", claims.Kind, lifecycleSummary(claims.Lifecycle)))

	// BuildEnv L2.agent-dispatch: the dispatch attestation the agent signed
	// at job start, when it rides in the bundle, must name this build and
	// come from this environment: under the gate's certificate, or, in
	// evidence mode, signed by the key the hardware certified, with its own
	// quote verified against the reference values.
	if content, digest, present := prov.dispatch(); present && content != nil {
		if d := sha256.Sum256(content); digest != hex.EncodeToString(d[:]) {
			return r, r.fail("dispatch", fmt.Errorf("%w: content digest sha256:%x, recorded %q", ErrDispatch, d, digest))
		}
		var buildID, how string
		if r.EnvCert != nil {
			id, dcert, err := verifyDispatch(content, opts.TrustedGateRoots, opts.teeRoots())
			if err != nil {
				return r, r.fail("dispatch", fmt.Errorf("%w: %w", ErrDispatch, err))
			}
			if !bytes.Equal(dcert.EnvKey, r.EnvCert.EnvKey) {
				return r, r.fail("dispatch", fmt.Errorf("%w: signed in another environment", ErrDispatch))
			}
			buildID, how = id, "signed at job start by this environment"
		} else {
			id, err := verifyDispatchEvidence(content, envKey, &labelled)
			if err != nil {
				return r, r.fail("dispatch", fmt.Errorf("%w: %w", ErrDispatch, err))
			}
			buildID, how = id, "signed at job start by the hardware-certified key, its quote matching the reference values"
		}
		if buildID != prov.buildID {
			return r, r.fail("dispatch", fmt.Errorf("%w: it is for build %q, the provenance for %q", ErrDispatch, buildID, prov.buildID))
		}
		r.pass("dispatch", how+", for this build, before the job's code ran")
	}

	if r.EnvCert != nil {
		c := r.EnvCert
		if prov.startedOn.Before(c.IssuedAt.Add(-clockSkew)) || prov.finishedOn.After(c.NotAfter.Add(clockSkew)) {
			return r, r.fail("validity", fmt.Errorf("%w: build %s..%s, certificate %s..%s", ErrEnvCertValidity,
				prov.startedOn.Format(time.RFC3339), prov.finishedOn.Format(time.RFC3339), c.IssuedAt.Format(time.RFC3339), c.NotAfter.Format(time.RFC3339)))
		}
		if c.RunnerName != prov.job.RunnerName || c.BuilderID != prov.builderID {
			return r, r.fail("validity", fmt.Errorf("%w: certificate is for runner %s / builder %s", ErrUntrustedEnvironment, c.RunnerName, c.BuilderID))
		}
		r.pass("validity", "built within the certificate's validity, on the certified runner")
	}

	var softwareWhy []string
	r.Level, r.Hardware = claims.Level, claims.Hardware
	if claims.SoftwareTPM {
		softwareWhy = append(softwareWhy, "the evidence is labelled so")
	}
	if c := r.EnvCert; c != nil {
		// BuildEnv L2.verify-before-dispatch: the gate's verdict caps what
		// the response-time evidence can show.
		r.Level = min(r.Level, c.Level)
		if c.SoftwareTPM {
			softwareWhy = append(softwareWhy, "the gate's certificate says so")
		}
	} else if opts.ReferenceValues.AllowSoftwareTPMUnsafe {
		softwareWhy = append(softwareWhy, "the policy allows software TPMs")
	}
	if len(softwareWhy) > 0 {
		r.SoftwareTPM, r.Level = true, 0
	}
	minLevel := opts.MinLevel
	if minLevel == 0 {
		minLevel = 2
		if r.SoftwareTPM && opts.AllowSoftwareTPMInsecure {
			minLevel = 0
		}
	}
	if r.Level < minLevel {
		err := fmt.Errorf("%w: %s < %s", ErrLevelTooLow, LevelName(r.Level), LevelName(minLevel))
		if r.SoftwareTPM {
			hint := "accepted only with --insecure-allow-software-tpm (AllowSoftwareTPMInsecure), for demos and tests"
			if opts.AllowSoftwareTPMInsecure {
				hint = "--insecure-allow-software-tpm lowers only the default minimum level, not an explicit --min-level"
			}
			err = fmt.Errorf("%w: %w (%s): %s < %s; %s", ErrLevelTooLow, ErrSoftwareTPM, strings.Join(softwareWhy, ", "),
				LevelName(r.Level), LevelName(minLevel), hint)
		}
		return r, r.fail("level", err)
	}
	detail = LevelName(r.Level)
	if r.SoftwareTPM {
		detail += " (SOFTWARE TPM: " + strings.Join(softwareWhy, ", ") + "; accepted because insecure mode was asked for)"
	}
	r.pass("level", detail)

	r.Job, r.BuilderID, r.BuildID = prov.job, prov.builderID, prov.buildID
	r.StartedOn, r.FinishedOn, r.Actions = prov.startedOn, prov.finishedOn, prov.actions
	for _, e := range []struct {
		name, got, want string
		err             error
		match           func(got, want string) bool
	}{
		{"server", prov.job.ServerURL, opts.ExpectedServerURL, ErrServerMismatch, sameServer},
		{"owner", repoOwner(prov.job.Repository), opts.ExpectedOwner, ErrOwnerMismatch, strings.EqualFold},
		{"repository", prov.job.Repository, opts.ExpectedRepository, ErrRepositoryMismatch, strings.EqualFold},
		{"ref", prov.job.Ref, opts.ExpectedRef, ErrRefMismatch, eq},
		{"workflow", prov.job.WorkflowRef, opts.ExpectedWorkflow, ErrWorkflowMismatch, func(string, string) bool {
			return workflow.match(prov.job)
		}},
		{"commit", prov.job.SHA, opts.ExpectedCommit, ErrCommitMismatch, strings.EqualFold},
		{"run", prov.job.RunID, opts.ExpectedRunID, ErrRunMismatch, eq},
		{"builder", prov.builderID, opts.ExpectedBuilderID, ErrBuilderMismatch, eq},
	} {
		if e.want == "" {
			continue
		}
		if !e.match(e.got, e.want) {
			return r, r.fail(e.name, fmt.Errorf("%w: %q, expected %q", e.err, e.got, e.want))
		}
		r.pass(e.name, e.got)
	}
	return r, nil
}

func eq(a, b string) bool { return a == b }

func keyName(pub crypto.PublicKey) string {
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "?"
	}
	return "sha256:" + attest.KeyDigest(spki)[:16]
}

// jobRunning refuses a lifecycle log that already shows job-end or
// teardown: the agent attests only while the job runs (seed: response-time
// attestation, signed by the environment that ran the build), so a quote
// taken afterwards speaks for whoever had the environment then.
func jobRunning(lc *attest.Lifecycle) error {
	if lc.JobEnded || lc.TornDown {
		return fmt.Errorf("%w: lifecycle: %s", ErrJobEnded, lifecycleSummary(lc))
	}
	return nil
}

func lifecycleSummary(lc *attest.Lifecycle) string {
	names := make([]string, len(lc.Events))
	for i, e := range lc.Events {
		names[i] = e.Type.String()
	}
	return strings.Join(names, " < ")
}

// teeRoots are the TEE vendors' roots a consumer re-judges response-time
// reports under; nil fields mean the vendors' own (AMD's, Intel's).
type teeRoots struct {
	snp map[string][]*trust.AMDRootCerts
	tdx *x509.CertPool
}

func (o *VerifyOptions) teeRoots() teeRoots {
	return teeRoots{snp: o.TrustedSNPRoots, tdx: o.TrustedTDXRoots}
}

// certPolicy is the policy a response-time quote must satisfy in gate mode:
// the AK, image and agent the gate admitted, for the same boot, judged
// under roots.
func certPolicy(c *EnvCertificate, at time.Time, roots teeRoots) *attest.Policy {
	p := &attest.Policy{
		Reference: &attest.ReferenceValues{
			Format:       attest.ReferenceValuesFormat,
			Images:       []attest.Image{c.Image},
			AgentDigests: []attest.Hex{c.AgentDigest},
		},
		AllowSoftwareTPMUnsafe: c.SoftwareTPM,
		DirectKernelBoot:       c.DirectKernelBoot,
		Time:                   at,
		TrustedTDXRoots:        roots.tdx,
	}
	if c.TDXCollateral != nil {
		// The TCB is re-judged at the build's time with the collateral the
		// gate used: stale or revoked by then, the evidence fails (ErrEvidence).
		p.TDXCollateral = c.TDXCollateral
	}
	if s := c.SEVSNP; s != nil {
		// Response-time reports are judged as the admission report was:
		// no lower TCB, SMT only if admitted with it.
		p.SNP = attest.SNPRequirements{AllowSMT: s.GuestPolicyFlags().SMT, MinimumTCB: s.ReportedTCB, TrustedRoots: roots.snp}
	}
	if ak, err := x509.ParsePKIXPublicKey(c.AK); err == nil {
		p.TrustedAKs = []crypto.PublicKey{ak}
	}
	return p
}

// provenanceView is the part of a (not yet verified) statement Verify reads.
type provenanceView struct {
	p          *parsedBundle
	byproducts []any
	job        Job
	builderID  string
	buildID    string
	startedOn  time.Time
	finishedOn time.Time
	actions    []string
}

func readProvenance(p *parsedBundle) (*provenanceView, error) {
	if p.predicateType() != ProvenancePredicate {
		return nil, fmt.Errorf("%w: predicate type %q", ErrNotAttestedRunner, p.predicateType())
	}
	pred := p.predicate()
	bd, rd := obj(pred["buildDefinition"]), obj(pred["runDetails"])
	if str(bd["buildType"]) == BuildTypeV1 {
		return nil, fmt.Errorf("%w: build type %q: format v1, whose response quote covers a Go-specific digest, is no longer accepted (v2 digests RFC 8785 canonical JSON); attest the artifact again", ErrNotAttestedRunner, BuildTypeV1)
	}
	if str(bd["buildType"]) != BuildType {
		return nil, fmt.Errorf("%w: build type %q", ErrNotAttestedRunner, str(bd["buildType"]))
	}
	ext, in := obj(bd["externalParameters"]), obj(bd["internalParameters"])
	gh, ar, wf := obj(in["github"]), obj(in["attestedRunner"]), obj(ext["workflow"])
	meta := obj(rd["metadata"])
	v := &provenanceView{p: p, byproducts: list(rd["byproducts"])}
	v.job = Job{
		Repository:   str(ext["repository"]),
		Ref:          str(ext["ref"]),
		SHA:          str(ext["sha"]),
		WorkflowRef:  str(wf["ref"]),
		EventName:    str(ext["eventName"]),
		Job:          str(ext["job"]),
		RepositoryID: str(gh["repositoryId"]),
		Actor:        str(gh["actor"]),
		RunID:        str(gh["runId"]),
		RunAttempt:   str(gh["runAttempt"]),
		WorkflowSHA:  str(gh["workflowSha"]),
		RunnerName:   str(gh["runnerName"]),
	}
	if repo := str(wf["repository"]); strings.HasSuffix(repo, "/"+v.job.Repository) {
		v.job.ServerURL = strings.TrimSuffix(repo, "/"+v.job.Repository)
	}
	v.buildID = str(ar["buildId"])
	if v.buildID == "" || v.buildID != v.job.BuildID() || str(meta["invocationId"]) != v.buildID {
		return nil, fmt.Errorf("%w: build id %q does not match the recorded job", ErrMalformed, v.buildID)
	}
	v.builderID = str(obj(rd["builder"])["id"])
	var err error
	if v.startedOn, err = time.Parse(time.RFC3339Nano, str(meta["startedOn"])); err != nil {
		return nil, fmt.Errorf("%w: startedOn: %v", ErrMalformed, err)
	}
	if v.finishedOn, err = time.Parse(time.RFC3339Nano, str(meta["finishedOn"])); err != nil {
		return nil, fmt.Errorf("%w: finishedOn: %v", ErrMalformed, err)
	}
	for _, d := range list(bd["resolvedDependencies"]) {
		d := obj(d)
		uri, commit := str(d["uri"]), str(obj(d["digest"])["gitCommit"])
		if strings.HasPrefix(uri, "git+") && commit != "" {
			v.actions = append(v.actions, strings.TrimPrefix(uri, "git+")+" ("+commit+")")
		}
	}
	return v, nil
}

// dispatch returns the dispatch-attestation byproduct: its content (nil
// when only its digest is recorded) and recorded digest. Two of them make
// the statement malformed, seen as present with no content.
func (v *provenanceView) dispatch() (content []byte, digest string, present bool) {
	n := 0
	for _, b := range v.byproducts {
		if b := obj(b); str(b["name"]) == DispatchByproduct {
			content, digest = bytesField(b["content"]), str(obj(b["digest"])["sha256"])
			n++
		}
	}
	if n > 1 {
		return []byte{}, "", true
	}
	return content, digest, n == 1
}

// byproduct returns the content of the one byproduct with this name.
func (v *provenanceView) byproduct(name string) ([]byte, error) {
	var found []byte
	n := 0
	for _, b := range v.byproducts {
		if b := obj(b); str(b["name"]) == name {
			found = bytesField(b["content"])
			n++
		}
	}
	switch {
	case n == 0 || len(found) == 0:
		if name == ResponseQuoteProduct {
			return nil, ErrMissingEvidence
		}
		return nil, fmt.Errorf("no %s", name)
	case n > 1:
		return nil, fmt.Errorf("%w: %d byproducts named %s", ErrMalformed, n, name)
	}
	return found, nil
}
