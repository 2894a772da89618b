package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/attested-runner/attested-runner/e2e/harness"
)

// TestAttestationStoreRoundTrip: a job whose token may write attestations
// has the job-side action upload its bundle to the (fake) GitHub
// attestation store; attested-verify --from-github finds it by the
// artifact's digest, under the repository and under the owner, and runs
// the full check on it. The store is not trusted: a bundle it serves for
// another digest, or to a reader of another owner, does not verify.
func TestAttestationStoreRoundTrip(t *testing.T) {
	e, _ := newEnv(t, envOptions{})
	j := harness.NewJob(e.repo(), 121, harness.BuildAndAttest(e.AttestAction, "release 2.0")...)
	j.Token = e.GitHub.JobToken(e.repo(), true)
	if _, err := e.GitHub.QueueJob(j); err != nil {
		t.Fatal(err)
	}
	a := e.startAgent(harness.AgentOptions{})
	if x := e.wait(a); x.Code != 0 {
		t.Fatalf("agent exit %+v", x)
	}
	stored := e.GitHub.Attestations(e.repo())
	if len(stored) != 1 {
		t.Fatalf("%d attestations stored, want 1", len(stored))
	}
	roots, err := e.Gate.Roots(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	art, _ := artifactOf(e, a)
	owner, _, _ := strings.Cut(e.repo(), "/")
	reader := e.GitHub.JobToken(e.repo(), false)
	base := harness.VerifyOptions{Artifact: art, GateKey: roots, Hostname: e.GitHub.URL(), RunID: "121", FromGitHub: true, Token: reader}
	check := func(name string, o harness.VerifyOptions, code int, want string) {
		t.Helper()
		v, err := bin.VerifyArtifact(e.ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		if v.ExitCode != code || !strings.Contains(v.Stdout+v.Stderr, want) {
			t.Errorf("%s: exit %d, want %d with %q:\n%s%s", name, v.ExitCode, code, want, v.Stdout, v.Stderr)
		}
	}
	byRepo, byOwner := base, base
	byRepo.Repo = e.repo()
	byOwner.Owner = owner
	check("by repository", byRepo, 0, "bundle github:repos/"+e.repo()+"/attestations/sha256:")
	check("by owner", byOwner, 0, "bundle github:orgs/"+owner+"/attestations/sha256:")
	wrongRun := byRepo
	wrongRun.RunID = "122"
	check("another run", wrongRun, 1, "✗ run")
	noToken := byRepo
	noToken.Token = ""
	check("no token", noToken, 1, "401")
	otherOwner := byRepo
	otherOwner.Token = e.GitHub.JobToken("evil-org/app", false)
	check("reader of another owner", otherOwner, 1, "no attestation")

	// The store serves the real bundle under another artifact's digest.
	other := filepath.Join(t.TempDir(), "other.tar.gz")
	if err := os.WriteFile(other, []byte("not the release\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	d := sha256.Sum256([]byte("not the release\n"))
	e.GitHub.PutAttestation(e.repo(), stored[0], "sha256:"+hex.EncodeToString(d[:]))
	swapped := byRepo
	swapped.Artifact = other
	check("bundle served for another digest", swapped, 1, "not a subject")
}
