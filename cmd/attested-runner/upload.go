package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/attested-runner/attested-runner/internal/cli"
	"github.com/attested-runner/attested-runner/internal/ghattest"
)

const uploadUsage = `Usage: attested-runner upload --bundle PATH [--repo OWNER/NAME] [--api-url URL] [--if-permitted]

Run inside a job (the job-side action runs it after attest): store each
bundle in PATH (one bundle, or JSON lines of them) in GitHub's attestation
store, POST /repos/{owner}/{repo}/attestations, so that gh attestation
verify and attested-verify --from-github find it by the artifact's digest.
The token comes from GITHUB_TOKEN (the job's token: the workflow needs
permissions: attestations: write). --repo defaults to GITHUB_REPOSITORY,
--api-url to GITHUB_API_URL (else https://api.github.com).

With --if-permitted, a token without the permission (401, 403) is a
warning, not a failure: the bundle file is still there.
`

// maxUploadFile bounds the bundle file read for upload.
const maxUploadFile = 64 << 20

func runUpload(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := cli.NewFlagSet("upload", uploadUsage, stderr)
	path := fs.String("bundle", "", "bundle file to upload (one bundle or JSON lines of them)")
	repo := fs.String("repo", os.Getenv("GITHUB_REPOSITORY"), "repository whose attestations receive it, owner/name")
	api := fs.String("api-url", os.Getenv("GITHUB_API_URL"), "GitHub REST API base URL")
	ifPermitted := fs.Bool("if-permitted", false, "warn instead of failing when the token may not write attestations")
	if pos, err := cli.Parse(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return cli.Usagef("%v", err)
	} else if len(pos) > 0 {
		return cli.Usagef("upload: unexpected argument %q (use --bundle)", pos[0])
	}
	if *path == "" {
		return cli.Usagef("upload: --bundle is required")
	}
	if strings.Count(*repo, "/") != 1 || strings.HasPrefix(*repo, "/") || strings.HasSuffix(*repo, "/") {
		return cli.Usagef("upload: --repo %q is not OWNER/NAME (set it, or GITHUB_REPOSITORY)", *repo)
	}
	if *api == "" {
		*api = "https://api.github.com"
	}
	if err := ghattest.CheckAPI(*api); err != nil {
		return cli.Usagef("upload: --api-url: %v", err)
	}
	token := os.Getenv("GITHUB_TOKEN")
	if token == "" {
		return errors.New("upload: GITHUB_TOKEN is empty: pass the job's token (github-token input)")
	}
	b, err := cli.ReadFile(*path, maxUploadFile)
	if err != nil {
		return fmt.Errorf("upload: %w", err)
	}
	var bundles []json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(b))
	for {
		var raw json.RawMessage
		if err := dec.Decode(&raw); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return fmt.Errorf("upload: %s: bundle %d is not JSON: %v", *path, len(bundles)+1, err)
		}
		if len(bundles) == ghattest.MaxAttestations {
			return fmt.Errorf("upload: %s: more than %d bundles", *path, ghattest.MaxAttestations)
		}
		bundles = append(bundles, raw)
	}
	if len(bundles) == 0 {
		return fmt.Errorf("upload: %s holds no bundle", *path)
	}
	c := &ghattest.Client{API: *api, Token: token, HTTP: &http.Client{Timeout: 60 * time.Second}}
	for i, raw := range bundles {
		id, err := c.Upload(ctx, *repo, raw)
		if errors.Is(err, ghattest.ErrForbidden) && *ifPermitted {
			fmt.Fprintf(stdout, "::warning::attestation not stored on GitHub (grant permissions: attestations: write): %v\n", err)
			return nil
		}
		if err != nil {
			return fmt.Errorf("upload: bundle %d of %s: %w", i+1, *path, err)
		}
		fmt.Fprintf(stdout, "attestation %d stored in %s\n", id, *repo)
	}
	return nil
}
