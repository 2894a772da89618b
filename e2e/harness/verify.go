package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"

	"github.com/attested-runner/attested-runner/provenance"
)

// VerifyOptions are the consumer's side of `attested-verify artifact`.
type VerifyOptions struct {
	Artifact string
	// Bundle defaults to Artifact + ".sigstore.json".
	Bundle string
	// TrustedRoot is a PEM file of gate keys (Gate.Roots).
	TrustedRoot string
	// Repo is the expected repository (required by the verifier).
	Repo string
	// RunID, Ref, Workflow: optional expectations.
	RunID, Ref, Workflow string
	// JSON asks for the JSON report (VerifyResult.Report).
	JSON bool
}

// Args is the command line (without the program) for these options, with
// --insecure-allow-software-tpm: the harness's TPMs are swtpm.
func (o VerifyOptions) Args() []string {
	args := []string{"artifact", o.Artifact, "--trusted-root", o.TrustedRoot, "--repo", o.Repo, "--insecure-allow-software-tpm"}
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

// VerifyReport is attested-verify's JSON report.
type VerifyReport struct {
	Verified  bool `json:"verified"`
	Artifacts []struct {
		Artifact string `json:"artifact"`
		SHA256   string `json:"sha256"`
		Bundle   string `json:"bundle"`
		Verified bool   `json:"verified"`
		Error    string `json:"error"`
		Result   *struct {
			Checks  []provenance.Check `json:"checks"`
			Actions []string           `json:"actions"`
		} `json:"result"`
	} `json:"artifacts"`
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
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code, sig := exitStatus(err)
	if sig != "" {
		return nil, fmt.Errorf("attested-verify: %v: %s", err, errb.String())
	}
	r := &VerifyResult{ExitCode: code, Stdout: out.String(), Stderr: errb.String()}
	if o.JSON && out.Len() > 0 {
		r.Report = &VerifyReport{}
		if err := json.Unmarshal(out.Bytes(), r.Report); err != nil {
			return r, fmt.Errorf("attested-verify JSON: %w", err)
		}
	}
	return r, nil
}
