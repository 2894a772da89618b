// Command attested-runner is the in-VM agent.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/attested-runner/attested-runner/internal/version"
)

const usage = `attested-runner: the in-VM agent: attests the VM, runs one GitHub Actions job, signs its provenance.

Usage:
  attested-runner --version
  attested-runner help

Exit status: 0 verified, 1 not verified, 2 usage error.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(cli(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func cli(_ context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	case "-version", "--version", "version":
		fmt.Fprintln(stdout, version.String("attested-runner"))
		return 0
	}
	fmt.Fprintf(stderr, "attested-runner: unknown command %q\n\n%s", args[0], usage)
	return 2
}
