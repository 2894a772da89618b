package runner_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/attested-runner/attested-runner/attest/attesttest"
	"github.com/attested-runner/attested-runner/e2e/fakegithub"
	"github.com/attested-runner/attested-runner/jobgate"
	"github.com/attested-runner/attested-runner/jobgate/gateapi"
	"github.com/attested-runner/attested-runner/provenance"
	"github.com/attested-runner/attested-runner/runner"
)

var (
	binDir   string
	repoRoot string
)

// TestMain builds the agent (for its hook and attest subcommands) and the
// fake Runner.Listener once.
func TestMain(m *testing.M) {
	_, self, _, _ := runtime.Caller(0)
	repoRoot = filepath.Join(filepath.Dir(self), "..")
	dir, err := os.MkdirTemp("", "runner-test-bin")
	if err != nil {
		panic(err)
	}
	binDir = dir
	for out, pkg := range map[string]string{"attested-runner": "./cmd/attested-runner", "Runner.Listener": "./e2e/cmd/fake-runner-listener"} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, out), pkg)
		cmd.Dir = repoRoot
		if b, err := cmd.CombinedOutput(); err != nil {
			panic(string(b))
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// world is a gate in front of a fake GitHub, and an agent's configuration
// on a simulated TPM, with a runner directory holding the fake listener.
type world struct {
	gh        *fakegithub.Server
	gate      *jobgate.Gate
	store     *jobgate.BoltStore
	gateURL   string
	gateKey   crypto.Signer
	cfg       runner.Config
	runnerDir string
	powerOffs *int
	mu        sync.Mutex
}

func newWorld(t *testing.T) *world {
	t.Helper()
	collector, policy := attesttest.SimulatedTPM(t)
	w := newWorldB(t, policy)
	w.cfg.Collector = collector
	return w
}

// newWorldB builds the world around a policy; the caller supplies the
// collector.
func newWorldB(t testing.TB, policy *attest.Policy, edit ...func(*jobgate.Config)) *world {
	t.Helper()
	appKey, pemKey, err := fakegithub.AppKey()
	if err != nil {
		t.Fatal(err)
	}
	gh, err := fakegithub.Start(fakegithub.Options{AppID: 7, AppPublicKey: &appKey.PublicKey, InstallationID: 8, Org: "octo-org",
		Repos: []string{"octo-org/app"}, JobLease: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gh.Close() })
	reg, err := jobgate.NewGitHubRegistry(jobgate.GitHubOptions{APIURL: gh.URL() + "/", AppID: 7, InstallationID: 8, PrivateKey: pemKey, Org: "octo-org"})
	if err != nil {
		t.Fatal(err)
	}
	store, err := jobgate.OpenBoltStore(filepath.Join(t.TempDir(), "gate.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	gateKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	gateCfg := &jobgate.Config{GateID: "https://gate.test", BuilderID: "https://gate.test/builder/v1",
		GitHub: jobgate.GitHubConfig{Org: "octo-org", Labels: []string{"self-hosted", "attested"}}}
	for _, e := range edit {
		e(gateCfg)
	}
	g, err := jobgate.New(jobgate.Options{
		Config: gateCfg, Store: store, Registry: reg, Policy: policy, PolicyDigest: "test", Signer: gateKey,
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(g.Handler())
	t.Cleanup(srv.Close)

	// The runner directory lives on tmpfs, like in the image.
	runnerDir, err := os.MkdirTemp("/dev/shm", "runner-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(runnerDir) })
	os.MkdirAll(filepath.Join(runnerDir, "bin"), 0o755)
	copyFile(t, filepath.Join(binDir, "Runner.Listener"), filepath.Join(runnerDir, "bin", "Runner.Listener"))
	state := t.TempDir()
	w := &world{gh: gh, gate: g, store: store, gateURL: srv.URL, gateKey: gateKey, runnerDir: runnerDir, powerOffs: new(int)}
	w.cfg = runner.Config{
		Gate: &gateapi.Client{BaseURL: srv.URL}, GateKeys: []crypto.PublicKey{gateKey.Public()}, AgentDigest: attesttest.AgentDigest,
		AgentVersion: "test", AgentPath: filepath.Join(binDir, "attested-runner"), RunnerDir: runnerDir,
		RunnerUID: os.Getuid(), RunnerGID: os.Getgid(),
		SocketPath: filepath.Join(state, "agent.sock"), StateDir: state,
		AdmissionDeadline: 20 * time.Second, IdleTTL: 20 * time.Second, TeardownDeadline: 10 * time.Second,
		PowerOff: func(context.Context) error { w.mu.Lock(); *w.powerOffs++; w.mu.Unlock(); return nil },
	}
	return w
}

// jobArtifact is what buildAndAttest left in the workspace under
// runnerDir: the bundle, and the artifact's SHA-256.
func jobArtifact(t testing.TB, runnerDir string) ([]byte, [sha256.Size]byte) {
	t.Helper()
	ws := filepath.Join(runnerDir, "_work", "app", "app")
	bundle, err := os.ReadFile(filepath.Join(ws, "dist", "app.tar.gz.sigstore.json"))
	if err != nil {
		t.Fatal(err)
	}
	art, err := os.ReadFile(filepath.Join(ws, "dist", "app.tar.gz"))
	if err != nil {
		t.Fatal(err)
	}
	return bundle, sha256.Sum256(art)
}

func copyFile(t testing.TB, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o755); err != nil {
		t.Fatal(err)
	}
}

func releaseJob(runID int64, steps ...fakegithub.Step) fakegithub.Job {
	return fakegithub.Job{
		Repository: "octo-org/app", Ref: "refs/heads/main", SHA: strings.Repeat("ab", 20),
		WorkflowRef: "octo-org/app/.github/workflows/release.yml@refs/heads/main", WorkflowSHA: strings.Repeat("ab", 20),
		EventName: "push", Actor: "octocat", RunID: runID, RunAttempt: 1, RunNumber: 3, Job: "build",
		Labels:  []string{"self-hosted", "attested"},
		Actions: []fakegithub.ActionRef{{Repository: "actions/checkout", Ref: "v4", SHA: "11bd71901bbe5b1630ceea73d27597364c9af683"}},
		Steps:   steps,
	}
}

// buildAndAttest is a job that builds an artifact and attests it with the
// job-side action of this repository.
func buildAndAttest() []fakegithub.Step {
	return []fakegithub.Step{
		{Name: "build", Run: "mkdir -p dist && echo 'release 1.0' > dist/app.tar.gz"},
		{Name: "attest", Uses: filepath.Join(repoRoot, "action", "attest"), With: map[string]string{"subject-path": "dist/*.tar.gz"}},
		{Name: "check", Run: "test -s dist/app.tar.gz.sigstore.json"},
	}
}

func TestFullLifecycle(t *testing.T) {
	w := newWorld(t)
	if _, err := w.gh.QueueJob(releaseJob(501, buildAndAttest()...)); err != nil {
		t.Fatal(err)
	}
	a, err := runner.New(w.cfg)
	if err != nil {
		t.Fatal(err)
	}
	out := a.Run(context.Background())
	if out.Err != nil || out.Reason != "job completed" || !out.Admitted || !out.JobStarted || !out.Deregistered {
		t.Fatalf("outcome %+v", out)
	}
	if *w.powerOffs != 1 {
		t.Errorf("powered off %d times", *w.powerOffs)
	}
	res, ok := w.gh.JobResult(501)
	if !ok || res.Result != "succeeded" {
		t.Fatalf("job result %+v", res)
	}
	if n := len(w.gh.Runners()); n != 0 {
		t.Errorf("%d runners left on GitHub", n)
	}
	// The bundle the job got verifies for the expected repository.
	bundle, d := jobArtifact(t, w.runnerDir)
	r, err := provenance.Verify(bundle, d[:], provenance.VerifyOptions{
		ExpectedRepository: "octo-org/app", ExpectedRef: "refs/heads/main", ExpectedWorkflow: ".github/workflows/release.yml",
		ExpectedRunID: "501", TrustedGateRoots: []crypto.PublicKey{w.gateKey.Public()}, AllowSoftwareTPMInsecure: true,
	})
	if err != nil {
		t.Fatalf("verify: %v\n%+v", err, r.Checks)
	}
	// The lifecycle the response quote shows: agent-start < env-key < job-start.
	var names []string
	for _, e := range r.Claims.Lifecycle.Events {
		names = append(names, e.Type.String())
	}
	if strings.Join(names, ",") != "agent-start,env-key,job-start" {
		t.Errorf("lifecycle at signing: %v", names)
	}
	if len(r.Actions) != 2 || !strings.Contains(strings.Join(r.Actions, " "), "actions/checkout@v4 (11bd7190") {
		t.Errorf("inputs %v", r.Actions)
	}
	// The dispatch attestation verifies and names this build.
	disp, err := os.ReadFile(filepath.Join(w.cfg.StateDir, "public", "dispatch.sigstore.json"))
	if err != nil {
		t.Fatal(err)
	}
	if id, _, err := provenance.VerifyDispatch(disp, []crypto.PublicKey{w.gateKey.Public()}); err != nil || id != r.BuildID {
		t.Fatalf("dispatch %q %v (build %q)", id, err, r.BuildID)
	}
}

func TestGateDownNeverLaunches(t *testing.T) {
	w := newWorld(t)
	w.cfg.Gate = &gateapi.Client{BaseURL: "http://127.0.0.1:1"} // nothing listens
	w.cfg.AdmissionDeadline = 2 * time.Second
	a, err := runner.New(w.cfg)
	if err != nil {
		t.Fatal(err)
	}
	out := a.Run(context.Background())
	if out.Admitted || out.Err == nil || *w.powerOffs != 1 {
		t.Fatalf("outcome %+v, power-offs %d", out, *w.powerOffs)
	}
	if w.gh.JITMints() != 0 {
		t.Fatal("a runner was minted")
	}
	if _, err := os.Stat(filepath.Join(w.runnerDir, "_diag")); err == nil {
		t.Fatal("the runner was launched")
	}
}

func TestIdleTTLAndSingleUse(t *testing.T) {
	w := newWorld(t)
	w.cfg.IdleTTL = 3 * time.Second
	a, err := runner.New(w.cfg)
	if err != nil {
		t.Fatal(err)
	}
	out := a.Run(context.Background())
	if !strings.HasPrefix(out.Reason, "idle") || out.JobStarted || !out.Deregistered || *w.powerOffs != 1 {
		t.Fatalf("outcome %+v", out)
	}
	if n := len(w.gh.Runners()); n != 0 {
		t.Fatalf("%d runners left", n)
	}
}

func TestSecondJobRefused(t *testing.T) {
	w := newWorld(t)
	// The job itself tries to start a second job on its runner.
	second := `"$ATTESTED_RUNNER_AGENT" hook job-started --socket "$ATTESTED_RUNNER_SOCKET"`
	w.gh.QueueJob(releaseJob(601, fakegithub.Step{Name: "second job", Run: second}))
	a, err := runner.New(w.cfg)
	if err != nil {
		t.Fatal(err)
	}
	out := a.Run(context.Background())
	res, _ := w.gh.JobResult(601)
	if res.Result != "failed" {
		t.Fatalf("the second job start was not refused: job %+v, outcome %+v", res, out)
	}
	logs, _ := filepath.Glob(filepath.Join(w.runnerDir, "_diag", "Worker_*.log"))
	var all []byte
	for _, l := range logs {
		b, _ := os.ReadFile(l)
		all = append(all, b...)
	}
	if !strings.Contains(string(all), "single use") {
		t.Errorf("the refusal does not say why:\n%s", all)
	}
}

func TestListenerCrashMidJob(t *testing.T) {
	w := newWorld(t)
	// The listener dies mid-job (the step kills its parent, the listener).
	w.gh.QueueJob(releaseJob(801, fakegithub.Step{Name: "crash", Run: "kill -KILL $PPID; sleep 5"}))
	a, err := runner.New(w.cfg)
	if err != nil {
		t.Fatal(err)
	}
	out := a.Run(context.Background())
	if !strings.Contains(out.Reason, "killed") || !out.JobStarted || *w.powerOffs != 1 {
		t.Fatalf("outcome %+v, power-offs %d", out, *w.powerOffs)
	}
	// GitHub refuses to delete a runner whose job has not timed out yet;
	// the deregistration is retried until the job lease lapses, or left
	// to the gate's reconcile loop.
	deadline := time.Now().Add(20 * time.Second)
	for len(w.gh.Runners()) > 0 && time.Now().Before(deadline) {
		if _, err := w.gate.Reconcile(context.Background()); err != nil {
			t.Log(err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	if n := len(w.gh.Runners()); n != 0 {
		t.Fatalf("%d runners left after a crash (deregistered %v)", n, out.Deregistered)
	}
	if w.gh.JITMints() != 1 {
		t.Fatalf("%d runners minted: a crashed environment took another job", w.gh.JITMints())
	}
}

// TestAttestOnlyWhatTheJobCanOpen: the attest client opens the files as
// the job user and hands the agent descriptors; refusals are clear and
// nothing is written outside what the job itself could write. (The same
// attacks with the job as another uid than the agent: e2e/hostile_test.go.)
func TestAttestOnlyWhatTheJobCanOpen(t *testing.T) {
	w := newWorld(t)
	outside := filepath.Join(t.TempDir(), "outside.json")
	if err := os.WriteFile(outside, []byte("untouched"), 0o644); err != nil {
		t.Fatal(err)
	}
	attest := `"$ATTESTED_RUNNER_AGENT" attest --socket "$ATTESTED_RUNNER_SOCKET" `
	steps := []fakegithub.Step{
		{Run: "mkdir -p dist && echo x > dist/ok && mkfifo dist/fifo && ln -s " + outside + " dist/ok.json"},
		{Run: `! timeout 20 ` + attest + `--subject-path dist/fifo 2>err && grep -q "not a regular file" err`},
		{Run: `! ` + attest + `--subject-path /etc/hostname 2>err && grep -q "outside the job workspace" err`},
		{Run: attest + `--subject-path dist/ok --bundle-path dist/ok.json && test ! -L dist/ok.json && test -s dist/ok.json`},
	}
	w.gh.QueueJob(releaseJob(701, steps...))
	a, err := runner.New(w.cfg)
	if err != nil {
		t.Fatal(err)
	}
	out := a.Run(context.Background())
	res, _ := w.gh.JobResult(701)
	if res.Result != "succeeded" || out.Reason != "job completed" {
		t.Fatalf("job %+v outcome %+v", res, out)
	}
	if b, _ := os.ReadFile(outside); string(b) != "untouched" {
		t.Fatalf("the bundle was written through a symlink: %q", b)
	}
}

func TestRunnerDirMustBeRAM(t *testing.T) {
	w := newWorld(t)
	w.cfg.RunnerDir = t.TempDir()
	if _, err := runner.New(w.cfg); err == nil || !strings.Contains(err.Error(), "tmpfs") {
		t.Fatalf("runner dir on disk accepted: %v", err)
	}
	w.cfg.AllowRunnerDirOnDiskInsecure = true
	if _, err := runner.New(w.cfg); err != nil {
		t.Fatal(err)
	}
}

// TestSwappedAdmissionAnswerRefused: a party between agent and gate (a
// plain-http hop, a TLS terminator) rewrites the gate's answer. It can see
// the evidence, so it can seal a JIT configuration of its choosing to the
// attested HPKE key; it can keep the genuine certificate or sign its own.
// Each time the agent refuses the answer before any runner starts, and asks
// the gate to remove the runner the gate minted.
func TestSwappedAdmissionAnswerRefused(t *testing.T) {
	mitmKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for name, swap := range map[string]func(t *testing.T, req *gateapi.AdmitRequest, resp *gateapi.AdmitResponse){
		"sealed config swapped": func(t *testing.T, req *gateapi.AdmitRequest, resp *gateapi.AdmitResponse) {
			resp.SealedJITConfig = sealTo(t, req, resp.RunnerName, "attacker's runner configuration")
		},
		"re-signed by another key": func(t *testing.T, req *gateapi.AdmitRequest, resp *gateapi.AdmitResponse) {
			resp.SealedJITConfig = sealTo(t, req, resp.RunnerName, "attacker's runner configuration")
			sig, err := mitmKey.Sign(rand.Reader, gateapi.DeliveryDigest(req.Nonce, req.Evidence, resp), crypto.SHA256)
			if err != nil {
				t.Fatal(err)
			}
			resp.DeliverySignature = sig
		},
		"signature stripped": func(t *testing.T, req *gateapi.AdmitRequest, resp *gateapi.AdmitResponse) {
			resp.DeliverySignature = nil
		},
	} {
		t.Run(name, func(t *testing.T) {
			w := newWorld(t)
			w.cfg.Gate = &gateapi.Client{BaseURL: mitm(t, w.gateURL, swap)}
			a, err := runner.New(w.cfg)
			if err != nil {
				t.Fatal(err)
			}
			out := a.Run(context.Background())
			if out.Admitted || !errors.Is(out.Err, gateapi.ErrDeliveryForged) || !strings.HasPrefix(out.Reason, "admission answer refused") {
				t.Fatalf("outcome %+v", out)
			}
			if _, err := os.Stat(filepath.Join(w.runnerDir, "_diag")); err == nil {
				t.Fatal("a runner was started with the swapped answer")
			}
			if n := len(w.gh.Runners()); n != 0 || w.gh.JITMints() != 1 {
				t.Fatalf("%d runners left on GitHub after %d mints", n, w.gh.JITMints())
			}
		})
	}
}

func sealTo(t *testing.T, req *gateapi.AdmitRequest, runnerName, plaintext string) []byte {
	t.Helper()
	ev, err := attest.DecodeEvidence(req.Evidence)
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := attest.Seal(ev.HPKEPublicKey, gateapi.JITContext(runnerName), []byte(plaintext))
	if err != nil {
		t.Fatal(err)
	}
	return sealed
}

// mitm is an HTTP proxy to the gate that rewrites admission answers.
func mitm(t *testing.T, gateURL string, swap func(*testing.T, *gateapi.AdmitRequest, *gateapi.AdmitResponse)) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		resp, err := http.Post(gateURL+r.URL.Path, "application/json", bytes.NewReader(body))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		if r.URL.Path == gateapi.PathAdmit && resp.StatusCode == http.StatusOK {
			var req gateapi.AdmitRequest
			var ar gateapi.AdmitResponse
			if json.Unmarshal(body, &req) != nil || json.Unmarshal(out, &ar) != nil {
				t.Error("mitm: cannot decode the admission")
			}
			swap(t, &req, &ar)
			out, _ = json.Marshal(&ar)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(resp.StatusCode)
		w.Write(out)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// TestRunnerOutcomes: how the runner ended reaches the gate. A runner that
// still gets an update message (if GitHub ignored DisableUpdate) exits 4,
// one GitHub refuses as deprecated exits 7: both are "image out of date"
// with the version to rebuild with, signed into the deregistration,
// audited and counted. The agent's DisableUpdate keeps an honouring
// service from sending the update at all.
func TestRunnerOutcomes(t *testing.T) {
	for name, c := range map[string]struct {
		latest, min string
		ignore      bool
		outcome     string
		reason      string
		updates     int
	}{
		"update honoured":          {latest: "2.999.0", outcome: runner.OutcomeDone, reason: "job completed"},
		"update message ignored":   {latest: "2.999.0", ignore: true, outcome: runner.OutcomeImageOutOfDate, reason: "image out of date: rebuild with runner >= 2.999.0 (the image has 2.336.0", updates: 1},
		"version deprecated":       {min: "3.0.0", outcome: runner.OutcomeImageOutOfDate, reason: "GitHub refused runner 2.336.0 as deprecated, exit 7"},
		"current runner, normally": {outcome: runner.OutcomeDone, reason: "job completed"},
		"no job arrives":           {outcome: runner.OutcomeIdle, reason: "idle: no job within"},
	} {
		t.Run(name, func(t *testing.T) {
			w := newWorld(t)
			w.gh.SetRunnerVersions(c.latest, c.min, c.ignore)
			if c.outcome == runner.OutcomeIdle {
				w.cfg.IdleTTL = 2 * time.Second
			} else {
				w.gh.QueueJob(releaseJob(901, fakegithub.Step{Name: "hello", Run: "echo hello"}))
			}
			a, err := runner.New(w.cfg)
			if err != nil {
				t.Fatal(err)
			}
			out := a.Run(context.Background())
			if out.RunnerOutcome != c.outcome || !strings.Contains(out.Reason, c.reason) || !out.Deregistered {
				t.Fatalf("outcome %+v, want %s with %q", out, c.outcome, c.reason)
			}
			if n := w.gh.UpdateMessages(); n != c.updates {
				t.Errorf("%d update messages, want %d", n, c.updates)
			}
			var rec *jobgate.AuditRecord
			w.store.AuditLog(context.Background(), func(r jobgate.AuditRecord) error {
				if r.Action == "deregister" {
					rec = &r
				}
				return nil
			})
			if rec == nil || rec.Outcome != c.outcome || !strings.Contains(rec.Detail, c.reason) {
				t.Fatalf("deregistration audit %+v", rec)
			}
			resp, err := http.Get(w.gateURL + "/metrics")
			if err != nil {
				t.Fatal(err)
			}
			metrics, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if want := `jobgate_environment_outcomes_total{outcome="` + c.outcome + `"} 1`; !strings.Contains(string(metrics), want) {
				t.Errorf("metrics lack %s:\n%s", want, metrics)
			}
		})
	}
}
