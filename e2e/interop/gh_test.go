//go:build cgo

package interop

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/attested-runner/attested-runner/e2e/fakegithub"
	"github.com/attested-runner/attested-runner/internal/fakesigstore"
	"github.com/attested-runner/attested-runner/internal/ghattest"
	"github.com/attested-runner/attested-runner/provenance"
	"github.com/sigstore/sigstore-go/pkg/root"
)

// ghVerify runs `gh attestation verify` offline on a keyless bundle the
// way a consumer would: --owner (or other flags), the bundle file and the
// local instance's trusted root as --custom-trusted-root (a JSON lines
// file of trusted roots), the local issuer as --cert-oidc-issuer.
func ghVerify(t *testing.T, raw []byte, tr *root.TrustedRoot, args ...string) ([]byte, error) {
	t.Helper()
	bin := tool(t, "gh")
	dir := t.TempDir()
	art := filepath.Join(dir, "app.tar.gz")
	bundlePath := filepath.Join(dir, "app.tar.gz.sigstore.json")
	if err := os.WriteFile(art, artifact, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bundlePath, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	trPath := writeTrustedRootJSONL(t, tr, dir)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"attestation", "verify", art, "--bundle", bundlePath, "--custom-trusted-root", trPath}, args...)...)
	cmd.Env = append(os.Environ(), "GH_CONFIG_DIR="+filepath.Join(dir, "gh"), "GH_TOKEN=unused-offline", "GH_NO_UPDATE_NOTIFIER=1", "NO_COLOR=1")
	return cmd.CombinedOutput()
}

// TestGHVerifiesKeyless: GitHub's own CLI, `gh attestation verify`,
// accepts a keyless bundle of ours signed through the local Fulcio and
// Rekor, for the job's owner, repository and signer workflow, and refuses
// it for another owner, another signer workflow, another issuer, under
// --deny-self-hosted-runners (the build ran on a self-hosted runner, and
// the certificate says so), and under another instance's trusted root.
// gh checks the Sigstore layer only; attested-verify checks the hardware.
func TestGHVerifiesKeyless(t *testing.T) {
	tool(t, "gh")
	ss, e, raw := signedKeyless(t)
	tr := ss.TrustedRoot(t)
	owner := "octo-org"
	issuer := "--cert-oidc-issuer=" + ss.Issuer.URL
	for _, args := range [][]string{
		{"--owner", owner, issuer},
		{"--repo", e.Job.Repository, issuer},
		{"--repo", e.Job.Repository, "--signer-workflow", "github.com/" + workflowPath(e.Job), issuer},
	} {
		out, err := ghVerify(t, raw, tr, append(args, "--format", "json")...)
		if err != nil {
			t.Fatalf("gh attestation verify %v refuses the keyless bundle: %v\n%s", args, err, out)
		}
		var res []struct {
			VerificationResult struct {
				Signature struct {
					Certificate struct {
						SAN               string `json:"subjectAlternativeName"`
						Issuer            string `json:"issuer"`
						RunnerEnvironment string `json:"runnerEnvironment"`
						SourceRepoURI     string `json:"sourceRepositoryURI"`
					} `json:"certificate"`
				} `json:"signature"`
				VerifiedTimestamps []struct {
					Type string `json:"type"`
				} `json:"verifiedTimestamps"`
				Statement struct {
					PredicateType string `json:"predicateType"`
				} `json:"statement"`
			} `json:"verificationResult"`
		}
		if err := json.Unmarshal(out, &res); err != nil || len(res) != 1 {
			t.Fatalf("gh attestation verify %v --format json: %v\n%s", args, err, out)
		}
		v := res[0].VerificationResult
		cert := v.Signature.Certificate
		if cert.SAN != "https://github.com/"+e.Job.WorkflowRef || cert.Issuer != ss.Issuer.URL || cert.RunnerEnvironment != provenance.RunnerEnvironmentSelfHosted ||
			cert.SourceRepoURI != "https://github.com/"+e.Job.Repository || v.Statement.PredicateType != "https://slsa.dev/provenance/v1" ||
			len(v.VerifiedTimestamps) != 1 || v.VerifiedTimestamps[0].Type != "Tlog" {
			t.Errorf("gh attestation verify %v verified %+v", args, v)
		}
	}
	for name, args := range map[string][]string{
		"another owner":            {"--owner", "someone-else", issuer},
		"another signer workflow":  {"--repo", e.Job.Repository, "--signer-workflow", "github.com/" + e.Job.Repository + "/.github/workflows/other.yml", issuer},
		"the public-good issuer":   {"--owner", owner, "--cert-oidc-issuer", provenance.ActionsIssuer},
		"deny self-hosted runners": {"--owner", owner, issuer, "--deny-self-hosted-runners"},
		"another predicate type":   {"--owner", owner, issuer, "--predicate-type", "https://spdx.dev/Document/v2.3"},
		"another instance's root":  nil,
	} {
		t.Run(name, func(t *testing.T) {
			trust := tr
			if args == nil {
				trust, args = fakesigstore.New(t).TrustedRoot(t), []string{"--owner", owner, issuer}
			}
			out, err := ghVerify(t, raw, trust, args...)
			if err == nil {
				t.Fatalf("gh attestation verify %v accepts the bundle:\n%s", args, out)
			}
			t.Logf("gh refuses it: %s", bytes.TrimSpace(out))
		})
	}
}

// workflowPath is a job's workflow without its @ref.
func workflowPath(j provenance.Job) string {
	if i := strings.LastIndex(j.WorkflowRef, "@"); i >= 0 {
		return j.WorkflowRef[:i]
	}
	return j.WorkflowRef
}

// TestGHFindsKeylessInAttestationStore: the keyless bundle, uploaded to
// the (fake) GitHub attestation store the way the job-side action uploads
// it, is found by `gh attestation verify ARTIFACT --owner ORG` with no
// --bundle: gh lists the store by the artifact's digest (through
// HTTP_PROXY, since gh talks to github.localhost over plain http), fetches
// the snappy-compressed bundle from its bundle_url and verifies it. A
// reader of another owner finds nothing.
func TestGHFindsKeylessInAttestationStore(t *testing.T) {
	bin := tool(t, "gh")
	ss, e, raw := signedKeyless(t)
	appKey, _, err := fakegithub.AppKey()
	if err != nil {
		t.Fatal(err)
	}
	gh, err := fakegithub.Start(fakegithub.Options{AppID: 7, AppPublicKey: &appKey.PublicKey, InstallationID: 8, Org: "octo-org",
		Repos: []string{e.Job.Repository, "octo-org/other"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gh.Close() })
	up := &ghattest.Client{API: gh.URL(), Token: gh.JobToken(e.Job.Repository, true)}
	if _, err := up.Upload(context.Background(), e.Job.Repository, raw); err != nil {
		t.Fatalf("upload: %v", err)
	}

	dir := t.TempDir()
	art := filepath.Join(dir, "app.tar.gz")
	if err := os.WriteFile(art, artifact, 0o644); err != nil {
		t.Fatal(err)
	}
	trPath := writeTrustedRootJSONL(t, ss.TrustedRoot(t), dir)
	run := func(token, owner string) ([]byte, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, "attestation", "verify", art, "--owner", owner, "--hostname", "github.localhost",
			"--custom-trusted-root", trPath, "--cert-oidc-issuer", ss.Issuer.URL)
		cmd.Env = append(os.Environ(), "GH_CONFIG_DIR="+filepath.Join(dir, "gh"), "GH_TOKEN="+token, "GH_ENTERPRISE_TOKEN="+token,
			"HTTP_PROXY="+gh.URL(), "http_proxy="+gh.URL(), "GH_NO_UPDATE_NOTIFIER=1", "NO_COLOR=1")
		return cmd.CombinedOutput()
	}
	out, err := run(gh.JobToken(e.Job.Repository, false), "octo-org")
	if err != nil {
		t.Fatalf("gh attestation verify --owner octo-org (from the store): %v\n%s\ncalls: %+v", err, out, gh.Calls())
	}
	t.Logf("gh attestation verify --owner octo-org, from the store:\n%s", out)
	if n := gh.CountCalls(http.MethodGet, "/orgs/octo-org/attestations/sha256:", http.StatusOK); n == 0 {
		t.Errorf("gh did not list the store: calls %+v", gh.Calls())
	}
	if n := gh.CountCalls(http.MethodGet, "/_fake/attestations/", http.StatusOK); n == 0 {
		t.Errorf("gh did not fetch the bundle_url: calls %+v", gh.Calls())
	}
	if out, err := run(gh.JobToken(e.Job.Repository, false), "someone-else"); err == nil {
		t.Fatalf("gh finds the bundle under another owner:\n%s", out)
	}
}

// writeTrustedRootJSONL writes tr as gh's --custom-trusted-root wants it:
// JSON lines of trusted roots, here one.
func writeTrustedRootJSONL(t *testing.T, tr *root.TrustedRoot, dir string) string {
	t.Helper()
	b, err := json.Marshal(tr)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "trusted_root.jsonl")
	if err := os.WriteFile(p, append(b, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
