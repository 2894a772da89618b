package harness

import (
	"strings"

	"github.com/attested-runner/attested-runner/e2e/fakegithub"
)

// NewJob is a workflow job of repo ("owner/name") on run runID, for
// runs-on: [self-hosted, attested], pushed to main, running steps.
func NewJob(repo string, runID int64, steps ...fakegithub.Step) fakegithub.Job {
	sha := strings.Repeat("ab", 20)
	return fakegithub.Job{
		Repository: repo, Ref: "refs/heads/main", SHA: sha,
		WorkflowRef: repo + "/.github/workflows/release.yml@refs/heads/main", WorkflowSHA: sha,
		EventName: "push", Actor: "octocat", RunID: runID, RunAttempt: 1, RunNumber: 7, Job: "build",
		Labels:  []string{"self-hosted", "attested"},
		Actions: []fakegithub.ActionRef{{Repository: "actions/checkout", Ref: "v4", SHA: "11bd71901bbe5b1630ceea73d27597364c9af683"}},
		Steps:   steps,
	}
}

// Artifact is where BuildAndAttest leaves its artifact, relative to the
// workspace; its bundle is Artifact + ".sigstore.json".
const Artifact = "dist/app.tar.gz"

// BuildAndAttest are the steps of a release job: build an artifact, then
// attest it with the job-side action at actionDir (World.AttestAction, as
// `uses: <org>/attested-runner/action/attest@v1`).
func BuildAndAttest(actionDir, content string) []fakegithub.Step {
	return []fakegithub.Step{
		{Name: "build", Run: "mkdir -p dist && printf '%s\\n' '" + strings.ReplaceAll(content, "'", "") + "' | gzip -n > " + Artifact},
		{Name: "attest", Uses: actionDir, With: map[string]string{"subject-path": Artifact}},
		{Name: "check", Run: "test -s " + Artifact + ".sigstore.json"},
	}
}
