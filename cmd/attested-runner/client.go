package main

import (
	"context"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/attested-runner/attested-runner/internal/cli"
	"github.com/attested-runner/attested-runner/runner"
)

const defaultSocket = "/run/attested-runner/agent.sock"

const hookUsage = `Usage: attested-runner hook job-started|job-completed [--socket PATH]

Run by the GitHub runner's job hooks (bash -e, as the runner user): sends the
job's GITHUB_* variables and event payload to the agent. job-started blocks
until the agent has recorded the job, extended the job-start event and signed
the dispatch attestation; if the agent refuses (e.g. a second job on this
single-use runner), the hook fails and so does the job.
`

func runHook(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || (args[0] != "job-started" && args[0] != "job-completed") {
		if len(args) > 0 && (args[0] == "--help" || args[0] == "-h") {
			fmt.Fprint(stdout, hookUsage)
			return nil
		}
		return cli.Usagef("hook: want job-started or job-completed")
	}
	event := args[0]
	fs := cli.NewFlagSet("hook", hookUsage, stderr)
	socket := fs.String("socket", defaultSocket, "agent socket")
	if _, err := cli.Parse(fs, args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return cli.Usagef("%v", err)
	}
	rep := runner.ReportFromEnv(os.Getenv)
	if p := os.Getenv("GITHUB_EVENT_PATH"); p != "" {
		b, err := cli.ReadFile(p, 1<<20)
		if err != nil {
			return fmt.Errorf("event payload: %w", err)
		}
		rep.EventPayload = b
	}
	c := &runner.Client{Socket: *socket}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if event == "job-started" {
		var resp runner.JobStartedResponse
		if err := c.Call(cctx, runner.SocketPathJobStarted, rep, &resp); err != nil {
			return fmt.Errorf("the attested-runner agent refused this job: %w", err)
		}
		fmt.Fprintf(stdout, "attested-runner: job recorded as %s\nattested-runner: dispatch attestation: %s\n", resp.BuildID, resp.Dispatch)
		return nil
	}
	if err := c.Call(cctx, runner.SocketPathJobCompleted, rep, nil); err != nil {
		return fmt.Errorf("reporting job completion: %w", err)
	}
	fmt.Fprintln(stdout, "attested-runner: job completion recorded")
	return nil
}

const attestUsage = `Usage: attested-runner attest --subject-path PATTERN [--subject-path ...] [--bundle-path PATH] [--socket PATH]

Run inside a job on an attested runner (the job-side action runs it): the
agent hashes the matching files itself and writes a sigstore bundle with
SLSA provenance signed by the attested environment key. Patterns are globs
relative to the current directory (the workspace). Prints the bundle path;
with GITHUB_OUTPUT set, also writes bundle-path= to it.
`

func runAttest(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := cli.NewFlagSet("attest", attestUsage, stderr)
	var subjects cli.StringList
	fs.Var(&subjects, "subject-path", "file or glob to attest (repeatable; newline-separated lists accepted)")
	bundle := fs.String("bundle-path", "", "bundle to write (default: <first subject>.sigstore.json)")
	socket := fs.String("socket", defaultSocket, "agent socket")
	if pos, err := cli.Parse(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return cli.Usagef("%v", err)
	} else if len(pos) > 0 {
		return cli.Usagef("attest: unexpected argument %q (use --subject-path)", pos[0])
	}
	var paths []string
	for _, s := range subjects {
		for _, pat := range strings.Split(s, "\n") {
			if pat = strings.TrimSpace(pat); pat == "" {
				continue
			}
			m, err := filepath.Glob(pat)
			if err != nil {
				return cli.Usagef("bad pattern %q: %v", pat, err)
			}
			if len(m) == 0 {
				return fmt.Errorf("subject-path %q matches no file", pat)
			}
			paths = append(paths, m...)
		}
	}
	if len(paths) == 0 {
		return cli.Usagef("attest: at least one --subject-path is required")
	}
	cwd, err := os.Getwd()
	if err != nil {
		return err
	}
	req := &runner.AttestRequest{Bundle: *bundle}
	for _, p := range paths {
		if !filepath.IsAbs(p) {
			p = filepath.Join(cwd, p)
		}
		req.Subjects = append(req.Subjects, p)
	}
	if req.Bundle != "" && !filepath.IsAbs(req.Bundle) {
		req.Bundle = filepath.Join(cwd, req.Bundle)
	}
	var resp runner.AttestResponse
	cctx, cancel := context.WithTimeout(ctx, 30*time.Minute)
	defer cancel()
	if err := (&runner.Client{Socket: *socket}).Call(cctx, runner.SocketPathAttest, req, &resp); err != nil {
		return fmt.Errorf("attest: %w", err)
	}
	for _, s := range resp.Subjects {
		fmt.Fprintf(stdout, "attested %s sha256:%s\n", s.Path, s.SHA256)
	}
	fmt.Fprintf(stdout, "bundle %s\n", resp.Bundle)
	if out := os.Getenv("GITHUB_OUTPUT"); out != "" {
		f, err := os.OpenFile(out, os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o644)
		if err != nil {
			return err
		}
		fmt.Fprintf(f, "bundle-path=%s\n", resp.Bundle)
		if err := f.Close(); err != nil {
			return err
		}
	}
	return nil
}

func writePEM(w io.Writer, typ string, der []byte) error {
	return pem.Encode(w, &pem.Block{Type: typ, Bytes: der})
}
