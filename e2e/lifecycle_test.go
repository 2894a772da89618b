package e2e

import (
	"strings"
	"testing"

	"github.com/attested-runner/attested-runner/e2e/fakegithub"
	"github.com/attested-runner/attested-runner/e2e/harness"
)

type fakeStep = fakegithub.Step

// TestHappyPathJobVerifies is the baseline every attack is measured against:
// an enrolled machine boots the real agent, the gate admits it, the runner
// takes the queued job, the job's provenance verifies with attested-verify,
// the runner is gone from GitHub and the VM powered off.
func TestHappyPathJobVerifies(t *testing.T) {
	e, _ := newEnv(t, envOptions{})
	e.queue(101, harness.BuildAndAttest(e.AttestAction, "release 1.0")...)
	a := e.startAgent(harness.AgentOptions{})
	x := e.wait(a)
	if x.Code != 0 || !x.PoweredOff || !strings.Contains(x.Summary, "job completed (admitted true, job true, deregistered true)") {
		t.Fatalf("agent exit %+v", x)
	}
	if res, _ := e.GitHub.JobResult(101); res.Result != fakegithub.ResultSucceeded || res.RunnerName != a.RunnerName() {
		t.Fatalf("job %+v, runner %q", res, a.RunnerName())
	}
	e.noRunnersLeft()
	roots, err := e.Gate.Roots(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	art, _ := artifactOf(e, a)
	v, err := bin.VerifyArtifact(e.ctx, harness.VerifyOptions{Artifact: art, GateKey: roots, Repo: e.repo(), Hostname: e.GitHub.URL(), RunID: "101"})
	if err != nil {
		t.Fatal(err)
	}
	// The dispatch attestation rides in the bundle and is checked
	// (BuildEnv L2.agent-dispatch).
	if v.ExitCode != 0 || !strings.Contains(v.Stdout, "VERIFIED sha256:") || !strings.Contains(v.Stdout, "✓ dispatch") {
		t.Fatalf("attested-verify exit %d:\n%s%s", v.ExitCode, v.Stdout, v.Stderr)
	}
	recs := e.audit()
	acc := e.requireAudit(recs, "admit", "accepted", "")
	if acc.RunnerName != a.RunnerName() {
		t.Errorf("admitted %s, agent ran %s", acc.RunnerName, a.RunnerName())
	}
	e.requireAudit(recs, "deregister", "removed", "")
	if n := e.GitHub.JITMints(); n != 1 {
		t.Errorf("%d JIT runners minted, want 1", n)
	}
}
