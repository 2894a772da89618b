package imageref_test

import (
	"bytes"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/attested-runner/attested-runner/internal/imageref"
	"github.com/attested-runner/attested-runner/internal/qemutest"
)

// e2eEnv gates the tests that build an image from Debian packages and boot
// it under QEMU + OVMF + swtpm (about 20 s per boot under TCG).
const e2eEnv = "ATTESTED_E2E_QEMU"

func requireQEMU(t *testing.T) {
	t.Helper()
	if os.Getenv(e2eEnv) != "1" {
		t.Skipf("set %s=1 to build a runner image and boot it under QEMU/OVMF/swtpm (needs qemu-system-x86, ovmf, swtpm, cpio, apt access or a cached kernel .deb)", e2eEnv)
	}
	for _, tool := range []string{"qemu-system-x86_64", "swtpm", "cpio", "dpkg-deb"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s=1 but %s is missing: run scripts/prereqs.sh --qemu", e2eEnv, tool)
		}
	}
}

func script(name string) string { return filepath.Join("..", "..", "scripts", "image", name) }

func runScript(t *testing.T, args ...string) {
	t.Helper()
	cmd := exec.Command(args[0], args[1:]...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out.String())
	}
}

// boot runs boot.sh and parses the serial console the test init wrote.
func boot(t *testing.T, imageDir string, extra ...string) *imageref.BootReport {
	t.Helper()
	work := t.TempDir()
	defer qemutest.LockBoots(t)()
	runScript(t, append([]string{script("boot.sh"), imageDir, "--workdir", work, "--timeout", "110"}, extra...)...)
	serial, err := os.ReadFile(filepath.Join(work, "serial.log"))
	if err != nil {
		t.Fatal(err)
	}
	r, err := imageref.ParseSerialLog(serial)
	if err != nil {
		t.Fatal(err)
	}
	secs, _ := os.ReadFile(filepath.Join(work, "boot-seconds"))
	t.Logf("boot %v: %s s wall (QEMU start to power-off), kernel uptime at init %.2f s", extra, strings.TrimSpace(string(secs)), r.Uptime)
	return r
}

// copyImage copies a build.sh output directory so one file can be changed.
func copyImage(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	for _, f := range []string{"vmlinuz", "initrd.img", "cmdline"} {
		b, err := os.ReadFile(filepath.Join(src, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

func modifyFile(t *testing.T, path string, f func([]byte)) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	f(b)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// wantMismatches asserts that exactly the listed reference values differ:
// events by description, PCR values by "pcrN".
func wantMismatches(t *testing.T, mm []imageref.Mismatch, want ...string) {
	t.Helper()
	var got []string
	for _, m := range mm {
		if m.Event != nil {
			got = append(got, m.Event.Description)
		} else {
			got = append(got, "pcr"+strconv.Itoa(int(m.PCR)))
		}
	}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("mismatches:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

// TestQEMUMeasuredBoot builds the image with build.sh, computes its reference
// values offline, boots it with boot.sh (OVMF + swtpm, -kernel) and checks
// that every computed event appears in the real log with the same digest and
// that the computed PCR 4 and 9 equal the booted ones; then that a changed
// command line, initrd byte or kernel no longer matches, on exactly the
// event concerned.
func TestQEMUMeasuredBoot(t *testing.T) {
	requireQEMU(t)
	// gzip, not the default zstd: the one-byte initrd change below flips
	// the gzip header's MTIME, which still unpacks.
	img := t.TempDir()
	runScript(t, script("build.sh"), img, "--compress", "gzip")

	// Reproducible: a second build gives the same bytes.
	img2 := t.TempDir()
	runScript(t, script("build.sh"), img2, "--compress", "gzip")
	s1, _ := os.ReadFile(filepath.Join(img, "SHA256SUMS"))
	s2, _ := os.ReadFile(filepath.Join(img2, "SHA256SUMS"))
	if len(s1) == 0 || !bytes.Equal(s1, s2) {
		t.Errorf("two builds differ:\n%s\n%s", s1, s2)
	}

	files, err := imageref.LoadImageDir(img)
	if err != nil {
		t.Fatal(err)
	}
	if pesign, err := exec.LookPath("pesign"); err == nil {
		out, err := exec.Command(pesign, "--hash", "--in", filepath.Join(img, "vmlinuz")).Output()
		if err != nil {
			t.Fatal(err)
		}
		d, err := imageref.AuthenticodeSHA256(files.Kernel)
		if err != nil {
			t.Fatal(err)
		}
		if want := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(string(out)), "hash:")); hex.EncodeToString(d) != want {
			t.Errorf("kernel Authenticode %x, pesign %s", d, want)
		}
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	rv, err := imageref.ReferenceValues(img, []string{self}, imageref.Options{QEMUDirect: &imageref.QEMUDirect{MemoryMiB: 512}})
	if err != nil {
		t.Fatal(err)
	}
	ref := &rv.Images[0]
	for _, e := range ref.Events {
		t.Logf("computed PCR %d %x %s", e.PCR, []byte(e.Digest), e.Description)
	}
	for _, i := range []uint32{4, 9} {
		t.Logf("computed PCR %d = %x", i, []byte(ref.PCRs[i]))
	}

	r := boot(t, img)
	mm, err := imageref.Check(ref, r)
	if err != nil {
		t.Fatal(err)
	}
	if len(mm) != 0 {
		t.Fatalf("offline reference values do not match the real boot: %v", mm)
	}
	if want := files.Cmdline + " initrd=initrd"; r.Cmdline != want {
		t.Errorf("guest saw command line %q, want %q", r.Cmdline, want)
	}

	t.Run("memory size moves the initrd and changes the kernel digest", func(t *testing.T) {
		c1024, err := imageref.ComputeDigests(files.Kernel, files.Initrd, files.Cmdline, imageref.Options{QEMUDirect: &imageref.QEMUDirect{MemoryMiB: 1024}})
		if err != nil {
			t.Fatal(err)
		}
		r := boot(t, img, "--memory", "1024")
		mm, err := imageref.Check(ref, r)
		if err != nil {
			t.Fatal(err)
		}
		wantMismatches(t, mm, imageref.DescKernel, "pcr4")
		img1024 := &attest.Image{ID: "1024", Events: []attest.EventRef{{PCR: 4, Digest: c1024.KernelDigest, Description: imageref.DescKernel}}, PCRs: map[uint32]attest.Hex{4: c1024.PCRs[4], 9: c1024.PCRs[9]}}
		mm, err = imageref.Check(img1024, r)
		if err != nil {
			t.Fatal(err)
		}
		wantMismatches(t, mm)
	})

	t.Run("other command line", func(t *testing.T) {
		r := boot(t, img, "--cmdline", files.Cmdline+" loglevel=3")
		mm, err := imageref.Check(ref, r)
		if err != nil {
			t.Fatal(err)
		}
		wantMismatches(t, mm, imageref.DescLoadOptions, "pcr9")
	})

	t.Run("initrd with one byte changed", func(t *testing.T) {
		dir := copyImage(t, img)
		// Byte 4 is the gzip header's MTIME (0 with gzip -n): the initrd
		// still unpacks and boots, and has the same size, so only its own
		// event may change.
		modifyFile(t, filepath.Join(dir, "initrd.img"), func(b []byte) { b[4] ^= 0x01 })
		r := boot(t, dir)
		mm, err := imageref.Check(ref, r)
		if err != nil {
			t.Fatal(err)
		}
		wantMismatches(t, mm, imageref.DescInitrd, "pcr9")
	})

	t.Run("other kernel", func(t *testing.T) {
		dir := copyImage(t, img)
		// Byte 0x20 is in the unused part of the MZ header: covered by
		// the Authenticode digest, ignored when booting without Secure Boot.
		modifyFile(t, filepath.Join(dir, "vmlinuz"), func(b []byte) { b[0x20] ^= 0x01 })
		r := boot(t, dir)
		mm, err := imageref.Check(ref, r)
		if err != nil {
			t.Fatal(err)
		}
		wantMismatches(t, mm, imageref.DescKernel, "pcr4")
	})
}

// TestQEMUSecureBootUKI wraps the image into a UKI signed with Debian's
// snakeoil key (uki.sh), computes its reference offline, and boots it from a
// FAT ESP with OVMF's Secure Boot build and snakeoil PK/KEK/db: the log must
// match the computed reference and show Secure Boot enabled. A UKI signed by
// a key outside db must not boot.
func TestQEMUSecureBootUKI(t *testing.T) {
	requireQEMU(t)
	for _, tool := range []string{"objcopy", "sbsign", "mkfs.vfat", "mcopy", "openssl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s=1 but %s is missing (apt-get install binutils sbsigntool dosfstools mtools openssl)", e2eEnv, tool)
		}
	}
	img := t.TempDir()
	runScript(t, script("build.sh"), img)
	runScript(t, script("uki.sh"), img)
	uki, err := os.ReadFile(filepath.Join(img, "uki.efi"))
	if err != nil {
		t.Fatal(err)
	}
	ref, err := imageref.ComputeUKI(uki, "uki")
	if err != nil {
		t.Fatal(err)
	}
	r := boot(t, img, "--uki", filepath.Join(img, "uki.efi"), "--secure-boot")
	mm, err := imageref.Check(ref, r)
	if err != nil {
		t.Fatal(err)
	}
	if len(mm) != 0 {
		t.Fatalf("offline UKI reference does not match the Secure Boot boot: %v", mm)
	}
	evs, err := imageref.ReplayEventLog(r.EventLog, r.PCRs)
	if err != nil {
		t.Fatal(err)
	}
	sbOn := false
	for _, e := range evs {
		// EV_EFI_VARIABLE_DRIVER_CONFIG for SecureBoot: its value is the
		// last byte of the event data.
		if e.PCR == 7 && e.Type == "EV_EFI_VARIABLE_DRIVER_CONFIG" && bytes.Contains(e.Data, []byte("S\x00e\x00c\x00u\x00r\x00e\x00B\x00o\x00o\x00t\x00")) {
			sbOn = e.Data[len(e.Data)-1] == 1
		}
	}
	if !sbOn {
		t.Error("event log does not show SecureBoot=1")
	}

	t.Run("UKI signed by a key outside db does not boot", func(t *testing.T) {
		dir := copyImage(t, img)
		key, cert := filepath.Join(dir, "other.key"), filepath.Join(dir, "other.crt")
		runScript(t, "openssl", "req", "-new", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
			"-subj", "/CN=not in db/", "-keyout", key, "-out", cert)
		runScript(t, script("uki.sh"), dir, "--key", key, "--cert", cert)
		work := t.TempDir()
		cmd := exec.Command(script("boot.sh"), dir, "--uki", filepath.Join(dir, "uki.efi"), "--secure-boot", "--workdir", work, "--timeout", "30")
		unlock := qemutest.LockBoots(t)
		out, err := cmd.CombinedOutput()
		unlock()
		if err == nil {
			t.Fatalf("a UKI signed outside db booted under Secure Boot:\n%s", out)
		}
		serial, _ := os.ReadFile(filepath.Join(work, "serial.log"))
		if bytes.Contains(serial, []byte("ATTESTED-TESTINIT-BEGIN")) {
			t.Fatal("the test init ran from a UKI signed outside db")
		}
		// OVMF's boot manager reports the verification failure.
		if !bytes.Contains(serial, []byte("Access Denied")) {
			t.Errorf("no \"Access Denied\" from OVMF on the console; boot.sh said: %s", lastLine(out))
		}
		t.Logf("refused as expected: %s", lastLine(out))
	})
}

func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}
