package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/attested-runner/attested-runner/attest"
)

// imageDir writes a build.sh-shaped directory whose "kernel" is systemd's
// EFI stub: a real PE image, enough for the loader boot path.
func imageDir(t *testing.T) (dir, agent string) {
	t.Helper()
	stub, err := os.ReadFile(filepath.Join("..", "..", "..", "internal", "imageref", "testdata", "linuxx64.efi.stub"))
	if err != nil {
		t.Fatal(err)
	}
	dir = t.TempDir()
	for name, b := range map[string][]byte{
		"vmlinuz":    stub,
		"initrd.img": []byte("initrd"),
		"cmdline":    []byte("console=ttyS0 quiet"),
		"agent":      []byte("agent binary"),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir, filepath.Join(dir, "agent")
}

func TestRefvaluesWritesValidDocument(t *testing.T) {
	dir, agent := imageDir(t)
	out := filepath.Join(t.TempDir(), "rv.json")
	var stdout, stderr bytes.Buffer
	code := mainArgs(context.Background(), []string{"--image", dir, "--agent", agent, "--boot", "loader", "--id", "img", "-o", out}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	rv, err := attest.LoadReferenceValues(out)
	if err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256([]byte("agent binary"))
	if len(rv.AgentDigests) != 1 || !bytes.Equal(rv.AgentDigests[0], want[:]) {
		t.Errorf("agent digests %x", rv.AgentDigests)
	}
	im := rv.Images[0]
	if im.ID != "img" || len(im.Events) != 3 || len(im.PCRs) != 1 {
		t.Errorf("image %+v", im)
	}
	if !strings.Contains(stderr.String(), "3 events") {
		t.Errorf("summary %q", stderr.String())
	}
}

func TestRefvaluesErrors(t *testing.T) {
	dir, agent := imageDir(t)
	tests := []struct {
		name string
		args []string
		code int
	}{
		{"no agent", []string{"--image", dir}, 2},
		{"no image", []string{"--agent", agent}, 2},
		{"bad boot", []string{"--image", dir, "--agent", agent, "--boot", "grub"}, 2},
		{"extra argument", []string{"--image", dir, "--agent", agent, "x"}, 2},
		// The stub has no x86 boot header: QEMU could not boot it directly.
		{"qemu-direct needs a bzImage", []string{"--image", dir, "--agent", agent}, 1},
		{"missing agent file", []string{"--image", dir, "--agent", filepath.Join(dir, "nope"), "--boot", "loader"}, 1},
		{"missing image", []string{"--image", t.TempDir(), "--agent", agent, "--boot", "loader"}, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := mainArgs(context.Background(), tc.args, &stdout, &stderr); code != tc.code {
				t.Errorf("exit %d, want %d (%s)", code, tc.code, stderr.String())
			}
			if stdout.Len() != 0 {
				t.Errorf("wrote to stdout on failure: %s", stdout.String())
			}
		})
	}
}
