package e2e

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/attested-runner/attested-runner/e2e/fakegithub"
	"github.com/attested-runner/attested-runner/e2e/harness"
)

// TestSecondJobOnSingleUseRunnerRefused: two jobs are queued for the label
// set one runner has. The single-use runner takes exactly one; the second
// stays queued until a second, freshly booted and admitted environment
// takes it. One environment, one job.
func TestSecondJobOnSingleUseRunnerRefused(t *testing.T) {
	e, _ := newEnv(t, envOptions{})
	e.queue(501, echoJob()...)
	e.queue(502, echoJob()...)
	first := e.startAgent(harness.AgentOptions{})
	if x := e.wait(first); x.Code != 0 {
		t.Fatalf("first agent: %+v", x)
	}
	j1, _ := e.GitHub.JobResult(501)
	j2, _ := e.GitHub.JobResult(502)
	if j1.RunnerName != first.RunnerName() || j1.Result != fakegithub.ResultSucceeded {
		t.Fatalf("job 501: %+v", j1)
	}
	if j2.RunnerID != 0 || j2.Result != "" {
		t.Fatalf("the single-use runner %s also took job 502: %+v", first.RunnerName(), j2)
	}
	if n := e.GitHub.JITMints(); n != 1 {
		t.Fatalf("%d runners minted, want 1", n)
	}
	e.noRunnersLeft()

	// The VM is destroyed; the machine boots again (same TPM, fresh PCRs
	// and a new environment key) and is admitted as a new runner.
	if err := e.M.Reboot(e.ctx); err != nil {
		t.Fatal(err)
	}
	second := e.startAgent(harness.AgentOptions{})
	if x := e.wait(second); x.Code != 0 {
		t.Fatalf("second agent: %+v", x)
	}
	j2, _ = e.GitHub.JobResult(502)
	if j2.RunnerName != second.RunnerName() || second.RunnerName() == first.RunnerName() || j2.Result != fakegithub.ResultSucceeded {
		t.Fatalf("job 502 ran on %q (first runner %q, second %q): %+v", j2.RunnerName, first.RunnerName(), second.RunnerName(), j2)
	}
	recs := e.audit()
	if acc := harness.AuditFilter(recs, "admit", "accepted"); len(acc) != 2 || acc[0].KeyDigest == acc[1].KeyDigest {
		t.Fatalf("want two admissions with two keys:\n%s", auditText(recs))
	}
}

// TestJobUserCannotReachTPMOrAgentState: the runner and the job run as
// nobody (65534:65534). The job tries to open the TPM (swtpm's socket,
// root 0600 in a 0700 directory), to rewrite the agent's hook scripts, and
// to read the agent process's environment and file descriptors: each is
// refused with "permission denied". The job-side action still works: the
// agent socket serves the runner user.
func TestJobUserCannotReachTPMOrAgentState(t *testing.T) {
	if !isRoot() {
		t.Skip("needs root: the agent must start the runner as another user (uid 65534) and own the TPM socket")
	}
	e, _ := newEnv(t, envOptions{})
	denied := func(what, cmd string) fakeStep {
		// The step fails the job unless cmd fails with EACCES.
		return fakeStep{Name: what, Run: fmt.Sprintf(`set +e
out=$( (%s) 2>&1 ); rc=$?
echo "%s: exit $rc: $out"
test $rc -ne 0 && printf '%%s' "$out" | grep -qi 'permission denied'`, cmd, what)}
	}
	agentPID := `p=$$; while [ "$p" -gt 1 ] && [ "$(awk '/^Uid:/{print $2}' /proc/$p/status)" != 0 ]; do p=$(awk '{print $4}' /proc/$p/stat); done; echo $p`
	steps := []fakeStep{
		{Name: "runs as nobody", Run: `test "$(id -u):$(id -g)" = 65534:65534 && test -z "$(id -G | tr ' ' '\n' | grep -vx 65534)"`},
		denied("open the TPM", `"$ATTESTED_RUNNER_AGENT" ak-public --tpm `+e.M.TPMArg()),
		denied("rewrite the agent's hook", `echo 'exit 0' > "$(dirname "$ATTESTED_RUNNER_SOCKET")/hooks/job-started.sh"`),
		denied("read the agent's environment", `cat /proc/$(`+agentPID+`)/environ`),
		denied("list the agent's open files", `ls /proc/$(`+agentPID+`)/fd`),
	}
	steps = append(steps, harness.BuildAndAttest(e.AttestAction, "built by nobody")...)
	e.queue(601, steps...)
	a := e.startAgent(harness.AgentOptions{RunnerUser: "65534:65534"})
	x := e.wait(a)
	res, _ := e.GitHub.JobResult(601)
	if x.Code != 0 || res.Result != fakegithub.ResultSucceeded {
		t.Fatalf("job %+v, agent %+v; job log:\n%s", res, x, a.DiagLogs())
	}
	diag := a.DiagLogs()
	for _, what := range []string{"open the TPM", "rewrite the agent's hook", "read the agent's environment", "list the agent's open files"} {
		// The step's output, not its script (which the job message dump at
		// the top of the Worker log also holds).
		i := strings.Index(diag, "Enqueue web console line queue: "+what+": exit ")
		if i < 0 {
			t.Errorf("step %q left no trace in the job log", what)
			continue
		}
		line, _, _ := strings.Cut(diag[i:], "\n")
		t.Logf("job step: %s", line)
	}
	// The artifact was attested as the runner user, and the TPM socket is
	// still root's only.
	_, bundle := artifactOf(e, a)
	if fi, err := os.Stat(bundle); err != nil || fi.Size() == 0 {
		t.Fatalf("bundle %s: %v", bundle, err)
	}
	if fi, err := os.Stat(e.M.TPM.Socket); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("TPM socket %v %v", fi.Mode(), err)
	}
	e.requireAudit(e.audit(), "admit", "accepted", "")
}
