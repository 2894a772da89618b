package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/attested-runner/attested-runner/provenance"
)

// errNoIDToken: the job has no OIDC token to ask for (the workflow did not
// grant id-token: write).
var errNoIDToken = errors.New("no OIDC token: the workflow does not grant id-token: write (ACTIONS_ID_TOKEN_REQUEST_URL is not set)")

// maxIDTokenResponse bounds the token endpoint's answer.
const maxIDTokenResponse = 64 << 10

// requestIDToken asks the Actions token service for the job's OIDC token
// with audience sigstore, the way actions/core getIDToken does. The token
// is a credential: it is returned to the caller only, and no error carries
// it or the request token.
func requestIDToken(ctx context.Context, requestURL, requestToken string) (string, error) {
	if requestURL == "" || requestToken == "" {
		return "", errNoIDToken
	}
	u, err := url.Parse(requestURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return "", errors.New("ACTIONS_ID_TOKEN_REQUEST_URL is not an http(s) URL")
	}
	q := u.Query()
	q.Set("audience", "sigstore")
	u.RawQuery = q.Encode()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+requestToken)
	req.Header.Set("Accept", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("requesting the job's OIDC token from %s: %w", u.Host, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("requesting the job's OIDC token from %s: %s", u.Host, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxIDTokenResponse+1))
	if err != nil {
		return "", fmt.Errorf("reading the job's OIDC token: %w", err)
	}
	return parseIDTokenAnswer(body)
}

// parseIDTokenAnswer reads the token service's {"value": TOKEN}. Its
// errors never quote the answer.
func parseIDTokenAnswer(body []byte) (string, error) {
	if len(body) > maxIDTokenResponse {
		return "", fmt.Errorf("the OIDC token answer is over %d bytes", maxIDTokenResponse)
	}
	var v struct {
		Value string `json:"value"`
	}
	if err := json.Unmarshal(body, &v); err != nil || v.Value == "" {
		return "", errors.New("the OIDC token answer has no token (want JSON {\"value\": ...})")
	}
	if len(v.Value) > provenance.MaxIDTokenSize {
		return "", fmt.Errorf("the OIDC token is over %d bytes", provenance.MaxIDTokenSize)
	}
	return v.Value, nil
}
