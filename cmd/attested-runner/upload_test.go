package main

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/attested-runner/attested-runner/e2e/fakegithub"
)

// TestUpload: attested-runner upload stores a bundle file (one bundle or
// JSON lines) in the fake GitHub with a job token that may write
// attestations; a token that may not fails the step, or only warns with
// --if-permitted; a missing token, repository or bundle is refused.
func TestUpload(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := fakegithub.Start(fakegithub.Options{AppID: 1, InstallationID: 2, AppPublicKey: &key.PublicKey, Org: "octo-org", Repos: []string{"octo-org/app"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	st, _ := json.Marshal(map[string]any{"subject": []any{map[string]any{"name": "a", "digest": map[string]string{"sha256": hex.EncodeToString(sha(t, "a"))}}}})
	b, _ := json.Marshal(map[string]any{"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
		"dsseEnvelope": map[string]any{"payload": base64.StdEncoding.EncodeToString(st), "payloadType": "application/vnd.in-toto+json"}})
	dir := t.TempDir()
	one, two, empty := filepath.Join(dir, "one.json"), filepath.Join(dir, "two.jsonl"), filepath.Join(dir, "empty")
	os.WriteFile(one, b, 0o644)
	os.WriteFile(two, []byte(string(b)+"\n"+string(b)+"\n"), 0o644)
	os.WriteFile(empty, nil, 0o644)
	t.Setenv("GITHUB_REPOSITORY", "octo-org/app")
	t.Setenv("GITHUB_API_URL", srv.URL()+"/api/v3")
	write, read := srv.JobToken("octo-org/app", true), srv.JobToken("octo-org/app", false)

	for _, tc := range []struct {
		name  string
		token string
		args  []string
		code  int
		want  string
	}{
		{"one bundle", write, []string{"--bundle", one}, 0, "stored in octo-org/app"},
		{"JSON lines", write, []string{"--bundle", two}, 0, "attestation 3 stored"},
		{"read-only token", read, []string{"--bundle", one}, 1, "not allowed: 403"},
		{"read-only token, --if-permitted", read, []string{"--bundle", one, "--if-permitted"}, 0, "::warning::attestation not stored on GitHub (grant permissions: attestations: write)"},
		{"no token", "", []string{"--bundle", one, "--if-permitted"}, 1, "GITHUB_TOKEN is empty"},
		{"no bundle flag", write, nil, 2, "--bundle is required"},
		{"empty bundle file", write, []string{"--bundle", empty}, 1, "holds no bundle"},
		{"repository without a slash", write, []string{"--bundle", one, "--repo", "octo-org"}, 2, "is not OWNER/NAME"},
		{"another repository", write, []string{"--bundle", one, "--repo", "octo-org/other"}, 1, "403"},
		{"bad API URL", write, []string{"--bundle", one, "--api-url", "ftp://x"}, 2, "not an http(s) URL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("GITHUB_TOKEN", tc.token)
			out, code := runArgs(append([]string{"upload"}, tc.args...)...)
			if code != tc.code || !strings.Contains(out, tc.want) {
				t.Fatalf("exit %d, want %d with %q:\n%s", code, tc.code, tc.want, out)
			}
		})
	}
	if n := len(srv.Attestations("octo-org/app")); n != 3 {
		t.Errorf("%d attestations stored, want 3", n)
	}
}

func sha(t *testing.T, s string) []byte {
	t.Helper()
	d := sha256.Sum256([]byte(s))
	return d[:]
}
