package fleet

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"crypto/sha256"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// runGCEImage runs scripts/image/gce-image.sh on uki into a new directory.
func runGCEImage(t *testing.T, uki string, args ...string) (out, stdout string) {
	t.Helper()
	out = t.TempDir()
	cmd := exec.Command("bash", append([]string{"../../scripts/image/gce-image.sh", uki, "--out", out}, args...)...)
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	if err := cmd.Run(); err != nil {
		t.Fatalf("gce-image.sh: %v\n%s", err, se.String())
	}
	return out, so.String()
}

// The script's disk holds the UKI, byte for byte, as the ESP's
// \EFI\BOOT\BOOTX64.EFI, and the image command it prints carries the
// digest the gce provider checks.
func TestGCEImageScript(t *testing.T) {
	for _, tool := range []string{"bash", "sfdisk", "mkfs.vfat", "mmd", "mcopy", "tar", "sha256sum"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (apt-get install fdisk dosfstools mtools)", tool)
		}
	}
	uki := make([]byte, 3<<20+17)
	rand.Read(uki)
	ukiPath := filepath.Join(t.TempDir(), "uki.efi")
	if err := os.WriteFile(ukiPath, uki, 0o600); err != nil {
		t.Fatal(err)
	}
	out, stdout := runGCEImage(t, ukiPath, "--bucket", "gs://runner-images/ci", "--name", "runner-test")

	// The UKI on the ESP (at 1 MiB), as mcopy reads it back.
	got := filepath.Join(t.TempDir(), "BOOTX64.EFI")
	if b, err := exec.Command("mcopy", "-n", "-i", filepath.Join(out, "disk.raw")+"@@1M", "::/EFI/BOOT/BOOTX64.EFI", got).CombinedOutput(); err != nil {
		t.Fatalf("mcopy: %v: %s", err, b)
	}
	back, err := os.ReadFile(got)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(back, uki) {
		t.Fatalf("BOOTX64.EFI on the ESP (%d bytes) differs from the UKI (%d bytes)", len(back), len(uki))
	}

	// One GPT partition, the ESP, from sector 2048.
	dump, err := exec.Command("sfdisk", "--dump", filepath.Join(out, "disk.raw")).Output()
	if err != nil {
		t.Fatalf("sfdisk --dump: %v", err)
	}
	if !strings.Contains(string(dump), "label: gpt") ||
		!regexp.MustCompile(`disk\.raw1 : start= *2048, size= *\d+, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B`).Match(dump) ||
		strings.Contains(string(dump), "disk.raw2") {
		t.Errorf("partition table:\n%s", dump)
	}

	// The tarball GCE imports: disk.raw, old GNU format, whole GiB.
	f, err := os.Open(filepath.Join(out, "disk.raw.tar.gz"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	h, err := tr.Next()
	if err != nil {
		t.Fatal(err)
	}
	if h.Name != "disk.raw" || h.Format != tar.FormatGNU || h.Size != 1<<30 {
		t.Errorf("tarball member %q, format %v, %d bytes; want disk.raw, GNU, 1 GiB", h.Name, h.Format, h.Size)
	}
	if _, err := tr.Next(); err != io.EOF {
		t.Errorf("tarball holds more than disk.raw: %v", err)
	}

	// The printed commands: upload, then an image whose description the
	// provider accepts for exactly this UKI.
	sum := sha256.Sum256(uki)
	for _, want := range []string{
		"gcloud storage cp " + filepath.Join(out, "disk.raw.tar.gz") + " gs://runner-images/ci/runner-test.tar.gz\n",
		"gcloud compute images create runner-test --source-uri gs://runner-images/ci/runner-test.tar.gz ",
		"--guest-os-features=UEFI_COMPATIBLE,GVNIC,TDX_CAPABLE,SEV_SNP_CAPABLE",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, stdout)
		}
	}
	m := regexp.MustCompile(`--description "([^"]*)"`).FindStringSubmatch(stdout)
	if m == nil {
		t.Fatalf("no --description in:\n%s", stdout)
	}
	if d, err := imageUKIDigest(m[1]); err != nil || d != ukiSHA256(uki) {
		t.Errorf("description %q: digest %q, %v; want %x", m[1], d, err, sum)
	}

	if testing.Short() {
		return
	}
	// Reproducible: the same UKI gives the same tarball (so the same disk).
	out2, _ := runGCEImage(t, ukiPath, "--bucket", "gs://runner-images/ci", "--name", "runner-test")
	if a, b := fileSHA256(t, filepath.Join(out, "disk.raw.tar.gz")), fileSHA256(t, filepath.Join(out2, "disk.raw.tar.gz")); a != b {
		t.Errorf("two runs gave different tarballs: %x, %x", a, b)
	}
}

func fileSHA256(t *testing.T, path string) [32]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return [32]byte(h.Sum(nil))
}

func TestGCEImageScriptRefuses(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("no bash")
	}
	empty := filepath.Join(t.TempDir(), "uki.efi")
	os.WriteFile(empty, nil, 0o600)
	for _, args := range [][]string{
		{},
		{empty},
		{empty + ".missing"},
		{"--bogus"},
	} {
		cmd := exec.Command("bash", append([]string{"../../scripts/image/gce-image.sh"}, args...)...)
		if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "gce-image.sh:") {
			t.Errorf("gce-image.sh %q: %v\n%s", args, err, out)
		}
	}
	if out, err := exec.Command("bash", "../../scripts/image/gce-image.sh", "--help").Output(); err != nil || !strings.Contains(string(out), "uki-sha256:HEX") {
		t.Errorf("--help: %v\n%s", err, out)
	}
}
