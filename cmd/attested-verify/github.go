package main

import (
	"context"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/attested-runner/attested-runner/internal/cli"
	"github.com/attested-runner/attested-runner/internal/ghattest"
	"github.com/attested-runner/attested-runner/provenance"
)

// githubBundles reads bundles from GitHub's artifact attestation API by
// subject digest: GET /repos/{owner}/{repo}/attestations/sha256:HEX with
// --repo, GET /orgs/{org}/attestations/sha256:HEX with only --owner. What
// the API returns is untrusted input like any bundle file: each bundle is
// verified in full, and the read is bounded (ghattest.MaxAnswer per
// answer, ghattest.MaxAttestations per digest, provenance.MaxBundleSize
// per bundle).
type githubBundles struct {
	client *ghattest.Client
	scope  string // repos/OWNER/REPO or orgs/OWNER
}

func newGitHubBundles(c *artifactConfig) (*githubBundles, error) {
	api := c.apiURL
	if api == "" {
		api = ghattest.APIFor(c.hostname)
	}
	if err := ghattest.CheckAPI(api); err != nil {
		return nil, cli.Usagef("--api-url: %v", err)
	}
	token := os.Getenv("GH_TOKEN")
	if token == "" {
		token = os.Getenv("GITHUB_TOKEN")
	}
	g := &githubBundles{client: &ghattest.Client{API: api, Token: token, HTTP: &http.Client{Timeout: 60 * time.Second}}}
	if c.opts.ExpectedRepository != "" {
		g.scope = "repos/" + c.opts.ExpectedRepository
	} else {
		g.scope = "orgs/" + c.opts.ExpectedOwner
	}
	return g, nil
}

func (g *githubBundles) bundles(ctx context.Context, _ string, digest []byte) ([]namedBundle, error) {
	subject := hex.EncodeToString(digest)
	atts, err := g.client.List(ctx, g.scope, subject)
	if err != nil {
		return nil, err
	}
	out := make([]namedBundle, 0, len(atts))
	for i, a := range atts {
		if len(a.Bundle) > provenance.MaxBundleSize {
			return nil, fmt.Errorf("GitHub: attestation %d for sha256:%s: %w", i+1, subject, provenance.ErrTooLarge)
		}
		out = append(out, namedBundle{source: fmt.Sprintf("github:%s/attestations/sha256:%s#%d", g.scope, subject, i+1), raw: a.Bundle})
	}
	return out, nil
}
