package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/attested-runner/attested-runner/e2e/fakegithub"
	"github.com/attested-runner/attested-runner/e2e/harness"
	"github.com/bradleyfalzon/ghinstallation/v2"
	"github.com/google/go-github/v62/github"
)

// builtListener is the fake listener built once for the package's tests.
var builtListener string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "fake-runner-listener-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	builtListener = filepath.Join(dir, "Runner.Listener")
	goTool, err := exec.LookPath("go")
	if err != nil {
		fmt.Fprintln(os.Stderr, "go tool not found:", err)
		os.Exit(1)
	}
	build := exec.Command(goTool, "build", "-o", builtListener, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building the fake listener:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// world is a fake GitHub, an App client for it, and hook scripts.
type world struct {
	srv     *fakegithub.Server
	gh      *github.Client
	hookOut string // where hooks and steps record what they saw
	hooks   string
}

const (
	appID          = 31337
	installationID = 4040
)

func newWorld(t *testing.T) *world {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 1024) // test-only size, for speed
	if err != nil {
		t.Fatal(err)
	}
	srv, err := fakegithub.Start(fakegithub.Options{
		AppID: appID, InstallationID: installationID, AppPublicKey: &key.PublicKey,
		Org: "acme", Repos: []string{"acme/widgets"},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	itr, err := ghinstallation.New(http.DefaultTransport, appID, installationID, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	itr.BaseURL = srv.URL()
	gh, err := github.NewClient(&http.Client{Transport: itr}).WithEnterpriseURLs(srv.URL(), srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	w := &world{srv: srv, gh: gh, hookOut: t.TempDir(), hooks: t.TempDir()}
	w.writeHook(t, "started.sh", `cp "$GITHUB_EVENT_PATH" "$HOOK_OUT/event.json"
env -0 > "$HOOK_OUT/started.env"
echo "started hook ran"`)
	w.writeHook(t, "completed.sh", `env -0 > "$HOOK_OUT/completed.env"
if test -f "$GITHUB_WORKSPACE/message.txt"; then echo after-steps > "$HOOK_OUT/completed.order"; fi`)
	w.writeHook(t, "failing.sh", `echo "refusing this job" >&2
exit 3`)
	return w
}

func (w *world) writeHook(t *testing.T, name, body string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(w.hooks, name), []byte(body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
}

func (w *world) mint(t *testing.T, name string) *github.JITRunnerConfig {
	t.Helper()
	cfg, _, err := w.gh.Actions.GenerateOrgJITConfig(context.Background(), "acme", &github.GenerateJITConfigRequest{
		Name: name, RunnerGroupID: 1, Labels: []string{"self-hosted", "attested"},
	})
	if err != nil {
		t.Fatalf("mint: %v", err)
	}
	return cfg
}

// runnerDir lays out <dir>/bin/Runner.Listener (a hard link to the built
// binary, so that the runner root is <dir>) and returns <dir>.
func runnerDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "actions-runner")
	bin := filepath.Join(dir, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(bin, "Runner.Listener")
	if err := os.Link(builtListener, dst); err != nil {
		b, err := os.ReadFile(builtListener)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		t.Fatal(err)
	}
	return real
}

type proc struct {
	cmd            *exec.Cmd
	stdout, stderr *harness.LogBuffer
	done           chan struct{}
}

// startListener starts <dir>/bin/Runner.Listener with args and env (PATH
// and HOME are added).
func startListener(t *testing.T, dir string, env []string, args ...string) *proc {
	t.Helper()
	if len(args) == 0 {
		args = []string{"run"}
	}
	cmd := exec.Command(filepath.Join(dir, "bin", "Runner.Listener"), args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}, env...)
	p := &proc{cmd: cmd, stdout: &harness.LogBuffer{}, stderr: &harness.LogBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.stdout, p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// wait returns the exit status, failing the test after timeout.
func (p *proc) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(timeout):
		p.cmd.Process.Kill()
		<-p.done
		t.Fatalf("listener still running after %v\nstdout:\n%s\nstderr:\n%s", timeout, p.stdout, p.stderr)
		return -1
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// readEnv parses an `env -0` dump.
func readEnv(t *testing.T, path string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	m := map[string]string{}
	for _, kv := range strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00") {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	return m
}

func testdataDir(t *testing.T) string {
	t.Helper()
	d, err := filepath.Abs("testdata")
	if err != nil {
		t.Fatal(err)
	}
	return d
}

const (
	checkoutSHA = "11bd71901bbe5b1630ceea73d27597364c9af683"
	setupGoSHA  = "d35c59abb061a4a6fb18e82ac0862c26744d6ab5"
	commitSHA   = "5b1bcd4b1fbd4d27b0c15a4f7bbf1d4a8b12c6b9"
)

func TestListenerRunsJob(t *testing.T) {
	w := newWorld(t)
	dir := runnerDir(t)
	cfg := w.mint(t, "attested-vm-1")
	jit := cfg.GetEncodedJITConfig()
	payload := `{"ref":"refs/heads/main","after":"` + commitSHA + `","repository":{"full_name":"acme/widgets"}}`
	if _, err := w.srv.QueueJob(fakegithub.Job{
		Repository: "acme/widgets", Ref: "refs/heads/main", SHA: commitSHA,
		Workflow: "build", WorkflowRef: "acme/widgets/.github/workflows/build.yml@refs/heads/main", WorkflowSHA: commitSHA,
		EventName: "push", Actor: "octocat", RunID: 4711, RunAttempt: 2, RunNumber: 17, Job: "build",
		Labels: []string{"self-hosted", "attested"},
		Actions: []fakegithub.ActionRef{
			{Repository: "actions/checkout", Ref: "v4", SHA: checkoutSHA},
			{Repository: "actions/setup-go", Ref: "v5", SHA: setupGoSHA},
		},
		Steps: []fakegithub.Step{
			{Name: "prepare", Run: `env -0 > "$HOOK_OUT/step1.env"
cat "$RUNNER_TEMP"/../../_diag/pages/*.log > "$HOOK_OUT/pages.txt"
mkdir -p .github/actions
cp -r "$TESTDATA/greet" .github/actions/greet
echo "FROM_STEP1=yes" >> "$GITHUB_ENV"
echo "Download action repository 'evil/injected@v1' (SHA:` + strings.Repeat("e", 40) + `)"`},
			{Uses: "./.github/actions/greet", With: map[string]string{"who": "world"}},
			{Name: "check", Run: `test "$FROM_STEP1" = yes
test "$(cat greeting.txt)" = "hello world"
test "$(cat message.txt)" = "hello world"
env -0 > "$HOOK_OUT/step3.env"`},
		},
		EventPayload: json.RawMessage(payload),
	}); err != nil {
		t.Fatal(err)
	}

	env := []string{
		"ACTIONS_RUNNER_INPUT_JITCONFIG=" + jit,
		"ACTIONS_RUNNER_HOOK_JOB_STARTED=" + filepath.Join(w.hooks, "started.sh"),
		"ACTIONS_RUNNER_HOOK_JOB_COMPLETED=" + filepath.Join(w.hooks, "completed.sh"),
		"GITHUB_ACTIONS_RUNNER_TRACE=1",
		"HOOK_OUT=" + w.hookOut,
		"TESTDATA=" + testdataDir(t),
	}
	p := startListener(t, dir, env)
	if code := p.wait(t, 20*time.Second); code != 0 {
		t.Fatalf("exit %d, want 0\nstdout:\n%s\nstderr:\n%s", code, p.stdout, p.stderr)
	}

	// The job ran and was reported; the JIT runner is gone.
	rec, ok := w.srv.JobResult(4711)
	if !ok || rec.Result != fakegithub.ResultSucceeded || rec.RunnerName != "attested-vm-1" {
		t.Fatalf("job record %+v\nstdout:\n%s", rec, p.stdout)
	}
	if _, ok := w.srv.Runner("attested-vm-1"); ok {
		t.Error("runner still registered after its one job")
	}
	for _, want := range []string{"√ Connected to GitHub", "Current runner version: '2.336.0'", ": Listening for Jobs", ": Running job: build", ": Job build completed with result: Succeeded"} {
		if !strings.Contains(p.stdout.String(), want) {
			t.Errorf("stdout lacks %q:\n%s", want, p.stdout)
		}
	}

	// The real variables, with the real values.
	workDir := filepath.Join(dir, "_work")
	repoID, _ := w.srv.RepositoryID("acme/widgets")
	want := map[string]string{
		"GITHUB_ACTIONS":          "true",
		"CI":                      "true",
		"GITHUB_REPOSITORY":       "acme/widgets",
		"GITHUB_REPOSITORY_ID":    strconv.FormatInt(repoID, 10),
		"GITHUB_REPOSITORY_OWNER": "acme",
		"GITHUB_REF":              "refs/heads/main",
		"GITHUB_REF_NAME":         "main",
		"GITHUB_REF_TYPE":         "branch",
		"GITHUB_SHA":              commitSHA,
		"GITHUB_WORKFLOW":         "build",
		"GITHUB_WORKFLOW_REF":     "acme/widgets/.github/workflows/build.yml@refs/heads/main",
		"GITHUB_WORKFLOW_SHA":     commitSHA,
		"GITHUB_EVENT_NAME":       "push",
		"GITHUB_EVENT_PATH":       filepath.Join(workDir, "_temp", "_github_workflow", "event.json"),
		"GITHUB_ACTOR":            "octocat",
		"GITHUB_RUN_ID":           "4711",
		"GITHUB_RUN_ATTEMPT":      "2",
		"GITHUB_RUN_NUMBER":       "17",
		"GITHUB_JOB":              "build",
		"GITHUB_SERVER_URL":       w.srv.URL(),
		"GITHUB_API_URL":          w.srv.URL() + "/api/v3",
		"GITHUB_WORKSPACE":        filepath.Join(workDir, "widgets", "widgets"),
		"RUNNER_NAME":             "attested-vm-1",
		"RUNNER_OS":               "Linux",
		"RUNNER_ARCH":             runnerArch(),
		"RUNNER_TEMP":             filepath.Join(workDir, "_temp"),
		"RUNNER_TOOL_CACHE":       filepath.Join(workDir, "_tool"),
		"RUNNER_WORKSPACE":        filepath.Join(workDir, "widgets"),
		"HOOK_OUT":                w.hookOut,
	}
	fileCmds := filepath.Join(workDir, "_temp", "_runner_file_commands")
	for _, name := range []string{"started.env", "step1.env", "composite.env", "step3.env", "completed.env"} {
		got := readEnv(t, filepath.Join(w.hookOut, name))
		for k, v := range want {
			if got[k] != v {
				t.Errorf("%s: %s=%q, want %q", name, k, got[k], v)
			}
		}
		for k, prefix := range map[string]string{"GITHUB_ENV": "set_env_", "GITHUB_PATH": "add_path_", "GITHUB_OUTPUT": "set_output_", "GITHUB_STEP_SUMMARY": "step_summary_"} {
			if !strings.HasPrefix(got[k], filepath.Join(fileCmds, prefix)) {
				t.Errorf("%s: %s=%q, want a file under %s", name, k, got[k], fileCmds)
			}
		}
		// No hook or step can see the JIT config.
		raw, _ := os.ReadFile(filepath.Join(w.hookOut, name))
		for k := range got {
			if strings.HasPrefix(strings.ToUpper(k), "ACTIONS_RUNNER_INPUT_") {
				t.Errorf("%s: %s is in the environment", name, k)
			}
		}
		if bytes.Contains(raw, []byte(jit[len(jit)/2:len(jit)/2+48])) {
			t.Errorf("%s: the JIT config leaked into the environment", name)
		}
	}
	if got := readEnv(t, filepath.Join(w.hookOut, "composite.env")); got["GITHUB_ACTION_PATH"] != filepath.Join(workDir, "widgets", "widgets", ".github", "actions", "greet") {
		t.Errorf("GITHUB_ACTION_PATH %q", got["GITHUB_ACTION_PATH"])
	}
	if got := readEnv(t, filepath.Join(w.hookOut, "step3.env")); got["FROM_STEP1"] != "yes" || got["GITHUB_ACTION"] != "__run_2" {
		t.Errorf("step 3: FROM_STEP1=%q GITHUB_ACTION=%q", got["FROM_STEP1"], got["GITHUB_ACTION"])
	}
	if b, _ := os.ReadFile(filepath.Join(w.hookOut, "event.json")); string(b) != payload {
		t.Errorf("GITHUB_EVENT_PATH content %q, want %q", b, payload)
	}
	if _, err := os.Stat(filepath.Join(w.hookOut, "completed.order")); err != nil {
		t.Error("the completed hook did not run after the steps")
	}

	// _diag logs in the real format, with the download lines (trace on).
	workerLog := readOnlyLog(t, dir, "Worker_*-utc.log")
	runnerLog := readOnlyLog(t, dir, "Runner_*-utc.log")
	linePat := regexp.MustCompile(`^\[\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}Z (INFO|VERB|WARN|ERR ) [A-Za-z]+\] `)
	for name, log := range map[string]string{"Worker": workerLog, "Runner": runnerLog} {
		for _, line := range strings.Split(strings.TrimSpace(log), "\n") {
			if !linePat.MatchString(line) && !strings.HasPrefix(line, "[") {
				continue // continuation of a multi-line message
			}
			if !linePat.MatchString(line) {
				t.Errorf("%s log line not in the runner's format: %q", name, line)
			}
		}
		for _, secret := range []string{jit[100:148], mustDecode(t, jit).Credentials.ClientID()} {
			if strings.Contains(log, secret) {
				t.Errorf("%s log contains a secret", name)
			}
		}
	}
	for _, a := range []struct{ repo, ref, sha string }{{"actions/checkout", "v4", checkoutSHA}, {"actions/setup-go", "v5", setupGoSHA}} {
		pat := regexp.MustCompile(`(?m)^\[\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}Z VERB JobServerQueue\] Enqueue web console line queue: Download action repository '` +
			regexp.QuoteMeta(a.repo+"@"+a.ref) + `' \(SHA:` + a.sha + `\)$`)
		if !pat.MatchString(workerLog) {
			t.Errorf("Worker log lacks the download line of %s@%s:\n%s", a.repo, a.ref, workerLog)
		}
	}
	// Job output shares that stream: a step can print a download line. The
	// genuine ones come before the started hook, the injected one after
	// (its text is also in the job message dump at the top, JSON-escaped
	// inside the step's script, never as a console line).
	hookAt := strings.Index(workerLog, "A job started hook has been configured")
	evilAt := strings.Index(workerLog, "Enqueue web console line queue: Download action repository 'evil/injected@v1'")
	if hookAt < 0 || evilAt < hookAt || strings.Index(workerLog, "Enqueue web console line queue: Download action repository 'actions/setup-go@v5'") > hookAt {
		t.Errorf("order in the Worker log: hook at %d, injected line at %d", hookAt, evilAt)
	}
	if !regexp.MustCompile(`(?m)^\[[^]]+ INFO Listener\] Version: 2\.336\.0$`).MatchString(runnerLog) {
		t.Errorf("Runner log lacks the version line:\n%s", runnerLog)
	}
	// While a step runs, its own page exists; "Set up job"'s, with the
	// download lines, is already gone (uploaded, then deleted).
	pages, _ := os.ReadFile(filepath.Join(w.hookOut, "pages.txt"))
	if !regexp.MustCompile(`(?m)^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{7}Z ##\[group\]Run env -0 > "\$HOOK_OUT/step1.env"$`).Match(pages) ||
		bytes.Contains(pages, []byte("Download action repository 'actions/checkout")) {
		t.Errorf("pages seen by step 1:\n%s", pages)
	}
	// Pages are gone once "uploaded".
	if pages, _ := filepath.Glob(filepath.Join(dir, "_diag", "pages", "*.log")); len(pages) != 0 {
		t.Errorf("step pages left behind: %v", pages)
	}
	// The real runner writes the decoded config into its root.
	if b, err := os.ReadFile(filepath.Join(dir, ".runner")); err != nil || !strings.Contains(string(b), `"agentName": "attested-vm-1"`) {
		t.Errorf(".runner: %s, %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(workDir, "_actions", "actions", "checkout", "v4.completed")); err != nil {
		t.Errorf("action watermark: %v", err)
	}

	// The config is spent: a second run fails like the real listener.
	p2 := startListener(t, runnerDir(t), env)
	if code := p2.wait(t, 10*time.Second); code != exitTerminatedError {
		t.Errorf("second run: exit %d, want 1\n%s", code, p2.stderr)
	}
	if !strings.Contains(p2.stderr.String(), "The runner registration has been deleted from the server") {
		t.Errorf("second run stderr:\n%s", p2.stderr)
	}
}

func mustDecode(t *testing.T, jit string) *fakegithub.JITConfig {
	t.Helper()
	cfg, err := fakegithub.DecodeJITConfig(jit)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func readOnlyLog(t *testing.T, dir, pattern string) string {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(dir, "_diag", pattern))
	if len(m) != 1 {
		t.Fatalf("%s: %d files, want 1", pattern, len(m))
	}
	if !regexp.MustCompile(`_\d{8}-\d{6}-utc\.log$`).MatchString(m[0]) {
		t.Errorf("log name %s", filepath.Base(m[0]))
	}
	b, err := os.ReadFile(m[0])
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestListenerFailingStartedHook(t *testing.T) {
	w := newWorld(t)
	dir := runnerDir(t)
	cfg := w.mint(t, "attested-vm-2")
	jit := cfg.GetEncodedJITConfig()
	// A flaky service: session creation fails once, polling three times.
	runnerPath := fmt.Sprintf("/_fake/runners/%d/", cfg.GetRunner().GetID())
	w.srv.FailNext(http.MethodPost, runnerPath+"session", 1, http.StatusServiceUnavailable, 0)
	w.srv.FailNext(http.MethodPost, runnerPath+"acquire", 3, http.StatusBadGateway, 0)
	w.srv.QueueJob(fakegithub.Job{
		Repository: "acme/widgets", Ref: "refs/tags/v1.0.0", SHA: commitSHA, WorkflowRef: "acme/widgets/.github/workflows/release.yml@refs/tags/v1.0.0",
		RunID: 99, Job: "release", Labels: []string{"attested"},
		Actions: []fakegithub.ActionRef{{Repository: "actions/checkout", Ref: "v4", SHA: checkoutSHA}},
		Steps:   []fakegithub.Step{{Run: `touch "$HOOK_OUT/step-ran"`}},
	})
	p := startListener(t, dir, []string{
		"ACTIONS_RUNNER_INPUT_JITCONFIG=" + jit,
		"ACTIONS_RUNNER_HOOK_JOB_STARTED=" + filepath.Join(w.hooks, "failing.sh"),
		"ACTIONS_RUNNER_HOOK_JOB_COMPLETED=" + filepath.Join(w.hooks, "completed.sh"),
		"HOOK_OUT=" + w.hookOut,
	})
	if code := p.wait(t, 20*time.Second); code != 0 {
		t.Fatalf("exit %d\n%s", code, p.stderr)
	}
	if rec, _ := w.srv.JobResult(99); rec.Result != fakegithub.ResultFailed {
		t.Errorf("result %q, want failed", rec.Result)
	}
	if _, err := os.Stat(filepath.Join(w.hookOut, "step-ran")); err == nil {
		t.Error("a step ran after the started hook failed")
	}
	got := readEnv(t, filepath.Join(w.hookOut, "completed.env"))
	if got["GITHUB_REF_TYPE"] != "tag" || got["GITHUB_REF_NAME"] != "v1.0.0" || got["GITHUB_WORKFLOW"] != ".github/workflows/release.yml" {
		t.Errorf("completed hook env: ref type %q, name %q, workflow %q", got["GITHUB_REF_TYPE"], got["GITHUB_REF_NAME"], got["GITHUB_WORKFLOW"])
	}
	if !strings.Contains(p.stdout.String(), "completed with result: Failed") || !strings.Contains(p.stdout.String(), "Runner reconnected.") {
		t.Errorf("stdout:\n%s", p.stdout)
	}
	if n := strings.Count(p.stderr.String(), "Runner connect error"); n != 2 {
		t.Errorf("%d connect errors printed, want 2 (one per outage)\n%s", n, p.stderr)
	}
	// Without GITHUB_ACTIONS_RUNNER_TRACE the Worker log, like the real
	// one at Info level, has no step output and no download lines.
	if log := readOnlyLog(t, dir, "Worker_*-utc.log"); strings.Contains(log, "Download action repository") || strings.Contains(log, "refusing this job") {
		t.Errorf("untraced Worker log has step output:\n%s", log)
	}
}

func TestListenerRejectsBadInvocation(t *testing.T) {
	dir := runnerDir(t)
	tests := []struct {
		name string
		args []string
		env  []string
		want string
	}{
		{"no command", []string{}, nil, "Usage: Runner.Listener run"},
		{"extra argument", []string{"run", "--jitconfig", "abc"}, nil, "Usage: Runner.Listener run"},
		{"other command", []string{"configure"}, nil, "Usage: Runner.Listener run"},
		{"not configured", []string{"run"}, nil, "Runner is not configured."},
		{"malformed JIT config", []string{"run"}, []string{"ACTIONS_RUNNER_INPUT_JITCONFIG=bm90IGEgY29uZmln"}, "invalid JIT config"},
		{"JIT config of garbage", []string{"run"}, []string{"ACTIONS_RUNNER_INPUT_JITCONFIG=%%%"}, "invalid JIT config"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(filepath.Join(dir, "bin", "Runner.Listener"), tc.args...)
			cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, tc.env...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			if cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != exitTerminatedError {
				t.Fatalf("exit %v (%v), want 1", cmd.ProcessState, err)
			}
			if !strings.Contains(stderr.String(), tc.want) {
				t.Errorf("stderr %q, want %q", stderr.String(), tc.want)
			}
		})
	}
	// Errors go to the Runner diag log too.
	logs, _ := filepath.Glob(filepath.Join(dir, "_diag", "Runner_*-utc.log"))
	var all strings.Builder
	for _, l := range logs {
		b, _ := os.ReadFile(l)
		all.Write(b)
	}
	if !regexp.MustCompile(`(?m)^\[[^]]+ ERR  Runner\] invalid JIT config`).MatchString(all.String()) {
		t.Errorf("no ERR line for the bad config in the Runner logs:\n%s", all.String())
	}
}

func TestListenerSessionConflict(t *testing.T) {
	w := newWorld(t)
	jit := w.mint(t, "attested-vm-3").GetEncodedJITConfig()
	// Someone else holds the runner's session.
	holder, err := fakegithub.NewRunnerClient(mustDecode(t, jit), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := holder.Connect(context.Background()); err != nil {
		t.Fatal(err)
	}
	p := startListener(t, runnerDir(t), []string{"ACTIONS_RUNNER_INPUT_JITCONFIG=" + jit})
	if code := p.wait(t, 10*time.Second); code != exitSessionConflict {
		t.Fatalf("exit %d, want 5\n%s", code, p.stderr)
	}
	if !strings.Contains(p.stderr.String(), "A session for this runner already exists.") {
		t.Errorf("stderr:\n%s", p.stderr)
	}
}

func TestListenerSignalWhileIdle(t *testing.T) {
	w := newWorld(t)
	jit := w.mint(t, "attested-vm-4").GetEncodedJITConfig()
	dir := runnerDir(t)
	p := startListener(t, dir, []string{"ACTIONS_RUNNER_INPUT_JITCONFIG=" + jit})
	waitFor(t, "the runner to come online", func() bool { r, _ := w.srv.Runner("attested-vm-4"); return r.Online })
	p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.wait(t, 10*time.Second); code != 0 {
		t.Fatalf("exit %d, want 0\n%s", code, p.stderr)
	}
	r, ok := w.srv.Runner("attested-vm-4")
	if !ok || r.Online {
		t.Errorf("after SIGTERM: %+v, registered %v; want registered and offline", r, ok)
	}
	// The runner never ran a job: its config can start a listener again
	// (the agent must delete the runner to end it).
	p2 := startListener(t, dir, []string{"ACTIONS_RUNNER_INPUT_JITCONFIG=" + jit})
	waitFor(t, "the runner to come back", func() bool { r, _ := w.srv.Runner("attested-vm-4"); return r.Online })
	if _, err := w.gh.Actions.RemoveOrganizationRunner(context.Background(), "acme", r.ID); err != nil {
		t.Fatal(err)
	}
	// Deleted while polling: Runner.cs cleans up and exits 0.
	if code := p2.wait(t, 10*time.Second); code != exitSuccess {
		t.Errorf("after the runner was deleted: exit %d, want 0\n%s", code, p2.stderr)
	}
	if !strings.Contains(p2.stderr.String(), "The runner no longer exists on the server.") {
		t.Errorf("stderr:\n%s", p2.stderr)
	}
}

func TestListenerSignalMidJob(t *testing.T) {
	w := newWorld(t)
	jit := w.mint(t, "attested-vm-5").GetEncodedJITConfig()
	w.srv.QueueJob(fakegithub.Job{
		Repository: "acme/widgets", Ref: "refs/heads/main", SHA: commitSHA, WorkflowRef: "acme/widgets/.github/workflows/x.yml@refs/heads/main",
		RunID: 5, Job: "slow", Labels: []string{"attested"},
		Steps: []fakegithub.Step{{Run: `touch "$HOOK_OUT/step-started"; sleep 30; touch "$HOOK_OUT/step-finished"`}},
	})
	p := startListener(t, runnerDir(t), []string{
		"ACTIONS_RUNNER_INPUT_JITCONFIG=" + jit,
		"ACTIONS_RUNNER_HOOK_JOB_COMPLETED=" + filepath.Join(w.hooks, "completed.sh"),
		"HOOK_OUT=" + w.hookOut,
	})
	waitFor(t, "the step to start", func() bool { _, err := os.Stat(filepath.Join(w.hookOut, "step-started")); return err == nil })
	start := time.Now()
	p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.wait(t, 10*time.Second); code != 0 {
		t.Fatalf("exit %d, want 0\n%s", code, p.stderr)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("shutdown took %v", d)
	}
	if rec, _ := w.srv.JobResult(5); rec.Result != fakegithub.ResultCancelled {
		t.Errorf("result %q, want cancelled", rec.Result)
	}
	for _, f := range []string{"step-finished", "completed.env"} {
		if _, err := os.Stat(filepath.Join(w.hookOut, f)); err == nil {
			t.Errorf("%s exists: the step finished or the completed hook ran after a shutdown", f)
		}
	}
}
