package main

import (
	"context"
	"crypto"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/attested-runner/attested-runner/internal/cli"
	"github.com/attested-runner/attested-runner/internal/fileio"
	"github.com/attested-runner/attested-runner/provenance"
)

const artifactUsage = `Usage: attested-verify artifact PATH... (--repo OWNER/NAME | --owner OWNER)
                               (--gate-key GATE.pem | --evidence ...) [flags]

Verify, offline, that each artifact at PATH was built by an attested,
single-use attested-runner environment for the build you expect:

  - a bundle (default PATH.sigstore.json; --bundle FILE, one bundle or
    JSON lines of many, as gh attestation download writes them;
    --from-github: GitHub's attestation API, by the artifact's digest) is
    attested-runner SLSA v1 provenance whose subjects include the
    artifact's SHA-256;
  - its environment certificate is signed by a gate key in --gate-key (or,
    with --evidence, its hardware evidence matches --reference-values);
  - its DSSE signature is by that certified environment key; a keyless
    bundle's Fulcio certificate must be for that same key, and with
    --trusted-root (a Sigstore trusted_root.json) its chain, transparency
    log entry and workflow identity are verified too;
  - its response-time hardware quote covers this exact statement, from the
    same TPM/TD and boot, after the job-start event for this build and
    before its job-end and the environment's teardown;
  - it was built on --hostname (default github.com) from --repo or a
    repository of --owner, and from --ref / --source-branch / --source-tag,
    --workflow, --commit, --run-id, --builder-id when given;
  - its BuildEnv level is at least --min-level (default 2). A software TPM
    (simulator, swtpm) is level 0 and passes only with
    --insecure-allow-software-tpm and no --min-level.

With several bundles for an artifact, it is verified when one of them
passes every check (as gh attestation verify does).

Examples:
  attested-verify artifact dist/app.tar.gz --gate-key gate.pem --repo octo-org/app
  attested-verify artifact dist/*.tar.gz --bundle sha256:abc.jsonl --owner octo-org \
      --gate-key gate.pem --trusted-root trusted_root.json --source-tag v1.2.0 \
      --signer-workflow octo-org/app/.github/workflows/release.yml --vsa-out vsa.json
  GH_TOKEN=... attested-verify artifact app.tar.gz --from-github --repo octo-org/app --gate-key gate.pem
`

type artifactConfig struct {
	paths        []string
	bundle       string
	fromGitHub   bool
	apiURL       string
	gateKey      string
	trustedRoot  string
	hostname     string
	sourceBranch string
	sourceTag    string
	certIssuer   string
	evidence     evidenceFlags
	opts         provenance.VerifyOptions
	format       string
	vsaOut       string
	vsaKey       string
	stepSummary  string
	vsaSigner    crypto.Signer
}

func parseArtifact(args []string, stderr io.Writer) (*artifactConfig, error) {
	var c artifactConfig
	fs := cli.NewFlagSet("artifact", artifactUsage, stderr)
	fs.StringVar(&c.bundle, "bundle", "", "bundle file: one sigstore bundle, or JSON lines of bundles (default: PATH.sigstore.json for each PATH)")
	fs.BoolVar(&c.fromGitHub, "from-github", false, "read the bundles from GitHub's attestation API by each artifact's digest (token in GH_TOKEN or GITHUB_TOKEN)")
	fs.StringVar(&c.apiURL, "api-url", "", "GitHub REST API for --from-github (default: https://api.github.com for github.com, else https://HOSTNAME/api/v3)")
	fs.StringVar(&c.gateKey, "gate-key", "", "PEM file of trusted gate public keys (the gate's GET /v1/roots, or jobgate keygen's output)")
	fs.StringVar(&c.trustedRoot, "trusted-root", "", "Sigstore trusted_root.json (or JSON lines of them, as gh attestation trusted-root writes) for keyless bundles: Fulcio CAs, Rekor logs, timestamp authorities")
	fs.StringVar(&c.opts.ExpectedRepository, "repo", "", "expected source repository, owner/name (this or --owner is required)")
	fs.StringVar(&c.opts.ExpectedOwner, "owner", "", "expected owner of the source repository (any of its repositories)")
	fs.StringVar(&c.hostname, "hostname", "github.com", "GitHub host the job ran on: the recorded server URL must be https://HOSTNAME (give a scheme to expect another)")
	fs.StringVar(&c.opts.ExpectedRef, "ref", "", "expected git ref, e.g. refs/heads/main or refs/tags/v1.2.0")
	fs.StringVar(&c.opts.ExpectedRef, "source-ref", "", "same as --ref (gh)")
	fs.StringVar(&c.sourceBranch, "source-branch", "", "expected branch: the ref must be refs/heads/BRANCH (slsa-verifier)")
	fs.StringVar(&c.sourceTag, "source-tag", "", "expected tag: the ref must be refs/tags/TAG (slsa-verifier)")
	fs.StringVar(&c.opts.ExpectedWorkflow, "workflow", "", "expected workflow: .github/workflows/x.yml, [HOST/]OWNER/REPO/.github/workflows/x.yml, each with an optional @REF")
	fs.StringVar(&c.opts.ExpectedWorkflow, "signer-workflow", "", "same as --workflow (gh's form); matched against the recorded GITHUB_WORKFLOW_REF")
	fs.StringVar(&c.opts.ExpectedCommit, "commit", "", "expected commit SHA")
	fs.StringVar(&c.opts.ExpectedCommit, "source-digest", "", "same as --commit (gh)")
	fs.StringVar(&c.opts.ExpectedRunID, "run-id", "", "expected workflow run id")
	fs.StringVar(&c.opts.ExpectedBuilderID, "builder-id", "", "expected builder id (the gate's configured builder id)")
	fs.StringVar(&c.certIssuer, "cert-oidc-issuer", "", "OIDC issuer a keyless bundle's certificate must name (default: GitHub Actions' issuer for --hostname)")
	c.evidence.register(fs)
	// Default 0 (the library's default, 2) so that a given --min-level,
	// even 2, is told apart: --insecure-allow-software-tpm never lowers it.
	fs.IntVar(&c.opts.MinLevel, "min-level", 0, "lowest BuildEnv level accepted, 1 to 3 (2: attested TPM, 3: a verified TEE report: TDX with an UpToDate TCB); default 2, which --insecure-allow-software-tpm lowers to 0 for a software TPM: a given --min-level is never lowered")
	fs.BoolVar(&c.opts.AllowSoftwareTPMInsecure, "insecure-allow-software-tpm", false, "accept environments on a software TPM (simulator, swtpm; level 0) under the default --min-level: demos and tests only. With --evidence, every environment counts as a software TPM (the trusted AKs may be software TPMs)")
	fs.StringVar(&c.format, "format", "text", "output format: text, or json (an array shaped like gh attestation verify's, plus attestedRunner)")
	fs.StringVar(&c.stepSummary, "step-summary", "", "append a Markdown summary table to this file (in GitHub Actions: $GITHUB_STEP_SUMMARY)")
	fs.StringVar(&c.vsaOut, "vsa-out", "", "write a SLSA verification summary attestation (in-toto vsa/v1) for the verified artifacts to this file")
	fs.StringVar(&c.vsaKey, "vsa-key", "", "PEM EC P-256 private key: --vsa-out then writes the VSA signed, as a DSSE sigstore bundle")
	paths, err := cli.Parse(fs, args)
	if err != nil {
		if err == flag.ErrHelp {
			return nil, err
		}
		return nil, cli.Usagef("%v", err)
	}
	c.paths = paths
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if err := c.check(set); err != nil {
		return nil, err
	}
	return &c, nil
}

// check refuses contradictory or empty invocations: every one is a usage
// error (exit 2) before anything is read.
func (c *artifactConfig) check(set map[string]bool) error {
	both := func(a, b string) bool { return set[a] && set[b] }
	switch {
	case set["min-level"] && (c.opts.MinLevel < 1 || c.opts.MinLevel > 3):
		return cli.Usagef("artifact: --min-level must be 1, 2 or 3 (a software TPM, level 0, is accepted only by --insecure-allow-software-tpm with the default minimum)")
	case len(c.paths) == 0:
		return cli.Usagef("artifact: no artifact PATH given")
	case c.opts.ExpectedRepository == "" && c.opts.ExpectedOwner == "":
		return cli.Usagef("artifact: --repo or --owner is required: verifying against no expected source verifies nothing")
	case c.opts.ExpectedRepository != "" && strings.Count(c.opts.ExpectedRepository, "/") != 1:
		return cli.Usagef("artifact: --repo %q is not OWNER/NAME", c.opts.ExpectedRepository)
	case strings.Contains(c.opts.ExpectedOwner, "/"):
		return cli.Usagef("artifact: --owner %q is an owner, not OWNER/NAME (use --repo)", c.opts.ExpectedOwner)
	case both("ref", "source-ref"), both("workflow", "signer-workflow"), both("commit", "source-digest"):
		return cli.Usagef("artifact: give each expectation once (--ref/--source-ref, --workflow/--signer-workflow, --commit/--source-digest are the same flag)")
	case c.sourceBranch != "" && c.sourceTag != "":
		return cli.Usagef("artifact: --source-branch and --source-tag exclude each other")
	case (c.sourceBranch != "" || c.sourceTag != "") && c.opts.ExpectedRef != "":
		return cli.Usagef("artifact: --source-branch / --source-tag and --ref say the same thing: give one")
	case c.hostname == "":
		return cli.Usagef("artifact: --hostname is empty")
	case c.format != "text" && c.format != "json":
		return cli.Usagef("artifact: --format must be text or json")
	case c.bundle != "" && c.fromGitHub:
		return cli.Usagef("artifact: --bundle and --from-github exclude each other")
	case c.apiURL != "" && !c.fromGitHub:
		return cli.Usagef("artifact: --api-url is only used with --from-github")
	case c.vsaKey != "" && c.vsaOut == "":
		return cli.Usagef("artifact: --vsa-key signs the VSA --vsa-out writes: give --vsa-out")
	case !c.evidence.on && c.gateKey == "":
		return cli.Usagef("artifact: --gate-key is required (or --evidence with reference values)")
	}
	if c.sourceBranch != "" {
		c.opts.ExpectedRef = "refs/heads/" + strings.TrimPrefix(c.sourceBranch, "refs/heads/")
	}
	if c.sourceTag != "" {
		c.opts.ExpectedRef = "refs/tags/" + strings.TrimPrefix(c.sourceTag, "refs/tags/")
	}
	if c.opts.ExpectedWorkflow != "" {
		if _, err := provenance.ParseWorkflowExpectation(c.opts.ExpectedWorkflow); err != nil {
			return cli.Usagef("artifact: --workflow: %v", err)
		}
	}
	c.opts.ExpectedServerURL = provenance.ServerURLFor(c.hostname)
	return c.evidence.check(c.gateKey != "")
}

// loadTrust reads every file the verification trusts. A file of the wrong
// kind (a PEM key given as a trusted root, JSON given as a key) is a usage
// error naming the format expected.
func (c *artifactConfig) loadTrust() error {
	if c.gateKey != "" {
		keys, err := loadGateKeys(c.gateKey)
		if err != nil {
			return err
		}
		c.opts.TrustedGateRoots = keys
	}
	if c.trustedRoot != "" {
		tm, err := loadTrustedRoot(c.trustedRoot)
		if err != nil {
			return err
		}
		c.opts.TrustedSigstore = tm
		c.opts.ExpectedCertIssuer = c.certIssuer
		if c.opts.ExpectedCertIssuer == "" {
			c.opts.ExpectedCertIssuer = provenance.ActionsIssuerFor(c.opts.ExpectedServerURL)
		}
	}
	if c.evidence.on {
		p, err := c.evidence.policy(c.opts.AllowSoftwareTPMInsecure)
		if err != nil {
			return err
		}
		c.opts.ReferenceValues = p
	}
	if c.vsaKey != "" {
		b, err := fileio.ReadSecretFile(c.vsaKey, 64<<10)
		if err != nil {
			return fmt.Errorf("--vsa-key: %w", err)
		}
		k, err := provenance.ParseSigningKey(b)
		if err != nil {
			return cli.Usagef("--vsa-key %s: %v: want a PEM EC P-256 private key (PRIVATE KEY or EC PRIVATE KEY, as jobgate keygen writes)", c.vsaKey, err)
		}
		c.vsaSigner = k
	}
	return nil
}

func runArtifact(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c, err := parseArtifact(args, stderr)
	if err != nil {
		return err
	}
	if err := c.loadTrust(); err != nil {
		return err
	}
	var src bundleSource = fileBundles{explicit: c.bundle}
	if c.fromGitHub {
		gh, err := newGitHubBundles(c)
		if err != nil {
			return err
		}
		src = gh
	}
	var reports []artifactReport
	var verified []provenance.VerifiedArtifact
	allOK := true
	for _, path := range c.paths {
		rep := verifyArtifact(ctx, path, src, c.opts)
		reports = append(reports, rep)
		if ok := rep.verified(); ok != nil {
			verified = append(verified, provenance.VerifiedArtifact{
				Name: filepath.Base(path), SHA256: rep.digest, BundleURI: ok.Source, BundleSHA256: ok.rawDigest(), Result: ok.Result,
			})
		} else {
			allOK = false
		}
	}
	if c.format == "json" {
		if err := writeJSONReport(stdout, reports); err != nil {
			return err
		}
	} else {
		for _, r := range reports {
			printArtifactText(stdout, r)
		}
	}
	if c.stepSummary != "" {
		if err := appendSummary(c.stepSummary, reports); err != nil {
			return fmt.Errorf("--step-summary: %w", err)
		}
	}
	if !allOK {
		return errNotVerified
	}
	if c.vsaOut != "" {
		var vsa []byte
		var err error
		if c.vsaSigner != nil {
			vsa, err = provenance.SignConsumerVSA(ctx, c.vsaSigner, verified, c.opts, time.Now().UTC())
		} else {
			vsa, err = provenance.ConsumerVSA(verified, c.opts, time.Now().UTC())
		}
		if err != nil {
			return err
		}
		if err := fileio.WriteFileAtomic(c.vsaOut, vsa, 0o644); err != nil {
			return err
		}
		if c.format == "text" {
			what := "VSA"
			if c.vsaSigner != nil {
				what = "signed VSA (sigstore bundle)"
			}
			fmt.Fprintf(stdout, "%s written to %s\n", what, c.vsaOut)
		}
	}
	return nil
}

// artifactReport is one artifact and every bundle tried for it.
type artifactReport struct {
	Artifact string
	digest   []byte
	// Error is set when no bundle could be tried (the artifact or its
	// bundles could not be read).
	Error    string
	Attempts []*attempt
}

// attempt is one bundle verified for one artifact.
type attempt struct {
	Source string
	raw    []byte
	Result *provenance.Result
	Err    error
}

func (a *attempt) rawDigest() []byte { return sha256Of(a.raw) }

// verified returns the first attempt that passed, or nil.
func (r *artifactReport) verified() *attempt {
	for _, a := range r.Attempts {
		if a.Err == nil {
			return a
		}
	}
	return nil
}

// failure says why nothing verified: the read error, or the error of the
// attempt that got furthest.
func (r *artifactReport) failure() (string, *attempt) {
	if r.Error != "" {
		return r.Error, nil
	}
	var best *attempt
	for _, a := range r.Attempts {
		if best == nil || (a.Result != nil && best.Result != nil && len(a.Result.Checks) > len(best.Result.Checks)) {
			best = a
		}
	}
	if best == nil {
		return "no bundle", nil
	}
	msg := best.Err.Error()
	if n := len(r.Attempts); n > 1 {
		msg = fmt.Sprintf("none of %d bundles verified; the one that got furthest (%s): %s", n, best.Source, msg)
	}
	return msg, best
}

func verifyArtifact(ctx context.Context, path string, src bundleSource, opts provenance.VerifyOptions) artifactReport {
	rep := artifactReport{Artifact: path}
	digest, err := provenance.DigestFile(path)
	if err != nil {
		rep.Error = err.Error()
		return rep
	}
	rep.digest = digest
	bundles, err := src.bundles(ctx, path, digest)
	if err != nil {
		rep.Error = err.Error()
		return rep
	}
	for _, b := range bundles {
		res, err := provenance.Verify(b.raw, digest, opts)
		rep.Attempts = append(rep.Attempts, &attempt{Source: b.source, raw: b.raw, Result: res, Err: err})
	}
	return rep
}

func printArtifactText(w io.Writer, r artifactReport) {
	fmt.Fprintf(w, "%s\n", r.Artifact)
	ok := r.verified()
	if ok == nil {
		msg, best := r.failure()
		if best != nil {
			fmt.Fprintf(w, "  bundle %s\n", best.Source)
			printChecks(w, best.Result)
		}
		fmt.Fprintf(w, "NOT VERIFIED: %s\n\n", msg)
		return
	}
	fmt.Fprintf(w, "  bundle %s\n", ok.Source)
	printChecks(w, ok.Result)
	res := ok.Result
	j := res.Job
	fmt.Fprintf(w, "VERIFIED sha256:%x\n", r.digest)
	fmt.Fprintf(w, "  source    %s/%s @ %s (%s)\n", strings.TrimSuffix(j.ServerURL, "/"), j.Repository, j.SHA, j.Ref)
	fmt.Fprintf(w, "  workflow  %s (%s by %s)\n", j.WorkflowRef, j.EventName, j.Actor)
	fmt.Fprintf(w, "  run       %s (job %s)\n", j.InvocationURL(), j.Job)
	level := provenance.LevelName(res.Level)
	if res.SoftwareTPM {
		level += " (SOFTWARE TPM, insecure mode)"
	}
	if res.Hardware != "" {
		level += ", hardware " + res.Hardware
	}
	fmt.Fprintf(w, "  runner    %s, image %s, %s\n", j.RunnerName, res.ImageID, level)
	fmt.Fprintf(w, "  built     %s .. %s\n", res.StartedOn.Format(time.RFC3339), res.FinishedOn.Format(time.RFC3339))
	for _, a := range res.Actions {
		fmt.Fprintf(w, "  input     %s\n", a)
	}
	fmt.Fprintln(w)
}

func printChecks(w io.Writer, res *provenance.Result) {
	if res == nil {
		return
	}
	for _, ch := range res.Checks {
		mark := "✓"
		if !ch.OK {
			mark = "✗"
		}
		fmt.Fprintf(w, "  %s %-12s %s\n", mark, ch.Name, ch.Detail)
	}
}

// appendSummary appends a Markdown table of the reports, for a workflow's
// step summary.
func appendSummary(path string, reports []artifactReport) error {
	var b strings.Builder
	b.WriteString("### attested-runner provenance\n\n| artifact | result | source | run | environment |\n|---|---|---|---|---|\n")
	cell := func(s string) string { return strings.NewReplacer("|", "\\|", "\n", " ").Replace(s) }
	for _, r := range reports {
		ok := r.verified()
		if ok == nil {
			msg, _ := r.failure()
			fmt.Fprintf(&b, "| `%s` | ✗ %s | | | |\n", cell(r.Artifact), cell(msg))
			continue
		}
		j := ok.Result.Job
		fmt.Fprintf(&b, "| `%s` | ✓ verified | %s@%.12s (%s) | [%s](%s) | %s, %s |\n", cell(r.Artifact), cell(j.Repository), j.SHA, cell(j.Ref),
			cell(j.RunID), j.InvocationURL(), cell(ok.Result.ImageID), provenance.LevelName(ok.Result.Level))
	}
	b.WriteString("\n")
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(b.String()); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// jsonEntry is one element of --format json: an artifact with one bundle
// that verified (or, when none did, the artifact with the error). The
// attestation and verificationResult members mean what they mean in
// gh attestation verify --format json (verificationResult is sigstore-go's
// VerificationResult); attestedRunner is this verifier's own result.
type jsonEntry struct {
	Artifact           string             `json:"artifact"`
	Digest             string             `json:"digest"`
	Verified           bool               `json:"verified"`
	Error              string             `json:"error,omitempty"`
	Source             string             `json:"bundleSource,omitempty"`
	Attestation        *jsonAttestation   `json:"attestation,omitempty"`
	VerificationResult json.RawMessage    `json:"verificationResult,omitempty"`
	AttestedRunner     *provenance.Result `json:"attestedRunner,omitempty"`
}

type jsonAttestation struct {
	Bundle json.RawMessage `json:"bundle"`
}

func writeJSONReport(w io.Writer, reports []artifactReport) error {
	entries := []jsonEntry{}
	for _, r := range reports {
		base := jsonEntry{Artifact: r.Artifact}
		if r.digest != nil {
			base.Digest = fmt.Sprintf("sha256:%x", r.digest)
		}
		n := 0
		for _, a := range r.Attempts {
			if a.Err != nil {
				continue
			}
			e := base
			e.Verified, e.Source, e.AttestedRunner = true, a.Source, a.Result
			e.Attestation = &jsonAttestation{Bundle: json.RawMessage(a.raw)}
			vr, err := a.Result.SigstoreJSON()
			if err != nil {
				return err
			}
			e.VerificationResult = vr
			entries = append(entries, e)
			n++
		}
		if n == 0 {
			e := base
			msg, best := r.failure()
			e.Error = msg
			if best != nil {
				e.Source, e.AttestedRunner = best.Source, best.Result
			}
			entries = append(entries, e)
		}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(entries)
}
