package e2e

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/attested-runner/attested-runner/e2e/fakegithub"
	"github.com/attested-runner/attested-runner/e2e/harness"
	"github.com/attested-runner/attested-runner/jobgate"
	"github.com/attested-runner/attested-runner/jobgate/gateapi"
)

// TestGateDownAtBootNeverRegisters: the gate is unreachable when the VM
// boots. The agent retries with backoff until its admission deadline, then
// tears down and powers off: it never registers, GitHub never sees a
// runner, the runner process is never started.
func TestGateDownAtBootNeverRegisters(t *testing.T) {
	e, _ := newEnv(t, envOptions{})
	if err := e.Gate.Stop(); err != nil {
		t.Fatal(err)
	}
	a := e.startAgent(harness.AgentOptions{GateURL: e.Gate.URL, AdmissionDeadline: 2 * time.Second})
	x := e.wait(a)
	requireNotAdmitted(e, x)
	recs, _ := a.LogRecords()
	retries := 0
	for _, r := range recs {
		if r["msg"] == "gate challenge failed; retrying" {
			retries++
		}
	}
	if retries == 0 {
		t.Errorf("the agent did not retry the gate")
	}
	if _, err := os.Stat(filepath.Join(a.RunnerDir, "_diag")); !os.IsNotExist(err) {
		t.Fatalf("the runner was started without admission (%v)", err)
	}
	if recs := e.audit(); len(harness.AuditFilter(recs, "admit", "")) != 0 {
		t.Fatalf("the gate decided on an admission it never received:\n%s", auditText(recs))
	}
}

// TestGitHubErrorStormMintsExactlyOneRunner: GitHub answers the JIT runner
// mint with six 502s, then a secondary rate limit (429, Retry-After: 1).
// The gate retries within its bounds, fails the first admission cleanly
// (github_unavailable, reservation released), the agent comes back with a
// fresh nonce, and exactly one runner is minted, runs the job, and is gone
// afterwards, also after further reconcile passes.
func TestGitHubErrorStormMintsExactlyOneRunner(t *testing.T) {
	e, _ := newEnv(t, envOptions{})
	mint := "/orgs/" + e.GitHub.Org + "/actions/runners/generate-jitconfig"
	e.GitHub.FailNext(http.MethodPost, mint, 6, http.StatusBadGateway, 0)
	e.GitHub.FailNext(http.MethodPost, mint, 1, http.StatusTooManyRequests, time.Second)
	e.queue(701, harness.BuildAndAttest(e.AttestAction, "built through a storm")...)
	a := e.startAgent(harness.AgentOptions{})
	if x := e.wait(a); x.Code != 0 || !strings.Contains(x.Summary, "deregistered true") {
		t.Fatalf("agent exit %+v", x)
	}
	if n502, n429 := e.GitHub.CountCalls(http.MethodPost, mint, http.StatusBadGateway), e.GitHub.CountCalls(http.MethodPost, mint, http.StatusTooManyRequests); n502 != 6 || n429 != 1 {
		t.Fatalf("GitHub answered %d x 502 and %d x 429, want 6 and 1", n502, n429)
	}
	if n := e.GitHub.JITMints(); n != 1 {
		t.Fatalf("%d runners minted, want exactly 1", n)
	}
	e.noRunnersLeft()
	// Two more reconcile passes (each lists the runners) change nothing.
	list := "/orgs/" + e.GitHub.Org + "/actions/runners"
	before := e.GitHub.CountCalls(http.MethodGet, list, http.StatusOK)
	if err := harness.Poll(e.ctx, 20*time.Second, 50*time.Millisecond, func() (bool, error) {
		return e.GitHub.CountCalls(http.MethodGet, list, http.StatusOK) >= before+2, nil
	}); err != nil {
		t.Fatalf("no reconcile pass: %v", err)
	}
	e.noRunnersLeft()
	if n := e.GitHub.JITMints(); n != 1 {
		t.Fatalf("%d runners minted after reconcile, want 1", n)
	}
	recs := e.audit()
	acc := e.requireAudit(recs, "admit", "accepted", "")
	failed := harness.AuditFilter(recs, "admit", "failed")
	if len(failed) == 0 {
		t.Fatalf("no failed admission in the audit log:\n%s", auditText(recs))
	}
	for _, f := range failed {
		if f.Reason != "github_unavailable" || f.KeyDigest != acc.KeyDigest {
			t.Fatalf("failed admission %+v", f)
		}
	}
}

// TestAgentKilledMidJobRunnerReconciled: the VM dies (SIGKILL of the agent,
// the runner and the job) while a job runs. Nothing deregisters. GitHub
// fails the job when its lease lapses and shows the runner offline; the
// gate's reconcile loop then removes it. No zombie runner, no second job.
func TestAgentKilledMidJobRunnerReconciled(t *testing.T) {
	e, _ := newEnv(t, envOptions{
		github: harness.GitHubOptions{JobLease: 3 * time.Second},
		gate: harness.GateOptions{TTL: jobgate.TTLConfig{
			ReconcileInterval: jobgate.Duration(time.Second),
			OfflineGrace:      jobgate.Duration(3 * time.Second),
		}},
	})
	e.queue(801, fakeStep{Name: "long build", Run: "sleep 600"})
	a := e.startAgent(harness.AgentOptions{})
	var runner string
	if err := harness.Poll(e.ctx, 30*time.Second, 20*time.Millisecond, func() (bool, error) {
		r, ok := e.GitHub.Runner(a.RunnerName())
		runner = r.Name
		return ok && r.Busy && r.RunID == 801, nil
	}); err != nil {
		t.Fatalf("the job never started: %v", err)
	}
	a.Kill()
	x := e.wait(a)
	if x.Signal != "killed" || x.PoweredOff {
		t.Fatalf("agent exit %+v, want killed without teardown", x)
	}
	e.waitNoRunners(30 * time.Second)
	res, _ := e.GitHub.JobResult(801)
	if res.Result != fakegithub.ResultFailed || !strings.Contains(res.Reason, "lost communication") {
		t.Fatalf("job %+v", res)
	}
	if n := e.GitHub.JITMints(); n != 1 {
		t.Fatalf("%d runners minted, want 1", n)
	}
	recs := e.audit()
	removed := harness.AuditFilter(recs, "reconcile", "removed")
	if len(removed) != 1 || removed[0].RunnerName != runner || !strings.Contains(removed[0].Detail, "offline") {
		t.Fatalf("want the reconcile loop to remove %s as offline:\n%s", runner, auditText(recs))
	}
	if len(harness.AuditFilter(recs, "deregister", "")) != 0 {
		t.Fatalf("a killed agent deregistered:\n%s", auditText(recs))
	}
	t.Logf("reconcile removed %s: %s", runner, removed[0].Detail)
}

// TestGateRestartedMidFlowForgetsNothing: the gate restarts between an
// agent's challenge and its admission request, and again while the admitted
// runner waits for its job. The nonce issued before the first restart is
// honoured once; the runner admitted before the second is known to the
// restarted gate (it verifies the deregistration against the stored key);
// the used nonce stays used; a key admitted before a restart is refused
// after it; provenance verifies with the same gate key.
func TestGateRestartedMidFlowForgetsNothing(t *testing.T) {
	e, ms := newEnv(t, envOptions{machines: 2})
	// A second environment, admitted before the restarts, presents its
	// key again after them.
	c, closeTPM, err := ms[1].Collector(e.AgentDigest)
	if err != nil {
		t.Fatal(err)
	}
	defer closeTPM()
	gate := &gateapi.Client{BaseURL: e.Gate.URL}
	admitAgain := func() error {
		ch, err := gate.Challenge(e.ctx)
		if err != nil {
			t.Fatal(err)
		}
		ev, err := c.Collect(attest.AdmissionChallenge(ch.Nonce))
		if err != nil {
			t.Fatal(err)
		}
		evJSON, _ := ev.Encode()
		_, err = gate.Admit(e.ctx, &gateapi.AdmitRequest{Nonce: ch.Nonce, Evidence: evJSON})
		return err
	}
	if err := admitAgain(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	var restartErr error
	pidBefore := e.Gate.Pid()
	e.Proxy.SetHook(func(method, path string, body []byte) []byte {
		if path == gateapi.PathAdmit {
			once.Do(func() { restartErr = e.Gate.Restart(e.ctx) })
		}
		return body
	})
	a := e.startAgent(harness.AgentOptions{})
	if _, err := a.WaitLog(e.ctx, "runner listening", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if restartErr != nil {
		t.Fatal(restartErr)
	}
	if e.Gate.Pid() == pidBefore {
		t.Fatal("the gate was not restarted")
	}
	xs := e.Proxy.Exchanges(gateapi.PathAdmit)
	if len(xs) != 1 || xs[0].Status != http.StatusOK {
		t.Fatalf("want one admission, accepted across the restart; got %d (%v)", len(xs), statuses(xs))
	}
	// Restart again while the runner is live, then run its job.
	if err := e.Gate.Restart(e.ctx); err != nil {
		t.Fatal(err)
	}
	e.queue(901, harness.BuildAndAttest(e.AttestAction, "built across restarts")...)
	x := e.wait(a)
	if x.Code != 0 || !strings.Contains(x.Summary, "deregistered true") {
		t.Fatalf("agent exit %+v", x)
	}
	if _, ok := e.GitHub.Runner(a.RunnerName()); ok {
		t.Fatalf("runner %s still on GitHub", a.RunnerName())
	}
	// The nonce used before the restarts stays used; the key admitted
	// before them stays admitted.
	status, gerr := postAdmit(t, e.Gate.URL, xs[0].Request)
	if status != http.StatusForbidden || gerr.Code != "nonce_used" {
		t.Fatalf("replay after restarts: %d %+v", status, gerr)
	}
	requireRejected(t, admitAgain(), http.StatusConflict, "key_already_admitted")
	roots, err := e.Gate.Roots(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	art, _ := artifactOf(e, a)
	v, err := bin.VerifyArtifact(e.ctx, harness.VerifyOptions{Artifact: art, GateKey: roots, Repo: e.repo(), Hostname: e.GitHub.URL(), RunID: "901"})
	if err != nil || v.ExitCode != 0 {
		t.Fatalf("verify: %v\n%s%s", err, v.Stdout, v.Stderr)
	}
	recs := e.audit()
	e.requireAudit(recs, "admit", "rejected", "nonce_used")
	e.requireAudit(recs, "admit", "rejected", "key_already_admitted")
	var acc jobgate.AuditRecord
	for _, r := range harness.AuditFilter(recs, "admit", "accepted") {
		if r.RunnerName == a.RunnerName() {
			acc = r
		}
	}
	dereg := e.requireAudit(recs, "deregister", "removed", "")
	if dereg.RunnerName != acc.RunnerName || dereg.KeyDigest != acc.KeyDigest {
		t.Fatalf("deregistered %s/%s, admitted %s/%s", dereg.RunnerName, dereg.KeyDigest, acc.RunnerName, acc.KeyDigest)
	}
	var resp gateapi.AdmitResponse
	if err := json.Unmarshal(xs[0].Response, &resp); err != nil || resp.RunnerName != acc.RunnerName {
		t.Fatalf("admission response %v %s", err, resp.RunnerName)
	}
}

func statuses(xs []harness.Exchange) []int {
	var out []int
	for _, x := range xs {
		out = append(out, x.Status)
	}
	return out
}

// TestGitHubMintAppliedThen502NoDoubleRunner: GitHub creates the runner and
// still answers 502 (the request took effect). The gate's retry collides
// with the runner it created (409: names derive from the environment key),
// removes it and mints again: the admitted runner is the only one left
// standing, the job runs once on it, nothing is left afterwards.
func TestGitHubMintAppliedThen502NoDoubleRunner(t *testing.T) {
	e, _ := newEnv(t, envOptions{})
	mint := "/orgs/" + e.GitHub.Org + "/actions/runners/generate-jitconfig"
	e.GitHub.FailNextAfterApply(http.MethodPost, mint, 1, http.StatusBadGateway)
	e.queue(1001, echoJob()...)
	a := e.startAgent(harness.AgentOptions{})
	if x := e.wait(a); x.Code != 0 || !strings.Contains(x.Summary, "deregistered true") {
		t.Fatalf("agent exit %+v", x)
	}
	if res, _ := e.GitHub.JobResult(1001); res.Result != fakegithub.ResultSucceeded || res.RunnerName != a.RunnerName() {
		t.Fatalf("job %+v", res)
	}
	// GitHub created a runner twice (the first answered 502, the retry
	// 409 on its name) and the gate deleted the first before minting the
	// second. (The fake's JITMints counts 201 answers only: 1.)
	if n502, n409, n201 := e.GitHub.CountCalls(http.MethodPost, mint, http.StatusBadGateway),
		e.GitHub.CountCalls(http.MethodPost, mint, http.StatusConflict),
		e.GitHub.CountCalls(http.MethodPost, mint, http.StatusCreated); n502 != 1 || n409 != 1 || n201 != 1 {
		t.Fatalf("mint answers: %d x 502, %d x 409, %d x 201; want one each", n502, n409, n201)
	}
	recs := e.audit()
	acc := e.requireAudit(recs, "admit", "accepted", "")
	var deleted []string
	for _, c := range e.GitHub.Calls() {
		if c.Method == http.MethodDelete && c.Status == http.StatusNoContent {
			deleted = append(deleted, c.Path[strings.LastIndex(c.Path, "/")+1:])
		}
	}
	if len(deleted) != 1 || deleted[0] == strconv.FormatInt(acc.RunnerID, 10) {
		t.Fatalf("deleted runners %v; the admitted runner is %d", deleted, acc.RunnerID)
	}
	e.noRunnersLeft()
}
