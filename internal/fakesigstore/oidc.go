// Package fakesigstore is a local Sigstore for tests: an OIDC issuer that
// signs GitHub-Actions-shaped job tokens, a Fulcio that speaks the v2 API
// (POST /api/v2/signingCert: token verified against the issuer's JWKS,
// proof of possession checked, a certificate with the GitHub workflow
// extensions issued), a Rekor that speaks the v1 API (POST
// /api/v1/log/entries: the entry canonicalized by Rekor's own types,
// appended to an RFC 6962 tree, returned with an inclusion proof, a signed
// checkpoint and a signed entry timestamp), and the trusted_root.json for
// them, built with sigstore-go's root package. The issuer also serves real
// Fulcio (cmd fulcio with an ephemeral CA), which takes it as an OIDC
// provider.
//
// Test support only: every key is generated per instance, nothing is
// persisted.
package fakesigstore

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// Audience is the audience Sigstore's Fulcio expects.
const Audience = "sigstore"

// Issuer is an OIDC issuer: discovery document, JWKS, RS256 tokens.
type Issuer struct {
	URL    string
	key    *rsa.PrivateKey
	signer jose.Signer
	srv    *httptest.Server
}

// NewIssuer serves an issuer until the test ends.
func NewIssuer(t testing.TB) *Issuer {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	is := &Issuer{key: key}
	is.signer, err = jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: key, KeyID: "k1"}}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]any{
			"issuer": is.URL, "jwks_uri": is.URL + "/jwks", "response_types_supported": []string{"id_token"},
			"subject_types_supported": []string{"public"}, "id_token_signing_alg_values_supported": []string{"RS256"},
		})
	})
	mux.HandleFunc("GET /jwks", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "k1", Algorithm: "RS256", Use: "sig"}}})
	})
	is.srv = httptest.NewServer(mux)
	is.URL = is.srv.URL
	t.Cleanup(is.srv.Close)
	return is
}

// Workflow is what a GitHub Actions job token says about its job.
type Workflow struct {
	ServerURL         string // https://github.com
	Repository        string // owner/name
	RepositoryID      string
	RepositoryOwnerID string
	Ref               string // refs/heads/main
	SHA               string
	WorkflowRef       string // owner/name/.github/workflows/x.yml@refs/heads/main
	WorkflowSHA       string
	RunID, RunAttempt string
	EventName         string
	RunnerEnvironment string // self-hosted
}

// Claims are the token claims GitHub Actions puts in a job token for w
// (token.actions.githubusercontent.com's shape), from issuer iss.
func (w Workflow) Claims(iss string, now time.Time) map[string]any {
	owner := w.Repository
	for i := range owner {
		if owner[i] == '/' {
			owner = owner[:i]
			break
		}
	}
	return map[string]any{
		"iss": iss, "aud": Audience, "sub": "repo:" + w.Repository + ":ref:" + w.Ref,
		"iat": now.Unix(), "nbf": now.Add(-time.Minute).Unix(), "exp": now.Add(5 * time.Minute).Unix(), "jti": rand.Text(),
		"repository": w.Repository, "repository_id": w.RepositoryID, "repository_owner": owner, "repository_owner_id": w.RepositoryOwnerID,
		"repository_visibility": "public", "ref": w.Ref, "ref_type": "branch", "sha": w.SHA,
		"workflow_ref": w.WorkflowRef, "workflow_sha": w.WorkflowSHA, "job_workflow_ref": w.WorkflowRef, "job_workflow_sha": w.WorkflowSHA,
		"run_id": w.RunID, "run_number": "1", "run_attempt": w.RunAttempt, "event_name": w.EventName, "actor": "octocat", "actor_id": "1",
		"workflow": "release", "head_ref": "", "base_ref": "", "runner_environment": w.RunnerEnvironment,
	}
}

// Token signs claims as a compact JWT.
func (is *Issuer) Token(t testing.TB, claims map[string]any) string {
	t.Helper()
	tok, err := jwt.Signed(is.signer).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// WorkflowToken is a job token for w, valid for five minutes.
func (is *Issuer) WorkflowToken(t testing.TB, w Workflow) string {
	return is.Token(t, w.Claims(is.URL, time.Now()))
}

// verify checks a token's signature, issuer, audience and times, and
// returns its claims.
func (is *Issuer) verify(tok string) (map[string]any, error) {
	parsed, err := jwt.ParseSigned(tok, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		return nil, err
	}
	var std jwt.Claims
	claims := map[string]any{}
	if err := parsed.Claims(&is.key.PublicKey, &std, &claims); err != nil {
		return nil, err
	}
	if err := std.ValidateWithLeeway(jwt.Expected{Issuer: is.URL, AnyAudience: jwt.Audience{Audience}, Time: time.Now()}, 0); err != nil {
		return nil, err
	}
	return claims, nil
}
