package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"

	"github.com/attested-runner/attested-runner/provenance"
)

// VerifyOptions are the consumer's side of `attested-verify artifact`.
type VerifyOptions struct {
	Artifact string
	// Bundle defaults to Artifact + ".sigstore.json".
	Bundle string
	// GateKey is a PEM file of gate keys (Gate.Roots).
	GateKey string
	// Repo is the expected repository; Owner an expected owner instead
	// (the verifier needs one of them).
	Repo, Owner string
	// FromGitHub reads the bundles from the GitHub API at Hostname with
	// Token (GH_TOKEN) instead of a file.
	FromGitHub bool
	Token      string
	// Hostname is the GitHub server the job ran on, as --hostname takes
	// it: the fake's URL (World.GitHub.URL()), scheme included.
	Hostname string
	// RunID, Ref, Workflow: optional expectations.
	RunID, Ref, Workflow string
	// JSON asks for the JSON report (VerifyResult.Report).
	JSON bool
}

// Args is the command line (without the program) for these options, with
// --insecure-allow-software-tpm: the harness's TPMs are swtpm.
func (o VerifyOptions) Args() []string {
	args := []string{"artifact", o.Artifact, "--gate-key", o.GateKey, "--hostname", o.Hostname, "--insecure-allow-software-tpm"}
	if o.Repo != "" {
		args = append(args, "--repo", o.Repo)
	}
	if o.Owner != "" {
		args = append(args, "--owner", o.Owner)
	}
	if o.FromGitHub {
		args = append(args, "--from-github")
	}
	if o.Bundle != "" {
		args = append(args, "--bundle", o.Bundle)
	}
	for _, f := range []struct{ flag, v string }{{"--run-id", o.RunID}, {"--ref", o.Ref}, {"--workflow", o.Workflow}} {
		if f.v != "" {
			args = append(args, f.flag, f.v)
		}
	}
	if o.JSON {
		args = append(args, "--format", "json")
	}
	return args
}

// VerifyResult is what attested-verify said.
type VerifyResult struct {
	// ExitCode: 0 verified, 1 not verified, 2 usage error.
	ExitCode int
	Stdout   string
	Stderr   string
	// Report is the parsed JSON report (with VerifyOptions.JSON).
	Report *VerifyReport
}

// VerifyReport is attested-verify's JSON report, one element per artifact
// (the verifier prints an array shaped like gh's, one element per verified
// bundle: see jsonEntry in cmd/attested-verify).
type VerifyReport struct {
	Verified  bool `json:"verified"`
	Artifacts []*VerifyArtifactReport
}

// VerifyArtifactReport is one artifact's verdict.
type VerifyArtifactReport struct {
	Artifact string
	SHA256   string
	Bundle   string
	Verified bool
	Error    string
	Result   *VerifyArtifactResult
}

// VerifyArtifactResult is the part of the verifier's result tests read.
type VerifyArtifactResult struct {
	Checks  []provenance.Check
	Actions []string
}

func (r *VerifyReport) addArtifact(name string) *VerifyArtifactReport {
	for _, a := range r.Artifacts {
		if a.Artifact == name {
			return a
		}
	}
	a := &VerifyArtifactReport{Artifact: name}
	r.Artifacts = append(r.Artifacts, a)
	return a
}

// FailedCheck returns the name of the first failed check of the first
// artifact ("" if none failed).
func (r *VerifyReport) FailedCheck() string {
	if r == nil || len(r.Artifacts) == 0 || r.Artifacts[0].Result == nil {
		return ""
	}
	for _, c := range r.Artifacts[0].Result.Checks {
		if !c.OK {
			return c.Name
		}
	}
	return ""
}

// VerifyArtifact runs attested-verify artifact.
func (b *Binaries) VerifyArtifact(ctx context.Context, o VerifyOptions) (*VerifyResult, error) {
	var out, errb bytes.Buffer
	cmd := exec.CommandContext(ctx, b.Verify, o.Args()...)
	cmd.Env = append(os.Environ(), "GH_TOKEN="+o.Token, "GITHUB_TOKEN=")
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code, sig := exitStatus(err)
	if sig != "" {
		return nil, fmt.Errorf("attested-verify: %v: %s", err, errb.String())
	}
	r := &VerifyResult{ExitCode: code, Stdout: out.String(), Stderr: errb.String()}
	if o.JSON && out.Len() > 0 {
		var entries []struct {
			Artifact       string `json:"artifact"`
			Digest         string `json:"digest"`
			Source         string `json:"bundleSource"`
			Verified       bool   `json:"verified"`
			Error          string `json:"error"`
			AttestedRunner *struct {
				Checks  []provenance.Check `json:"checks"`
				Actions []string           `json:"actions"`
			} `json:"attestedRunner"`
		}
		if err := json.Unmarshal(out.Bytes(), &entries); err != nil {
			return r, fmt.Errorf("attested-verify JSON: %w", err)
		}
		r.Report = &VerifyReport{Verified: len(entries) > 0}
		for _, e := range entries {
			r.Report.Verified = r.Report.Verified && e.Verified
			a := r.Report.addArtifact(e.Artifact)
			if a.Verified {
				continue // another bundle of it verified already
			}
			a.SHA256, a.Bundle, a.Verified, a.Error = strings.TrimPrefix(e.Digest, "sha256:"), e.Source, e.Verified, e.Error
			if e.AttestedRunner != nil {
				a.Result = &VerifyArtifactResult{Checks: e.AttestedRunner.Checks, Actions: e.AttestedRunner.Actions}
			}
		}
	}
	return r, nil
}
