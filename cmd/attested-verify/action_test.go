package main

import (
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
}
