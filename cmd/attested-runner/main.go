// Command attested-runner is the in-VM agent (run) and its job-side
// clients (hook, attest).
package main

import (
	"context"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/attested-runner/attested-runner/internal/cli"
	"github.com/attested-runner/attested-runner/internal/version"
)

const usage = `attested-runner: the attested, single-use GitHub Actions runner agent.

Usage:
  attested-runner run --gate URL [flags]
      The agent (as root, at boot, from the measured image): attest the VM,
      get admitted by the gate, run the GitHub runner for exactly one job as
      an unprivileged user, sign its provenance, tear down, power off.
  attested-runner hook job-started|job-completed [--socket PATH]
      Run by the GitHub runner's job hooks (as the runner user): report the
      job to the agent. A refusal fails the job.
  attested-runner attest --subject-path PATTERN... [--bundle-path PATH] [--socket PATH]
      Run by the job-side action: ask the agent to hash the files and sign
      their provenance; writes the bundle into the workspace.
  attested-runner upload --bundle PATH [--repo OWNER/NAME] [--if-permitted]
      Inside a job: store a bundle in GitHub's attestation store (POST
      /repos/{owner}/{repo}/attestations; token in GITHUB_TOKEN, the
      workflow needs permissions: attestations: write).
  attested-runner ak-public [--tpm DEV]
      Print this TPM's attestation key (PEM), for enrolling the machine in
      the gate's trusted AKs.
  attested-runner version

Run 'attested-runner COMMAND --help' for a command's flags.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return cli.Main(ctx, "attested-runner", usage, version.String("attested-runner"), map[string]cli.Command{
		"run":       runAgent,
		"hook":      runHook,
		"attest":    runAttest,
		"upload":    runUpload,
		"ak-public": runAKPublic,
	}, args, stdout, stderr)
}
