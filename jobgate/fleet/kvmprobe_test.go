package fleet

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The probe firmware really runs to the debug-exit port: under TCG (which
// works everywhere) it gives QEMU's exit status 99.
func TestProbeFirmwareRunsUnderTCG(t *testing.T) {
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("qemu-system-x86_64 not installed")
	}
	if err := probe(context.Background(), "qemu-system-x86_64", t.TempDir(), "tcg"); err != nil {
		t.Fatal(err)
	}
}

func fakeQEMU(t *testing.T, script string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "qemu")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+script+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// A QEMU that exits 0 (the firmware never reached the exit port) or fails
// is no working KVM; neither is one that hangs (bounded by the probe's
// timeout, here shortened through the context).
func TestProbeRejects(t *testing.T) {
	for _, tc := range []struct{ name, script, want string }{
		{"exit 0", "exit 0", "without running the probe firmware"},
		{"error", "echo 'KVM internal error. Suberror: 1' >&2; exit 1", "KVM internal error"},
		{"exit 97", "exit 97", "exit status 97"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := probe(context.Background(), fakeQEMU(t, tc.script), t.TempDir(), "kvm")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
	t.Run("hang", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		err := probe(ctx, fakeQEMU(t, "sleep 30"), t.TempDir(), "kvm")
		if err == nil || !strings.Contains(err.Error(), "did not finish") {
			t.Fatalf("got %v", err)
		}
	})
}
