package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
)

func runArgs(args ...string) (string, int) {
	var out bytes.Buffer
	code := run(context.Background(), args, &out, &out)
	return out.String(), code
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{{}, {"frobnicate"}, {"run"}, {"hook"}, {"hook", "job-finished"}, {"attest"}, {"run", "--gate", "x", "--runner-user", "a:b"}} {
		if out, code := runArgs(args...); code != 2 {
			t.Errorf("%q: exit %d, want 2: %s", args, code, out)
		}
	}
	for _, args := range [][]string{{"--help"}, {"run", "--help"}, {"attest", "--help"}, {"--version"}} {
		if out, code := runArgs(args...); code != 0 || len(out) < 10 {
			t.Errorf("%q: exit %d: %s", args, code, out)
		}
	}
}

// TestNotOnAnAttestedRunner: the job-side client says clearly where it is.
func TestNotOnAnAttestedRunner(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "none.sock")
	out, code := runArgs("attest", "--socket", sock, "--subject-path", "main.go")
	if code != 1 || !strings.Contains(out, "attested runner") {
		t.Fatalf("exit %d: %s", code, out)
	}
	out, code = runArgs("attest", "--socket", sock, "--subject-path", "no-such-file-*")
	if code != 1 || !strings.Contains(out, "matches no file") {
		t.Fatalf("exit %d: %s", code, out)
	}
	out, code = runArgs("hook", "job-started", "--socket", sock)
	if code != 1 || !strings.Contains(out, "refused this job") {
		t.Fatalf("exit %d: %s", code, out)
	}
}
