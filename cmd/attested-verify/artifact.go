package main

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/attested-runner/attested-runner/internal/cli"
	"github.com/attested-runner/attested-runner/internal/fileio"
	"github.com/attested-runner/attested-runner/provenance"
)

const artifactUsage = `Usage: attested-verify artifact PATH... [flags]

Verify, offline, that each artifact at PATH was built by an attested,
single-use attested-runner environment for the build you expect:

  - the bundle (default PATH.sigstore.json) is attested-runner SLSA v1
    provenance whose subjects include the artifact's SHA-256;
  - its environment certificate is signed by a gate key in --trusted-root
    (or, with --evidence, its hardware evidence matches --reference-values);
  - its DSSE signature is by that certified environment key;
  - its response-time hardware quote covers this exact statement, from the
    same TPM/TD and boot, after the job-start event for this build and
    before its job-end and the environment's teardown;
  - it was built from --repo (and --ref, --workflow, --commit, --run-id,
    --builder-id when given);
  - its BuildEnv level is at least --min-level (default 2): the lower of
    the certificate's level and the evidence's (with --evidence: what your
    reference values and AKs give it). A software TPM (simulator, swtpm)
    is level 0, whatever the evidence claims, and passes only with
    --insecure-allow-software-tpm and no --min-level.

Examples:
  attested-verify artifact dist/app.tar.gz --trusted-root gate.pem --repo octo-org/app
  attested-verify artifact dist/*.tar.gz --bundle dist/provenance.sigstore.json \
      --trusted-root gate.pem --repo octo-org/app --ref refs/tags/v1.2.0 \
      --workflow .github/workflows/release.yml --vsa-out vsa.json
`

type artifactConfig struct {
	paths          []string
	bundle         string
	trustedRoot    string
	evidenceMode   bool
	referenceVals  string
	trustedAKs     cli.StringList
	trustedAKRoots cli.StringList
	opts           provenance.VerifyOptions
	format         string
	vsaOut         string
	stepSummary    string
}

func parseArtifact(args []string, stderr io.Writer) (*artifactConfig, error) {
	var c artifactConfig
	fs := cli.NewFlagSet("artifact", artifactUsage, stderr)
	fs.StringVar(&c.bundle, "bundle", "", "sigstore bundle with the provenance (default: PATH.sigstore.json for each PATH)")
	fs.StringVar(&c.trustedRoot, "trusted-root", "", "PEM file of trusted gate public keys (from the gate's GET /v1/roots)")
	fs.StringVar(&c.opts.ExpectedRepository, "repo", "", "expected source repository, owner/name (required)")
	fs.StringVar(&c.opts.ExpectedRef, "ref", "", "expected git ref, e.g. refs/heads/main or refs/tags/v1.2.0")
	fs.StringVar(&c.opts.ExpectedWorkflow, "workflow", "", "expected workflow: a path (.github/workflows/release.yml) or a full workflow ref")
	fs.StringVar(&c.opts.ExpectedCommit, "commit", "", "expected commit SHA")
	fs.StringVar(&c.opts.ExpectedRunID, "run-id", "", "expected workflow run id")
	fs.StringVar(&c.opts.ExpectedBuilderID, "builder-id", "", "expected builder id (the gate's configured builder id)")
	fs.BoolVar(&c.evidenceMode, "evidence", false, "evidence mode: verify the hardware evidence against --reference-values instead of trusting the gate")
	fs.StringVar(&c.referenceVals, "reference-values", "", "reference-values file (evidence mode)")
	fs.Var(&c.trustedAKs, "trusted-ak", "PEM file of trusted TPM attestation keys (evidence mode; repeatable)")
	fs.Var(&c.trustedAKRoots, "trusted-ak-root", "PEM file of trusted AK certificate roots, e.g. a cloud vTPM CA (evidence mode; repeatable)")
	// Default 0 (the library's default, 2) so that a given --min-level,
	// even 2, is told apart: --insecure-allow-software-tpm never lowers it.
	fs.IntVar(&c.opts.MinLevel, "min-level", 0, "lowest BuildEnv level accepted, 1 to 3 (2: attested TPM, 3: a verified TEE report: TDX with an UpToDate TCB); default 2, which --insecure-allow-software-tpm lowers to 0 for a software TPM: a given --min-level is never lowered")
	fs.BoolVar(&c.opts.AllowSoftwareTPMInsecure, "insecure-allow-software-tpm", false, "accept environments on a software TPM (simulator, swtpm; level 0) under the default --min-level: demos and tests only. With --evidence, every environment counts as a software TPM (the trusted AKs may be software TPMs)")
	fs.StringVar(&c.format, "format", "text", "output format: text or json")
	fs.StringVar(&c.stepSummary, "step-summary", "", "append a Markdown summary table to this file (in GitHub Actions: $GITHUB_STEP_SUMMARY)")
	fs.StringVar(&c.vsaOut, "vsa-out", "", "write a SLSA verification summary attestation (in-toto vsa/v1) for the verified artifacts to this file")
	paths, err := cli.Parse(fs, args)
	if err != nil {
		if err == flag.ErrHelp {
			return nil, err
		}
		return nil, cli.Usagef("%v", err)
	}
	c.paths = paths
	minLevelSet := false
	fs.Visit(func(f *flag.Flag) { minLevelSet = minLevelSet || f.Name == "min-level" })
	switch {
	case minLevelSet && (c.opts.MinLevel < 1 || c.opts.MinLevel > 3):
		return nil, cli.Usagef("artifact: --min-level must be 1, 2 or 3 (a software TPM, level 0, is accepted only by --insecure-allow-software-tpm with the default minimum)")
	case len(c.paths) == 0:
		return nil, cli.Usagef("artifact: no artifact PATH given")
	case c.opts.ExpectedRepository == "":
		return nil, cli.Usagef("artifact: --repo is required: verifying against no expected repository verifies nothing")
	case c.format != "text" && c.format != "json":
		return nil, cli.Usagef("artifact: --format must be text or json")
	case c.evidenceMode && c.referenceVals == "":
		return nil, cli.Usagef("artifact: --evidence needs --reference-values")
	case c.evidenceMode && len(c.trustedAKs) == 0 && len(c.trustedAKRoots) == 0:
		return nil, cli.Usagef("artifact: --evidence needs --trusted-ak or --trusted-ak-root")
	case !c.evidenceMode && c.trustedRoot == "":
		return nil, cli.Usagef("artifact: --trusted-root is required (or --evidence with reference values)")
	case !c.evidenceMode && c.referenceVals != "":
		return nil, cli.Usagef("artifact: --reference-values is only used with --evidence")
	}
	return &c, nil
}

type artifactReport struct {
	Artifact string             `json:"artifact"`
	SHA256   string             `json:"sha256"`
	Bundle   string             `json:"bundle"`
	Verified bool               `json:"verified"`
	Error    string             `json:"error,omitempty"`
	Result   *provenance.Result `json:"result,omitempty"`
}

func runArtifact(_ context.Context, args []string, stdout, stderr io.Writer) error {
	c, err := parseArtifact(args, stderr)
	if err != nil {
		return err
	}
	if c.evidenceMode {
		p, err := loadPolicy(c.referenceVals, c.trustedAKs, c.trustedAKRoots)
		if err != nil {
			return err
		}
		p.AllowSoftwareTPMUnsafe = c.opts.AllowSoftwareTPMInsecure
		c.opts.ReferenceValues = p
	} else {
		roots, err := provenance.LoadTrustedRoots(c.trustedRoot)
		if err != nil {
			return fmt.Errorf("--trusted-root: %w", err)
		}
		c.opts.TrustedGateRoots = roots
	}

	var reports []artifactReport
	var verified []provenance.VerifiedArtifact
	allOK := true
	for _, path := range c.paths {
		rep, va := verifyOne(path, c)
		reports = append(reports, rep)
		if rep.Verified {
			verified = append(verified, va)
		} else {
			allOK = false
		}
	}
	if c.format == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(map[string]any{"verified": allOK, "artifacts": reports}); err != nil {
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
		vsa, err := provenance.ConsumerVSA(verified, c.opts, time.Now().UTC())
		if err != nil {
			return err
		}
		if err := fileio.WriteFileAtomic(c.vsaOut, vsa, 0o644); err != nil {
			return err
		}
		if c.format == "text" {
			fmt.Fprintf(stdout, "VSA written to %s\n", c.vsaOut)
		}
	}
	return nil
}

func verifyOne(path string, c *artifactConfig) (artifactReport, provenance.VerifiedArtifact) {
	rep := artifactReport{Artifact: path, Bundle: c.bundle}
	if rep.Bundle == "" {
		rep.Bundle = path + ".sigstore.json"
	}
	digest, err := provenance.DigestFile(path)
	if err != nil {
		rep.Error = err.Error()
		return rep, provenance.VerifiedArtifact{}
	}
	rep.SHA256 = fmt.Sprintf("%x", digest)
	raw, err := cli.ReadFile(rep.Bundle, provenance.MaxBundleSize)
	if err != nil {
		rep.Error = "bundle: " + err.Error()
		return rep, provenance.VerifiedArtifact{}
	}
	res, err := provenance.Verify(raw, digest, c.opts)
	rep.Result = res
	if err != nil {
		rep.Error = err.Error()
		return rep, provenance.VerifiedArtifact{}
	}
	rep.Verified = true
	bd := sha256.Sum256(raw)
	return rep, provenance.VerifiedArtifact{Name: filepath.Base(path), SHA256: digest, BundleURI: rep.Bundle, BundleSHA256: bd[:], Result: res}
}

func printArtifactText(w io.Writer, r artifactReport) {
	fmt.Fprintf(w, "%s\n", r.Artifact)
	if r.Result != nil {
		for _, ch := range r.Result.Checks {
			mark := "✓"
			if !ch.OK {
				mark = "✗"
			}
			fmt.Fprintf(w, "  %s %-12s %s\n", mark, ch.Name, ch.Detail)
		}
	}
	if !r.Verified {
		fmt.Fprintf(w, "NOT VERIFIED: %s\n\n", r.Error)
		return
	}
	res := r.Result
	j := res.Job
	fmt.Fprintf(w, "VERIFIED sha256:%s\n", r.SHA256)
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

// loadPolicy builds an attest policy from a reference-values file and AK
// trust files.
func loadPolicy(refPath string, aks, akRoots []string) (*attest.Policy, error) {
	p := &attest.Policy{}
	if refPath != "" {
		rv, err := attest.LoadReferenceValues(refPath)
		if err != nil {
			return nil, fmt.Errorf("--reference-values: %w", err)
		}
		p.Reference = rv
	}
	for _, f := range aks {
		keys, err := provenance.LoadTrustedRoots(f)
		if err != nil {
			return nil, fmt.Errorf("--trusted-ak: %w", err)
		}
		p.TrustedAKs = append(p.TrustedAKs, keys...)
	}
	for _, f := range akRoots {
		certs, err := attest.LoadCertificates(f)
		if err != nil {
			return nil, fmt.Errorf("--trusted-ak-root: %w", err)
		}
		p.TrustedAKRoots = append(p.TrustedAKRoots, certs...)
	}
	return p, nil
}

// appendSummary appends a Markdown table of the reports, for a workflow's
// step summary.
func appendSummary(path string, reports []artifactReport) error {
	var b strings.Builder
	b.WriteString("### attested-runner provenance\n\n| artifact | result | source | run | environment |\n|---|---|---|---|---|\n")
	cell := func(s string) string { return strings.NewReplacer("|", "\\|", "\n", " ").Replace(s) }
	for _, r := range reports {
		if !r.Verified {
			fmt.Fprintf(&b, "| `%s` | ✗ %s | | | |\n", cell(r.Artifact), cell(r.Error))
			continue
		}
		j := r.Result.Job
		fmt.Fprintf(&b, "| `%s` | ✓ verified | %s@%.12s (%s) | [%s](%s) | %s, %s |\n", cell(r.Artifact), cell(j.Repository), j.SHA, cell(j.Ref),
			cell(j.RunID), j.InvocationURL(), cell(r.Result.ImageID), provenance.LevelName(r.Result.Level))
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
