// Command attested-verify checks, offline, that an artifact was built by an
// attested, single-use attested-runner environment (artifact), and lets an
// admin inspect hardware evidence (evidence). Exit status: 0 verified,
// 1 not verified, 2 usage error.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/attested-runner/attested-runner/internal/cli"
	"github.com/attested-runner/attested-runner/internal/version"
)

const usage = `attested-verify: verify attested-runner provenance and hardware evidence, offline.

Usage:
  attested-verify artifact PATH... --trusted-root GATE.pem --repo OWNER/NAME [flags]
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
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// run dispatches a command line and returns the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return cli.ExitUsage
	}
	var err error
	switch args[0] {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return cli.ExitOK
	case "-version", "--version", "version":
		fmt.Fprintln(stdout, version.String("attested-verify"))
		return cli.ExitOK
	case "artifact":
		err = runArtifact(ctx, args[1:], stdout, stderr)
	case "evidence":
		err = runEvidence(ctx, args[1:], stdout, stderr)
	default:
		fmt.Fprintf(stderr, "attested-verify: unknown command %q\n\n%s", args[0], usage)
		return cli.ExitUsage
	}
	switch {
	case err == nil:
		return cli.ExitOK
	case errors.Is(err, flag.ErrHelp):
		return cli.ExitOK
	case errors.Is(err, cli.ErrUsage):
		fmt.Fprintf(stderr, "attested-verify: %v\n", err)
		return cli.ExitUsage
	case errors.Is(err, errNotVerified):
		return cli.ExitFailed
	default:
		fmt.Fprintf(stderr, "attested-verify: %v\n", err)
		return cli.ExitFailed
	}
}

// errNotVerified: the report was printed; exit 1 without another message.
var errNotVerified = errors.New("not verified")
