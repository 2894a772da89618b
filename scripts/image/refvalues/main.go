// Command refvalues computes an image's reference values offline, from the
// files scripts/image/build.sh wrote, and prints the attest reference-values
// JSON the gate loads.
//
// Usage:
//
//	go run ./scripts/image/refvalues --image OUTDIR --agent PATH [--agent PATH]...
//	    [--boot qemu-direct|loader] [--memory MIB] [--id ID] [-o FILE]
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/attested-runner/attested-runner/internal/cli"
	"github.com/attested-runner/attested-runner/internal/imageref"
)

const usage = `refvalues: compute a runner image's reference values without booting it.

Usage:
  refvalues --image OUTDIR --agent PATH [--agent PATH]... [--boot qemu-direct|loader]
            [--memory MIB] [--id ID] [-o FILE]

--boot qemu-direct (the default) predicts a QEMU -kernel boot under OVMF:
the kernel digest is that of the image QEMU patches (it depends on --memory
and the initrd size), the command line gets OVMF's " initrd=initrd", and
PCR 4 and 9 get exact values. --boot loader predicts a boot loader that
loads the kernel file as is and passes the command line unchanged: only the
event digests and PCR 9 are listed.
`

type config struct {
	image   string
	agents  []string
	boot    string
	memory  uint64
	id      string
	out     string
	stdout  io.Writer
	summary io.Writer
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(mainArgs(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func mainArgs(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := cli.NewFlagSet("refvalues", usage, stderr)
	var agents cli.StringList
	cfg := config{stdout: stdout, summary: stderr}
	fs.StringVar(&cfg.image, "image", "", "build.sh output directory (vmlinuz, initrd.img, cmdline)")
	fs.Var(&agents, "agent", "agent binary allowed in the image (repeatable; at least one)")
	fs.StringVar(&cfg.boot, "boot", "qemu-direct", "boot path: qemu-direct or loader")
	fs.Uint64Var(&cfg.memory, "memory", 512, "guest RAM in MiB (qemu-direct)")
	fs.StringVar(&cfg.id, "id", "", "image id (default: runner-<digest of what is measured>)")
	fs.StringVar(&cfg.out, "o", "", "write the JSON to this file (atomically) instead of stdout")
	pos, err := cli.Parse(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		return cli.ExitOK
	}
	if err == nil && len(pos) > 0 {
		err = cli.Usagef("unexpected argument %q", pos[0])
	}
	if err == nil && cfg.image == "" {
		err = cli.Usagef("--image is required")
	}
	if err == nil && len(agents) == 0 {
		err = cli.Usagef("--agent is required: reference values must name the allowed agent binary")
	}
	if err != nil {
		fmt.Fprintf(stderr, "refvalues: %v\n", err)
		return cli.ExitUsage
	}
	cfg.agents = agents
	if err := run(ctx, cfg); err != nil {
		fmt.Fprintf(stderr, "refvalues: %v\n", err)
		if errors.Is(err, cli.ErrUsage) {
			return cli.ExitUsage
		}
		return cli.ExitFailed
	}
	return cli.ExitOK
}

func run(_ context.Context, cfg config) error {
	opts := imageref.Options{ID: cfg.id}
	switch cfg.boot {
	case "qemu-direct":
		opts.QEMUDirect = &imageref.QEMUDirect{MemoryMiB: cfg.memory}
	case "loader":
	default:
		return cli.Usagef("--boot %q: want qemu-direct or loader", cfg.boot)
	}
	rv, err := imageref.ReferenceValues(cfg.image, cfg.agents, opts)
	if err != nil {
		return err
	}
	b, err := json.MarshalIndent(rv, "", "  ")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	// What we write must be what the gate accepts.
	if _, err := attest.ParseReferenceValues(b); err != nil {
		return fmt.Errorf("generated reference values do not parse: %w", err)
	}
	img := rv.Images[0]
	fmt.Fprintf(cfg.summary, "image %s: %d events, %d exact PCRs, %d agent digests\n", img.ID, len(img.Events), len(img.PCRs), len(rv.AgentDigests))
	if cfg.out == "" {
		_, err = cfg.stdout.Write(b)
		return err
	}
	return writeAtomic(cfg.out, b)
}

func writeAtomic(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
