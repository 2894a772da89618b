// Command attested-verify checks, offline, that an artifact was built by an
// attested, single-use attested-runner environment (artifact), and lets an
// admin inspect hardware evidence (evidence). Exit status: 0 verified,
// 1 not verified, 2 usage error.
package main

import (
	"context"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/attested-runner/attested-runner/internal/cli"
	"github.com/attested-runner/attested-runner/internal/version"
)

const usage = `attested-verify: verify attested-runner provenance and hardware evidence, offline.

Usage:
  attested-verify artifact PATH... --gate-key GATE.pem --repo OWNER/NAME [flags]
      Verify that each artifact was built by an attested, single-use runner
      for the expected repository (and ref, workflow, commit, run, builder).
  attested-verify evidence FILE [flags]
      Inspect hardware evidence (attested-runner evidence, a go-tpm-tools
      attestation, or a raw TDX quote): verify what can be verified, print
      what was measured, and derive candidate reference values.
  attested-verify version

Run 'attested-verify COMMAND --help' for a command's flags.
Exit status: 0 verified, 1 not verified, 2 usage error.
`

func main() {
	// One verification is short and its inputs are bounded: collecting
	// garbage before exit is wasted work. The memory limit keeps the
	// collector as a backstop (a JSON-lines file of many large bundles);
	// GOGC, when set, wins.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(-1)
		debug.SetMemoryLimit(512 << 20)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return cli.Main(ctx, "attested-verify", usage, version.String("attested-verify"), map[string]cli.Command{
		"artifact": runArtifact,
		"evidence": runEvidence,
	}, args, stdout, stderr)
}

// errNotVerified: the report was printed; exit 1 without another message.
var errNotVerified = cli.ErrReported
