// Package ghattest talks to GitHub's artifact attestation API: the
// job-side action uploads bundles with Upload, verifiers read them by
// subject digest with List. What List returns is untrusted input: every
// bundle must be verified in full by the caller. Answers are bounded
// (MaxAnswer bytes, MaxAttestations bundles per digest).
package ghattest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"
)

// Limits on what is read from the API.
const (
	// MaxAnswer bounds one HTTP answer.
	MaxAnswer = 64 << 20
	// MaxAttestations bounds the bundles read for one digest.
	MaxAttestations = 256
	// MaxUpload bounds a bundle sent by Upload.
	MaxUpload = 16 << 20
	pageSize  = 100
)

var (
	// ErrTooLarge: an answer or a bundle over its limit.
	ErrTooLarge = errors.New("over its size limit")
	// ErrMalformed: an answer that is not the API's JSON.
	ErrMalformed = errors.New("malformed answer")
	// ErrNotFound: no attestation for the digest.
	ErrNotFound = errors.New("no attestation")
	// ErrForbidden: 401 or 403 (no token, or one without the permission).
	ErrForbidden = errors.New("not allowed")
)

// Client is a GitHub REST API endpoint and a token.
type Client struct {
	// API is the REST base URL: https://api.github.com, or
	// https://HOST/api/v3 for GitHub Enterprise Server.
	API   string
	Token string
	HTTP  *http.Client
}

// APIFor is the REST base URL of a GitHub host (github.com or a GitHub
// Enterprise Server host, optionally with a scheme).
func APIFor(hostname string) string {
	h := strings.TrimSuffix(hostname, "/")
	if strings.EqualFold(h, "github.com") || strings.EqualFold(h, "https://github.com") {
		return "https://api.github.com"
	}
	if !strings.Contains(h, "://") {
		h = "https://" + h
	}
	return h + "/api/v3"
}

// CheckAPI refuses an API URL that is not http(s) with a host.
func CheckAPI(api string) error {
	u, err := url.Parse(api)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return fmt.Errorf("API URL %q is not an http(s) URL", api)
	}
	return nil
}

func (c *Client) base() string { return strings.TrimSuffix(c.API, "/") }

func (c *Client) httpClient() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return &http.Client{Timeout: 60 * time.Second}
}

func (c *Client) do(ctx context.Context, method, u string, body []byte) (*http.Response, []byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Accept", "application/vnd.github+json")
	req.Header.Set("X-GitHub-Api-Version", "2022-11-28")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	resp, err := c.httpClient().Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("GitHub: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, MaxAnswer+1))
	if err != nil {
		return nil, nil, fmt.Errorf("GitHub: reading %s: %w", req.URL.Path, err)
	}
	if len(b) > MaxAnswer {
		return nil, nil, fmt.Errorf("GitHub: answer to %s: %w (%d bytes)", req.URL.Path, ErrTooLarge, MaxAnswer)
	}
	return resp, b, nil
}

func statusError(resp *http.Response, body []byte, what string) error {
	var e struct {
		Message string `json:"message"`
	}
	_ = json.Unmarshal(body, &e)
	msg := e.Message
	if msg == "" {
		msg = fmt.Sprintf("%.200q", body)
	}
	if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
		return fmt.Errorf("GitHub: %s: %w: %s: %s", what, ErrForbidden, resp.Status, msg)
	}
	return fmt.Errorf("GitHub: %s: %s: %s", what, resp.Status, msg)
}

// Upload stores a bundle in repository's (owner/name) attestations: POST
// /repos/{owner}/{repo}/attestations, which needs a job token with
// attestations: write. It returns the attestation id.
func (c *Client) Upload(ctx context.Context, repository string, bundle []byte) (int64, error) {
	if len(bundle) > MaxUpload {
		return 0, fmt.Errorf("bundle: %w (%d bytes)", ErrTooLarge, MaxUpload)
	}
	if !json.Valid(bundle) {
		return 0, errors.New("bundle is not JSON")
	}
	if strings.Count(repository, "/") != 1 {
		return 0, fmt.Errorf("repository %q is not owner/name", repository)
	}
	body, err := json.Marshal(map[string]json.RawMessage{"bundle": bundle})
	if err != nil {
		return 0, err
	}
	resp, b, err := c.do(ctx, http.MethodPost, c.base()+"/repos/"+repository+"/attestations", body)
	if err != nil {
		return 0, err
	}
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		return 0, statusError(resp, b, "uploading the attestation to "+repository)
	}
	var out struct {
		ID int64 `json:"id"`
	}
	if err := json.Unmarshal(b, &out); err != nil || out.ID == 0 {
		return 0, fmt.Errorf("GitHub: upload answer: %w", ErrMalformed)
	}
	return out.ID, nil
}

// Attestation is one entry of a listing.
type Attestation struct {
	Bundle       json.RawMessage `json:"bundle"`
	RepositoryID int64           `json:"repository_id"`
	BundleURL    string          `json:"bundle_url"`
}

var nextLink = regexp.MustCompile(`<([^>]+)>;\s*rel="next"`)

// List reads the attestations for a sha256 subject digest (HEX, no
// prefix) under scope: "repos/OWNER/NAME" or "orgs/OWNER". It follows
// rel="next" links only to the same API (the answer is not trusted to
// send the token elsewhere), and stops with ErrTooLarge past
// MaxAttestations. No attestation at all is ErrNotFound.
func (c *Client) List(ctx context.Context, scope, sha256Hex string) ([]Attestation, error) {
	subject := "sha256:" + sha256Hex
	next := fmt.Sprintf("%s/%s/attestations/%s?per_page=%d", c.base(), scope, subject, pageSize)
	var out []Attestation
	for next != "" {
		resp, body, err := c.do(ctx, http.MethodGet, next, nil)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode == http.StatusNotFound {
			break
		}
		if resp.StatusCode != http.StatusOK {
			return nil, statusError(resp, body, "reading the attestations of "+scope)
		}
		var page struct {
			Attestations []Attestation `json:"attestations"`
		}
		if err := json.Unmarshal(body, &page); err != nil {
			return nil, fmt.Errorf("GitHub: attestations answer: %w: %v", ErrMalformed, err)
		}
		for _, a := range page.Attestations {
			if len(out) == MaxAttestations {
				return nil, fmt.Errorf("GitHub: %w: more than %d attestations for %s", ErrTooLarge, MaxAttestations, subject)
			}
			out = append(out, a)
		}
		next = ""
		if m := nextLink.FindStringSubmatch(resp.Header.Get("Link")); m != nil && strings.HasPrefix(m[1], c.base()+"/") {
			next = m[1]
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("GitHub: %w for %s in %s", ErrNotFound, subject, scope)
	}
	return out, nil
}
