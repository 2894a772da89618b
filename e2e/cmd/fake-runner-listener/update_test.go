package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/attested-runner/attested-runner/e2e/fakegithub"
	"github.com/attested-runner/attested-runner/runner"
)

// TestListenerSelfUpdate: a runner older than the service's latest release
// gets an update message instead of a job, takes no job, prints the
// SelfUpdater's lines and exits 4 (run-once runner updating); with
// DisableUpdate in its .runner it takes the job.
func TestListenerSelfUpdate(t *testing.T) {
	w := newWorld(t)
	w.srv.SetRunnerVersions("2.999.0", "", false)
	if _, err := w.srv.QueueJob(fakegithub.Job{Repository: "acme/widgets", Ref: "refs/heads/main", SHA: commitSHA,
		WorkflowRef: "acme/widgets/.github/workflows/ci.yml@refs/heads/main", EventName: "push", Actor: "octocat",
		RunID: 77, RunAttempt: 1, RunNumber: 1, Job: "build", Labels: []string{"self-hosted", "attested"},
		Steps: []fakegithub.Step{{Name: "hello", Run: "echo hello"}}}); err != nil {
		t.Fatal(err)
	}

	dir := runnerDir(t)
	p := startListener(t, dir, []string{envJITConfig + "=" + w.mint(t, "updating").GetEncodedJITConfig()})
	if code := p.wait(t, 20*time.Second); code != exitRunOnceRunnerUpdating {
		t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s\ndiag: %s", code, exitRunOnceRunnerUpdating, p.stdout, p.stderr, readOnlyLog(t, dir, "Runner_*.log"))
	}
	if !strings.Contains(p.stdout.String(), "Downloading 2.999.0 runner") || w.srv.UpdateMessages() != 1 {
		t.Fatalf("update messages %d; stdout:\n%s", w.srv.UpdateMessages(), p.stdout)
	}
	if res, _ := w.srv.JobResult(77); res.RunnerID != 0 {
		t.Fatalf("an updating runner took the job: %+v", res)
	}

	jit, err := runner.DisableSelfUpdate([]byte(w.mint(t, "pinned").GetEncodedJITConfig()))
	if err != nil {
		t.Fatal(err)
	}
	dir2 := runnerDir(t)
	p2 := startListener(t, dir2, []string{envJITConfig + "=" + string(jit)})
	if code := p2.wait(t, 20*time.Second); code != exitSuccess {
		t.Fatalf("exit %d with DisableUpdate\n%s%s", code, p2.stdout, p2.stderr)
	}
	if res, _ := w.srv.JobResult(77); res.Result != fakegithub.ResultSucceeded || w.srv.UpdateMessages() != 1 {
		t.Fatalf("with DisableUpdate: job %+v, %d update messages", res, w.srv.UpdateMessages())
	}
}

// TestListenerVersionDeprecated: the service refuses a deprecated version;
// the runner exits 7 with ACTIONS_RUNNER_RETURN_VERSION_DEPRECATED_EXIT_CODE
// set, 1 without.
func TestListenerVersionDeprecated(t *testing.T) {
	w := newWorld(t)
	w.srv.SetRunnerVersions("", "3.0.0", false)
	for env, want := range map[string]int{envDeprecatedExit + "=1": exitVersionDeprecated, "UNRELATED=1": exitTerminatedError} {
		p := startListener(t, runnerDir(t), []string{env, envJITConfig + "=" + w.mint(t, "old-"+strings.ToLower(env[:3])).GetEncodedJITConfig()})
		if code := p.wait(t, 20*time.Second); code != want {
			t.Errorf("%s: exit %d, want %d\n%s", env, code, want, p.stderr)
		}
		if !strings.Contains(p.stderr.String(), "deprecated") {
			t.Errorf("%s: stderr does not say why:\n%s", env, p.stderr)
		}
	}
}

// TestListenerRegistrationDeletedWhilePolling: the runner's registration is
// deleted while it polls; it cleans up its local configuration and exits 0,
// as Runner.cs does.
func TestListenerRegistrationDeletedWhilePolling(t *testing.T) {
	w := newWorld(t)
	cfg := w.mint(t, "doomed")
	dir := runnerDir(t)
	p := startListener(t, dir, []string{envJITConfig + "=" + cfg.GetEncodedJITConfig()})
	waitFor(t, "listening", func() bool { return strings.Contains(p.stdout.String(), "Listening for Jobs") })
	if _, err := w.gh.Actions.RemoveOrganizationRunner(t.Context(), "acme", cfg.GetRunner().GetID()); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t, 20*time.Second); code != exitSuccess {
		t.Fatalf("exit %d, want 0\n%s", code, p.stderr)
	}
	if !strings.Contains(p.stderr.String(), "The runner no longer exists on the server. Cleaning up local configuration.") {
		t.Errorf("stderr:\n%s", p.stderr)
	}
	for _, f := range []string{fakegithub.FileRunner, fakegithub.FileCredentials, fakegithub.FileRSAParams} {
		if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
			t.Errorf("%s left behind", f)
		}
	}
}
