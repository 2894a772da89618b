package main

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/attested-runner/attested-runner/provenance"
	"github.com/attested-runner/attested-runner/provenance/provenancetest"
	"github.com/sigstore/sigstore-go/pkg/bundle"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/verify"
	"github.com/sigstore/sigstore/pkg/signature"
)

var time0 time.Time

// cliCase is one run of the binary: its exit code and what its output
// must (and must not) say.
type cliCase struct {
	name    string
	args    []string
	code    int
	want    []string
	notWant []string
}

func runCases(t *testing.T, base []string, cases []cliCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, code := runCLI(t, append(append([]string{}, base...), tc.args...)...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d:\n%s", code, tc.code, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			for _, w := range tc.notWant {
				if strings.Contains(out, w) {
					t.Errorf("output has %q:\n%s", w, out)
				}
			}
		})
	}
}

// TestArtifactExpectationFlags: gh's and slsa-verifier's forms of the
// expectations, run through the binary on a bundle from octo-org/app,
// .github/workflows/release.yml at refs/heads/main on github.com. Each
// form passes when it names that job and fails, with the check that
// failed, when it names another.
func TestArtifactExpectationFlags(t *testing.T) {
	f := newFixture(t)
	base := []string{"artifact", f.artifact, "--gate-key", f.root, "--insecure-allow-software-tpm"}
	repo := []string{"--repo", "octo-org/app"}
	ok := []string{"VERIFIED sha256:"}
	with := func(a ...string) []string { return append(append([]string{}, repo...), a...) }
	runCases(t, base, []cliCase{
		{"--owner", []string{"--owner", "octo-org"}, 0, ok, nil},
		{"--owner other case", []string{"--owner", "Octo-Org"}, 0, ok, nil},
		{"--owner another", []string{"--owner", "evil-org"}, 1, []string{"NOT VERIFIED", "✗ owner", "another owner"}, nil},
		{"--owner and --repo disagree", with("--owner", "evil-org"), 1, []string{"✗ owner"}, nil},
		{"--signer-workflow owner/repo/path", with("--signer-workflow", "octo-org/app/.github/workflows/release.yml"), 0, ok, nil},
		{"--signer-workflow owner/repo/path@ref", with("--signer-workflow", "octo-org/app/.github/workflows/release.yml@refs/heads/main"), 0, ok, nil},
		{"--signer-workflow host/owner/repo/path", with("--signer-workflow", "github.com/octo-org/app/.github/workflows/release.yml"), 0, ok, nil},
		{"--workflow path", with("--workflow", ".github/workflows/release.yml"), 0, ok, nil},
		{"--signer-workflow another repo", with("--signer-workflow", "octo-org/lib/.github/workflows/release.yml"), 1, []string{"✗ workflow"}, nil},
		{"--signer-workflow another ref", with("--signer-workflow", "octo-org/app/.github/workflows/release.yml@refs/heads/dev"), 1, []string{"✗ workflow"}, nil},
		{"--signer-workflow another file", with("--signer-workflow", "octo-org/app/.github/workflows/ci.yml"), 1, []string{"✗ workflow"}, nil},
		{"--source-branch", with("--source-branch", "main"), 0, ok, nil},
		{"--source-branch refs/heads/", with("--source-branch", "refs/heads/main"), 0, ok, nil},
		{"--source-branch another", with("--source-branch", "dev"), 1, []string{"✗ ref", "another ref"}, nil},
		{"--source-tag on a branch build", with("--source-tag", "main"), 1, []string{"✗ ref"}, nil},
		{"--ref", with("--ref", "refs/heads/main"), 0, ok, nil},
		{"--hostname default github.com", repo, 0, []string{"VERIFIED", "source    https://github.com/octo-org/app"}, nil},
		{"--hostname github.com", with("--hostname", "github.com"), 0, ok, nil},
		{"--hostname another", with("--hostname", "ghe.example.com"), 1, []string{"NOT VERIFIED", "✗ server", "another GitHub server"}, nil},
		{"--hostname http", with("--hostname", "http://github.com"), 1, []string{"✗ server"}, nil},
		// Usage errors: exit 2, before anything is read.
		{"--owner with a slash", []string{"--owner", "octo-org/app"}, 2, []string{"is an owner, not OWNER/NAME"}, nil},
		{"--repo without a slash", []string{"--repo", "octo-org"}, 2, []string{"is not OWNER/NAME"}, nil},
		{"--source-branch and --source-tag", with("--source-branch", "main", "--source-tag", "v1"), 2, []string{"exclude each other"}, nil},
		{"--source-branch and --ref", with("--source-branch", "main", "--ref", "refs/heads/main"), 2, []string{"give one"}, nil},
		{"--workflow and --signer-workflow", with("--workflow", ".github/workflows/a.yml", "--signer-workflow", ".github/workflows/a.yml"), 2, []string{"give each expectation once"}, nil},
		{"--signer-workflow not a workflow", with("--signer-workflow", "octo-org/app"), 2, []string{"--workflow"}, nil},
		{"--hostname empty", with("--hostname", ""), 2, []string{"--hostname is empty"}, nil},
	})
}

// TestArtifactOtherHost: a build recorded on a GitHub Enterprise server
// passes only with that --hostname; the same --repo on the default
// github.com is refused.
func TestArtifactOtherHost(t *testing.T) {
	e := provenancetest.NewEnvWithJob(t, func(j *provenance.Job) { j.ServerURL = "https://ghe.example.com" })
	f := newFixtureEnv(t, e, (*provenancetest.Env).Sign)
	base := []string{"artifact", f.artifact, "--gate-key", f.root, "--insecure-allow-software-tpm", "--repo", "octo-org/app"}
	runCases(t, base, []cliCase{
		{"default hostname", nil, 1, []string{"NOT VERIFIED", "✗ server"}, nil},
		{"its hostname", []string{"--hostname", "ghe.example.com"}, 0, []string{"VERIFIED", "https://ghe.example.com/octo-org/app"}, nil},
		{"its hostname, signer workflow with host", []string{"--hostname", "ghe.example.com", "--signer-workflow", "ghe.example.com/octo-org/app/.github/workflows/release.yml"}, 0, []string{"VERIFIED"}, nil},
		{"its hostname, signer workflow on github.com", []string{"--hostname", "ghe.example.com", "--signer-workflow", "github.com/octo-org/app/.github/workflows/release.yml"}, 1, []string{"✗ workflow"}, nil},
	})
}

// TestArtifactSourceTag: a tag build passes --source-tag and fails
// --source-branch of the same name.
func TestArtifactSourceTag(t *testing.T) {
	e := provenancetest.NewEnvWithJob(t, func(j *provenance.Job) {
		j.Ref = "refs/tags/v1.2.0"
		j.WorkflowRef = "octo-org/app/.github/workflows/release.yml@refs/tags/v1.2.0"
	})
	f := newFixtureEnv(t, e, (*provenancetest.Env).Sign)
	base := []string{"artifact", f.artifact, "--gate-key", f.root, "--insecure-allow-software-tpm", "--repo", "octo-org/app"}
	runCases(t, base, []cliCase{
		{"--source-tag", []string{"--source-tag", "v1.2.0"}, 0, []string{"VERIFIED"}, nil},
		{"--source-tag refs/tags/", []string{"--source-tag", "refs/tags/v1.2.0"}, 0, []string{"VERIFIED"}, nil},
		{"--source-tag another", []string{"--source-tag", "v1.2.1"}, 1, []string{"✗ ref"}, nil},
		{"--source-branch same name", []string{"--source-branch", "v1.2.0"}, 1, []string{"✗ ref"}, nil},
		{"--signer-workflow @tag", []string{"--signer-workflow", "octo-org/app/.github/workflows/release.yml@refs/tags/v1.2.0"}, 0, []string{"VERIFIED"}, nil},
	})
}

// TestArtifactJSONLines: a JSON-lines file of bundles (what gh
// attestation download writes) verifies when one bundle passes, names
// the bundle that did, and fails with the reason of the one that got
// furthest when none does.
func TestArtifactJSONLines(t *testing.T) {
	f := newFixture(t)
	good, err := os.ReadFile(f.bundle)
	must(t, err)
	other := f.env.Sign(t, f.env.Build(map[string][]byte{"other.tar.gz": []byte("another artifact\n")}))
	tampered := bytes.Replace(good, []byte(`"sig":"`), []byte(`"sig":"AAAA`), 1)
	if bytes.Equal(tampered, good) {
		t.Fatal("tampering changed nothing")
	}
	lines := func(bs ...[]byte) string {
		var b bytes.Buffer
		for _, x := range bs {
			must(t, json.Compact(&b, x))
			b.WriteByte('\n')
		}
		p := filepath.Join(t.TempDir(), "sha256:x.jsonl")
		must(t, os.WriteFile(p, b.Bytes(), 0o644))
		return p
	}
	many := make([][]byte, maxBundlesPerSource+1)
	for i := range many {
		many[i] = []byte(`{}`)
	}
	empty := filepath.Join(t.TempDir(), "empty.jsonl")
	must(t, os.WriteFile(empty, nil, 0o644))
	base := []string{"artifact", f.artifact, "--gate-key", f.root, "--insecure-allow-software-tpm", "--repo", "octo-org/app"}
	runCases(t, base, []cliCase{
		{"good bundle third", []string{"--bundle", lines(other, tampered, good)}, 0, []string{"VERIFIED", "x.jsonl#3"}, nil},
		{"good bundle first", []string{"--bundle", lines(good, other)}, 0, []string{"VERIFIED", "x.jsonl#1"}, nil},
		{"none verifies", []string{"--bundle", lines(other, tampered)}, 1, []string{"NOT VERIFIED: none of 2 bundles verified", "x.jsonl#2", "signature"}, nil},
		{"one line, other artifact", []string{"--bundle", lines(other)}, 1, []string{"NOT VERIFIED", "not a subject"}, []string{"#1"}},
		{"empty file", []string{"--bundle", empty}, 1, []string{"NOT VERIFIED", "no bundle in it"}, nil},
		{"too many bundles", []string{"--bundle", lines(many...)}, 1, []string{"NOT VERIFIED", "more than 256 bundles"}, nil},
		{"not JSON after a bundle", []string{"--bundle", writeTemp(t, append(append([]byte{}, good...), "\nnot json\n"...))}, 1, []string{"NOT VERIFIED", "value 2"}, nil},
	})
}

func writeTemp(t *testing.T, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "f")
	must(t, os.WriteFile(p, b, 0o644))
	return p
}

// TestArtifactTrustFileKinds: --trusted-root is a Sigstore
// trusted_root.json and --gate-key PEM keys; the wrong kind of file in
// either is a usage error (exit 2) that names the format expected.
func TestArtifactTrustFileKinds(t *testing.T) {
	f := newFixture(t)
	gateJSON := writeTemp(t, []byte(`{"mediaType":"application/vnd.dev.sigstore.trustedroot+json;version=0.1"}`))
	emptyRoot := writeTemp(t, []byte(`{"mediaType":"application/vnd.dev.sigstore.trustedroot+json;version=0.1","tlogs":[],"certificateAuthorities":[],"ctlogs":[],"timestampAuthorities":[]}`))
	otherJSON := writeTemp(t, []byte(`{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json"}`))
	notJSON := writeTemp(t, []byte("hello\n"))
	noKey := writeTemp(t, []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
	base := []string{"artifact", f.artifact, "--insecure-allow-software-tpm", "--repo", "octo-org/app"}
	runCases(t, base, []cliCase{
		{"gate key as --trusted-root", []string{"--gate-key", f.root, "--trusted-root", f.root}, 2,
			[]string{"--trusted-root " + f.root + " is PEM", "Sigstore trusted_root.json", "--gate-key"}, []string{"VERIFIED"}},
		{"trusted root as --gate-key", []string{"--gate-key", gateJSON}, 2,
			[]string{"is JSON", "PEM public keys", "--trusted-root"}, []string{"VERIFIED"}},
		{"bundle as --trusted-root", []string{"--gate-key", f.root, "--trusted-root", otherJSON}, 2,
			[]string{"media type", "trusted_root.json"}, nil},
		{"text as --trusted-root", []string{"--gate-key", f.root, "--trusted-root", notJSON}, 2,
			[]string{"not JSON", "trusted_root.json"}, nil},
		{"empty --trusted-root file", []string{"--gate-key", f.root, "--trusted-root", writeTemp(t, nil)}, 2,
			[]string{"is empty", "trusted_root.json"}, nil},
		{"certificate as --gate-key", []string{"--gate-key", noKey}, 2, []string{"--gate-key", "PEM public keys"}, nil},
		{"missing --gate-key file", []string{"--gate-key", filepath.Join(t.TempDir(), "nope.pem")}, 1, []string{"--gate-key"}, nil},
		// A valid trusted root adds checks for keyless bundles; a
		// key-signed bundle still verifies, and the report says the root
		// checked nothing.
		{"key-signed bundle with a trusted root", []string{"--gate-key", f.root, "--trusted-root", emptyRoot}, 0,
			[]string{"VERIFIED", "key-signed: no certificate for the Sigstore root to check"}, nil},
	})
}

// TestArtifactSignedVSA: --vsa-key signs the VSA as a DSSE sigstore
// bundle that sigstore-go verifies with the key's public half, over the
// in-toto vsa/v1 statement for the artifact.
func TestArtifactSignedVSA(t *testing.T) {
	f := newFixture(t)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(t, err)
	der, err := x509.MarshalPKCS8PrivateKey(key)
	must(t, err)
	keyFile := filepath.Join(f.dir, "vsa.key")
	must(t, os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600))
	vsa := filepath.Join(f.dir, "vsa.sigstore.json")
	base := []string{"artifact", f.artifact, "--gate-key", f.root, "--insecure-allow-software-tpm", "--repo", "octo-org/app"}
	out, code := runCLI(t, append(base, "--vsa-out", vsa, "--vsa-key", keyFile)...)
	if code != 0 || !strings.Contains(out, "signed VSA (sigstore bundle) written to") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	b, err := bundle.LoadJSONFromPath(vsa)
	must(t, err)
	v, err := signature.LoadVerifier(key.Public(), crypto.SHA256)
	must(t, err)
	spki, err := x509.MarshalPKIXPublicKey(key.Public())
	must(t, err)
	tm := root.NewTrustedPublicKeyMaterialFromMapping(map[string]*root.ExpiringKey{provenance.KeyID(spki): root.NewExpiringKey(v, time0, time0)})
	verifier, err := verify.NewVerifier(tm, verify.WithNoObserverTimestamps())
	must(t, err)
	digest := sha256Of(mustRead(t, f.artifact))
	res, err := verifier.Verify(b, verify.NewPolicy(verify.WithArtifactDigest("sha256", digest), verify.WithKey()))
	if err != nil {
		t.Fatalf("signed VSA does not verify: %v", err)
	}
	if res.Statement.GetPredicateType() != "https://slsa.dev/verification_summary/v1" {
		t.Errorf("predicate type %q", res.Statement.GetPredicateType())
	}
	if p := res.Statement.GetPredicate().GetFields(); p["verificationResult"].GetStringValue() != "PASSED" {
		t.Errorf("predicate %v", p)
	}

	// Another key does not verify it.
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ov, _ := signature.LoadVerifier(other.Public(), crypto.SHA256)
	tm = root.NewTrustedPublicKeyMaterialFromMapping(map[string]*root.ExpiringKey{provenance.KeyID(spki): root.NewExpiringKey(ov, time0, time0)})
	verifier, _ = verify.NewVerifier(tm, verify.WithNoObserverTimestamps())
	if _, err := verifier.Verify(b, verify.NewPolicy(verify.WithArtifactDigest("sha256", digest), verify.WithKey())); err == nil {
		t.Error("signed VSA verified with another key")
	}

	// Usage errors: a public key, or --vsa-key without --vsa-out.
	pubFile := filepath.Join(f.dir, "pub.pem")
	must(t, os.WriteFile(pubFile, mustRead(t, f.root), 0o600))
	runCases(t, base, []cliCase{
		{"public key as --vsa-key", []string{"--vsa-out", vsa, "--vsa-key", pubFile}, 2, []string{"--vsa-key", "PEM EC P-256 private key"}, nil},
		{"--vsa-key without --vsa-out", []string{"--vsa-key", keyFile}, 2, []string{"give --vsa-out"}, nil},
	})
	// Nothing is written when verification fails.
	must(t, os.Remove(vsa))
	must(t, os.WriteFile(f.artifact, []byte("tampered\n"), 0o644))
	if out, code := runCLI(t, append(base, "--vsa-out", vsa, "--vsa-key", keyFile)...); code != 1 {
		t.Fatalf("tampered: exit %d:\n%s", code, out)
	}
	if _, err := os.Stat(vsa); err == nil {
		t.Error("VSA written for an artifact that did not verify")
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	must(t, err)
	return b
}

// TestArtifactFormatJSON: --format json is an array shaped like gh
// attestation verify's (attestation.bundle, verificationResult with
// sigstore-go's media type and the statement), plus attestedRunner with
// our checks; a failure is an entry with verified false and the error.
func TestArtifactFormatJSON(t *testing.T) {
	f := newFixture(t)
	base := []string{"artifact", f.artifact, "--gate-key", f.root, "--insecure-allow-software-tpm", "--repo", "octo-org/app", "--format", "json"}
	type entry struct {
		Artifact    string `json:"artifact"`
		Digest      string `json:"digest"`
		Verified    bool   `json:"verified"`
		Error       string `json:"error"`
		Attestation *struct {
			Bundle struct {
				MediaType string `json:"mediaType"`
			} `json:"bundle"`
		} `json:"attestation"`
		VerificationResult *struct {
			MediaType string `json:"mediaType"`
			Statement struct {
				Type          string `json:"_type"`
				PredicateType string `json:"predicateType"`
				Subject       []struct {
					Name string `json:"name"`
				} `json:"subject"`
			} `json:"statement"`
		} `json:"verificationResult"`
		AttestedRunner *struct {
			Checks []struct {
				Name string
				OK   bool
			} `json:"checks"`
			Level int `json:"level"`
		} `json:"attestedRunner"`
	}
	out, code := runCLI(t, base...)
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	var got []entry
	must(t, json.Unmarshal([]byte(out), &got))
	if len(got) != 1 {
		t.Fatalf("%d entries:\n%s", len(got), out)
	}
	e := got[0]
	digest := "sha256:" + hexOf(sha256Of(mustRead(t, f.artifact)))
	switch {
	case !e.Verified || e.Artifact != f.artifact || e.Digest != digest || e.Error != "":
		t.Errorf("entry %+v", e)
	case e.Attestation == nil || !strings.HasPrefix(e.Attestation.Bundle.MediaType, "application/vnd.dev.sigstore.bundle"):
		t.Errorf("attestation %+v", e.Attestation)
	case e.VerificationResult == nil || e.VerificationResult.MediaType != "application/vnd.dev.sigstore.verificationresult+json;version=0.1" ||
		e.VerificationResult.Statement.PredicateType != "https://slsa.dev/provenance/v1" ||
		len(e.VerificationResult.Statement.Subject) != 1 || e.VerificationResult.Statement.Subject[0].Name != "app.tar.gz":
		t.Errorf("verificationResult %+v", e.VerificationResult)
	case e.AttestedRunner == nil || len(e.AttestedRunner.Checks) == 0:
		t.Errorf("attestedRunner %+v", e.AttestedRunner)
	}

	must(t, os.WriteFile(f.artifact, []byte("tampered\n"), 0o644))
	out, code = runCLI(t, base...)
	got = nil
	must(t, json.Unmarshal([]byte(out), &got))
	if code != 1 || len(got) != 1 || got[0].Verified || !strings.Contains(got[0].Error, "not a subject") || got[0].VerificationResult != nil {
		t.Errorf("tampered: exit %d, %+v", code, got)
	}
}

// FuzzSplitBundles: a bundle file is outside bytes. Whatever it holds,
// splitBundles returns an error or between 1 and maxBundlesPerSource
// bundles, each a JSON value.
func FuzzSplitBundles(f *testing.F) {
	f.Add([]byte(`{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json"}`))
	f.Add([]byte("{}\n{}\n"))
	f.Add([]byte(""))
	f.Add([]byte("[1,2]\n\"x\"\n{"))
	f.Fuzz(func(t *testing.T, b []byte) {
		bs, err := splitBundles("f", b)
		if err != nil {
			return
		}
		if len(bs) == 0 || len(bs) > maxBundlesPerSource {
			t.Fatalf("%d bundles", len(bs))
		}
		for _, x := range bs {
			if !json.Valid(x.raw) {
				t.Fatalf("not JSON: %q", x.raw)
			}
		}
	})
}

// TestArtifactFromGitHubUsage: --from-github's contradictions are usage
// errors, and an unreachable or refusing API is "not verified", never a
// pass.
func TestArtifactFromGitHubUsage(t *testing.T) {
	t.Setenv("GH_TOKEN", "")
	t.Setenv("GITHUB_TOKEN", "")
	f := newFixture(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer good" {
			w.WriteHeader(http.StatusUnauthorized)
			w.Write([]byte(`{"message":"Bad credentials"}`))
			return
		}
		w.Write([]byte(`{"attestations":[]}`))
	}))
	defer srv.Close()
	base := []string{"artifact", f.artifact, "--gate-key", f.root, "--insecure-allow-software-tpm", "--repo", "octo-org/app"}
	runCases(t, base, []cliCase{
		{"--bundle and --from-github", []string{"--from-github", "--bundle", f.bundle}, 2, []string{"exclude each other"}, nil},
		{"--api-url without --from-github", []string{"--api-url", srv.URL}, 2, []string{"only used with --from-github"}, nil},
		{"--api-url not http", []string{"--from-github", "--api-url", "file:///etc"}, 2, []string{"not an http(s) URL"}, nil},
		{"refused token", []string{"--from-github", "--api-url", srv.URL}, 1, []string{"NOT VERIFIED", "401"}, []string{"VERIFIED sha256"}},
	})
	cmd := exec.Command(binary, append(base, "--from-github", "--api-url", srv.URL)...)
	cmd.Env = append(os.Environ(), "GH_TOKEN=good")
	out, _ := cmd.CombinedOutput()
	if cmd.ProcessState.ExitCode() != 1 || !strings.Contains(string(out), "no attestation") {
		t.Errorf("no attestation: exit %d:\n%s", cmd.ProcessState.ExitCode(), out)
	}
}
