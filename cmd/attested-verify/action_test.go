package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestRootAction runs the consumer action's verify script the way the
// composite action does (INPUT_* variables, GITHUB_* files). The binary is
// wrapped to add --insecure-allow-software-tpm, because the fixtures come
// from a software TPM; the action itself has no such knob. The wrapper
// also drops the action's --min-level: the insecure flag lowers only the
// default minimum, never a given one.
func TestRootAction(t *testing.T) {
	f := newFixture(t)
	_, self, _, _ := runtime.Caller(0)
	repo := filepath.Join(filepath.Dir(self), "..", "..")
	wrapper := filepath.Join(f.dir, "attested-verify-insecure")
	must(t, os.WriteFile(wrapper, []byte(`#!/bin/sh
skip=
for a do
  shift
  if [ -n "$skip" ]; then skip=; continue; fi
  if [ "$a" = --min-level ]; then skip=1; continue; fi
  set -- "$@" "$a"
done
exec `+binary+` "$@" --insecure-allow-software-tpm
`), 0o755))

	run := func(bin string, extra ...string) (string, string, string, error) {
		summary := filepath.Join(f.dir, "summary.md")
		output := filepath.Join(f.dir, "output")
		os.Remove(summary)
		os.Remove(output)
		cmd := exec.Command(filepath.Join(repo, "scripts", "action-verify.sh"))
		cmd.Dir = f.dir
		cmd.Env = append(os.Environ(),
			"ATTESTED_VERIFY="+bin,
			"INPUT_SUBJECT_PATH=*.tar.gz\n",
			"INPUT_GATE_KEY="+f.root,
			"INPUT_REPOSITORY=octo-org/app",
			"INPUT_REF=refs/heads/main",
			"INPUT_MIN_LEVEL=2",
			"INPUT_VSA_PATH=out.vsa.json",
			"GITHUB_STEP_SUMMARY="+summary,
			"GITHUB_OUTPUT="+output,
		)
		cmd.Env = append(cmd.Env, extra...)
		out, err := cmd.CombinedOutput()
		s, _ := os.ReadFile(summary)
		o, _ := os.ReadFile(output)
		return string(out), string(s), string(o), err
	}

	out, summary, output, err := run(wrapper)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if !strings.Contains(summary, "| `app.tar.gz` | ✓ verified | octo-org/app@") || output != "vsa-path=out.vsa.json\n" {
		t.Errorf("summary:\n%s\noutput: %q", summary, output)
	}
	if _, err := os.Stat(filepath.Join(f.dir, "out.vsa.json")); err != nil {
		t.Errorf("no VSA: %v", err)
	}

	// Without the wrapper the software-TPM build is refused: the step fails
	// and the summary says why.
	out, summary, output, err = run(binary)
	if err == nil || !strings.Contains(summary, "✗") || output != "" {
		t.Fatalf("software TPM accepted by the action: %v\n%s\n%s", err, out, summary)
	}

	// A pattern that matches nothing is an error, not an empty success.
	out, _, _, err = run(wrapper, "INPUT_SUBJECT_PATH=missing/*.zip")
	if err == nil || !strings.Contains(out, "matches no file") {
		t.Fatalf("empty glob: %v\n%s", err, out)
	}

	// ** is recursive and matches no directory too: dist/**/*.tar.gz
	// finds dist/app.tar.gz and dist/sub/deeper/app.tar.gz.
	for _, d := range []string{"dist", "dist/sub/deeper"} {
		must(t, os.MkdirAll(filepath.Join(f.dir, d), 0o755))
		for _, n := range []string{"app.tar.gz", "app.tar.gz.sigstore.json"} {
			must(t, os.WriteFile(filepath.Join(f.dir, d, n), mustRead(t, filepath.Join(f.dir, n)), 0o644))
		}
	}
	out, summary, _, err = run(wrapper, "INPUT_SUBJECT_PATH=dist/**/*.tar.gz")
	if err != nil || !strings.Contains(summary, "| `dist/app.tar.gz` | ✓ verified") || !strings.Contains(summary, "| `dist/sub/deeper/app.tar.gz` | ✓ verified") {
		t.Fatalf("dist/**/*.tar.gz: %v\n%s\n%s", err, out, summary)
	}

	// No repository and no owner: refused, not defaulted.
	out, _, _, err = run(wrapper, "INPUT_REPOSITORY=")
	if err == nil || !strings.Contains(out, "repository (owner/name) or owner is required") {
		t.Fatalf("no repository: %v\n%s", err, out)
	}
	// owner instead of repository.
	if out, _, _, err = run(wrapper, "INPUT_REPOSITORY=", "INPUT_OWNER=octo-org"); err != nil {
		t.Fatalf("owner: %v\n%s", err, out)
	}
	// run-id is checked.
	if out, _, _, err = run(wrapper, "INPUT_RUN_ID=9001"); err != nil {
		t.Fatalf("run-id 9001: %v\n%s", err, out)
	}
	if out, _, _, err = run(wrapper, "INPUT_RUN_ID=9002"); err == nil || !strings.Contains(out, "✗ run") {
		t.Fatalf("run-id 9002: %v\n%s", err, out)
	}
	// format json: the report on stdout and in report-path.
	out, _, output, err = run(wrapper, "INPUT_FORMAT=json", "RUNNER_TEMP="+f.dir)
	report := filepath.Join(f.dir, "attested-verify.report.json")
	if err != nil || !strings.Contains(output, "report-path="+report+"\n") || !strings.Contains(out, `"verificationResult"`) {
		t.Fatalf("format json: %v\n%s\n%s", err, out, output)
	}
	var rep []struct{ Verified bool }
	must(t, json.Unmarshal(mustRead(t, report), &rep))
	if len(rep) != 1 || !rep[0].Verified {
		t.Errorf("report %+v", rep)
	}
	// Bad enumerations and a missing gate key are refused by the script.
	for _, tc := range []struct{ env, want string }{
		{"INPUT_FORMAT=xml", "format must be text or json"},
		{"INPUT_EVIDENCE=yes", "evidence must be true or false"},
		{"INPUT_FROM_GITHUB=1", "from-github must be true or false"},
		{"INPUT_GATE_KEY=", "gate-key is required"},
	} {
		if out, _, _, err := run(wrapper, tc.env); err == nil || !strings.Contains(out, tc.want) {
			t.Errorf("%s: %v\n%s", tc.env, err, out)
		}
	}
	// evidence: true needs no gate key, and passes evidence mode on.
	if out, _, _, err := run(wrapper, "INPUT_GATE_KEY=", "INPUT_EVIDENCE=true"); err == nil || !strings.Contains(out, "--evidence needs --reference-values") {
		t.Errorf("evidence without reference values: %v\n%s", err, out)
	}
}

// TestActionVerifierInstall: the action's install script uses the release
// binary its own tree pins by SHA-256 when there is one, refuses one with
// another digest, and builds from source when nothing is pinned.
func TestActionVerifierInstall(t *testing.T) {
	_, self, _, _ := runtime.Caller(0)
	repo := filepath.Join(filepath.Dir(self), "..", "..")
	script := filepath.Join(repo, "scripts", "action-build-verifier.sh")
	fake := []byte("#!/bin/sh\necho attested-verify fake-release\n")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/octo/attested-runner/releases/download/v9.9.9/"+asset() {
			http.NotFound(w, r)
			return
		}
		w.Write(fake)
	}))
	defer srv.Close()
	actionDir := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(actionDir, "action"), 0o755))
	must(t, os.WriteFile(filepath.Join(actionDir, "go.sum"), mustRead(t, filepath.Join(repo, "go.sum")), 0o644))
	sums := filepath.Join(actionDir, "action", "verifier.sha256")
	run := func(step string, env ...string) (string, string, error) {
		dir := t.TempDir()
		output := filepath.Join(dir, "output")
		cmd := exec.Command(script, step)
		cmd.Env = append(os.Environ(), "GITHUB_ACTION_PATH="+actionDir, "ATTESTED_VERIFY_OUT="+filepath.Join(dir, "attested-verify"),
			"GITHUB_OUTPUT="+output, "RUNNER_TEMP="+dir, "GITHUB_SERVER_URL="+srv.URL,
			"GITHUB_ACTION_REPOSITORY=octo/attested-runner", "GITHUB_ACTION_REF=v9.9.9", "PATH=/usr/bin:/bin")
		cmd.Env = append(cmd.Env, env...)
		out, err := cmd.CombinedOutput()
		o, _ := os.ReadFile(output)
		return string(out), string(o), err
	}
	good := hexOf(sha256Of(fake))
	must(t, os.WriteFile(sums, []byte(good+"  "+asset()+"\n"+strings.Repeat("0", 64)+"  attested-verify-plan9-mips\n"), 0o644))
	out, output, err := run("plan")
	if err != nil || !strings.Contains(output, "mode=prebuilt\n") || !strings.Contains(output, "cache-key=attested-verify-") {
		t.Fatalf("plan with a pinned binary: %v\n%s\n%s", err, out, output)
	}
	out, _, err = run("install", "ATTESTED_VERIFY_MODE=prebuilt")
	if err != nil || !strings.Contains(out, "downloaded, SHA-256 "+good+" as pinned") || !strings.Contains(out, "fake-release") {
		t.Fatalf("install pinned: %v\n%s", err, out)
	}

	// Another digest pinned: refused, not run, not rebuilt.
	must(t, os.WriteFile(sums, []byte(strings.Repeat("ab", 32)+"  "+asset()+"\n"), 0o644))
	out, _, err = run("install", "ATTESTED_VERIFY_MODE=prebuilt")
	if err == nil || !strings.Contains(out, "refusing it") || strings.Contains(out, "fake-release") || strings.Contains(out, "Building") {
		t.Fatalf("install with another digest: %v\n%s", err, out)
	}

	// Nothing pinned for this platform: build (here without Go on PATH,
	// so it says what to add).
	must(t, os.WriteFile(sums, []byte(good+"  attested-verify-plan9-mips\n"), 0o644))
	out, output, err = run("plan")
	if err != nil || !strings.Contains(output, "mode=build\n") {
		t.Fatalf("plan without a pinned binary: %v\n%s\n%s", err, out, output)
	}
	out, _, err = run("install", "ATTESTED_VERIFY_MODE=build")
	if err == nil || !strings.Contains(out, "add actions/setup-go") {
		t.Fatalf("install without Go: %v\n%s", err, out)
	}
}

func asset() string { return "attested-verify-" + runtime.GOOS + "-" + runtime.GOARCH }
