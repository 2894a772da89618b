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
	"syscall"
	"time"

	"github.com/attested-runner/attested-runner/internal/cli"
	"github.com/attested-runner/attested-runner/internal/fileio"
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
		if err := c.Call(cctx, runner.OpJobStarted, rep, &resp); err != nil {
			return fmt.Errorf("the attested-runner agent refused this job: %w", err)
		}
		fmt.Fprintf(stdout, "attested-runner: job recorded as %s\nattested-runner: dispatch attestation: %s\n", resp.BuildID, resp.Dispatch)
		return nil
	}
	if err := c.Call(cctx, runner.OpJobCompleted, rep, nil); err != nil {
		return fmt.Errorf("reporting job completion: %w", err)
	}
	fmt.Fprintln(stdout, "attested-runner: job completion recorded")
	return nil
}

const attestUsage = `Usage: attested-runner attest --subject-path PATTERN [--subject-path ...] [--bundle-path PATH] [--socket PATH]

Run inside a job on an attested runner (the job-side action runs it). It
opens the matching files itself, as the job's user, and hands the agent their
open descriptors: the agent hashes exactly those files (it never opens a path
on the job's behalf) and returns a sigstore bundle with SLSA provenance signed
by the attested environment key, which this command writes. Patterns are globs
relative to the current directory; every file must be a regular file inside
the workspace ($GITHUB_WORKSPACE, else the current directory), and is recorded
under its workspace-relative path. At most 250 files per bundle. Prints the
digests and the bundle path; with GITHUB_OUTPUT set, also writes bundle-path=
to it.

Keyless: when the workflow grants id-token: write (the runner then sets
ACTIONS_ID_TOKEN_REQUEST_URL and ACTIONS_ID_TOKEN_REQUEST_TOKEN), the job's
OIDC token (audience sigstore) goes to the agent with the files, and the
agent returns a bundle with a Fulcio certificate for the environment key and
a Rekor entry, if the gate's policy names a Sigstore instance. --keyless
never sends no token; --keyless required fails unless the bundle is keyless.
`

func runAttest(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := cli.NewFlagSet("attest", attestUsage, stderr)
	var subjects cli.StringList
	fs.Var(&subjects, "subject-path", "file or glob to attest (repeatable; newline-separated lists accepted)")
	bundle := fs.String("bundle-path", "", "bundle to write (default: <first subject>.sigstore.json)")
	socket := fs.String("socket", defaultSocket, "agent socket")
	keyless := fs.String("keyless", "auto", "auto (keyless when the job has an OIDC token), never, or required")
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
			if !strings.ContainsAny(pat, `*?[\\`) {
				// A plain path: opened as is, so that a file the job
				// cannot read says so instead of "matches no file".
				paths = append(paths, pat)
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
	switch *keyless {
	case "auto", "never", "required":
	default:
		return cli.Usagef("attest: --keyless must be auto, never or required, not %q", *keyless)
	}
	cwd, err := os.Getwd()
	if err != nil {
		return err
	}
	ws := os.Getenv("GITHUB_WORKSPACE")
	if ws == "" {
		ws = cwd
	}
	subs, err := openSubjects(cwd, ws, paths)
	defer subs.close()
	if err != nil {
		return err
	}
	if len(subs.files) > runner.MaxSubjects {
		return fmt.Errorf("%d files to attest: at most %d per bundle (attest them in several steps)", len(subs.files), runner.MaxSubjects)
	}
	bundlePath := *bundle
	if bundlePath == "" {
		bundlePath = subs.paths[0] + ".sigstore.json"
	}
	if !filepath.IsAbs(bundlePath) {
		bundlePath = filepath.Join(cwd, bundlePath)
	}
	var resp runner.AttestResponse
	cctx, cancel := context.WithTimeout(ctx, 30*time.Minute)
	defer cancel()
	req := &runner.AttestRequest{Subjects: subs.names}
	if *keyless != "never" {
		tok, err := requestIDToken(cctx, os.Getenv("ACTIONS_ID_TOKEN_REQUEST_URL"), os.Getenv("ACTIONS_ID_TOKEN_REQUEST_TOKEN"))
		switch {
		case errors.Is(err, errNoIDToken) && *keyless == "auto":
		case err != nil:
			return fmt.Errorf("attest: %w", err)
		}
		req.IDToken = tok
	}
	if err := (&runner.Client{Socket: *socket}).Call(cctx, runner.OpAttest, req, &resp, subs.files...); err != nil {
		return fmt.Errorf("attest: %w", err)
	}
	if len(resp.Bundle) == 0 {
		return errors.New("attest: the agent returned no bundle")
	}
	if *keyless == "required" && !resp.Keyless {
		return fmt.Errorf("attest: --keyless required, but the agent signed with the environment key alone: %s", resp.Notice)
	}
	if resp.Notice != "" {
		fmt.Fprintf(stderr, "::notice::attested-runner: %s\n", resp.Notice)
	}
	// Written as the job's user, replacing whatever is at the path (a
	// symlink there is replaced, not followed).
	if err := fileio.WriteFileAtomic(bundlePath, resp.Bundle, 0o644); err != nil {
		return fmt.Errorf("writing the bundle: %w", err)
	}
	for _, s := range resp.Subjects {
		fmt.Fprintf(stdout, "attested %s sha256:%s\n", s.Name, s.SHA256)
	}
	shown := bundlePath
	if rel, err := filepath.Rel(ws, bundlePath); err == nil && filepath.IsLocal(rel) {
		shown = rel
	}
	kind := "signed by the environment key"
	if resp.Keyless {
		kind = "keyless: Fulcio certificate for the environment key, Rekor entry"
	}
	fmt.Fprintf(stdout, "bundle %s (%s)\n", shown, kind)
	if out := os.Getenv("GITHUB_OUTPUT"); out != "" {
		f, err := os.OpenFile(out, os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o644)
		if err != nil {
			return err
		}
		fmt.Fprintf(f, "bundle-path=%s\n", shown)
		if err := f.Close(); err != nil {
			return err
		}
	}
	return nil
}

// subjectFiles are the files to attest, opened by this (job-side) process.
type subjectFiles struct {
	files []*os.File
	names []string // workspace-relative, recorded in the provenance
	paths []string // absolute
}

func (s *subjectFiles) close() {
	for _, f := range s.files {
		f.Close()
	}
}

// openSubjects opens each path for reading as the job user, refusing
// anything that is not a regular file inside the workspace. O_NONBLOCK keeps
// a FIFO from blocking the open; the file type is then checked before
// anything is read. A file matched twice is attested once.
func openSubjects(cwd, ws string, paths []string) (*subjectFiles, error) {
	s := &subjectFiles{}
	seen := map[string]bool{}
	for _, p := range paths {
		if !filepath.IsAbs(p) {
			p = filepath.Join(cwd, p)
		}
		name, err := filepath.Rel(ws, p)
		if err != nil || !filepath.IsLocal(name) {
			return s, fmt.Errorf("subject %s is outside the job workspace %s", p, ws)
		}
		name = filepath.ToSlash(name)
		if seen[name] {
			continue
		}
		seen[name] = true
		f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
		if err != nil {
			return s, fmt.Errorf("subject %s: %w", name, err)
		}
		s.files = append(s.files, f)
		fi, err := f.Stat()
		if err != nil {
			return s, fmt.Errorf("subject %s: %w", name, err)
		}
		if !fi.Mode().IsRegular() {
			return s, fmt.Errorf("subject %s is not a regular file (%s)", name, fi.Mode().Type())
		}
		s.names = append(s.names, name)
		s.paths = append(s.paths, p)
	}
	return s, nil
}

func writePEM(w io.Writer, typ string, der []byte) error {
	return pem.Encode(w, &pem.Block{Type: typ, Bytes: der})
}
