package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/attested-runner/attested-runner/jobgate"
	"github.com/attested-runner/attested-runner/provenance"
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

// TestRefvaluesSNPMeasurements: --snp-measurement and --tdx-mrtd land on
// the image, in a document the gate parses.
func TestRefvaluesSNPMeasurements(t *testing.T) {
	dir, agent := imageDir(t)
	out := filepath.Join(t.TempDir(), "rv.json")
	m1, m2 := strings.Repeat("a5", 48), strings.Repeat("5a", 48)
	var stdout, stderr bytes.Buffer
	if code := mainArgs(context.Background(), []string{"--image", dir, "--agent", agent, "--boot", "loader", "--snp-measurement", m1, "--snp-measurement", m2, "--tdx-mrtd", m2, "-o", out}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	rv, err := attest.LoadReferenceValues(out)
	if err != nil {
		t.Fatal(err)
	}
	if got := rv.Images[0].SNPMeasurements; len(got) != 2 || got[0].String() != m1 || got[1].String() != m2 {
		t.Errorf("SEV-SNP measurements %v", got)
	}
	if got := rv.Images[0].TDXMRTDs; len(got) != 1 || got[0].String() != m2 {
		t.Errorf("TDX MRTDs %v", got)
	}
	if !strings.Contains(stderr.String(), "2 SEV-SNP measurements, 1 TDX MRTDs") {
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
		{"sign key without output", []string{"--image", dir, "--agent", agent, "--boot", "loader", "--sign-key", "k.pem", "--builder-id", "b"}, 2},
		{"sign key without builder", []string{"--image", dir, "--agent", agent, "--boot", "loader", "--sign-key", "k.pem", "--provenance", "p.json"}, 2},
		{"SEV-SNP measurement not hex", []string{"--image", dir, "--agent", agent, "--boot", "loader", "--snp-measurement", "zz"}, 2},
		{"TDX MRTD of 32 bytes", []string{"--image", dir, "--agent", agent, "--boot", "loader", "--tdx-mrtd", strings.Repeat("ab", 32)}, 2},
		{"SEV-SNP measurement of 32 bytes", []string{"--image", dir, "--agent", agent, "--boot", "loader", "--snp-measurement", strings.Repeat("ab", 32)}, 2},
		{"unreadable sign key", []string{"--image", dir, "--agent", agent, "--boot", "loader", "--sign-key", filepath.Join(dir, "nope.pem"), "--provenance", filepath.Join(t.TempDir(), "p.json"), "--builder-id", "b"}, 1},
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

func TestRefvaluesSignsImageProvenance(t *testing.T) {
	dir, agent := imageDir(t)
	manifest := `{"kernel":{"package":"linux-image-6.1.0-57-amd64","version":"6.1.192-3","debSHA256":"` + strings.Repeat("ab", 32) + `"},
	  "agent":{"packages":[{"package":"bash","version":"5.2.15-2+b7","debSHA256":"` + strings.Repeat("cd", 32) + `"}]}}`
	if err := os.WriteFile(filepath.Join(dir, "manifest.json"), []byte(manifest), 0o644); err != nil {
		t.Fatal(err)
	}
	keyPath := filepath.Join(t.TempDir(), "image-key.pem")
	pubPEM, err := jobgate.GenerateSigningKey(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := provenance.ParseTrustedRoots(pubPEM)
	if err != nil {
		t.Fatal(err)
	}
	out, prov := filepath.Join(t.TempDir(), "rv.json"), filepath.Join(t.TempDir(), "image.sigstore.json")
	var stdout, stderr bytes.Buffer
	code := mainArgs(context.Background(), []string{"--image", dir, "--agent", agent, "--boot", "loader", "--id", "img", "-o", out,
		"--sign-key", keyPath, "--provenance", prov, "--builder-id", "https://example.com/image-builder"}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	raw, err := os.ReadFile(prov)
	if err != nil {
		t.Fatal(err)
	}
	v, err := provenance.VerifyImage(raw, pub)
	if err != nil {
		t.Fatal(err)
	}
	rv, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(v.ReferenceValuesJSON, rv) || v.BuilderID != "https://example.com/image-builder" {
		t.Fatalf("provenance reference values / builder differ from what was written (%s)", v.BuilderID)
	}
	for _, f := range []string{"vmlinuz", "initrd.img", "cmdline", "agent"} {
		d, err := provenance.DigestFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := v.CheckFile(f, d); err != nil {
			t.Error(err)
		}
	}
	var bundle struct {
		DSSE struct {
			Payload []byte `json:"payload"`
		} `json:"dsseEnvelope"`
	}
	if err := json.Unmarshal(raw, &bundle); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(bundle.DSSE.Payload), `"uri":"pkg:deb/debian/bash@5.2.15-2+b7?arch=amd64"`) {
		t.Error("the manifest's bash package is not a dependency")
	}

	// A manifest whose package has no digest is refused, not signed.
	if err := os.WriteFile(filepath.Join(dir, "manifest.json"), []byte(`{"kernel":{"package":"k","version":"1"}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	stderr.Reset()
	if code := mainArgs(context.Background(), []string{"--image", dir, "--agent", agent, "--boot", "loader", "-o", out,
		"--sign-key", keyPath, "--provenance", prov, "--builder-id", "b"}, &stdout, &stderr); code != 1 || !strings.Contains(stderr.String(), "SHA-256") {
		t.Fatalf("manifest without digests: exit %d: %s", code, stderr.String())
	}
}
