package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/attested-runner/attested-runner/internal/cli"
	"github.com/attested-runner/attested-runner/provenance"
)

// githubBundles reads bundles from GitHub's artifact attestation API by
// subject digest: GET /repos/{owner}/{repo}/attestations/sha256:HEX with
// --repo, GET /orgs/{org}/attestations/sha256:HEX with only --owner. What
// the API returns is untrusted input like any bundle file: each bundle is
// verified in full.
type githubBundles struct {
	api    string // base URL, no trailing slash
	path   string // repos/OWNER/REPO or orgs/OWNER
	token  string
	client *http.Client
}

// Limits of an API read: pages of 100, at most maxBundlesPerSource
// attestations, each answer within maxBundleFile.
const githubPageSize = 100

func newGitHubBundles(c *artifactConfig) (*githubBundles, error) {
	api := c.apiURL
	if api == "" {
		if sameHost(c.hostname, "github.com") {
			api = "https://api.github.com"
		} else {
			api = provenance.ServerURLFor(c.hostname) + "/api/v3"
		}
	}
	u, err := url.Parse(api)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, cli.Usagef("--api-url %q is not an http(s) URL", api)
	}
	g := &githubBundles{api: strings.TrimSuffix(api, "/"), client: &http.Client{Timeout: 60 * time.Second}}
	if c.opts.ExpectedRepository != "" {
		g.path = "repos/" + c.opts.ExpectedRepository
	} else {
		g.path = "orgs/" + c.opts.ExpectedOwner
	}
	g.token = os.Getenv("GH_TOKEN")
	if g.token == "" {
		g.token = os.Getenv("GITHUB_TOKEN")
	}
	return g, nil
}

func sameHost(a, b string) bool { return strings.EqualFold(strings.TrimSuffix(a, "/"), b) }

var nextLink = regexp.MustCompile(`<([^>]+)>;\s*rel="next"`)

func (g *githubBundles) bundles(ctx context.Context, _ string, digest []byte) ([]namedBundle, error) {
	subject := fmt.Sprintf("sha256:%x", digest)
	next := fmt.Sprintf("%s/%s/attestations/%s?per_page=%d", g.api, g.path, subject, githubPageSize)
	var out []namedBundle
	for next != "" {
		page, link, err := g.get(ctx, next)
		if err != nil {
			return nil, err
		}
		for _, a := range page {
			if len(out) == maxBundlesPerSource {
				return nil, fmt.Errorf("GitHub: %w: more than %d attestations for %s", provenance.ErrTooLarge, maxBundlesPerSource, subject)
			}
			out = append(out, namedBundle{source: fmt.Sprintf("github:%s/attestations/%s#%d", g.path, subject, len(out)+1), raw: a.Bundle})
		}
		next = link
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("GitHub has no attestation for %s in %s", subject, g.path)
	}
	return out, nil
}

type apiAttestation struct {
	Bundle       json.RawMessage `json:"bundle"`
	RepositoryID int64           `json:"repository_id"`
}

func (g *githubBundles) get(ctx context.Context, u string) ([]apiAttestation, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, "", err
	}
	req.Header.Set("Accept", "application/vnd.github+json")
	req.Header.Set("X-GitHub-Api-Version", "2022-11-28")
	if g.token != "" {
		req.Header.Set("Authorization", "Bearer "+g.token)
	}
	resp, err := g.client.Do(req)
	if err != nil {
		return nil, "", fmt.Errorf("GitHub: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBundleFile+1))
	if err != nil {
		return nil, "", fmt.Errorf("GitHub: reading %s: %w", req.URL.Path, err)
	}
	if len(body) > maxBundleFile {
		return nil, "", fmt.Errorf("GitHub: %w: answer over %d bytes", provenance.ErrTooLarge, maxBundleFile)
	}
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return nil, "", nil
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		return nil, "", fmt.Errorf("GitHub: %s for %s: set GH_TOKEN to a token that can read %s's attestations", resp.Status, req.URL.Path, g.path)
	case resp.StatusCode != http.StatusOK:
		return nil, "", fmt.Errorf("GitHub: %s for %s: %.200s", resp.Status, req.URL.Path, body)
	}
	var page struct {
		Attestations []apiAttestation `json:"attestations"`
	}
	if err := json.Unmarshal(body, &page); err != nil {
		return nil, "", fmt.Errorf("GitHub: %w: attestations answer: %v", provenance.ErrMalformed, err)
	}
	link := ""
	if m := nextLink.FindStringSubmatch(resp.Header.Get("Link")); m != nil {
		// Only follow links to the same API: the answer is not trusted to
		// send the token elsewhere.
		if strings.HasPrefix(m[1], g.api+"/") {
			link = m[1]
		}
	}
	return page.Attestations, link, nil
}
