package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/attested-runner/attested-runner/attest/attesttest"
)

// TestDemoScript runs scripts/demo.sh as `make demo` does after its build
// (the README's first command): it builds what it needs into bin/, runs
// the whole narrated flow, and must end with the artifact verified, the
// tampered copy refused and the audit log checked.
func TestDemoScript(t *testing.T) {
	attesttest.RequireSWTPM(t)
	// The runner user must reach the demo's directory: not t.TempDir
	// (0700), a world-reachable one.
	parent, err := os.MkdirTemp("", "e2e-demo-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(parent) })
	if err := os.Chmod(parent, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(repoRoot, "scripts", "demo.sh"), "--out", filepath.Join(parent, "demo"))
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(), "MAKELEVEL=")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("scripts/demo.sh: %v\n%s", err, out)
	}
	for _, want := range []string{"[10/10]", "VERIFIED sha256:", "NOT VERIFIED: artifact digest is not a subject", "audit log OK"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the demo's output lacks %q:\n%s", want, out)
		}
	}
}
